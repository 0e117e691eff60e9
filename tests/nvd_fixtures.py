"""Small NVD feeds written by the tests themselves (JSON 1.1 yearly feeds and API 2.0 pages).

The CVEs are made up in the shape NVD publishes (ids in a reserved-looking range, plain
descriptions); they exercise the readers, the store, `secfm data cve` and the head training.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

# (id, published, description, cwes, vector)
WEB = [
    ("SQL injection in the login form of {p} {v} allows remote attackers to execute arbitrary SQL commands via the username parameter.",
     ["CWE-89"], "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
    ("Cross-site scripting (XSS) vulnerability in the search page of {p} {v} allows remote attackers to inject arbitrary web script or HTML via the q parameter.",
     ["CWE-79"], "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"),
    ("A buffer overflow in the image parser of {p} {v} allows local users to cause a denial of service or execute arbitrary code via a crafted file.",
     ["CWE-787"], "CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H"),
    ("Path traversal in the download handler of {p} {v} lets remote authenticated users read arbitrary files via ../ sequences in the file parameter.",
     ["CWE-22"], "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N"),
]
PRODUCTS = ["Acme CMS", "Foo Portal", "Bar Wiki", "Baz Shop", "Qux Forum", "Zed Blog", "Omni Desk", "Nimbus CRM"]


def make_cves(year: int, n: int, start: int = 1000, month: int = 3) -> list[dict]:
    """``n`` CVE dicts published in ``year`` (cycling through four weakness kinds)."""
    out = []
    for i in range(n):
        template, cwes, vector = WEB[i % len(WEB)]
        product = PRODUCTS[(i // len(WEB)) % len(PRODUCTS)]
        version = f"{1 + i % 5}.{i % 7}.{i % 3}"
        tag = f"mod{year}x{i}"
        desc = f"In the {tag} module, " + template.format(p=product, v=version) + f" Fixed in {tag} {version}-{year}."
        day = 1 + i % 27
        out.append({"id": f"CVE-{year}-{start + i}", "published": f"{year}-{month:02d}-{day:02d}T10:15Z",
                    "modified": f"{year}-{month:02d}-{day:02d}T12:00Z", "description": desc, "cwes": list(cwes),
                    "vector": vector})
    return out


def _score(vector: str) -> float:
    from cvss import CVSS3

    return float(CVSS3(vector).scores()[0])


def v11_item(c: dict) -> dict:
    item = {
        "cve": {
            "data_type": "CVE", "data_format": "MITRE", "data_version": "4.0",
            "CVE_data_meta": {"ID": c["id"], "ASSIGNER": "cve@mitre.org"},
            "problemtype": {"problemtype_data": [{"description": [{"lang": "en", "value": w} for w in c["cwes"]]}]},
            "references": {"reference_data": []},
            "description": {"description_data": [{"lang": "en", "value": c["description"]}]},
        },
        "configurations": {"CVE_data_version": "4.0", "nodes": []},
        "impact": {},
        "publishedDate": c["published"],
        "lastModifiedDate": c["modified"],
    }
    if c.get("vector"):
        item["impact"]["baseMetricV3"] = {"cvssV3": {"version": c["vector"][5:8], "vectorString": c["vector"],
                                                     "baseScore": _score(c["vector"])},
                                          "exploitabilityScore": 3.9, "impactScore": 5.9}
    return item


def v11_feed(cves: list[dict]) -> dict:
    return {"CVE_data_type": "CVE", "CVE_data_format": "MITRE", "CVE_data_version": "4.0",
            "CVE_data_numberOfCVEs": str(len(cves)), "CVE_data_timestamp": "2022-11-04T07:00Z",
            "CVE_Items": [v11_item(c) for c in cves]}


def v20_vuln(c: dict, source: str = "nvd@nist.gov") -> dict:
    cve = {
        "id": c["id"], "sourceIdentifier": "cve@mitre.org", "published": c["published"].replace("Z", ":00.000"),
        "lastModified": c["modified"].replace("Z", ":00.000"), "vulnStatus": c.get("status", "Analyzed"),
        "descriptions": [{"lang": "en", "value": c["description"]}, {"lang": "es", "value": "Vulnerabilidad."}],
        "metrics": {}, "weaknesses": [], "references": [],
    }
    if c.get("vector"):
        cve["metrics"]["cvssMetricV31"] = [{"source": source, "type": "Primary",
                                            "cvssData": {"version": "3.1", "vectorString": c["vector"],
                                                         "baseScore": _score(c["vector"])}}]
    if c["cwes"]:
        cve["weaknesses"] = [{"source": source, "type": "Primary",
                              "description": [{"lang": "en", "value": w} for w in c["cwes"]]}]
    return {"cve": cve}


def v20_page(cves: list[dict], start: int = 0, total: int | None = None, per_page: int | None = None) -> dict:
    return {"resultsPerPage": per_page or len(cves), "startIndex": start,
            "totalResults": len(cves) if total is None else total, "format": "NVD_CVE", "version": "2.0",
            "timestamp": "2025-05-15T10:00:00.000", "vulnerabilities": [v20_vuln(c) for c in cves]}


def write_json(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(doc).encode()
    name = path.name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(name[: -len(".zip")], data)
    else:
        path.write_bytes(data)
    return path


def write_feed_dir(root: Path, years: dict[int, int] | None = None) -> Path:
    """One JSON 1.1 feed per year (alternating .json.gz and .json.zip); returns the folder."""
    years = years or {2019: 40, 2020: 40, 2021: 16, 2022: 16}
    by_year = {year: make_cves(year, n) for year, n in years.items()}
    last, first = max(by_year), min(by_year)
    # three CVEs of the last year repeat descriptions of the first (near duplicates across splits)
    for k in range(min(3, len(by_year[first]))):
        by_year[last].append(dict(by_year[first][k], id=f"CVE-{last}-{9000 + k}",
                                  published=f"{last}-06-0{k + 1}T10:00Z", modified=f"{last}-06-0{k + 1}T11:00Z"))
    for i, (year, cves) in enumerate(sorted(by_year.items())):
        suffix = ".json.gz" if i % 2 == 0 else ".json.zip"
        write_json(root / f"nvdcve-1.1-{year}{suffix}", v11_feed(cves))
    return root

"""NVD feeds (JSON 1.1 and API 2.0, .json/.gz/.zip), broken files, the local CVE store."""

from __future__ import annotations

import gzip
import json

import pytest

from secfm.errors import SecfmError
from secfm.knowledge import nvd
from tests.nvd_fixtures import make_cves, v11_feed, v20_page, write_json


def test_reads_json_11_feed_gz_and_zip(tmp_path):
    cves = make_cves(2021, 6)
    cves[1]["cwes"] = ["NVD-CWE-Other"]
    cves[2]["cwes"] = ["CWE-79", "NVD-CWE-noinfo", "CWE-80"]
    cves[3]["vector"] = None
    gz = write_json(tmp_path / "nvdcve-1.1-2021.json.gz", v11_feed(cves[:3]))
    zp = write_json(tmp_path / "nvdcve-1.1-2022.json.zip", v11_feed(cves[3:]))
    fmt, recs = nvd.read_feed(gz)
    assert fmt == "nvd-1.1" and [r.id for r in recs] == [c["id"] for c in cves[:3]]
    r0 = recs[0]
    assert r0.cwes == ("CWE-89",) and r0.cvss_vector.startswith("CVSS:3.1/AV:N") and r0.cvss_score == 9.8
    assert r0.published.startswith("2021-03") and r0.source_file == gz.name
    assert recs[1].cwes == () and recs[1].placeholder_cwe          # placeholder dropped
    assert recs[2].cwes == ("CWE-79", "CWE-80")
    fmt, recs = nvd.read_feed(zp)
    assert fmt == "nvd-1.1" and recs[0].cvss_vector is None and recs[0].cvss_score is None


def test_reads_api_20_pages_and_prefers_nvd_primary(tmp_path):
    cves = make_cves(2024, 3)
    page = v20_page(cves)
    # a CNA's secondary weakness and metric beside NVD's primary ones: NVD's win
    v = page["vulnerabilities"][0]["cve"]
    v["weaknesses"].insert(0, {"source": "cna@example.com", "type": "Secondary",
                               "description": [{"lang": "en", "value": "CWE-20"}]})
    v["metrics"]["cvssMetricV31"].insert(0, {"source": "cna@example.com", "type": "Secondary",
                                             "cvssData": {"version": "3.1", "baseScore": 5.3,
                                                          "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"}})
    # only a CNA's weakness: used, with its source
    page["vulnerabilities"][1]["cve"]["weaknesses"][0].update(source="cna@example.com", type="Secondary")
    page["vulnerabilities"][2]["cve"]["vulnStatus"] = "Rejected"
    path = write_json(tmp_path / "api-page.json", page)
    fmt, recs = nvd.read_feed(path)
    assert fmt == "nvd-api-2.0"
    assert recs[0].cwes == ("CWE-89",) and recs[0].cwe_source == "nvd@nist.gov"
    assert recs[0].cvss_score == 9.8 and recs[0].cvss_source == "nvd@nist.gov"
    assert recs[1].cwe_source == "cna@example.com"
    assert "SQL injection" in recs[0].description   # the English description, not the Spanish one
    assert recs[2].rejected
    by_id, report = nvd.read_feeds([path])
    assert set(by_id) == {recs[0].id, recs[1].id} and report.rejected == 1


def test_bad_and_truncated_files_are_named_and_the_rest_is_read(tmp_path, caplog):
    good = write_json(tmp_path / "a-good.json.gz", v11_feed(make_cves(2020, 4)))
    data = gzip.compress(json.dumps(v11_feed(make_cves(2021, 50))).encode())
    (tmp_path / "b-truncated.json.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "c-notjson.json").write_text('{"CVE_Items": [', encoding="utf-8")
    (tmp_path / "d-bad.json.zip").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "e-other.json").write_text('{"hello": 1}', encoding="utf-8")
    seen = []
    by_id, report = nvd.read_feeds([tmp_path], on_problem=seen.append)
    assert len(by_id) == 4 and [f["path"] for f in report.files] == [str(good)]
    named = {p.path.rsplit("/", 1)[-1]: p.message for p in report.problems}
    assert set(named) == {"b-truncated.json.gz", "c-notjson.json", "d-bad.json.zip", "e-other.json"}
    assert "truncated" in named["b-truncated.json.gz"]
    assert "not an NVD feed" in named["e-other.json"]
    assert all("\n" not in p.line() for p in report.problems) and len(seen) == 4
    with pytest.raises(SecfmError, match="b-truncated"):
        nvd.read_feed(tmp_path / "b-truncated.json.gz")
    with pytest.raises(SecfmError, match="not found"):
        nvd.feed_files([tmp_path / "missing"])


def test_newest_copy_wins_across_files(tmp_path):
    old = make_cves(2021, 2)
    new = [dict(c) for c in old]
    new[0].update(modified="2023-01-01T00:00Z", cwes=["CWE-78"])
    write_json(tmp_path / "b.json", v11_feed(old))          # read second, but older
    write_json(tmp_path / "a.json", v20_page(new[:1]))       # API 2.0 copy, newer
    by_id, report = nvd.read_feeds([tmp_path])
    assert by_id[old[0]["id"]].cwes == ("CWE-78",) and report.duplicates == 1


def test_store_add_lookup_update_and_reject(tmp_path):
    store = nvd.CveStore(tmp_path / "cves.sqlite")
    cves = make_cves(2021, 5)
    feed = write_json(tmp_path / "f.json.gz", v11_feed(cves))
    rep = store.add_feeds([feed])
    assert (rep.added, rep.updated) == (5, 0) and store.count() == 5
    rec = store.lookup(cves[0]["id"].lower())
    assert rec.cwes == ("CWE-89",) and rec.cvss_score == 9.8 and rec.source_file == "f.json.gz"
    assert store.lookup("CVE-1999-0001") is None
    again = store.add_feeds([feed])
    assert (again.added, again.updated, again.unchanged) == (0, 5, 0)  # same date: replaced in place
    changed = [dict(cves[1], modified="2024-02-02T00:00Z", cwes=["CWE-434"]),
               dict(cves[2], modified="2024-02-02T00:00Z", status="Rejected"),
               dict(cves[3], modified="2020-01-01T00:00Z", cwes=["CWE-1"])]  # older than stored: ignored
    rep = store.add_feeds([write_json(tmp_path / "api.json", v20_page(changed))])
    assert (rep.updated, rep.removed, rep.unchanged) == (1, 1, 1)
    assert store.lookup(cves[1]["id"]).cwes == ("CWE-434",)
    assert store.lookup(cves[2]["id"]) is None
    assert store.lookup(cves[3]["id"]).cwes == ("CWE-22",)
    s = store.stats()
    assert s["cves"] == 4 and s["with_cwe"] == 4
    # the module-level lookup reads $SECFM_HOME's store (absent: None)
    assert nvd.lookup(cves[0]["id"]) is None or nvd.lookup(cves[0]["id"]).id == cves[0]["id"]
    assert nvd.lookup(cves[0]["id"], store=store).id == cves[0]["id"]


def test_parse_cve_ids(tmp_path):
    f = tmp_path / "ids.tsv"
    f.write_text("URL\tDescription\nhttps://nvd.nist.gov/vuln/detail/CVE-2024-23848\tx\n# CVE-2000-0001 comment\n")
    assert nvd.parse_cve_ids("cve-2021-44228, CVE-2014-6271") == {"CVE-2021-44228", "CVE-2014-6271"}
    assert nvd.parse_cve_ids(f"@{f}") == {"CVE-2024-23848"}
    with pytest.raises(SecfmError, match="not a CVE id"):
        nvd.parse_cve_ids("T1059")
    with pytest.raises(SecfmError, match="not found"):
        nvd.parse_cve_ids("@/nonexistent/ids.txt")


def test_validate_id_knows_cves_in_the_store(tmp_path, monkeypatch):
    from secfm.knowledge.ids import validate_id

    monkeypatch.setenv("SECFM_HOME", str(tmp_path / "home"))
    cve = make_cves(2031, 1)[0]
    assert not validate_id(cve["id"]).known
    nvd.open_store().add_feeds([write_json(tmp_path / "f.json", v11_feed([cve]))])
    check = validate_id(cve["id"].lower())
    assert check.known and check.normalized == cve["id"] and "CWE-89" in check.message and "9.8" in check.message

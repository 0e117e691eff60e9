"""`secfm cve`, `secfm kb add-nvd`, `kb update nvd`, analyze_cve, on fixture feeds and heads trained here."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from secfm.cli import app
from tests.nvd_fixtures import make_cves, v11_feed, v20_page, write_feed_dir, write_json

SQLI = ("A SQL injection in the login form of Acme CMS 2.1 lets remote attackers run arbitrary SQL commands "
        "via the username parameter.")


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """Text-only CWE and CVSS heads trained on the fixture feeds (seconds)."""
    from secfm.training.cve_data import CveDataConfig, build_cve_dataset, load_cve_splits
    from secfm.training.cve_heads import CveFitConfig, Design, prepare, save_trained, train_design

    root = tmp_path_factory.mktemp("cve")
    feeds = write_feed_dir(root / "feeds")
    build_cve_dataset(root / "ds", CveDataConfig(feeds=[str(feeds)]))
    splits = load_cve_splits(root / "ds")
    out = {}
    for task in ("cwe", "cvss"):
        data = prepare(splits, task, min_count=2)
        trained = train_design(data, Design("text", max_features=500, fit=CveFitConfig(epochs=8, text_lr=0.5, batch_size=16)))
        out[task] = save_trained(trained, data, "gemma-3-270m", {}, "pytest", root / task)
    out["feeds"] = feeds
    return out


def test_analyze_description_and_known_cve(heads, tmp_path):
    from secfm.knowledge.nvd import CveStore
    from secfm.workflows import CveAnalysis, analyze_cve
    from secfm.workflows.cve_analysis import CveAnalyzer

    analyzer = CveAnalyzer.load(heads["cwe"], heads["cvss"])
    res = analyze_cve(SQLI, analyzer=analyzer, store=CveStore(tmp_path / "empty.sqlite"))
    assert isinstance(res, CveAnalysis) and res.cwe[0].id == "CWE-89" and res.cwe[0].name.startswith("Improper Neutralization")
    assert res.cvss.vector.startswith("CVSS:3.1/AV:N") and 0 < res.cvss.base_score <= 10
    assert [m.metric for m in res.cvss.metrics] == ["AV", "AC", "PR", "UI", "S", "C", "I", "A"]
    store = CveStore(tmp_path / "cves.sqlite")
    cve = make_cves(2030, 2)[1]  # an XSS fixture
    store.add_feeds([write_json(tmp_path / "f.json", v20_page([cve]))])
    res = analyze_cve(cve["id"].lower(), analyzer=analyzer, store=store)
    assert res.found and res.description_source == "nvd" and res.nvd.cwes[0].id == "CWE-79"
    assert res.nvd.cwe_source == "nvd@nist.gov" and res.nvd.cvss_score == 6.1 and res.cwe[0].id == "CWE-79"
    missing = analyze_cve("CVE-2030-0001", analyzer=analyzer, store=CveStore(tmp_path / "empty.sqlite"))
    assert missing.found is False and missing.cwe == [] and "secfm kb add-nvd" in missing.notes[0]


def test_cve_command_json_table_and_errors(heads, tmp_path):
    runner = CliRunner()
    base = ["cve", "--cwe-head", str(heads["cwe"]), "--cvss-head", str(heads["cvss"])]
    res = runner.invoke(app, [*base, "--format", "json", SQLI])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["cwe"][0]["id"] == "CWE-89" and data["cvss"]["metrics"][0]["value"] == "N"
    res = runner.invoke(app, [*base, "-"], input=SQLI)
    assert res.exit_code == 0 and "CWE-89" in res.output and "Network" in res.output
    res = runner.invoke(app, [*base, "--format", "xml", SQLI])
    assert res.exit_code != 0


def test_kb_add_nvd_and_update_commands(heads, tmp_path):
    runner = CliRunner()
    store = tmp_path / "cves.sqlite"
    (tmp_path / "bad.json.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    res = runner.invoke(app, ["kb", "add-nvd", str(heads["feeds"]), str(tmp_path / "bad.json.gz"), "--store", str(store)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["added"] > 50 and len(out["problems"]) == 1 and "bad.json.gz" in out["problems"][0]
    res = runner.invoke(app, ["kb", "add-nvd", str(tmp_path / "nope.json"), "--store", str(store)])
    assert res.exit_code != 0
    res = runner.invoke(app, ["kb", "nvd-stats", "--store", str(store)])
    assert res.exit_code == 0 and json.loads(res.output)["cves"] == out["total_cves"]
    res = runner.invoke(app, ["kb", "update", "nvd", "--help"])
    assert res.exit_code == 0 and "incremental" in res.output


def _official_tsv(path, rows, gold):
    """A TSV in CTIBench's layout (URL, Description, Prompt, GT)."""
    lines = ["URL\tDescription\tPrompt\tGT"]
    for cve_id, desc, gt in rows:
        lines.append(f"https://nvd.nist.gov/vuln/detail/{cve_id}\t{desc}\t{gold} CVE Description: {desc}\t{gt}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_eval_head_modes_refuse_seen_cves(heads, tmp_path):
    from secfm.errors import SecfmError
    from secfm.evals.runner import EvalConfig, run_eval
    from secfm.heads import trained_cves

    seen = sorted(trained_cves(heads["cwe"]))[:2]
    fresh = make_cves(2033, 6)
    unseen_rows = [(c["id"], c["description"], c["cwes"][0]) for c in fresh]
    rcm = _official_tsv(tmp_path / "rcm.tsv", unseen_rows, "Analyze the following CVE description and map it to the appropriate CWE.")
    m = run_eval(EvalConfig(task="cti-rcm", mode="head", data=str(rcm), head=str(heads["cwe"]), out=str(tmp_path / "r1"), bootstrap=50),
                 progress=False)
    assert m["n"] == 6 and m["figures"]["accuracy"] > 0.8 and m["contaminated"] is False
    assert m["contamination"]["seen_items"] == 0 and m["engine_info"]["engine"] is None
    mixed = _official_tsv(tmp_path / "mixed.tsv", unseen_rows + [(s, "A SQL injection in a login form.", "CWE-89") for s in seen],
                          "Analyze the following CVE description.")
    with pytest.raises(SecfmError, match="trained on the CVEs of 2 of the 8 items"):
        run_eval(EvalConfig(task="cti-rcm", mode="head", data=str(mixed), head=str(heads["cwe"]), out=str(tmp_path / "r2")),
                 progress=False)
    assert not (tmp_path / "r2").exists()  # refused before anything was written
    m = run_eval(EvalConfig(task="cti-rcm", mode="head", data=str(mixed), head=str(heads["cwe"]), out=str(tmp_path / "r3"),
                            allow_seen=True, bootstrap=50), progress=False)
    assert m["contaminated"] is True and m["contamination"]["seen_items"] == 2 and "--allow-seen" in m["command"]
    vsp_rows = [(c["id"], c["description"], c["vector"]) for c in fresh]
    vsp = _official_tsv(tmp_path / "vsp.tsv", vsp_rows, "Analyze the following CVE description and calculate the CVSS v3.1 Base Score.")
    m = run_eval(EvalConfig(task="cti-vsp", mode="head", data=str(vsp), head=str(heads["cvss"]), out=str(tmp_path / "v1"), bootstrap=50),
                 progress=False)
    assert m["n"] == 6 and m["figures"]["mad"] < 1.5 and m["contaminated"] is False
    seen_vsp = sorted(trained_cves(heads["cvss"]))[:3]
    vsp_mixed = _official_tsv(tmp_path / "vsp-mixed.tsv", vsp_rows + [(s, "A SQL injection in a login form.",
                                                                           "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") for s in seen_vsp],
                              "Analyze the following CVE description and calculate the CVSS v3.1 Base Score.")
    with pytest.raises(SecfmError, match="trained on the CVEs of 3 of the 9 items"):
        run_eval(EvalConfig(task="cti-vsp", mode="head", data=str(vsp_mixed), head=str(heads["cvss"]), out=str(tmp_path / "v3")),
                 progress=False)
    assert not (tmp_path / "v3").exists()
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "cti-vsp", "--mode", "head", "--data", str(vsp), "--head", str(heads["cvss"]),
                              "--out", str(tmp_path / "v2"), "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    assert "mad" in res.output


def test_train_head_cli_for_cve_tasks(heads, tmp_path):
    from secfm.training.cve_data import CveDataConfig, build_cve_dataset

    build_cve_dataset(tmp_path / "ds", CveDataConfig(feeds=[str(heads["feeds"])]))
    ids = tmp_path / "x.txt"
    ids.write_text(make_cves(2019, 6)[5]["id"] + "\n")
    res = CliRunner().invoke(app, ["train", "head", "--task", "cvss", "--cve-data", str(tmp_path / "ds"), "--out",
                                   str(tmp_path / "h"), "--exclude-cves", f"@{ids}", "--allow-busy"])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "h" / "heads-cve-cvss-excl.json").read_text())
    assert r["provenance"]["git"]["commit"] and r["command"] and r["data"]["excluded_cves"] >= 1
    assert {t["role"] for t in r["selection"]["tried"]} == {"baseline", "head"}
    assert "mad" in r["head"]["test"] and "exact_vector_ci" in r["baseline"]["test"]
    assert "Test split (scored once)" in (tmp_path / "h" / "heads-cve-cvss-excl.md").read_text()
    res = CliRunner().invoke(app, ["train", "head", "--task", "cwe", "--out", str(tmp_path / "h2")])
    assert res.exit_code != 0 and "--cve-data" in str(res.exception or res.output)


def test_api_cve_analyze(heads, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from secfm.app.api import ApiSettings, create_api
    from secfm.workflows import cve_analysis

    monkeypatch.setenv("SECFM_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(cve_analysis._SHARED, (None, None), cve_analysis.CveAnalyzer.load(heads["cwe"], heads["cvss"]))
    client = TestClient(create_api(ApiSettings(api_key="k")))
    key = {"X-API-Key": "k"}
    assert client.post("/v1/cve/analyze", json={"text": SQLI}).status_code == 401
    assert client.post("/v1/cve/analyze", json={}, headers=key).status_code == 422
    assert client.post("/v1/cve/analyze", json={"cve_id": "T1059"}, headers=key).status_code == 422
    r = client.post("/v1/cve/analyze", json={"text": SQLI, "top_k": 3}, headers=key)
    assert r.status_code == 200 and r.json()["cwe"][0]["id"] == "CWE-89" and len(r.json()["cwe"]) == 3
    r = client.post("/v1/cve/analyze", json={"cve_id": "cve-2031-0001"}, headers=key).json()
    assert r["found"] is False and "secfm kb add-nvd" in r["notes"][0]
    assert "/v1/cve/analyze" in client.get("/openapi.json").json()["paths"]


def test_triage_and_summary_analyse_the_cves_they_see(heads, monkeypatch, tmp_path):
    from secfm.knowledge import nvd
    from secfm.workflows import cve_analysis, summarize_incident, triage_alerts

    monkeypatch.setenv("SECFM_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(cve_analysis._SHARED, (None, None), cve_analysis.CveAnalyzer.load(heads["cwe"], heads["cvss"]))
    cve = make_cves(2032, 1)[0]
    nvd.open_store().add_feeds([write_json(tmp_path / "f.json", v11_feed([cve]))])
    alert = {"EventID": 1, "Message": f"Exploit attempt for {cve['id']} against the web server", "Computer": "WEB-1"}
    result = triage_alerts([alert], use_model=False, store=False, technique_source=None)
    got = result.alerts[0].cves
    assert [c.cve_id for c in got] == [cve["id"]] and got[0].nvd.cwes[0].id == "CWE-89" and got[0].cwe
    summary = summarize_incident(f"The attackers exploited {cve['id']} and CVE-2031-0009.", use_model=False,
                                 technique_source=None)
    assert [c.cve_id for c in summary.cves] == [cve["id"], "CVE-2031-0009"] and summary.cves[1].found is False


def test_cve_bench_writes_results_with_provenance(heads, tmp_path):
    from secfm.workflows.cve_analysis import CveAnalyzer
    from secfm.workflows.cve_bench import run_cve_bench

    res = run_cve_bench(tmp_path / "b.json", repeats=5, batch=4, allow_busy=True, results_dir=tmp_path,
                        analyzer=CveAnalyzer.load(heads["cwe"], heads["cvss"]))
    assert res["single"]["p50_ms"] > 0 and res["uses_hidden_states"] is False and "provenance" in res
    assert "1 description per call" in (tmp_path / "b.md").read_text()


def test_shipped_cve_heads_load_offline_and_answer_the_issue_example():
    from secfm.heads import load_head, shipped_head_path, trained_cves
    from secfm.workflows.cve_analysis import CveAnalyzer

    analyzer = CveAnalyzer.load()
    assert not analyzer.cwe_head.needs_hidden and not analyzer.cvss_head.needs_hidden  # no model needed
    cwe = analyzer.predict_cwe([SQLI])[0]
    cvss = analyzer.predict_cvss([SQLI])[0]
    assert cwe[0].id == "CWE-89" and cvss.vector.startswith("CVSS:3.1/AV:N/") and cvss.base_score >= 7.0
    for task in ("cwe", "cvss"):
        path = shipped_head_path(task, "gemma-3-270m")
        # small: CWE 20k terms x 137 classes (3.1 MB); CVSS the baseline's 200k terms x 22 values (5.8 MB),
        # so that the metrics the baseline serves are the baseline's own weights
        assert sum(f.stat().st_size for f in path.iterdir()) < 6_000_000
        assert (path / "text_vocab.json.gz").is_file() and not (path / "text_vocab.json").exists()
        m = load_head(path).manifest
        assert m.temperatures and len(m.temperatures) == (1 if task == "cwe" else 8)
        seen = trained_cves(load_head(path))
        assert len(seen) > 50_000 and all(c[4:8] <= "2021" for c in seen)  # trained on CVEs published up to 2020

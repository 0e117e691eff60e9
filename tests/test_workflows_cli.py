"""`secfm triage | summarize | review-config | kb build | kb search | eval workflows` from the
command line: JSON by default, --format md, one clear line on bad input.

The commands run in process through ``secfm.cli.main`` (what the console script calls), so the
tests do not pay for a fresh interpreter each time; one test runs the real entry point.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from test_workflows_support import FIXTURES


@dataclass
class Proc:
    returncode: int
    stdout: bytes
    stderr: bytes


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty SECFM_HOME (no knowledge base) so the commands run without retrieval."""
    from secfm.workflows import store

    monkeypatch.setenv("SECFM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SECFM_CHROMA_URL", raising=False)
    store._DEFAULT_STORES.clear()
    yield {}
    store._DEFAULT_STORES.clear()


def run(*args: str, input: bytes | None = None, env: dict | None = None) -> Proc:
    """``secfm ARGS`` in this process: exit code, standard output and error."""
    from secfm.cli import main

    out, err = io.StringIO(), io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO(input or b""), encoding="utf-8")
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = out, err, stdin
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
    return Proc(code, out.getvalue().encode(), err.getvalue().encode())


def one_line_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr.decode().strip().splitlines()
    assert err and err[-1].startswith("secfm: error:"), proc.stderr.decode()
    for fragment in fragments:
        assert fragment in err[-1], err[-1]


def test_triage_json_md_and_stdin(home, tmp_path):
    proc = run("triage", str(FIXTURES / "alerts_mixed.jsonl"), "--no-model", "--no-head", env=home)
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert [q["index"] for q in result["queue"]][-1] == 4 and result["model"]["status"] == "skipped"
    assert result["knowledge"].startswith("absent")
    out = tmp_path / "t.md"
    proc = run("triage", "-", "--no-model", "--no-head", "--no-kb", "--format", "md", "--out", str(out), env=home,
               input=b"May 12 03:14:07 b sshd[1]: Failed password for root from 1.2.3.4 port 2 ssh2\n")
    assert proc.returncode == 0, proc.stderr.decode()
    text = out.read_text()
    assert text.startswith("# Alert triage") and "SSH Authentication Failure" in text and "Recommended next steps" in text


def test_triage_bad_input_names_the_line(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"EventID": 4625}\n{"EventID": 4625,,}\n')
    one_line_error(run("triage", str(bad), "--no-model", env=home), "bad.jsonl line 2: invalid JSON")
    one_line_error(run("triage", str(tmp_path / "missing.json"), "--no-model", env=home), "file not found")
    one_line_error(run("triage", str(bad), "--no-model", "--format", "xml", env=home), "--format")


def test_review_and_summarize(home, tmp_path):
    cfg = tmp_path / "sshd_config"
    cfg.write_text("Port 22\nPermitRootLogin yes\n")
    proc = run("review-config", str(cfg), "--no-model", env=home)
    assert proc.returncode == 0, proc.stderr.decode()
    review = json.loads(proc.stdout)
    assert review["kind"] == "sshd" and review["kind_detected_by"] == "filename"
    assert review["findings"][0]["rule_id"] == "SSHD-ROOT-LOGIN" and review["findings"][0]["line_start"] == 2
    proc = run("summarize", str(FIXTURES / "report_short.md"), "--no-model", "--no-head", "--audience", "executive", "-f", "md", env=home)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "## Indicators (extracted from the report)" in proc.stdout.decode()
    text = tmp_path / "notes.txt"
    text.write_text("nothing to see here\n")
    one_line_error(run("review-config", str(text), "--no-model", env=home), "--kind")
    one_line_error(run("summarize", str(text), "--no-model", "--audience", "board", env=home), "audience")


def test_kb_search_on_an_empty_store_and_bad_filters(home):
    one_line_error(run("kb", "search", "brute force", env=home), "kb build")
    one_line_error(run("kb", "search", "x", "--tactic", "nonsense", env=home), "unknown ATT&CK tactic")


def test_kb_build_documents_then_search(home, tmp_path):
    store = tmp_path / "kb"
    proc = run("kb", "build", "--no-attack", "--no-cwe", "--docs", str(FIXTURES / "runbook.md"), "--docs", str(FIXTURES / "policy.html"),
               "--store", str(store), env=home)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["added"] == 2 and report["total_in_store"] == 2
    proc = run("kb", "search", "is ssh password login allowed", "--store", str(store), "--json", "-k", "1", env=home)
    assert proc.returncode == 0, proc.stderr.decode()
    (hit,) = json.loads(proc.stdout)
    assert hit["kind"] == "document" and hit["id"].endswith("policy.html")


def test_eval_workflows_writes_a_run_folder(home, tmp_path):
    out = tmp_path / "run"
    proc = run("eval", "workflows", "--no-model", "--no-kb", "--no-head", "--limit", "3", "--out", str(out), env=home)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "severity accuracy" in proc.stdout.decode()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["triage"]["items"] == 3 and metrics["config_review"]["items"] == 3 and metrics["incident_summary"]["items"] == 3
    assert metrics["command"].startswith("secfm eval workflows --out")
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 9 and {json.loads(line)["task"] for line in lines} == {"triage", "config", "incident"}
    assert json.loads((out / "run.json").read_text())["settings"]["use_model"] is False


def test_help_lists_the_workflow_commands():
    for args, words in ((["--help"], ("triage", "summarize", "review-config")), (["kb", "--help"], ("build", "search")),
                        (["eval", "--help"], ("workflows",)), (["bench", "--help"], ("workflows",))):
        shown = run(*args).stdout.decode()
        for word in words:
            assert word in shown, (args, word)


def test_console_entry_point(tmp_path):
    """The real interpreter and entry point, once: triage from standard input."""
    env = {**os.environ, "SECFM_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("SECFM_CHROMA_URL", None)
    proc = subprocess.run([sys.executable, "-m", "secfm.cli", "triage", "-", "--no-model", "--no-head"], capture_output=True,
                          input=(FIXTURES / "alerts_mixed.jsonl").read_bytes(), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["counts"]["critical"] == 2


def test_the_workflows_dispatch_through_one_protocol(home, tmp_path):
    """CLI, API and app run triage, summarize and review-config through secfm.workflows.protocol:
    the request model's fields, the model step only with use_model, one Markdown and one table view."""
    from secfm.errors import SecfmError
    from secfm.workflows.protocol import WORKFLOWS, get_workflow

    assert set(WORKFLOWS) == {"triage", "summarize", "review-config", "attack", "chat"}
    review = get_workflow("review-config")
    result = review.run({"text": "Port 22\nPermitRootLogin yes\n", "filename": "sshd_config", "use_model": False},
                        engine=object())  # no model step: the engine is never touched
    assert result.kind == "sshd" and result.model.status == "skipped" and "SSHD-ROOT-LOGIN" in review.render_markdown(result)
    title, columns, rows = review.table_rows(result)
    assert title == "sshd review" and rows[0][2] == "SSHD-ROOT-LOGIN" and len(columns) == len(rows[0])
    with pytest.raises(SecfmError, match="summarize: audience"):
        get_workflow("summarize").run({"text": "notes", "audience": "board", "use_model": False})
    with pytest.raises(SecfmError, match="unknown workflow"):
        get_workflow("translate")
    with pytest.raises(SecfmError, match="the triage workflow does not stream"):
        get_workflow("triage").stream({"alerts": "x"})
    # the engine goes to a model step only with use_model, but always to ATT&CK extraction (its head reads it)
    from dataclasses import replace

    engine = object()
    echo = {name: replace(get_workflow(name), run_function="builtins:dict") for name in ("attack", "summarize")}
    assert echo["attack"].run({"text": "lsass dump"}, engine=engine) == {
        "text": "lsass dump", "threshold": None, "top_k": None, "max_evidence": 3, "engine": engine}
    assert echo["summarize"].run({"text": "notes", "use_model": False}, engine=engine)["engine"] is None
    for bad in ("sometimes", float("nan")):
        with pytest.raises(SecfmError, match="attack: threshold"):
            get_workflow("attack").request({"text": "x", "threshold": bad})
    from secfm.formats import markdown_table
    from secfm.workflows.attack_extraction import AttackExtraction, Evidence, TechniqueHit

    hit = TechniqueHit("T1003.001", "LSASS Memory", ("credential-access",), 0.91,
                       (Evidence(0, "procdump read lsass", 0, 19, 0.8),), "https://attack.mitre.org/techniques/T1003/001/",
                       "enterprise")
    extraction = AttackExtraction(techniques=[hit], head={"folder": "/local/path"})
    assert extraction.model_dump(mode="json") == {"techniques": [hit.to_dict()]}  # the API's body; no local paths
    attack = get_workflow("attack")
    assert attack.render_markdown(extraction) == markdown_table(
        "ATT&CK techniques (1)", ("id", "name", "tactics", "score", "evidence"),
        [("T1003.001", "LSASS Memory", "credential-access", "0.91", "procdump read lsass")])
    cfg = tmp_path / "sshd_config"
    cfg.write_text("Port 22\nPermitRootLogin yes\n")
    proc = run("review-config", str(cfg), "--no-model", "--format", "table", env=home)
    assert proc.returncode == 0 and "SSHD-ROOT-LOGIN" in proc.stdout.decode()

"""Issue #18's "Tried" list, one test (or a few) per bullet: what a careful user and an attacker did,
and what now happens instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from secfm.workflows import triage_alerts

MIMIKATZ = {"EventID": 4688, "Computer": "WS1", "CommandLine": 'mimikatz.exe "sekurlsa::logonpasswords" exit'}


def _triage(record: dict):
    return triage_alerts([record], use_model=False, store=False, technique_source=None).alerts[0]


# --------------------------------------------------------------------------------------------
# Evasion: a zero-width or tag character inside mimikatz/sekurlsa turned critical (95) into info
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    'mimi\u200bkatz.exe "sekur\u200dlsa::logonpasswords" exit',  # zero-width space / joiner
    'mimi\U000e0041katz.exe "sekurlsa\U000e0020::logonpasswords"',  # tag characters
    'mіmіkаtz.exe "ѕеkurlѕа::logonpasswords"',  # Cyrillic homoglyphs
    'ｍｉｍｉｋａｔｚ.exe "ｓｅｋｕｒｌｓａ::logonpasswords"',  # fullwidth
    'mimi\u00adkatz.exe "sekurlsa::logon\u2060passwords"',  # soft hyphen, word joiner
])
def test_invisible_or_lookalike_characters_do_not_hide_mimikatz(command):
    clean = _triage(MIMIKATZ)
    evasive = _triage({**MIMIKATZ, "CommandLine": command})
    assert clean.severity == evasive.severity == "critical" and evasive.score >= clean.score >= 95
    # every rule that fires on the plain command fires on the evasive one (SigmaHQ's homoglyph rule
    # may add itself on top)
    evasive_ids = [s.id for s in evasive.signatures]
    assert evasive_ids[:len(clean.signatures)] == [s.id for s in clean.signatures]
    assert set(evasive_ids[len(clean.signatures):]) <= {"32e280f1-8ad4-46ef-9e80-910657611fbc"}
    assert evasive.evidence[0].value == command  # evidence quotes what was written


# --------------------------------------------------------------------------------------------
# Data destroyed: `data corpus` deleted an OUT.tmp/ it did not create and, with --force, its own
# inputs; -o overwrote the input file; `eval --out` overwrote a user's metrics.json
# --------------------------------------------------------------------------------------------
SECFM = [sys.executable, "-m", "secfm.cli"]
DOC = "An adversary used spearphishing attachments to deliver a loader that dumped credentials from LSASS memory.\n"


def secfm_process(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``secfm ARGS`` in a fresh interpreter (for what logs through the process's handlers)."""
    return subprocess.run([*SECFM, *args], capture_output=True, timeout=timeout, env={**os.environ}, stdin=subprocess.DEVNULL)


def secfm(*args: str, timeout: int = 300):
    """``secfm ARGS`` through ``secfm.cli.main`` in this process (what the console script calls)."""
    from test_workflows_cli import run

    return run(*args)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2, err
    assert err.startswith("secfm: error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_data_corpus_keeps_a_users_out_tmp_and_its_inputs_under_force(tmp_path):
    from secfm.training.corpus import CorpusConfig, build_corpus

    users_tmp = tmp_path / "corpus.tmp"
    users_tmp.mkdir()
    (users_tmp / "draft.txt").write_text("the user's own work")
    out = tmp_path / "corpus"
    docs = tmp_path / "docs.txt"
    docs.write_text(DOC * 3)
    build_corpus(out, CorpusConfig(inputs=[str(docs)], kb=False, tokenizer=None, validation_fraction=0.0, test_fraction=0.0, salt="s", min_chars=10))
    assert (users_tmp / "draft.txt").read_text() == "the user's own work"
    inside = out / "more.txt"  # an input that lives inside the output folder
    inside.write_text(DOC)
    cfg = CorpusConfig(inputs=[str(inside), str(docs)], kb=False, tokenizer=None, validation_fraction=0.0, test_fraction=0.0, salt="s", min_chars=10)
    build_corpus(out, cfg, force=True)
    assert inside.read_text() == DOC and docs.read_text() == DOC * 3
    assert (out / "data_card.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "corpus.tmp", "docs.txt"]


def test_out_never_overwrites_the_input(tmp_path):
    config = tmp_path / "sshd_config"
    config.write_text("PermitRootLogin yes\nPasswordAuthentication yes\n")
    one_line_error(secfm("review-config", str(config), "--no-model", "--no-kb", "-o", str(config)), "one of the inputs")
    assert config.read_text() == "PermitRootLogin yes\nPasswordAuthentication yes\n"
    one_line_error(secfm("review-config", str(config), "--no-model", "--no-kb", "-o", str(tmp_path)), "is a folder")


def test_eval_out_never_overwrites_a_users_metrics(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"mine": true}')
    one_line_error(secfm("eval", "workflows", "--no-model", "--no-kb", "--no-head", "--limit", "1", "--out", str(folder)),
                   "secfm did not write")
    assert (folder / "metrics.json").read_text() == '{"mine": true}'


# --------------------------------------------------------------------------------------------
# Tracebacks instead of one line: each input class
# --------------------------------------------------------------------------------------------
def test_a_long_literal_text_is_text_not_a_path():
    from secfm.inputs import existing_file, text_or_file

    long_text = "Mimikatz was run on the domain controller " * 10  # > 255 bytes, one "file name"
    assert existing_file(long_text) is None and text_or_file(long_text) == long_text
    assert text_or_file("x" * 300) == "x" * 300
    one_line_error(secfm("generate", "--model", "no-such-model", "y" * 300), "unknown model")


@pytest.mark.parametrize("name, content, fragment", [
    ("sep.log", "#separator \\x\n#fields\tts\tuid\n1\t2\n", "#separator"),
    ("deep.json", "[" * 991 + "]" * 991, "nested 991 levels deep"),
    ("deep-object.jsonl", '{"a":' * 991 + "1" + "}" * 991 + "\n", "nested 991 levels deep"),
])
def test_bad_alert_files_are_one_line(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    one_line_error(secfm("triage", str(path), "--no-model", "--no-kb", "--no-head"), fragment)


def test_zeek_path_header_and_a_long_first_line_are_read(tmp_path):
    zeek = tmp_path / "conn.log"
    zeek.write_text("#separator \\x09\n#path\n#fields\tts\tuid\n1\t2\n")
    proc = secfm("triage", str(zeek), "--no-model", "--no-kb", "--no-head")
    assert proc.returncode == 0, proc.stderr.decode()
    long_line = tmp_path / "long.log"
    long_line.write_text("x" * (140 * 1024) + " mimikatz\n")
    proc = secfm("triage", str(long_line), "--no-model", "--no-kb", "--no-head")
    assert proc.returncode == 0, proc.stderr.decode()


def test_a_jsonl_with_one_bad_line_processes_the_good_ones_with_skip_bad(tmp_path):
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"EventID": 4688, "CommandLine": "mimikatz.exe"}\nnot json\n{"EventID": 4625, "count": 300}\n')
    one_line_error(secfm("triage", str(path), "--no-model", "--no-kb", "--no-head"), "line 2", "--skip-bad")
    proc = secfm_process("triage", str(path), "--no-model", "--no-kb", "--no-head", "--skip-bad")
    assert proc.returncode == 0 and "line 2" in proc.stderr.decode()
    import json

    result = json.loads(proc.stdout)
    assert [a["line"] for a in result["alerts"]] == [1, 3]


def test_csv_to_data_and_out_file_for_a_folder_are_one_line(tmp_path):
    data = tmp_path / "items.csv"
    data.write_text("question,answer\nq,a\n")
    one_line_error(secfm("eval", "cti-mcqa", "--data", str(data), "--out", str(tmp_path / "run")), "lacks column")
    file_out = tmp_path / "file.json"
    file_out.write_text("{}")
    one_line_error(secfm("eval", "workflows", "--no-model", "--no-kb", "--no-head", "--out", str(file_out)), "is a file")
    assert file_out.read_text() == "{}"


def test_threshold_nan_is_refused():
    from pydantic import ValidationError

    from secfm.evals.specs import HeadSpec
    from secfm.training.recipes import TrainSpec

    for bad in ("NaN", float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            HeadSpec(text_column="x", kind="attack", threshold=bad)
        with pytest.raises(ValidationError):
            TrainSpec(learning_rate=bad)


def test_an_empty_heldout_split_loads_back(tmp_path):
    from secfm.training.corpus import CorpusConfig, build_corpus, load_corpus

    docs = tmp_path / "docs.txt"
    docs.write_text(DOC * 3)
    build_corpus(tmp_path / "c", CorpusConfig(inputs=[str(docs)], kb=False, tokenizer=None, validation_fraction=0.0,
                                              test_fraction=0.0, salt="s", min_chars=10))
    dd = load_corpus(tmp_path / "c")
    assert len(dd["train"]) == 1 and len(dd["test"]) == 0 and dd["test"].column_names == dd["train"].column_names


def test_every_other_failure_is_one_line_not_a_traceback(tmp_path):
    for name, content in (("deep.tf.json", '{"resource":' + "[" * 900 + "]" * 900 + "}"),
                          ("nginx.conf", "http {\n" + "location / {\n" * 3000 + "}\n" * 3001)):
        path = tmp_path / name
        path.write_text(content)
        proc = secfm("review-config", str(path), "--no-model", "--no-kb")
        err = proc.stderr.decode()
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err


def test_version():
    from secfm import __version__

    proc = secfm_process("--version")
    assert proc.returncode == 0 and proc.stdout.decode().strip() == f"secfm {__version__}"


# --------------------------------------------------------------------------------------------
# Exposure: `--host ""` bound every interface without a key; the body limit read only
# Content-Length (a chunked 10 MB body was parsed and echoed in the 422); TriageIn.alerts unbounded
# --------------------------------------------------------------------------------------------
def test_an_empty_or_public_host_needs_a_key():
    from secfm.serving import is_loopback

    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("::") and is_loopback("127.0.0.2")
    env = {k: v for k, v in os.environ.items() if k != "SECFM_API_KEY"}
    for host in ("", "0.0.0.0"):
        proc = subprocess.run([*SECFM, "api", "--host", host], capture_output=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
        one_line_error(proc, "exposes the API", "--api-key")
    from secfm.app.ui import check_exposure
    from secfm.errors import SecfmError

    with pytest.raises(SecfmError, match="--auth"):
        check_exposure("", None)


@pytest.fixture(scope="module")
def small_api():
    from test_api import _serve

    from secfm.app.api import ApiSettings

    server, url = _serve(ApiSettings(model="gemma-3-270m", api_key="k", max_body_bytes=100_000))
    yield url
    server.should_exit = True


def test_a_chunked_body_is_limited_on_the_stream_and_never_echoed(small_api):
    import httpx

    marker = b"SECRET-BODY-7781"

    def chunks():
        yield b'{"text": "'
        for _ in range(10 * 1024):  # 10 MB, no Content-Length
            yield marker + b"x" * 1008
        yield b'"}'

    r = httpx.post(f"{small_api}/v1/attack/extract", content=chunks(), headers={"X-API-Key": "k", "content-type": "application/json"})
    assert r.status_code == 413 and marker not in r.content and len(r.content) < 500


def test_request_models_are_bounded_and_errors_do_not_echo(small_api):
    import httpx

    key = {"X-API-Key": "k"}
    many = httpx.post(f"{small_api}/v1/triage", json={"alerts": [{"a": 1}] * 1001}, headers=key)
    assert many.status_code == 422 and "alerts" in many.json()["error"]
    wide = httpx.post(f"{small_api}/v1/triage", json={"alerts": [{f"f{i}": "SECRET-FIELD-3" for i in range(401)}]}, headers=key)
    assert wide.status_code == 422 and b"SECRET-FIELD-3" not in wide.content
    bad = httpx.post(f"{small_api}/v1/summarize", json={"text": "SECRET-TEXT-99 " * 10, "audience": "board"}, headers=key)
    assert bad.status_code == 422 and b"SECRET-TEXT-99" not in bad.content and b"board" not in bad.content


def test_every_request_model_of_the_api_is_bounded():
    from secfm.app.api import ApiSettings, create_api

    schema = create_api(ApiSettings()).openapi()
    defs = schema["components"]["schemas"]
    unbounded = []

    def walk(node, where):
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            return  # walked from components
        kind = node.get("type")
        if kind == "string" and "enum" not in node and "const" not in node and "maxLength" not in node:
            unbounded.append(where)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(where)
        if kind == "object" and node.get("additionalProperties") not in (None, False) and "maxProperties" not in node:
            unbounded.append(where)
        for key in ("properties",):
            for name, sub in (node.get(key) or {}).items():
                walk(sub, f"{where}.{name}")
        for key in ("items", "additionalProperties"):
            walk(node.get(key), f"{where}[]")
        for key in ("anyOf", "oneOf", "allOf"):
            for i, sub in enumerate(node.get(key) or []):
                walk(sub, f"{where}|{i}")

    request_models = set()
    for path in schema["paths"].values():
        for op in path.values():
            ref = (((op.get("requestBody") or {}).get("content") or {}).get("application/json") or {}).get("schema", {}).get("$ref")
            if ref:
                request_models.add(ref.rsplit("/", 1)[-1])
    assert request_models
    for name in request_models:
        walk(defs[name], name)
    assert not unbounded, unbounded


# --------------------------------------------------------------------------------------------
# Config review: sshd's first-value-wins inverted, Match blocks, Terraform `dynamic` blocks unseen,
# YAML/IAM/nginx nesting
# --------------------------------------------------------------------------------------------
def _rules(text: str, kind: str) -> list[tuple[str, int]]:
    from secfm.workflows import review_config

    return [(f.rule_id, f.line_start) for f in review_config(text, kind, use_model=False, store=False).findings]


def test_sshd_first_value_wins_and_match_blocks_override():
    assert _rules("PermitRootLogin no\nPermitRootLogin yes\n", "sshd") == []
    assert _rules("PermitRootLogin yes\nPermitRootLogin no\n", "sshd") == [("SSHD-ROOT-LOGIN", 1)]
    text = "PasswordAuthentication no\nMatch User backup\n  PasswordAuthentication yes\n  PasswordAuthentication no\n"
    assert _rules(text, "sshd") == [("SSHD-PASSWORD-AUTH", 3)]


def test_terraform_dynamic_blocks_are_seen():
    text = ('resource "aws_security_group" "admin" {\n  dynamic "ingress" {\n    for_each = var.ports\n    content {\n'
            '      from_port   = 22\n      to_port     = 22\n      protocol    = "tcp"\n      cidr_blocks = ["0.0.0.0/0"]\n'
            '    }\n  }\n}\n')
    assert ("TF-SG-ADMIN-OPEN", 2) in _rules(text, "terraform")


@pytest.mark.parametrize("kind, text", [
    ("kubernetes", "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 3000))),
    ("kubernetes", "a: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("aws-iam", '{"Statement": [{"Effect": "Allow", "Resource": ' + "[" * 2000 + '"*"' + "]" * 2000 + "}]}"),
    ("nginx", "http {\n" + "location / {\n" * 5000 + "}\n" * 5001),
])
def test_deep_nesting_is_one_line_or_reviewed(tmp_path, kind, text):
    path = tmp_path / "config"
    path.write_text(text)
    proc = secfm("review-config", str(path), "--kind", kind, "--no-model", "--no-kb")
    if proc.returncode:
        one_line_error(proc, "nested too deeply")
    else:
        assert "Traceback" not in proc.stderr.decode()


# --------------------------------------------------------------------------------------------
# Conventions: output flags differed per command (-f json|md, --json, JSON-only); no --version
# --------------------------------------------------------------------------------------------
def test_one_format_option_everywhere(tmp_path):
    import json

    config = tmp_path / "sshd_config"
    config.write_text("PermitRootLogin yes\n")
    for fmt, check in (("json", lambda out: json.loads(out)["findings"]), ("md", lambda out: out.startswith("#")),
                       ("table", lambda out: "SSHD-ROOT-LOGIN" in out)):
        proc = secfm("review-config", str(config), "--no-model", "--no-kb", "--format", fmt)
        assert proc.returncode == 0 and check(proc.stdout.decode()), (fmt, proc.stderr.decode())
    listed = secfm("models", "list", "--format", "json")
    alias = secfm("models", "list", "--json")
    assert listed.returncode == alias.returncode == 0 and json.loads(listed.stdout) == json.loads(alias.stdout)
    assert "--json" not in secfm("models", "list", "--help").stdout.decode()
    one_line_error(secfm("review-config", str(config), "--format", "xml"), "unknown --format 'xml'")
    assert secfm("kb", "lookup", "T1059.001", "--format", "md").stdout.decode().startswith("## kb lookup")

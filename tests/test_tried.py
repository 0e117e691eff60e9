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
    assert (evasive.severity, evasive.score) == (clean.severity, clean.score) == ("critical", 95)
    assert [s.id for s in evasive.signatures] == [s.id for s in clean.signatures]
    assert evasive.evidence[0].value == command  # evidence quotes what was written


# --------------------------------------------------------------------------------------------
# Data destroyed: `data corpus` deleted an OUT.tmp/ it did not create and, with --force, its own
# inputs; -o overwrote the input file; `eval --out` overwrote a user's metrics.json
# --------------------------------------------------------------------------------------------
SECFM = [sys.executable, "-m", "secfm.cli"]
DOC = "An adversary used spearphishing attachments to deliver a loader that dumped credentials from LSASS memory.\n"


def secfm(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*SECFM, *args], capture_output=True, timeout=timeout, env={**os.environ}, stdin=subprocess.DEVNULL)


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
    build_corpus(out, CorpusConfig(inputs=[str(docs)], kb=False, tokenizer=None, heldout_fraction=0.0, salt="s", min_chars=10))
    assert (users_tmp / "draft.txt").read_text() == "the user's own work"
    inside = out / "more.txt"  # an input that lives inside the output folder
    inside.write_text(DOC)
    cfg = CorpusConfig(inputs=[str(inside), str(docs)], kb=False, tokenizer=None, heldout_fraction=0.0, salt="s", min_chars=10)
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

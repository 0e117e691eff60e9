"""Every results file says how it was made, and a busy machine cannot write a timing."""

from __future__ import annotations

import json

import pytest

from secfm import provenance
from secfm.errors import SecfmError


def test_results_carry_command_commit_data_and_load(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "load_average", lambda: [0.5, 0.4, 0.3])
    data = tmp_path / "feed.json"
    data.write_text('{"CVE_Items": []}')
    folder = tmp_path / "rules"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "r.yml").write_text("title: x\n")
    out = tmp_path / "out" / "bench.json"
    with provenance.recording(data_files=[data, folder], command="secfm bench heads --out x") as rec:
        rec.note(seed=0)
        rec.write_json(out, {"p50_ms": 12.5})
        rec.write_text(out.with_suffix(".md"), "| a |\n|---|\n| 1 |\n")
    written = json.loads(out.read_text())
    prov = written["provenance"]
    assert written["p50_ms"] == 12.5
    assert prov["command"] == "secfm bench heads --out x"
    assert prov["data"][0]["sha256"] == provenance.file_sha256(data)
    assert prov["data"][1]["files"] == 1 and len(prov["data"][1]["sha256"]) == 64
    assert prov["machine"]["cores"] >= 1 and prov["load_average_start"] == [0.5, 0.4, 0.3]
    assert prov["wall_s"] >= 0 and prov["notes"] == {"seed": 0} and prov["busy"] is False
    assert "secfm bench heads --out x" in out.with_suffix(".md").read_text()
    assert not list(out.parent.glob(".*tmp*"))


def test_a_busy_machine_refuses_to_start_or_write_unless_allowed(tmp_path, monkeypatch):
    busy = [provenance.cores() + 3.0, 1.0, 1.0]
    monkeypatch.setattr(provenance, "load_average", lambda: busy)
    with pytest.raises(SecfmError, match="--allow-busy"):
        with provenance.recording():
            pass
    with provenance.recording(allow_busy=True) as rec:
        rec.write_json(tmp_path / "r.json", {"x": 1})
    prov = json.loads((tmp_path / "r.json").read_text())["provenance"]
    assert prov["busy"] is True and prov["allow_busy"] is True


def test_load_rising_during_the_run_blocks_the_write(tmp_path, monkeypatch):
    loads = iter([[0.1, 0.1, 0.1], [provenance.cores() + 1.0, 1.0, 1.0]])
    monkeypatch.setattr(provenance, "load_average", lambda: next(loads))
    with pytest.raises(SecfmError, match="rose"):
        with provenance.recording() as rec:
            rec.write_json(tmp_path / "r.json", {"x": 1})
    assert not (tmp_path / "r.json").exists()


def test_missing_data_file_is_one_clear_error(tmp_path):
    with pytest.raises(SecfmError, match="not found"):
        provenance.data_digest(tmp_path / "nope.json")

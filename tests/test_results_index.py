"""The results index (`secfm results`): generated from the results files, current, and honest
about files without provenance."""

from __future__ import annotations

import json

from secfm.evals.results_index import build_index, render_index, write_index
from secfm.provenance import recording


def test_index_reads_figures_and_provenance(tmp_path):
    folder = tmp_path / "training" / "results"
    folder.mkdir(parents=True)
    with recording(allow_busy=True, command="secfm bench train --allow-busy") as rec:
        rec.write_json(folder / "bench-train.json", {"benchmark": "secfm bench train",
                                                     "headline": {"speedup": 2.5, "target": ">= 2x"}})
    (folder / "old.json").write_text(json.dumps({"benchmark": "old", "summary": {"speedup": 9.9}}))
    (folder / "run.json").write_text("{}")  # a run's settings: not a results file
    card = folder / "a-data-card.json"  # a dataset's card: no provenance of its own, pinned by the run that used it
    card.write_text(json.dumps({"name": "cves", "settings": {}, "feeds": [], "splits": {"train": {"cves": 3}}}))
    with recording(data_files=[card], allow_busy=True, command="secfm train head --task cwe") as rec:
        rec.write_json(folder / "heads.json", {"task": "cwe"})
    entries = build_index(tmp_path)
    assert [e["path"] for e in entries] == ["training/results/a-data-card.json", "training/results/bench-train.json",
                                            "training/results/heads.json", "training/results/old.json"]
    assert entries[0]["how"]["pinned_by"] == ["training/results/heads.json"]
    text = render_index(entries)
    assert "speedup 2.5" in text and "`secfm bench train --allow-busy`" in text
    assert "old.json" in text and "no provenance" in text and "train 3 CVEs" in text
    assert "2 with provenance" in text and "1 data card pinned by sha256" in text and "1 without provenance" in text
    out, current = write_index(tmp_path / "RESULTS.md", root=tmp_path)
    assert out.read_text() == text and write_index(out, root=tmp_path, check=True)[1]
    (folder / "old.json").write_text(json.dumps({"benchmark": "old", "summary": {"speedup": 1.0}}))
    assert not write_index(out, root=tmp_path, check=True)[1]  # a changed file makes the index stale
    card.write_text(card.read_text() + " ")  # a changed card no longer matches the digest the run recorded
    assert build_index(tmp_path)[0]["how"]["note"].startswith("no provenance")


def test_the_repository_index_is_current():
    path, current = write_index(check=True)
    assert current, f"{path} is stale: run `secfm results` and commit it"


def test_a_long_run_whose_load_rose_midway_is_flagged():
    from secfm.evals.results_index import how_made

    prov = {"command": "secfm bench workflows", "git": {"commit": "abc"}, "machine": {"cores": 2}, "busy": False,
            "load_average_start": [1.4, 2.4, 2.2], "load_average_end": [1.9, 3.9, 4.0], "wall_s": 1340.0}
    assert "load rose during the run" in how_made({"provenance": prov})["note"]
    assert how_made({"provenance": {**prov, "wall_s": 60.0}})["note"] == ""  # the 5-minute average is not this run's

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
    entries = build_index(tmp_path)
    assert [e["path"] for e in entries] == ["training/results/bench-train.json", "training/results/old.json"]
    text = render_index(entries)
    assert "speedup 2.5" in text and "`secfm bench train --allow-busy`" in text
    assert "old.json" in text and "no provenance" in text and "1 with provenance, 1 without" in text
    out, current = write_index(tmp_path / "RESULTS.md", root=tmp_path)
    assert out.read_text() == text and write_index(out, root=tmp_path, check=True)[1]
    (folder / "old.json").write_text(json.dumps({"benchmark": "old", "summary": {"speedup": 1.0}}))
    assert not write_index(out, root=tmp_path, check=True)[1]  # a changed file makes the index stale


def test_the_repository_index_is_current():
    path, current = write_index(check=True)
    assert current, f"{path} is stale: run `secfm results` and commit it"

"""`secfm bench workflows` end to end at toy sizes (the real run: workflows/results/bench-workflows.json)."""

from __future__ import annotations

import json

from test_workflows_support import small_store  # noqa: F401 - fixture


def test_bench_writes_results(tmp_path, small_store):
    from secfm.workflows.bench import run_workflows_bench

    out = tmp_path / "bench.json"
    result = run_workflows_bench(out=out, big_chunks=600, n_queries=5, with_model=False, store=small_store,
                                 technique_source=lambda text: [], log=lambda m: None, allow_busy=True)
    saved = json.loads(out.read_text())
    assert saved == result
    assert result["retrieval_packaged"]["chunks"] == small_store.count()
    assert result["retrieval_large"]["chunks"] == 600
    for size in ("retrieval_packaged", "retrieval_large"):
        for part in ("end_to_end", "search_only"):
            stats = result[size][part]
            assert stats["n"] == 5 and 0 < stats["p50_ms"] <= stats["p95_ms"]
    assert result["triage_without_generation"]["alerts"] == 200 and result["triage_without_generation"]["alerts_per_s"] > 0
    assert "triage_with_generation" not in result
    prov = result["provenance"]  # written through secfm/provenance.py: command, commit, cores, loads, wall time
    assert prov["machine"]["cores"] >= 1 and prov["load_average_end"] is not None and prov["wall_s"] > 0
    assert result["summary"]["triage alerts/s without generation"] > 0

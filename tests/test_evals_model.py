"""The real gemma-3-270m on the fixtures: gen mode on every task, loglik on cti-mcqa, the bench's equality check.

Few items and few new tokens: the point is that every path runs on the official layout, not the figures.
Uses the session engine of tests/conftest.py (one model load per test session).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secfm.evals.runner import PREDICTIONS, EvalConfig, run_eval

FIXTURES = Path(__file__).parent / "fixtures" / "ctibench"
pytestmark = pytest.mark.slow

GEN_CASES = [
    ("cti-mcqa", "cti-mcq.tsv", {}),
    ("cti-rcm", "cti-rcm.tsv", {}),
    ("cti-vsp", "cti-vsp.tsv", {}),
    ("cti-ate", "cti-ate.tsv", {}),
    ("cti-taa", "cti-taa.tsv", {"labels": str(FIXTURES / "cti-taa-labels.tsv")}),
]


@pytest.mark.parametrize("task, fixture, extra", GEN_CASES, ids=[c[1] for c in GEN_CASES])
def test_gen_mode_on_every_task(engine, tmp_path, task, fixture, extra):
    cfg = EvalConfig(task=task, data=str(FIXTURES / fixture), out=str(tmp_path / "run"), model="gemma-3-270m",
                     limit=2, max_new_tokens=6, batch_size=2, bootstrap=100, **extra)
    m = run_eval(cfg, engine=engine, progress=False)
    assert m["n"] == 2 and m["mode"] == "gen" and m["engine_info"]["model"] == "gemma-3-270m"
    c = m["counts"]
    assert c["parsed"] + c["unparseable"] + c["empty"] + c["refusal"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / PREDICTIONS).read_text().splitlines()]
    assert all(isinstance(x["raw"], str) for x in lines)
    assert m["items_per_s"] > 0 and m["headline"] in m["figures"]


def test_mcqa_loglik(engine, tmp_path):
    cfg = EvalConfig(task="cti-mcqa", data=str(FIXTURES / "cti-mcq.tsv"), out=str(tmp_path / "run"),
                     model="gemma-3-270m", mode="loglik", limit=3, bootstrap=100)
    m = run_eval(cfg, engine=engine, progress=False)
    assert m["n"] == 3 and m["counts"]["parsed"] == 3
    lo, hi = m["intervals"]["accuracy"]
    assert 0.0 <= lo <= m["figures"]["accuracy"] <= hi <= 1.0
    line = json.loads((tmp_path / "run" / PREDICTIONS).read_text().splitlines()[0])
    assert all(o["logprob"] < 0 and o["n_tokens"] >= 1 for o in line["raw"]["options"])
    assert set(line["raw"]["letters"]) == {"A", "B", "C", "D"}


def test_engine_and_plain_loop_agree(engine, tmp_path):
    from secfm.evals.bench_eval import run_eval_bench

    result = run_eval_bench(data=FIXTURES / "cti-mcq.tsv", limit=1, out=tmp_path / "bench.json", engine=engine,
                            progress=False, warmup=False, allow_busy=True)
    assert result["summary"]["answers_identical"] and result["max_abs_logprob_diff"] < 1e-2
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["summary"]["items"] == 1 and written["provenance"]["data"][0]["sha256"]

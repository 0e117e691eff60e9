"""secfm.evals.bench: the machinery every `secfm bench` shares (no model; well under 0.1 s)."""

from __future__ import annotations

from secfm.evals.bench import HELP, bench_group, latency_stats, timed_calls


def test_latency_stats_rounds_percentiles_in_the_asked_unit():
    s = [0.010, 0.020, 0.030, 0.040, 0.100]
    assert latency_stats(s, digits=1, per_call=2) == {"repeats": 5, "p50_ms": 30.0, "p95_ms": 88.0, "texts_per_s": 50.0}
    assert latency_stats(s, unit="s", digits=3, n_key=None, prefix="ttft_") == {"ttft_p50_s": 0.03, "ttft_p95_s": 0.088}
    bare = latency_stats(s, unit="", digits=3, extra=("mean", "max"), n_key="n")
    assert bare == {"n": 5, "p50": 0.03, "p95": 0.088, "mean": 0.04, "max": 0.1}
    assert latency_stats([], unit="", extra=("mean", "max"), per_call=1) == {
        "repeats": 0, "p50": None, "p95": None, "mean": None, "max": None, "texts_per_s": None}


def test_timed_calls_cycles_over_the_inputs():
    seen = []
    times = timed_calls(seen.append, ["a", "b"], 5)
    assert seen == ["a", "b", "a", "b", "a"] and len(times) == 5 and all(t >= 0 for t in times)


def test_every_package_adds_its_benchmarks_to_the_one_group():
    from secfm.cli import app

    groups = [g for g in app.registered_groups if g.name == "bench"]
    assert len(groups) == 1 and groups[0].typer_instance is bench_group(app) and groups[0].typer_instance.info.help == HELP
    names = {c.name for c in groups[0].typer_instance.registered_commands}
    assert {"tokenizer", "quant", "eval", "train", "workflows", "heads", "serve", "app", "latency", "sigma"} <= names

"""What every `secfm bench` benchmark shares: its command group, timed calls and latency summaries.

Results go through :func:`secfm.provenance.recording` (command, commit, data hashes, machine load);
the helpers here make the figures inside them alike: ``timed_calls`` times a callable over inputs,
``latency_stats`` turns the seconds into rounded percentiles (``secfm.stats.percentile``), and
``bench_group`` is the one `secfm bench` group each package adds its commands to.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from secfm.stats import percentile

HELP = "Performance benchmarks; each writes its results to a file."


def bench_group(app):
    """The `secfm bench` group of the CLI ``app`` (created on first use)."""
    from secfm.cli_groups import command_group

    return command_group(app, "bench", HELP)


def timed_calls(call: Callable[[Any], object], inputs: Sequence, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``call``, the i-th on ``inputs[i % len(inputs)]``."""
    got = []
    for i in range(repeats):
        started = time.perf_counter()
        call(inputs[i % len(inputs)])
        got.append(time.perf_counter() - started)
    return got


def latency_stats(seconds: Sequence[float], *, unit: str = "ms", digits: int = 2, per_call: int | None = None,
                  rate_digits: int = 2, extra: Sequence[str] = (), n_key: str | None = "repeats", prefix: str = "") -> dict:
    """``{n_key: count, <prefix>p50_<unit>, <prefix>p95_<unit>, [mean, max in the same unit], [texts_per_s]}``
    of call times in ``seconds``: ``unit`` "ms" or "s" ("" for bare keys in seconds), ``digits``
    after rounding, ``extra`` any of "mean" and "max", ``per_call`` (texts per call) adds the
    throughput. Empty ``seconds`` give None values."""
    scale = 1000.0 if unit == "ms" else 1.0
    suffix = f"_{unit}" if unit else ""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(scale * value, digits)

    values = list(seconds)
    out: dict = {n_key: len(values)} if n_key else {}
    out[f"{prefix}p50{suffix}"] = rounded(percentile(values, 0.5))
    out[f"{prefix}p95{suffix}"] = rounded(percentile(values, 0.95))
    if "mean" in extra:
        out[f"{prefix}mean{suffix}"] = rounded(statistics.fmean(values) if values else None)
    if "max" in extra:
        out[f"{prefix}max{suffix}"] = rounded(max(values) if values else None)
    if per_call is not None:
        out["texts_per_s"] = round(per_call * len(values) / sum(values), rate_digits) if values and sum(values) else None
    return out


__all__ = ["HELP", "bench_group", "latency_stats", "timed_calls"]

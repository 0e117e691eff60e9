"""Numbers: seeded bootstrap intervals, ratio figures, set F1, CVSS 3.1 base scores."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from secfm.errors import SecfmError

DEFAULT_BOOTSTRAP = 1000


def ratio(numer: Sequence[float], denom: Sequence[float]) -> float:
    """``sum(numer) / sum(denom)``; NaN when the denominator is zero."""
    d = float(np.sum(denom))
    return float(np.sum(numer)) / d if d else float("nan")


def ratio_ci(
    numer: Sequence[float],
    denom: Sequence[float],
    resamples: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(numer)/sum(denom)`` over items resampled with replacement.

    Every figure here is such a ratio: accuracy (correct / counted), mean absolute deviation
    (deviation / counted), micro-F1 (2TP / (2TP + FP + FN)), a mean of per-item values (x / 1).
    """
    num = np.asarray(numer, dtype=float)
    den = np.asarray(denom, dtype=float)
    n = len(num)
    if n == 0 or resamples < 1:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    chunk = max(1, min(resamples, 4_000_000 // max(n, 1)))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        top, bottom = num[idx].sum(axis=1), den[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[start : start + size] = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)
    if np.all(np.isnan(stats)):
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(stats, [tail, 100 - tail])
    return (float(lo), float(hi))


def figure(numer: Sequence[float], denom: Sequence[float], resamples: int, seed: int) -> tuple[float, tuple[float, float]]:
    """A ratio figure and its 95% bootstrap interval."""
    return ratio(numer, denom), ratio_ci(numer, denom, resamples, seed)


def set_counts(predicted: Iterable[str], gold: Iterable[str]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of two id sets."""
    p, g = set(predicted), set(gold)
    return len(p & g), len(p - g), len(g - p)


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; an empty prediction for an empty gold is perfect."""
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return precision, recall, f1


def prf_figures(tp: int, fp: int, fn: int, digits: int = 4) -> dict:
    """:func:`prf` as a results entry: precision, recall and F1 rounded, with the counts."""
    precision, recall, f1 = prf(tp, fp, fn)
    return {"precision": round(precision, digits), "recall": round(recall, digits), "f1": round(f1, digits),
            "tp": tp, "fp": fp, "fn": fn}


# --- CVSS ----------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def cvss_base_score(vector: str) -> float:
    """CVSS 3.x base score of a vector, computed by the maintained ``cvss`` package."""
    from cvss import CVSS3
    from cvss.exceptions import CVSSError

    try:
        return float(CVSS3(vector.strip()).scores()[0])
    except (CVSSError, ValueError, KeyError) as exc:
        raise SecfmError(f"not a CVSS v3 vector: {vector!r} ({exc})") from exc


@lru_cache(maxsize=1)
def all_base_scores() -> tuple[float, ...]:
    """The base score of every one of the 2,592 CVSS 3.1 base vectors (the uniform random guess)."""
    from secfm.evals.parsers import BASE_METRICS

    keys = list(BASE_METRICS)
    scores = []
    for values in itertools.product(*(BASE_METRICS[k] for k in keys)):
        vector = "CVSS:3.1/" + "/".join(f"{k}:{v}" for k, v in zip(keys, values))
        scores.append(cvss_base_score(vector))
    return tuple(scores)


def worst_deviation(gold_score: float) -> float:
    """The largest possible |predicted - gold| (the strict figure's cost of an unparseable answer)."""
    return max(gold_score, 10.0 - gold_score)

"""Per-item scores and run figures (official and strict, with intervals) and baselines of a task, through
its metric in the registry (secfm.evals.registry: what each figure means, official and strict)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from secfm.errors import SecfmError
from secfm.evals import metrics as M
from secfm.evals.parsers import OK, REFUSAL, Parsed, normalise_cwe, normalise_vector, technique_parents
from secfm.evals.registry import counted, get_metric
from secfm.evals.specs import TaskSpec


# ---------------------------------------------------------------------------------------------
# gold answers
# ---------------------------------------------------------------------------------------------
def normalise_gold(spec: TaskSpec, gold: str):
    g = (gold or "").strip()
    if spec.parser == "mcq_letter":
        return g.upper()
    if spec.parser == "cwe_id":
        return normalise_cwe(g) or g.upper()
    if spec.parser == "cvss_vector":
        vector = normalise_vector(g)
        if vector is None:
            raise SecfmError(f"gold answer {g!r} is not a CVSS v3 vector")
        return vector
    if spec.parser == "technique_ids":
        return sorted(technique_parents(g))
    return g


# ---------------------------------------------------------------------------------------------
# one item
# ---------------------------------------------------------------------------------------------
def score_item(spec: TaskSpec, parsed: Parsed, gold: str, tables=None) -> dict:
    """The scored fields of one prediction record (parsed answer, status, gold, correct, the metric's extras)."""
    answer = list(parsed.answer) if isinstance(parsed.answer, tuple) else parsed.answer
    g = normalise_gold(spec, gold)
    rec: dict = {"parsed": answer, "status": parsed.status, "gold": g}
    rec.update(get_metric(spec.metric).compute(answer if parsed.status == OK else None, g, tables))
    rec["correct"] = bool(rec["correct"])
    return rec


# ---------------------------------------------------------------------------------------------
# a run
# ---------------------------------------------------------------------------------------------
def summarise(
    spec: TaskSpec,
    records: Sequence[dict],
    mode: str = "gen",
    seed: int = 0,
    resamples: int = M.DEFAULT_BOOTSTRAP,
    context: dict | None = None,
    tables=None,
) -> dict:
    """figures, intervals, counts, baselines and the headline of a run's prediction records."""
    if not records:
        raise SecfmError("no predictions to score")
    figures: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}

    def add(name: str, numer, denom) -> None:
        value, (lo, hi) = M.figure(numer, denom, resamples, seed)
        figures[name] = round(value, 6)
        intervals[name] = [round(lo, 6), round(hi, 6)]

    n = len(records)
    in_denominator = counted(records)
    status = Counter(r["status"] for r in records)
    metric = get_metric(spec.metric)
    if mode == "loglik":  # multiple choice by log-likelihood: accuracy under each scoring of the options
        ones = np.ones(n)
        headline_scoring = spec.loglik.headline if spec.loglik else "letter"
        for s in ("letter", "sum", "per_token", "per_char"):
            add(f"accuracy_{s}", [float(r["correct_by"][s]) for r in records], ones)
        add("accuracy", [float(r["correct_by"][headline_scoring]) for r in records], ones)
        add("accuracy_strict", [float(r["correct_by"][headline_scoring]) for r in records], ones)
        headline, higher = "accuracy", True
    else:
        metric.aggregate(records, add, in_denominator)
        headline, higher = metric.headline_figure, metric.higher_is_better
    return {
        "headline": headline,
        "higher_is_better": higher,
        "figures": figures,
        "intervals": intervals,
        "n": n,
        "counts": {
            "parsed": status.get(OK, 0),
            "unparseable": status.get("unparseable", 0),
            "empty": status.get("empty", 0),
            "refusal": status.get(REFUSAL, 0),
            "official_denominator": int(in_denominator.sum()),
        },
        "baselines": baselines(spec, records, mode, seed, context or {}, tables),
    }


def baselines(spec: TaskSpec, records: Sequence[dict], mode: str, seed: int, context: dict, tables=None) -> dict:
    """Majority-class and random-guess figures on the same items (the headline metric)."""
    metric = get_metric(spec.metric)
    if metric.baseline is None:
        return {}
    return metric.baseline([r["gold"] for r in records], seed, context, tables)

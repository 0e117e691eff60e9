"""The metric registry: a task spec names its metric (``metric: accuracy``) and the harness looks it up here.

A :class:`Metric` says how one item is scored (``compute``), how a run's records become figures
with bootstrap intervals (``aggregate``), which figure is the headline, whether higher is better,
and the baselines reported beside it (majority class, random guess). A new metric is one
:func:`register_metric` call; nothing else in the harness names a metric (in the spirit of
lm-evaluation-harness's metric registry).

Official figure: unparseable and empty answers leave the denominator, as CTIBench's notebook does
(refusals stay in it, as wrong answers). Strict figure: every scored item counts; an answer
without a parse is wrong (VSP: the largest possible deviation for its gold score; ATE: no technique).
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from secfm.errors import SecfmError
from secfm.evals import metrics as M
from secfm.evals.parsers import OK, REFUSAL

#: ``add(figure_name, numerators, denominators)``: one ratio figure of the run and its interval
Add = Callable[[str, Sequence[float], Sequence[float]], None]


@dataclass(frozen=True)
class Metric:
    name: str
    #: (answer or None when unparsed, normalised gold, tables) -> the scored fields of one record;
    #: it sets ``correct`` (the per-sample value of the lm-evaluation-harness export)
    compute: Callable[[Any, Any, Any], dict]
    #: (records, add, counted): the run's figures; ``counted`` marks the official denominator
    aggregate: Callable[[Sequence[dict], Add, np.ndarray], None]
    higher_is_better: bool = True
    #: the figure that heads the run (default: the metric's name)
    headline: str = ""
    #: (golds, seed, context, tables) -> {"majority": {...}, "random": {...}}
    baseline: Callable[[list, int, dict, Any], dict] | None = None
    #: (spec, items) -> what the baselines need to know about the task (its labels, its candidates)
    context: Callable[[Any, list], dict] | None = None
    #: figures in CVSS score points rather than fractions (formatted as such in reports and cards)
    point_figures: tuple[str, ...] = ()
    #: figures the terminal line shows beside the headline
    also_show: tuple[str, ...] = ()
    #: the metric's name in lm-evaluation-harness files
    harness_name: str = ""
    #: the figure is the mean of a per-item exact match: the harness export scores it with
    #: lm-evaluation-harness's own ``exact_match`` and reports the standard error of that mean
    harness_exact_match: bool = False

    @property
    def headline_figure(self) -> str:
        return self.headline or self.name

    @property
    def harness(self) -> str:
        return self.harness_name or self.name


_METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    if metric.name in _METRICS:
        raise SecfmError(f"metric '{metric.name}' is already registered")
    _METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise SecfmError(f"unknown metric '{name}' (metrics: {', '.join(sorted(_METRICS))})") from None


def metric_names() -> list[str]:
    return sorted(_METRICS)


def in_points(figure: str) -> bool:
    """Whether a figure (``mad``, ``mad_strict``) is in score points rather than a fraction."""
    return any(figure in m.point_figures for m in _METRICS.values())


def _parsed(records: Sequence[dict]) -> np.ndarray:
    return np.array([r["status"] == OK for r in records], dtype=float)


# ---------------------------------------------------------------------------------------------
# accuracy (exact match): cti-mcqa, cti-rcm
# ---------------------------------------------------------------------------------------------
def _accuracy_item(answer, gold, _tables) -> dict:
    return {"correct": answer is not None and answer == gold}


def _accuracy_figures(records, add: Add, counted) -> None:
    correct = np.array([float(r["correct"]) for r in records])
    add("accuracy", correct * counted, counted)
    add("accuracy_strict", correct, np.ones(len(records)))


def _accuracy_context(spec, _items) -> dict:
    return {"labels": list(spec.loglik.letters)} if spec.loglik is not None else {}


def _accuracy_baseline(golds, _seed, context, _tables) -> dict:
    majority, count = Counter(golds).most_common(1)[0]
    labels = context.get("labels") or sorted(set(golds))
    random_acc = sum(g in labels for g in golds) / (len(golds) * len(labels))
    return {"majority": {"value": round(count / len(golds), 6), "predicts": majority},
            "random": {"value": round(random_acc, 6), "over": f"{len(labels)} labels"}}


# ---------------------------------------------------------------------------------------------
# mean absolute deviation of CVSS base scores: cti-vsp
# ---------------------------------------------------------------------------------------------
def _mad_item(answer, gold, _tables) -> dict:
    gold_score = M.cvss_base_score(gold)
    pred_score = M.cvss_base_score(answer) if answer is not None else None
    return {"gold_score": gold_score, "pred_score": pred_score,
            "abs_dev": round(abs(pred_score - gold_score), 4) if pred_score is not None else None,
            "correct": answer is not None and answer == gold}


def _mad_figures(records, add: Add, _counted) -> None:
    parsed = _parsed(records)
    dev = np.array([r["abs_dev"] if r["abs_dev"] is not None else 0.0 for r in records])
    worst = np.array([M.worst_deviation(r["gold_score"]) for r in records])
    ones = np.ones(len(records))
    add("mad", dev * parsed, parsed)
    add("mad_strict", np.where(parsed > 0, dev, worst), ones)
    add("exact_vector", [float(r["correct"]) for r in records], ones)


def _mad_baseline(golds, _seed, _context, _tables) -> dict:
    majority, _ = Counter(golds).most_common(1)[0]
    maj_score = M.cvss_base_score(majority)
    gold_scores = np.array([M.cvss_base_score(g) for g in golds])
    all_scores = np.array(M.all_base_scores())
    random_mad = float(np.mean([np.mean(np.abs(all_scores - s)) for s in gold_scores]))
    return {"majority": {"value": round(float(np.mean(np.abs(gold_scores - maj_score))), 6), "predicts": majority},
            "random": {"value": round(random_mad, 6), "over": f"{len(all_scores)} base vectors"}}


# ---------------------------------------------------------------------------------------------
# micro-F1 over technique sets: cti-ate
# ---------------------------------------------------------------------------------------------
def _f1_item(answer, gold, _tables) -> dict:
    predicted = answer if answer is not None else []
    tp, fp, fn = M.set_counts(predicted, gold)
    p, r, f1 = M.prf(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(p, 6), "recall": round(r, 6), "f1": round(f1, 6),
            "correct": answer is not None and set(predicted) == set(gold)}


def _f1_figures(records, add: Add, _counted) -> None:
    parsed = _parsed(records)
    tp, fp, fn = (np.array([r[k] for r in records], dtype=float) for k in ("tp", "fp", "fn"))
    add("micro_f1", 2 * tp * parsed, (2 * tp + fp + fn) * parsed)
    add("micro_f1_strict", 2 * tp, 2 * tp + fp + fn)
    for k in ("f1", "precision", "recall"):
        add(f"item_{k}", np.array([r[k] for r in records]) * parsed, parsed)
    add("item_f1_strict", [r["f1"] for r in records], np.ones(len(records)))  # no parse: no technique predicted


def _f1_context(spec, items) -> dict:
    from secfm.evals.parsers import technique_parents

    return {"candidates": sorted({t for i in items for t in technique_parents(i.fields[spec.prompt_column])})}


def _f1_baseline(golds, seed, context, _tables) -> dict:
    m = max(1, round(statistics.median(len(g) for g in golds)))
    freq = Counter(t for g in golds for t in g)
    top = [t for t, _ in freq.most_common(m)]
    candidates = sorted(set(context.get("candidates") or ()) | set(freq))

    def micro(predictions: Sequence[Sequence[str]]) -> float:
        tp = fp = fn = 0
        for p, g in zip(predictions, golds):
            a, b, c = M.set_counts(p, g)
            tp, fp, fn = tp + a, fp + b, fn + c
        return M.prf(tp, fp, fn)[2]

    rng = random.Random(seed)
    draws = [micro([rng.sample(candidates, min(m, len(candidates))) for _ in golds]) for _ in range(50)]
    return {"majority": {"value": round(micro([top] * len(golds)), 6), "predicts": ", ".join(top)},
            "random": {"value": round(float(np.mean(draws)), 6), "over": f"{m} of {len(candidates)} techniques"}}


# ---------------------------------------------------------------------------------------------
# threat-actor attribution (correct alias or plausible relation): cti-taa
# ---------------------------------------------------------------------------------------------
def _taa_item(answer, gold, tables) -> dict:
    from secfm.evals.taa import connection

    conn = connection(gold, answer, tables)
    return {"connection": conn, "correct": conn == "C", "plausible": conn in ("C", "P")}


def _taa_figures(records, add: Add, counted) -> None:
    _accuracy_figures(records, add, counted)
    plausible = np.array([float(r["plausible"]) for r in records])
    add("plausible", plausible * counted, counted)
    add("plausible_strict", plausible, np.ones(len(records)))


def _taa_baseline(golds, _seed, _context, tables) -> dict:
    from secfm.evals.taa import connection, norm

    keys = Counter(norm(g) for g in golds)
    by_key = {norm(g): g for g in golds}
    majority = by_key[keys.most_common(1)[0][0]]

    def acc(pred: str) -> tuple[float, float]:
        conns = [connection(g, pred, tables) for g in golds]
        return conns.count("C") / len(golds), sum(c in "CP" for c in conns) / len(golds)

    maj = acc(majority)
    rand = [acc(label) for label in by_key.values()]
    return {"majority": {"value": round(maj[0], 6), "plausible": round(maj[1], 6), "predicts": majority},
            "random": {"value": round(float(np.mean([r[0] for r in rand])), 6),
                       "plausible": round(float(np.mean([r[1] for r in rand])), 6), "over": f"{len(by_key)} actors"}}


register_metric(Metric("accuracy", _accuracy_item, _accuracy_figures, baseline=_accuracy_baseline,
                       context=_accuracy_context, harness_name="acc", harness_exact_match=True))
register_metric(Metric("mad", _mad_item, _mad_figures, higher_is_better=False, baseline=_mad_baseline,
                       point_figures=("mad", "mad_strict")))
register_metric(Metric("micro_f1", _f1_item, _f1_figures, baseline=_f1_baseline, context=_f1_context,
                       harness_name="f1"))
register_metric(Metric("taa", _taa_item, _taa_figures, headline="accuracy", baseline=_taa_baseline,
                       also_show=("plausible",)))


def counted(records: Sequence[dict]) -> np.ndarray:
    """Items in the official denominator: parsed answers and refusals."""
    return np.array([r["status"] in (OK, REFUSAL) for r in records], dtype=float)


__all__ = ["Add", "Metric", "counted", "get_metric", "in_points", "metric_names", "register_metric"]

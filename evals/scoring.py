"""Per-item scores and run figures (official and strict, with intervals) and baselines, per task metric.

Official figure: unparseable and empty answers are dropped from the denominator, as the
official notebook does (refusals stay in it as wrong answers: the notebook's ``X``).
Strict figure: every scored item counts; an answer without a parse is wrong (VSP: it costs the
largest possible deviation for its gold score; ATE: it predicts no technique).
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence

import numpy as np

from secfm.errors import SecfmError
from secfm.evals import metrics as M
from secfm.evals.parsers import OK, REFUSAL, Parsed, normalise_cwe, normalise_vector, technique_parents
from secfm.evals.specs import TaskSpec

HIGHER_IS_BETTER = {"accuracy": True, "mad": False, "micro_f1": True, "taa": True}
HEADLINE = {"accuracy": "accuracy", "mad": "mad", "micro_f1": "micro_f1", "taa": "accuracy"}


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
    """The scored fields of one prediction record (parsed answer, status, gold, correct, extras)."""
    answer = list(parsed.answer) if isinstance(parsed.answer, tuple) else parsed.answer
    g = normalise_gold(spec, gold)
    rec: dict = {"parsed": answer, "status": parsed.status, "gold": g}
    ok = parsed.status == OK
    if spec.metric == "accuracy":
        rec["correct"] = bool(ok and answer == g)
    elif spec.metric == "mad":
        gold_score = M.cvss_base_score(g)
        rec["gold_score"] = gold_score
        rec["pred_score"] = M.cvss_base_score(answer) if ok else None
        rec["abs_dev"] = round(abs(rec["pred_score"] - gold_score), 4) if ok else None
        rec["correct"] = bool(ok and answer == g)
    elif spec.metric == "micro_f1":
        predicted = answer if ok else []
        tp, fp, fn = M.set_counts(predicted, g)
        p, r, f1 = M.prf(tp, fp, fn)
        rec.update(tp=tp, fp=fp, fn=fn, precision=round(p, 6), recall=round(r, 6), f1=round(f1, 6))
        rec["correct"] = bool(ok and set(predicted) == set(g))
    elif spec.metric == "taa":
        from secfm.evals.taa import connection

        conn = connection(g, answer if ok else None, tables)
        rec.update(connection=conn, correct=conn == "C", plausible=conn in ("C", "P"))
    return rec


# ---------------------------------------------------------------------------------------------
# a run
# ---------------------------------------------------------------------------------------------
def _counted(records: Sequence[dict]) -> np.ndarray:
    """Items in the official denominator: parsed answers and refusals."""
    return np.array([r["status"] in (OK, REFUSAL) for r in records], dtype=float)


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
    context = context or {}
    figures: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}

    def add(name: str, numer, denom) -> None:
        value, (lo, hi) = M.figure(numer, denom, resamples, seed)
        figures[name] = round(value, 6)
        intervals[name] = [round(lo, 6), round(hi, 6)]

    n = len(records)
    ones = np.ones(n)
    counted = _counted(records)
    status = Counter(r["status"] for r in records)
    metric = spec.metric
    if mode == "loglik":
        scorings = ("letter", "sum", "per_token", "per_char")
        headline_scoring = spec.loglik.headline if spec.loglik else "letter"
        for s in scorings:
            add(f"accuracy_{s}", [float(r["correct_by"][s]) for r in records], ones)
        add("accuracy", [float(r["correct_by"][headline_scoring]) for r in records], ones)
        add("accuracy_strict", [float(r["correct_by"][headline_scoring]) for r in records], ones)
    elif metric in ("accuracy", "taa"):
        correct = np.array([float(r["correct"]) for r in records])
        add("accuracy", correct * counted, counted)
        add("accuracy_strict", correct, ones)
        if metric == "taa":
            plausible = np.array([float(r["plausible"]) for r in records])
            add("plausible", plausible * counted, counted)
            add("plausible_strict", plausible, ones)
    elif metric == "mad":
        parsed = np.array([r["status"] == OK for r in records], dtype=float)
        dev = np.array([r["abs_dev"] if r["abs_dev"] is not None else 0.0 for r in records])
        worst = np.array([M.worst_deviation(r["gold_score"]) for r in records])
        add("mad", dev * parsed, parsed)
        add("mad_strict", np.where(parsed > 0, dev, worst), ones)
        add("exact_vector", [float(r["correct"]) for r in records], ones)
    elif metric == "micro_f1":
        parsed = np.array([r["status"] == OK for r in records], dtype=float)
        tp = np.array([r["tp"] for r in records], dtype=float)
        fp = np.array([r["fp"] for r in records], dtype=float)
        fn = np.array([r["fn"] for r in records], dtype=float)
        add("micro_f1", 2 * tp * parsed, (2 * tp + fp + fn) * parsed)
        add("micro_f1_strict", 2 * tp, 2 * tp + fp + fn)
        for k in ("f1", "precision", "recall"):
            add(f"item_{k}", np.array([r[k] for r in records]) * parsed, parsed)
        add("item_f1_strict", [r["f1"] for r in records], ones)  # no parse: no technique predicted
    headline = HEADLINE[metric] if mode != "loglik" else "accuracy"
    return {
        "headline": headline,
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "figures": figures,
        "intervals": intervals,
        "n": n,
        "counts": {
            "parsed": status.get(OK, 0),
            "unparseable": status.get("unparseable", 0),
            "empty": status.get("empty", 0),
            "refusal": status.get(REFUSAL, 0),
            "official_denominator": int(counted.sum()),
        },
        "baselines": baselines(spec, records, mode, seed, context, tables),
    }


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------
def baselines(spec: TaskSpec, records: Sequence[dict], mode: str, seed: int, context: dict, tables=None) -> dict:
    """Majority-class and random-guess figures on the same items (the headline metric)."""
    golds = [r["gold"] for r in records]
    metric = spec.metric
    if metric == "accuracy":
        majority, count = Counter(golds).most_common(1)[0]
        labels = context.get("labels") or sorted(set(golds))
        random_acc = sum(g in labels for g in golds) / (len(golds) * len(labels))
        return {
            "majority": {"value": round(count / len(golds), 6), "predicts": majority},
            "random": {"value": round(random_acc, 6), "over": f"{len(labels)} labels"},
        }
    if metric == "mad":
        majority, _ = Counter(golds).most_common(1)[0]
        maj_score = M.cvss_base_score(majority)
        gold_scores = np.array([M.cvss_base_score(g) for g in golds])
        all_scores = np.array(M.all_base_scores())
        random_mad = float(np.mean([np.mean(np.abs(all_scores - s)) for s in gold_scores]))
        return {
            "majority": {"value": round(float(np.mean(np.abs(gold_scores - maj_score))), 6), "predicts": majority},
            "random": {"value": round(random_mad, 6), "over": f"{len(all_scores)} base vectors"},
        }
    if metric == "micro_f1":
        sizes = [len(g) for g in golds]
        m = max(1, round(statistics.median(sizes)))
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
        return {
            "majority": {"value": round(micro([top] * len(golds)), 6), "predicts": ", ".join(top)},
            "random": {"value": round(float(np.mean(draws)), 6), "over": f"{m} of {len(candidates)} techniques"},
        }
    if metric == "taa":
        from secfm.evals.taa import connection, norm

        keys = Counter(norm(g) for g in golds)
        by_key = {norm(g): g for g in golds}
        majority = by_key[keys.most_common(1)[0][0]]
        labels = list(by_key.values())

        def acc(pred: str) -> tuple[float, float]:
            conns = [connection(g, pred, tables) for g in golds]
            return conns.count("C") / len(golds), sum(c in "CP" for c in conns) / len(golds)

        maj = acc(majority)
        rand = [acc(lab) for lab in labels]
        return {
            "majority": {"value": round(maj[0], 6), "plausible": round(maj[1], 6), "predicts": majority},
            "random": {
                "value": round(float(np.mean([r[0] for r in rand])), 6),
                "plausible": round(float(np.mean([r[1] for r in rand])), 6),
                "over": f"{len(labels)} actors",
            },
        }
    return {}

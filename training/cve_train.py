"""`secfm train head --task cwe|cvss`: the NVD-trained CVE heads, chosen on validation, scored once on test.

1. the data: a `secfm data cve` folder (``--cve-data``; or built from ``--feeds`` into the
   cache), minus ``--exclude-cves`` and their near duplicates;
2. the baseline: TF-IDF (word 1-2 grams, 200k features) + multinomial logistic regression, its
   L2 strength chosen on the validation split;
3. the head designs (vocabulary, class weighting, recency weighting, hidden-state layers), each
   scored on the validation split; the best is chosen (a design no better than the baseline's
   validation score is never chosen over the baseline's own configuration);
4. the chosen head and the baseline are scored on the test split (and later_test) once;
5. the head is saved (``--out`` or the shipped folder) with the CVEs it trained on, and the
   results go through :mod:`secfm.provenance` (command, commit, data digests, load).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from secfm.errors import SecfmError
from secfm.training.cve_heads import (
    CveFitConfig,
    Design,
    hidden_features,
    prepare,
    save_trained,
    task_metrics,
    train_design,
)

log = logging.getLogger(__name__)

BASELINE_FEATURES = 200_000
BASELINE_L2 = (1e-6, 3e-6)
#: the largest text weight matrix (vocabulary x labels, int8 bytes) a head may carry
MAX_TEXT_WEIGHTS = 8_000_000


def default_designs(task: str, layers: Sequence[Sequence[int]] = ()) -> list[Design]:
    """The head designs tried on the validation split: recency weighting (NVD's CWE usage and
    scoring practice drift over the years), class weighting, hidden-state layers."""
    base = CveFitConfig(text_l2=1e-6)
    # the shipped head stays small: vocabulary x classes int8 weights (CWE: ~20k x ~150 = 3 MB)
    vocab = 20_000 if task == "cwe" else 50_000
    k = f"{vocab // 1000}k"
    designs = [
        Design(f"tfidf-{k}-recency-0.15", vocab, (), replace(base, recency=0.15)),
        Design(f"tfidf-{k}-recency-0.3", vocab, (), replace(base, recency=0.3)),
    ]
    if task == "cwe":
        designs.append(Design(f"tfidf-{k}-recency-0.3-sqrt-weights", vocab, (), replace(base, recency=0.3, class_weight="sqrt")))
    for lay in layers:
        designs.append(Design(f"tfidf-{k}-recency-0.3+layers-{'+'.join(map(str, lay))}", vocab, tuple(lay),
                              replace(base, recency=0.3)))
    return designs


class HiddenCache:
    """Hidden-state features per split and layer set (from the on-disk feature cache)."""

    def __init__(self, data, model: str | None, engine=None):
        self.data, self.model, self.engine = data, model, engine
        self._got: dict[tuple, np.ndarray] = {}

    def __call__(self, split: str, layers: tuple[int, ...]) -> np.ndarray:
        key = (split, layers)
        if key not in self._got:
            self._got[key] = hidden_features(self.data.texts[split], layers, model=self.model, engine=self.engine,
                                             label=f"{self.data.task} {split} features")
        return self._got[key]


def run_cve_training(task: str, cve_data: str | Path, *, out: str | Path | None = None,
                     results: str | Path | None = None, exclude_cves: set[str] | None = None,
                     designs: Sequence[Design] | None = None, layers: Sequence[Sequence[int]] = (),
                     model: str | None = None, baseline: bool = True, min_count: int = 10, command: str = "",
                     allow_busy: bool = True, engine=None, resamples: int = 1000,
                     progress: Callable[[str], None] | None = None, limit: int | None = None) -> dict:
    """Train, choose and score the ``task`` head; returns the results payload."""
    from secfm.provenance import recording
    from secfm.registry import default_model_name
    from secfm.training.cve_data import load_cve_splits, read_card

    say = progress or (lambda s: log.info("%s", s))
    started = time.time()
    model = model or default_model_name()
    splits = load_cve_splits(cve_data)
    if limit:
        splits = {s: rows[:: max(1, len(rows) // limit)][:limit] for s, rows in splits.items()}
    data = prepare(splits, task, min_count=min_count, exclude=exclude_cves)
    if not data.texts["train"] or not data.texts["validation"] or not data.texts["test"]:
        raise SecfmError(f"{cve_data}: the train, validation or test split has no {task} rows")
    say(f"{task}: {len(data.texts['train']):,} train / {len(data.texts['validation']):,} validation / "
        f"{len(data.texts['test']):,} test rows, {len(data.labels)} classes")
    hidden = HiddenCache(data, model, engine)
    designs = list(designs or default_designs(task, layers))
    with recording(data_files=[Path(cve_data) / "data_card.json"], allow_busy=allow_busy, command=command or None) as rec:
        tried = []
        base_trained = None
        if baseline:
            for l2 in BASELINE_L2:
                d = Design(f"baseline-l2-{l2:g}", BASELINE_FEATURES, (), CveFitConfig(text_l2=l2))
                t = train_design(data, d, hidden)
                say(f"baseline {d.name}: validation {t.val_score:.4f} ({t.seconds}s)")
                tried.append({"design": d.describe(), "role": "baseline", "validation_score": t.val_score,
                              "best_epoch": t.history["best_epoch"], "seconds": t.seconds})
                if base_trained is None or t.val_score > base_trained.val_score:
                    base_trained = t
        best = None
        for d in designs:
            t = train_design(data, d, hidden)
            say(f"head {d.name}: validation {t.val_score:.4f} ({t.seconds}s)")
            tried.append({"design": d.describe(), "role": "head", "validation_score": t.val_score,
                          "best_epoch": t.history["best_epoch"], "seconds": t.seconds})
            if best is None or t.val_score > best.val_score:
                best = t
        note = None
        if base_trained is not None and best.val_score <= base_trained.val_score:
            size = len(base_trained.vectorizer.vocabulary_) * len(data.labels)
            if size <= MAX_TEXT_WEIGHTS:
                note = "no head design beat the baseline on validation: the head is the baseline's configuration"
                best = base_trained
            else:
                note = (f"no head design beat the baseline on validation, and the baseline's configuration "
                        f"({size / 1e6:.0f} MB of int8 weights) is too large to ship: the best head design is kept")
            say(note)
        # the test split, once, for the chosen head and the baseline
        eval_splits = [s for s in ("validation", "test", "later_test") if data.texts[s]]
        chosen = _score(best, data, hidden, eval_splits, resamples)
        base = _score(base_trained, data, hidden, eval_splits, resamples) if base_trained is not None else None
        payload = {
            "task": task, "command": rec.provenance.command, "model": model,
            "data": {"cve_data": str(cve_data), "card": {k: read_card(cve_data).get(k) for k in ("splits", "steps", "near_duplicates")},
                     **{k: v for k, v in data.info.items() if not k.startswith("_")}},
            "selection": {"metric": "validation top-1" if task == "cwe" else "validation mean per-metric accuracy",
                          "tried": tried, "rule": "best validation score; the test split is scored once, after the choice"},
            "chosen": {"design": best.design.describe(), "best_epoch": best.history["best_epoch"], "note": note},
            "head": chosen, "baseline": base,
            "baseline_config": base_trained.design.describe() if base_trained is not None else None,
            "seconds": round(time.time() - started, 1),
        }
        if out is not None:
            out = Path(out)
            metrics = {s: chosen[s] for s in chosen}
            metrics["baseline_test"] = base["test"] if base else None
            save_trained(best, data, model, metrics, rec.provenance.command, out)
            payload["head_dir"] = str(out)
            payload["head_bytes"] = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
            say(f"saved the {task} head to {out} ({payload['head_bytes'] / 1e6:.2f} MB)")
        if results is not None:
            results = Path(results)
            results.mkdir(parents=True, exist_ok=True)
            stem = f"heads-cve-{task}" + ("-excl" if exclude_cves else "")
            stamped = rec.write_json(results / f"{stem}.json", payload)
            rec.write_text(results / f"{stem}.md", results_markdown(stamped))
            payload = stamped
    return payload


def _score(trained, data, hidden, splits, resamples: int) -> dict:
    from secfm.training.cve_heads import predict

    out = {}
    objective = "multiclass" if data.task == "cwe" else "groups"
    for s in splits:
        P = trained.P.get(s)
        if P is None:
            T = trained.vectorizer.transform(data.texts[s])
            X = hidden(s, trained.design.layers) if trained.design.layers else None
            P = predict(trained.module, T, X, objective, data.labels)
        out[s] = task_metrics(data.task, P, data.labels, data.gold[s], resamples=resamples)
    return out


def _fmt_ci(m: dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    return f"{m[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{m[key]:.3f}"


def results_markdown(r: dict) -> str:
    task = r["task"]
    title = "CVE description to CWE (NVD)" if task == "cwe" else "CVE description to CVSS v3.1 base vector (NVD)"
    d = r["data"]
    lines = [f"# CVE head: {title}", "", f"Made by: `{r['command']}`", "",
             f"- data: `{d['cve_data']}`; rows: " + ", ".join(f"{k} {v:,}" for k, v in d["rows"].items()),
             f"- classes: {d['classes']}" + (f" (CWE ids with at least {d['min_count']} training CVEs, of {d['cwe_ids_in_train']} NVD uses in train; "
                                              f"{d['rare_cwe_ids']} rarer ids: {d['rare_cwe_ids_mapped']} trained under their nearest ancestor in the "
                                              f"label set ({d['rare_train_cves_mapped_to_an_ancestor']:,} labels), {d['rare_cwe_ids_without_ancestor']} "
                                              f"without one ({d['rare_train_labels_without_ancestor']:,} labels left out); share of test CVEs whose "
                                              f"gold CWE is a class: {d['coverage']['test']})" if task == "cwe" else " (8 metrics)"),
             f"- excluded CVEs (with their near duplicates): {d['excluded_cves']:,}",
             f"- chosen design: `{r['chosen']['design']['name']}` ({json.dumps(r['chosen']['design'])})",
             f"- baseline: TF-IDF + multinomial logistic regression, `{(r['baseline_config'] or {}).get('name')}`", ""]
    for split in ("test", "validation", "later_test"):
        if split not in r["head"]:
            continue
        name = {"test": "Test split (scored once)", "validation": "Validation split (designs chosen here)",
                "later_test": "Later test (published after the test split)"}[split]
        lines += [f"## {name}", ""]
        rows = [("head", r["head"][split])] + ([("baseline TF-IDF + LR", r["baseline"][split])] if r.get("baseline") else [])
        if task == "cwe":
            lines += ["| system | n | top-1 [95% CI] | top-5 [95% CI] | macro-F1 [95% CI] | ECE |", "|---|---|---|---|---|---|"]
            for label, m in rows:
                lines.append(f"| {label} | {m['n']:,} | {_fmt_ci(m, 'top1')} | {_fmt_ci(m, 'top5')} | {_fmt_ci(m, 'macro_f1')} | {m['ece']:.3f} |")
        else:
            lines += ["| system | n | MAD [95% CI] | exact vector [95% CI] | " + " | ".join(m for m in ("AV", "AC", "PR", "UI", "S", "C", "I", "A")) + " |",
                      "|---|---|---|---|" + "---|" * 8]
            for label, m in rows:
                pm = m["per_metric_accuracy"]
                lines.append(f"| {label} | {m['n']:,} | {_fmt_ci(m, 'mad')} | {_fmt_ci(m, 'exact_vector')} | "
                             + " | ".join(f"{pm[k]:.3f}" for k in ("AV", "AC", "PR", "UI", "S", "C", "I", "A")) + " |")
        lines.append("")
    lines += ["## Designs tried (validation)", "", "| role | design | validation | best epoch | seconds |", "|---|---|---|---|---|"]
    for t in r["selection"]["tried"]:
        lines.append(f"| {t['role']} | {t['design']['name']} | {t['validation_score']:.4f} | {t['best_epoch']} | {t['seconds']} |")
    lines += ["", f"Rule: {r['selection']['rule']}. Metric: {r['selection']['metric']}.",
              "Intervals: 95% percentile bootstrap over CVEs (1,000 resamples; macro-F1 300).", ""]
    return "\n".join(lines)


__all__ = ["default_designs", "results_markdown", "run_cve_training"]

"""Training and choosing the document-level ATT&CK extractor on the ATT&CK development set.

The development set (:func:`secfm.training.head_data.build_attack_documents`) is paragraphs
about one software, group or campaign, gold = their parent techniques, split by entity exactly
as the sentence head's rows: the head trained on the ``train`` entities; the retrieval index
here holds only the ``train`` entities' procedure examples; every parameter of a variant
(thresholds, the document model, its rule) is fit on the ``val`` documents; the ``test``
documents (held-out entities) are scored once per variant. No benchmark file is read.

Variants, each on the same splits:

* ``tfidf-sentence-max`` (baseline): TF-IDF + logistic regression trained on the training
  sentences, a technique's document score its best sentence's, one threshold tuned on the val
  documents; ``tfidf-document``: the same model on the whole document at once;
* ``head-sentence-thresholds``: the sentence head's best sentence against the head's own
  (sentence-tuned) thresholds: what secfm shipped before;
* ``head-max``: the head's best sentence, one threshold tuned on the val documents;
* ``retrieval``: the nearest procedure examples' vote alone, threshold tuned on val documents;
* ``document-model`` (``threshold``, ``relative``, ``count``): a logistic regression over
  the head and retrieval signals aggregated per document (:data:`DOC_FEATURES`), fit on the val
  documents (5-fold cross-fit by entity for its val figure), with its decision rule;
  ``document-model-no-retrieval``: the same without the retrieval signals (ablation).

The variant with the best val micro-F1 is chosen; the results (every variant's val and test
micro-F1 with 95% bootstrap intervals over held-out entities, Enterprise/Mobile/ICS and
alert-sized one-sentence documents apart) are written through :mod:`secfm.provenance`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from secfm.errors import SecfmError

log = logging.getLogger(__name__)

THRESHOLDS = np.round(np.arange(0.02, 0.96, 0.01), 2)
RATIOS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)
FOLDS = 5
FOLD_SALT = "secfm-doc-folds"
#: one-sentence documents per val/test entity (alert-sized calibration and report)
SENTENCES_PER_ENTITY = 2
BOOTSTRAP = 1000
#: the short-text path (no retrieval) is taken when its val F1 on the one-sentence documents is
#: at most this much below the full path's
SHORT_TOLERANCE = 0.02
#: the folder (inside the extractor's head folder) of the short-text path's shallower sentence head
SHORT_HEAD_DIR = "short"
#: a candidate (document, technique) row: some signal at all (the rest are certain negatives)
CANDIDATE_MIN = 0.01
LR_C = 1.0


# ---------------------------------------------------------------------------------------------
# signals of the development documents
# ---------------------------------------------------------------------------------------------
def document_signals_for(extractor, texts: Sequence[str], engine=None) -> list[dict]:
    """:meth:`AttackExtractor.signals` for development documents, with the sentence features
    and the MiniLM embeddings read from (and added to) the on-disk caches."""
    from secfm.features import features, head_layers, stack_layers
    from secfm.workflows.attack_extraction import cached_embeddings

    def featurize(segments: list[str], head) -> np.ndarray:
        m = head.manifest
        layers = head_layers(m)
        got = features(segments, layers, [m.pooling], engine=engine or extractor.engine, max_length=m.max_length,
                       batch_size=16, label="development sentences")
        return stack_layers(got, layers, m.pooling)

    return extractor.signals(texts, featurize=featurize, embed=lambda segs: cached_embeddings(segs))


def parent_gold(docs, parent_labels: Sequence[str]) -> np.ndarray:
    where = {t: j for j, t in enumerate(parent_labels)}
    Y = np.zeros((len(docs), len(parent_labels)), dtype=bool)
    for i, d in enumerate(docs):
        for t in d.labels:
            if t in where:
                Y[i, where[t]] = True
    return Y


# ---------------------------------------------------------------------------------------------
# scoring: micro P/R/F1 with a bootstrap over entities
# ---------------------------------------------------------------------------------------------
def counts(pred: np.ndarray, gold: np.ndarray, unreachable: np.ndarray | None = None) -> np.ndarray:
    """(documents, 3): tp, fp, fn per document (``unreachable``: gold the label space lacks)."""
    tp = (pred & gold).sum(axis=1)
    fp = (pred & ~gold).sum(axis=1)
    fn = (~pred & gold).sum(axis=1) + (unreachable if unreachable is not None else 0)
    return np.stack([tp, fp, fn], axis=1).astype(np.int64)


def micro(c: np.ndarray) -> dict:
    tp, fp, fn = (int(x) for x in c.sum(axis=0)) if len(c) else (0, 0, 0)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
    return {"micro_f1": round(f, 4), "micro_precision": round(p, 4), "micro_recall": round(r, 4), "tp": tp, "fp": fp,
            "fn": fn}


def figure(c: np.ndarray, entities: Sequence[str], resamples: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Micro P/R/F1 and the 95% percentile-bootstrap interval of micro-F1, resampling entities
    (a held-out entity's documents are resampled together)."""
    from secfm.evals.metrics import ratio_ci

    out = micro(c)
    by: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(3, dtype=np.int64))
    for row, e in zip(c, entities):
        by[e] = by[e] + row
    rows = np.asarray(list(by.values())) if by else np.zeros((0, 3))
    numer = 2 * rows[:, 0]
    denom = 2 * rows[:, 0] + rows[:, 1] + rows[:, 2]
    lo, hi = ratio_ci(numer, denom, resamples, seed)
    out.update({"micro_f1_ci95": [round(lo, 4), round(hi, 4)], "documents": int(len(c)), "entities": len(by),
                "mean_predicted": round(float((c[:, 0] + c[:, 1]).mean()), 2) if len(c) else 0.0,
                "mean_gold": round(float((c[:, 0] + c[:, 2]).mean()), 2) if len(c) else 0.0})
    return out


def best_threshold(scores: np.ndarray, gold: np.ndarray, unreachable: np.ndarray, grid=THRESHOLDS) -> tuple[float, float]:
    """The threshold (and micro-F1) that maximizes micro-F1 of ``scores >= t`` over the documents."""
    best = (0.5, -1.0)
    for t in grid:
        f = micro(counts(scores >= t, gold, unreachable))["micro_f1"]
        if f > best[1] + 1e-9:
            best = (float(t), f)
    return best


# ---------------------------------------------------------------------------------------------
# the document model: features, fit, rules
# ---------------------------------------------------------------------------------------------
def feature_tensor(extractor, sigs: list[dict]) -> np.ndarray:
    """(documents, parents, features) of :data:`DOC_FEATURES`."""
    from secfm.workflows.attack_extraction import document_signals

    P = extractor._parents
    return np.stack([document_signals(s["S"][:, P], s["share"], s["best"], extractor._prior, extractor._domain_index)
                     for s in sigs])


def _fit_lr(F: np.ndarray, Y: np.ndarray, mask: np.ndarray, keep: np.ndarray, C: float = LR_C):
    """Logistic regression on the candidate rows (``mask``) of the kept features (``keep``);
    returns (mean, scale, coef over all features (0 where dropped), intercept)."""
    from sklearn.linear_model import LogisticRegression

    X = F[mask][:, keep].astype(np.float64)
    y = Y[mask]
    mean = X.mean(axis=0)
    scale = X.std(axis=0) + 1e-6
    lr = LogisticRegression(C=C, max_iter=2000)
    lr.fit((X - mean) / scale, y)
    full_mean = np.zeros(F.shape[-1])
    full_scale = np.ones(F.shape[-1])
    coef = np.zeros(F.shape[-1])
    full_mean[keep], full_scale[keep], coef[keep] = mean, scale, lr.coef_[0]
    return full_mean, full_scale, coef, float(lr.intercept_[0])


def _probabilities(F: np.ndarray, mask: np.ndarray, params) -> np.ndarray:
    mean, scale, coef, intercept = params
    z = ((F - mean) / scale) @ coef + intercept
    p = 1.0 / (1.0 + np.exp(-z))
    return np.where(mask, p, 0.0)


def _decide(p: np.ndarray, rule: str, threshold: float, ratio: float = 0.0, count: tuple[float, float] = (1.0, 0.0)) -> np.ndarray:
    """Boolean (documents, parents) predictions of a rule (see DocumentModel.decide)."""
    pred = p >= threshold
    if rule == "relative":
        pred &= p >= ratio * p.max(axis=1, keepdims=True)
    elif rule == "count":
        k = np.clip(np.round(count[0] * p.sum(axis=1) + count[1]), 1, 30).astype(int)
        order = np.argsort(-p, axis=1)
        top = np.zeros_like(pred)
        for i in range(len(p)):
            top[i, order[i, : k[i]]] = True
        pred &= top
    return pred


def _tune_rule(p: np.ndarray, Y: np.ndarray, unreachable: np.ndarray, rule: str) -> tuple[dict, float]:
    """The rule's parameters that maximize micro-F1 on (p, Y)."""
    best: tuple[dict, float] = ({"threshold": 0.5}, -1.0)
    if rule == "threshold":
        t, f = best_threshold(p, Y, unreachable)
        return {"threshold": t}, f
    if rule == "relative":
        for ratio in RATIOS:
            for t in THRESHOLDS[::2]:
                f = micro(counts(_decide(p, rule, t, ratio), Y, unreachable))["micro_f1"]
                if f > best[1] + 1e-9:
                    best = ({"threshold": float(t), "ratio": ratio}, f)
        return best
    # count: k = round(a * sum(p) + b), fit by least squares of the gold count, then a floor on p
    gold_count = Y.sum(axis=1) + unreachable
    A = np.stack([p.sum(axis=1), np.ones(len(p))], axis=1)
    a, b = np.linalg.lstsq(A, gold_count, rcond=None)[0]
    for t in (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3):
        f = micro(counts(_decide(p, rule, t, count=(a, b)), Y, unreachable))["micro_f1"]
        if f > best[1] + 1e-9:
            best = ({"threshold": float(t), "count_a": float(a), "count_b": float(b)}, f)
    return best


def _folds(entities: Sequence[str], k: int = FOLDS) -> np.ndarray:
    from secfm.training.head_data import stable_fraction

    return np.asarray([int(stable_fraction(e, FOLD_SALT) * k) for e in entities])


# ---------------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------------
def run_document_harness(head_dir: str | Path, engine=None, exclude_sources: Sequence[str] = (),
                         progress: Callable[[str], None] | None = None, baseline: bool = True,
                         limit: int | None = None, short_head: str | Path | None = None) -> tuple[dict, object, object]:
    """Fit and compare every variant on the development set. Returns (results, the chosen
    :class:`DocumentModel`, the retrieval index of the head's training entities).
    ``short_head``: a shallower sentence head (same labels, trained on the same entities) the
    short-text path may use; the chosen model's ``short["head"]`` is then :data:`SHORT_HEAD_DIR`,
    where the caller puts a copy of it."""
    from secfm.heads import load_head
    from secfm.knowledge import load_attack
    from secfm.training.head_data import build_attack_dataset, build_attack_documents, stable_fraction
    from secfm.workflows.attack_extraction import DOC_FEATURES, AttackExtractor, DocumentModel, ProcedureIndex

    say = progress or (lambda msg: log.info("%s", msg))
    started = time.time()
    attack = load_attack()
    head = load_head(head_dir)
    trained = set(head.manifest.trained_sources)
    excluded = {s.upper() for s in exclude_sources}
    docs = build_attack_documents(attack, exclude_sources=sorted(excluded) or None, one_sentence=SENTENCES_PER_ENTITY)
    held = [d for d in docs if d.split in ("val", "test")]
    if limit:
        keep = sorted({d.entity for d in held}, key=lambda e: stable_fraction(e, "secfm-doc-limit"))[:limit]
        held = [d for d in held if d.entity in set(keep)]
    leaked = sorted({d.entity for d in held} & trained)
    if leaked:
        raise SecfmError(f"the head {head_dir} was trained on {len(leaked)} development entities ({', '.join(leaked[:5])}); "
                         "train it on the train split of the same entity split")
    say(f"development documents: {sum(d.split == 'val' for d in held)} val / {sum(d.split == 'test' for d in held)} test "
        f"({len({d.entity for d in held})} held-out entities; the head trained on {len(trained)})")
    say("retrieval index: procedure examples of the head's training entities")
    index = ProcedureIndex.build(attack, sources=trained, exclude_sources=sorted(excluded))
    extractor = AttackExtractor(head, engine, index=index, document=False)
    sigs = document_signals_for(extractor, [d.text for d in held], engine)
    parents = extractor._parent_labels
    Y = parent_gold(held, parents)
    unreachable = np.asarray([len(set(d.labels) - set(parents)) for d in held])
    F = feature_tensor(extractor, sigs)
    fi = {name: i for i, name in enumerate(DOC_FEATURES)}
    h_max = np.exp(F[:, :, fi["head_max_logit"]]) / (1 + np.exp(F[:, :, fi["head_max_logit"]]))
    v_max = F[:, :, fi["vote_max"]]
    mask = (h_max >= CANDIDATE_MIN) | (v_max >= CANDIDATE_MIN)
    splits = np.asarray([d.split for d in held])
    forms = np.asarray([d.form for d in held])
    entities = np.asarray([d.entity for d in held])
    domains = np.asarray([d.domain for d in held])
    val_para = (splits == "val") & (forms == "paragraph")
    val_all = splits == "val"
    test_para = (splits == "test") & (forms == "paragraph")
    test_single = (splits == "test") & (forms == "sentence")

    def report(pred: np.ndarray) -> dict:
        c = counts(pred, Y, unreachable)
        out = {"test": figure(c[test_para], entities[test_para])}
        for dom in ("enterprise", "mobile", "ics"):
            sel = test_para & (domains == dom)
            if sel.any():
                out[f"test_{dom}"] = figure(c[sel], entities[sel])
        out["test_one_sentence"] = figure(c[test_single], entities[test_single])
        return out

    variants: dict[str, dict] = {}

    def add(name: str, val_f1: float, pred: np.ndarray, params: dict, what: str) -> None:
        res = {"what": what, "val_micro_f1": round(val_f1, 4), "params": params, **report(pred)}
        variants[name] = res
        say(f"{name}: val {val_f1:.3f}, test {res['test']['micro_f1']:.3f} {res['test']['micro_f1_ci95']}")

    # -- the head alone -----------------------------------------------------------------------
    sent_thr = extractor.sentence_thresholds[extractor._parents]
    add("head-sentence-thresholds", micro(counts((h_max >= sent_thr)[val_para], Y[val_para], unreachable[val_para]))["micro_f1"],
        h_max >= sent_thr, {"thresholds": head.manifest.threshold_mode},
        "best sentence against the head's own sentence-tuned thresholds (what secfm shipped before)")
    t, f = best_threshold(h_max[val_para], Y[val_para], unreachable[val_para])
    add("head-max", f, h_max >= t, {"threshold": t}, "best sentence, one threshold tuned on the val documents")
    # -- retrieval alone ----------------------------------------------------------------------
    t, f = best_threshold(v_max[val_para], Y[val_para], unreachable[val_para])
    add("retrieval", f, v_max >= t, {"threshold": t, "neighbours": extractor.index and 10},
        "nearest procedure examples' similarity-weighted vote (best sentence), threshold tuned on val documents")
    # -- TF-IDF baseline ----------------------------------------------------------------------
    if baseline:
        _tfidf_variants(add, held, sigs, extractor, excluded, Y, unreachable, val_para, build_attack_dataset)
    # -- the document model -------------------------------------------------------------------
    folds = _folds(entities)
    all_features = np.arange(len(DOC_FEATURES))
    no_retrieval = np.asarray([i for i, n in enumerate(DOC_FEATURES) if not n.startswith("vote") and n != "head_x_vote"])
    chosen_models: dict[str, DocumentModel] = {}
    oof: dict[str, np.ndarray] = {}
    for label, keep in (("document-model", all_features), ("document-model-no-retrieval", no_retrieval)):
        # out-of-fold probabilities on val (fit on the other folds' val documents, all forms)
        p_oof = np.zeros_like(h_max)
        for k in range(FOLDS):
            fit_rows = val_all & (folds != k)
            pred_rows = val_all & (folds == k)
            if not pred_rows.any() or not fit_rows.any():
                continue
            params = _fit_lr(F[fit_rows], Y[fit_rows], mask[fit_rows], keep)
            p_oof[pred_rows] = _probabilities(F[pred_rows], mask[pred_rows], params)
        oof[label] = p_oof
        final = _fit_lr(F[val_all], Y[val_all], mask[val_all], keep)
        p_test = _probabilities(F, mask, final)
        for rule in ("threshold", "relative", "count"):
            rp, f = _tune_rule(p_oof[val_para], Y[val_para], unreachable[val_para], rule)
            pred = _decide(p_test, rule, rp["threshold"], rp.get("ratio", 0.0), (rp.get("count_a", 1.0), rp.get("count_b", 0.0)))
            name = f"{label}/{rule}"
            add(name, f, np.where(val_all[:, None], _decide(p_oof, rule, rp["threshold"], rp.get("ratio", 0.0),
                                                            (rp.get("count_a", 1.0), rp.get("count_b", 0.0))), pred),
                rp, f"logistic regression over {'head and retrieval' if label == 'document-model' else 'head'} signals "
                    f"per document, fit on val documents; rule {rule}")
            mean, scale, coef, intercept = final
            chosen_models[name] = DocumentModel(
                features=list(DOC_FEATURES), mean=[round(float(x), 6) for x in mean], scale=[round(float(x), 6) for x in scale],
                coef=[round(float(x), 6) for x in coef], intercept=round(intercept, 6), rule=rule,
                threshold=rp["threshold"], ratio=rp.get("ratio", 0.0), count_a=rp.get("count_a", 1.0),
                count_b=rp.get("count_b", 0.0), use_retrieval=label == "document-model",
                calibration_sources=sorted({d.entity for d, v in zip(held, val_all) if v}))
    # -- choose by val ------------------------------------------------------------------------
    shippable = {k: v for k, v in variants.items() if k in chosen_models}
    simpler = {"threshold": 2, "relative": 1, "count": 0}  # on a tie, the simpler rule
    best_name = max(shippable, key=lambda k: (shippable[k]["val_micro_f1"], simpler[k.rsplit("/", 1)[1]]))
    model = chosen_models[best_name]
    baseline_name = "tfidf-sentence-max" if "tfidf-sentence-max" in variants else None
    model.metrics = {"variant": best_name, "val_micro_f1": variants[best_name]["val_micro_f1"],
                     "test": variants[best_name]["test"], "baseline": baseline_name and variants[baseline_name]["test"]}
    model.training = {"documents": {"val": int(val_all.sum()), "test": int((splits == "test").sum())},
                      "candidate_min": CANDIDATE_MIN, "lr_C": LR_C, "folds": FOLDS,
                      "excluded_sources": sorted(excluded)}
    # -- the short-text path (alert-sized texts): no retrieval, chosen on the val one-sentence documents --
    short_sigs = None
    if short_head is not None:
        shallow = load_head(short_head)
        if list(shallow.labels) != list(head.labels) or set(shallow.manifest.trained_sources) != trained:
            raise SecfmError(f"the short-text head {short_head} must have the labels and training entities of {head_dir}")
        say(f"short-text head: layers {'+'.join(map(str, shallow.manifest.layers))} ({short_head})")
        short_sigs = document_signals_for(AttackExtractor(shallow, engine, index=index, document=False),
                                          [d.text for d in held], engine)
    short_path = _short_path(extractor, sigs, held, Y, unreachable, entities, splits, forms, folds, no_retrieval,
                             best_name, oof[best_name.rsplit("/", 1)[0]], variants[best_name]["params"], say,
                             short_sigs=short_sigs, short_layers=shallow.manifest.layers if short_head is not None else None)
    chosen_model = short_path.pop("model", None)
    if short_path["chosen"]:
        picked = short_path["candidates"][short_path["chosen"]]
        model.short = {"max_chars": short_path["max_chars"], "model": chosen_model,
                       "head": SHORT_HEAD_DIR if picked["shallow_head"] else None,
                       "selection": {k: v for k, v in short_path.items() if k != "model"}}
    results = {
        "task": "attack-documents",
        "what": "document-level ATT&CK extraction on the ATT&CK-derived development set (paragraphs about one "
                "software, group or campaign; gold = its parent techniques); split by entity like the head",
        "head": {"path": str(head_dir), "layers": head.manifest.layers, "pooling": head.manifest.pooling,
                 "kind": head.manifest.kind, "labels": len(head.labels), "trained_sources": len(trained)},
        "retrieval": {"rows": len(index.rows), "sources": len(index.sources), "embedding": "all-MiniLM-L6-v2"},
        "development_set": {
            "builder": "secfm.training.head_data.build_attack_documents",
            "documents": {s: {f: int(((splits == s) & (forms == f)).sum()) for f in ("paragraph", "sentence")}
                          for s in ("val", "test")},
            "entities": {s: int(len(set(entities[splits == s]))) for s in ("val", "test")},
            "domains_test": {d: int((test_para & (domains == d)).sum()) for d in ("enterprise", "mobile", "ics")},
            "mean_chars_test": round(float(np.mean([len(d.text) for d, t in zip(held, test_para) if t])), 1),
        },
        "selection": {"rule": "the document-model variant with the best val micro-F1 (val: out-of-fold over 5 entity "
                              "folds for the document model; thresholds tuned on the val documents for the others)",
                      "chosen": best_name},
        "variants": variants,
        "short_path": short_path,
        "chosen": best_name,
        "baseline": baseline_name,
        "seconds": round(time.time() - started, 1),
    }
    return results, model, index


def _paired_difference(a: np.ndarray, b: np.ndarray, entities: Sequence[str], resamples: int = BOOTSTRAP,
                       seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of micro-F1(a) - micro-F1(b) (per-document tp/fp/fn
    counts of two systems on the same documents), resampling entities."""
    groups = sorted(set(entities))
    where = {e: i for i, e in enumerate(groups)}
    A = np.zeros((len(groups), 3))
    B = np.zeros((len(groups), 3))
    for row_a, row_b, e in zip(a, b, entities):
        A[where[e]] += row_a
        B[where[e]] += row_b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(resamples, len(groups)))

    def f1(M: np.ndarray) -> np.ndarray:
        tp, fp, fn = M[idx, 0].sum(axis=1), M[idx, 1].sum(axis=1), M[idx, 2].sum(axis=1)
        return 2 * tp / np.maximum(2 * tp + fp + fn, 1)

    d = f1(A) - f1(B)
    return [round(float(np.percentile(d, 2.5)), 4), round(float(np.percentile(d, 97.5)), 4)]


def _short_path(extractor, sigs, held, Y, unreachable, entities, splits, forms, folds, keep, full_name, full_oof,
                full_params, say, short_sigs=None, short_layers=None) -> dict:
    """The cheaper path for alert-sized texts. Candidates, cheapest first: with a shallower
    sentence head (``short_sigs``: its signals; the forward stops at its deepest layer) the
    document model without retrieval (no MiniLM embedding) and with it; then the full head's
    document model without retrieval. Each is fit on the val documents (5-fold out-of-fold for
    its figure; features without retrieval computed with the retrieval signals at zero, as at
    inference), its rule (the full path's) tuned on the val paragraphs like the full path's, and
    compared with the full path on the val one-sentence documents (neither tuned on them). The
    cheapest candidate at most :data:`SHORT_TOLERANCE` below the full path there is taken; it
    applies to texts up to the 99th percentile of those documents' lengths (rounded up to 50
    characters). Test one-sentence figures are reported, not used."""
    from secfm.workflows.attack_extraction import DOC_FEATURES, DocumentModel

    rule = full_name.rsplit("/", 1)[1]
    fi = {name: i for i, name in enumerate(DOC_FEATURES)}
    val_all = splits == "val"
    val_para = val_all & (forms == "paragraph")
    val_sent = val_all & (forms == "sentence")
    test_sent = (splits == "test") & (forms == "sentence")
    all_features = np.arange(len(DOC_FEATURES))

    def decided(p: np.ndarray, params: dict) -> np.ndarray:
        return _decide(p, rule, params["threshold"], params.get("ratio", 0.0), (params.get("count_a", 1.0), params.get("count_b", 0.0)))

    c_full = counts(decided(full_oof, full_params), Y, unreachable)
    full = figure(c_full[val_sent], entities[val_sent])
    layers = "+".join(map(str, short_layers or ()))
    candidates = []  # (name, signals, retrieval, shallow head, what), cheapest first
    if short_sigs is not None:
        candidates += [(f"layers-{layers}-no-retrieval", short_sigs, False, True,
                        f"sentence head on layers {layers}, document model without retrieval"),
                       (f"layers-{layers}-retrieval", short_sigs, True, True,
                        f"sentence head on layers {layers}, document model with retrieval")]
    candidates.append(("no-retrieval", sigs, False, False, "the full sentence head, document model without retrieval"))
    lengths = [len(d.text) for d, v in zip(held, val_sent) if v]
    max_chars = int(np.ceil(np.percentile(lengths, 99) / 50.0) * 50) if lengths else 0
    results: dict[str, dict] = {}
    chosen, model = None, None
    for name, cand_sigs, retrieval, shallow, what in candidates:
        if not retrieval:
            cand_sigs = [{**s, "share": np.zeros_like(s["share"]), "best": np.zeros_like(s["best"])} for s in cand_sigs]
        F0 = feature_tensor(extractor, cand_sigs)
        mask0 = 1 / (1 + np.exp(-F0[:, :, fi["head_max_logit"]])) >= CANDIDATE_MIN
        if retrieval:
            mask0 |= F0[:, :, fi["vote_max"]] >= CANDIDATE_MIN
        used = all_features if retrieval else keep
        p_oof = np.zeros(F0.shape[:2])
        for k in range(FOLDS):
            fit_rows, pred_rows = val_all & (folds != k), val_all & (folds == k)
            if pred_rows.any() and fit_rows.any():
                p_oof[pred_rows] = _probabilities(F0[pred_rows], mask0[pred_rows],
                                                  _fit_lr(F0[fit_rows], Y[fit_rows], mask0[fit_rows], used))
        rp, _ = _tune_rule(p_oof[val_para], Y[val_para], unreachable[val_para], rule)
        c_short = counts(decided(p_oof, rp)[val_sent], Y[val_sent], unreachable[val_sent])
        val = figure(c_short, entities[val_sent])
        final = _fit_lr(F0[val_all], Y[val_all], mask0[val_all], used)
        c_test = counts(decided(_probabilities(F0, mask0, final), rp)[test_sent], Y[test_sent], unreachable[test_sent])
        passes = val["micro_f1"] >= full["micro_f1"] - SHORT_TOLERANCE
        results[name] = {"what": what, "use_retrieval": retrieval, "shallow_head": shallow, "layers": list(short_layers or [])
                         if shallow else list(extractor.head.manifest.layers), "params": rp, "val_one_sentence": val,
                         "difference_ci95": _paired_difference(c_short, c_full[val_sent], entities[val_sent]),
                         "passes": bool(passes), "test_one_sentence": figure(c_test, entities[test_sent])}
        say(f"short-text path {name} on the val one-sentence documents: {val['micro_f1']:.3f} {val['micro_f1_ci95']} "
            f"vs the full path {full['micro_f1']:.3f} {full['micro_f1_ci95']}, difference {results[name]['difference_ci95']}: "
            f"{'within' if passes else 'beyond'} the tolerance")
        if passes and chosen is None:
            chosen = name
            mean, scale, coef, intercept = final
            model = DocumentModel(features=list(DOC_FEATURES), mean=[round(float(x), 6) for x in mean],
                                  scale=[round(float(x), 6) for x in scale], coef=[round(float(x), 6) for x in coef],
                                  intercept=round(intercept, 6), rule=rule, threshold=rp["threshold"], ratio=rp.get("ratio", 0.0),
                                  count_a=rp.get("count_a", 1.0), count_b=rp.get("count_b", 0.0), use_retrieval=retrieval,
                                  calibration_sources=sorted({d.entity for d, v in zip(held, val_all) if v}))
    say(f"short-text path: {chosen or 'none'} taken for texts up to {max_chars} characters")
    return {"what": "alert-sized texts: cheaper candidates (a shallower sentence head, no MiniLM retrieval; evidence "
                    "examples matched by word overlap without retrieval), each compared with the full path on the val "
                    "one-sentence documents (rules tuned on the val paragraphs, out-of-fold probabilities)",
            "rule": f"the cheapest candidate whose val F1 on the one-sentence documents is at most {SHORT_TOLERANCE} below "
                    "the full path's; applies to texts up to the 99th percentile of their lengths, rounded up to 50 characters",
            "full_val_one_sentence": full,
            "candidates": results, "max_chars": max_chars, "chosen": chosen, "model": asdict(model) if model else None}


def _tfidf_variants(add, held, sigs, extractor, excluded, Y, unreachable, val_para, build_attack_dataset) -> None:
    """TF-IDF + logistic regression on the training sentences (the head's own training rows),
    best sentence and whole document, thresholds tuned on the val documents."""
    from secfm.training.baseline import TfidfBaseline
    from secfm.training.head_data import KB_SOURCE
    from secfm.training.heads import label_matrix

    data = build_attack_dataset(exclude_sources=sorted(excluded) or None)
    labels = extractor._parent_labels  # the document task is about parent techniques (rows carry their parents)
    trained_on = set(extractor.head.manifest.trained_sources)  # the head's own training rows, no more
    train = [e for e in data.split("train") if e.source in trained_on or e.source == KB_SOURCE]
    model = TfidfBaseline("multilabel", C=4.0).fit([e.text for e in train], label_matrix(train, labels))
    seg_texts = [s.text for sig in sigs for s in sig["segments"]]
    S = model.scores(seg_texts) if seg_texts else np.zeros((0, len(labels)))
    per_doc, offset = [], 0
    for sig in sigs:
        n = len(sig["segments"])
        per_doc.append(S[offset : offset + n].max(axis=0) if n else np.zeros(len(labels)))
        offset += n
    sent = np.stack(per_doc)
    whole = model.scores([d.text for d in held])
    for name, scores, what in (("tfidf-sentence-max", sent, "TF-IDF + logistic regression on the training sentences; "
                                "best sentence; threshold tuned on val documents (the baseline)"),
                               ("tfidf-document", whole, "the same TF-IDF model on the whole document")):
        t, f = best_threshold(scores[val_para], Y[val_para], unreachable[val_para])
        add(name, f, scores >= t, {"threshold": t, "C": 4.0}, what)


# ---------------------------------------------------------------------------------------------
# results files
# ---------------------------------------------------------------------------------------------
def results_markdown(r: dict) -> str:
    dev = r["development_set"]
    lines = ["# ATT&CK document-level extraction: variants on the development set", "",
             f"{r['what']}.", "",
             f"- development documents: val {dev['documents']['val']['paragraph']} paragraphs "
             f"(+{dev['documents']['val']['sentence']} one-sentence), test {dev['documents']['test']['paragraph']} paragraphs "
             f"(+{dev['documents']['test']['sentence']} one-sentence); held-out entities: val {dev['entities']['val']}, "
             f"test {dev['entities']['test']}; test paragraphs by domain: "
             + ", ".join(f"{k} {v}" for k, v in dev["domains_test"].items()) + f"; mean {dev['mean_chars_test']} characters",
             f"- sentence head: {r['head']['kind']} on layers {'+'.join(map(str, r['head']['layers']))} ({r['head']['pooling']}), "
             f"{r['head']['labels']} labels, trained on {r['head']['trained_sources']} entities (the train split)",
             f"- retrieval index: {r['retrieval']['rows']} rows ({r['retrieval']['sources']} training entities' procedure "
             "examples and the techniques' own texts), all-MiniLM-L6-v2",
             f"- chosen: **{r['chosen']}** ({r['selection']['rule']})", "",
             "Micro-F1 over parent techniques, 95% bootstrap interval over held-out entities (1,000 resamples).", "",
             "| variant | val F1 | test F1 [95% CI] | test P | test R | Enterprise | Mobile | ICS | one sentence |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(v: dict, key: str) -> str:
        x = v.get(key)
        return f"{x['micro_f1']:.3f} (n={x['documents']})" if x else "-"

    for name, v in r["variants"].items():
        t = v["test"]
        mark = " **(chosen)**" if name == r["chosen"] else (" (baseline)" if name == r.get("baseline") else "")
        lines.append(f"| {name}{mark} | {v['val_micro_f1']:.3f} | {t['micro_f1']:.3f} [{t['micro_f1_ci95'][0]:.3f}, "
                     f"{t['micro_f1_ci95'][1]:.3f}] | {t['micro_precision']:.3f} | {t['micro_recall']:.3f} | "
                     f"{cell(v, 'test_enterprise')} | {cell(v, 'test_mobile')} | {cell(v, 'test_ics')} | "
                     f"{cell(v, 'test_one_sentence')} |")
    sp = r.get("short_path")
    if sp and "candidates" in sp:
        full = sp["full_val_one_sentence"]
        lines += ["", f"Short-text path ({sp['what']}); rule: {sp['rule']}. Full path on the val one-sentence documents "
                      f"(n={full['documents']}): {full['micro_f1']:.3f} [{full['micro_f1_ci95'][0]:.3f}, "
                      f"{full['micro_f1_ci95'][1]:.3f}]. Taken: **{sp['chosen'] or 'none'}** for texts up to "
                      f"{sp['max_chars']} characters.", "",
                  "| candidate (cheapest first) | val one-sentence F1 [95% CI] | difference to the full path [95% CI] | "
                  "within tolerance | test one-sentence F1 [95% CI] |", "|---|---|---|---|---|"]
        for name, c in sp["candidates"].items():
            v, t, d = c["val_one_sentence"], c["test_one_sentence"], c["difference_ci95"]
            lines.append(f"| {name}{' **(taken)**' if name == sp['chosen'] else ''} | {v['micro_f1']:.3f} "
                         f"[{v['micro_f1_ci95'][0]:.3f}, {v['micro_f1_ci95'][1]:.3f}] | [{d[0]:.3f}, {d[1]:.3f}] | "
                         f"{'yes' if c['passes'] else 'no'} | {t['micro_f1']:.3f} [{t['micro_f1_ci95'][0]:.3f}, "
                         f"{t['micro_f1_ci95'][1]:.3f}] |")
    lines += ["", "Variants:", ""]
    lines += [f"- `{name}`: {v['what']}; parameters {v['params']}" for name, v in r["variants"].items()]
    return "\n".join(lines) + "\n"


def write_results(results: dict, out: str | Path, allow_busy: bool = True) -> Path:
    """``out`` (JSON) and the markdown table beside it, through :mod:`secfm.provenance`."""
    from secfm.provenance import recording

    out = Path(out)
    with recording(allow_busy=allow_busy) as rec:
        rec.note(what="ATT&CK document extraction variants (timings are not the point of this file)")
        rec.write_json(out, results)
        rec.write_text(out.with_suffix(".md"), results_markdown(results))
    return out


def save_extractor(target: Path, model, index, short_head: str | Path | None = None) -> None:
    """Write the retrieval index, the document model and (when its short-text path uses it) a
    copy of the shallower head into the head folder ``target``; a stale short head is removed."""
    import shutil

    from secfm.heads import MANIFEST_FILE, WEIGHTS_FILE

    target = Path(target)
    index.save(target)
    folder = target / SHORT_HEAD_DIR
    if (model.short or {}).get("head"):
        if short_head is None:
            raise SecfmError("the document model's short-text path names a head but none was given")
        tmp = target / f".{SHORT_HEAD_DIR}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in (MANIFEST_FILE, WEIGHTS_FILE):
            shutil.copy2(Path(short_head) / name, tmp / name)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    model.save(target)


def build_document_extractor(head_dir: str | Path, out_dir: str | Path | None = None, engine=None,
                             exclude_sources: Sequence[str] = (), progress: Callable[[str], None] | None = None,
                             results: str | Path | None = None, baseline: bool = True, limit: int | None = None,
                             short_head: str | Path | None = None) -> dict:
    """Run the harness for the head in ``head_dir`` and write the chosen document model and the
    retrieval index beside the head (in ``out_dir``, default the head folder itself); with
    ``short_head`` taken by the short-text path, a copy of it in :data:`SHORT_HEAD_DIR` there."""
    res, model, index = run_document_harness(head_dir, engine, exclude_sources, progress, baseline, limit, short_head)
    target = Path(out_dir or head_dir)
    save_extractor(target, model, index, short_head)
    if results is not None:
        write_results(res, results)
    return {"results": res, "document_model": asdict(model)}

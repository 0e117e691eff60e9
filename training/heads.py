"""Training classifier heads on cached hidden-state features, and the harness that compares them
with the TF-IDF baseline on the same entity splits.

CPU path (default): features of one layer of the frozen base model are computed once (cached
on disk by :mod:`secfm.features`); the head (linear or one hidden layer) trains on them in
seconds. Layer and pooling are chosen by validation F1 in a sweep on a subsample (one forward
pass captures every swept layer), which also tries the best 2 and 3 layers of the chosen pooling
side by side (concatenated); the sweep is kept in the results.

ATT&CK (multilabel): binary cross-entropy with per-label positive weights (``sqrt`` of the
negative/positive ratio, capped), a sub-technique label also counts its parent; thresholds are
tuned on the validation split, global and per class (per class only for labels with enough
validation positives); which of the two is the default is decided by a two-fold cross-fit on
the validation split (by entity), never by the test split.

CWE (multiclass): softmax cross-entropy (soft targets over a CVE's CWEs) with ``sqrt`` inverse
frequency class weights; top-1 and top-5.

GPU path (``train_joint``): LoRA on the base model plus the head, trained end to end with peft
(the head in ``modules_to_save``); the adapter is saved inside the head folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from secfm.errors import SecfmError
from secfm.features import deepest_layer, stack_layers
from secfm.heads import HeadManifest, build_module, lift_parents, parent_index, probabilities, save_head
from secfm.training.head_data import (
    CWE_KB_SOURCE,
    KB_SOURCE,
    Example,
    HeadDataset,
    build_attack_dataset,
    build_cwe_dataset,
    stable_fraction,
    subsample,
)
from secfm.training.head_training import (
    FeatureSource,
    choose_on_validation,
    early_stopping,
    standardization,  # noqa: F401 (importable from here, as before)
    standardize_input,
    write_results_files,
)

log = logging.getLogger(__name__)

THRESHOLD_GRID = np.round(np.arange(0.02, 0.96, 0.01), 2)
DEFAULT_SWEEP_LAYERS = (1, 2, 3, 6, 9, 12, 15, 18)
DEFAULT_SWEEP_POOLINGS = ("mean", "last")
#: sweep subsample sizes (texts); the sweep's features are cached like any others
SWEEP_TRAIN = 2000
SWEEP_VAL = 800
#: a shallower layer wins when its validation F1 is within this of the best (it is cheaper)
SWEEP_TOLERANCE = 0.005
MIN_VAL_POSITIVES_PER_CLASS = 3


# ---------------------------------------------------------------------------------------------
# labels and metrics
# ---------------------------------------------------------------------------------------------
def label_matrix(examples: Sequence[Example], labels: Sequence[str]) -> np.ndarray:
    where = {label: i for i, label in enumerate(labels)}
    Y = np.zeros((len(examples), len(labels)), dtype=np.float32)
    for r, e in enumerate(examples):
        for label in e.labels:
            j = where.get(label)
            if j is not None:
                Y[r, j] = 1.0
    return Y


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)


def ranking_metrics(P: np.ndarray, Y: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """P@k (share of the top k that are gold), R@k (share of gold in the top k) and hit@k."""
    out: dict[str, float] = {}
    Y = Y > 0
    has_gold = Y.any(axis=1)
    if not has_gold.any():
        return {f"p_at_{k}": 0.0 for k in ks}
    P, Y = P[has_gold], Y[has_gold]
    order = np.argsort(-P, axis=1)
    for k in ks:
        top = order[:, :k]
        hits = np.take_along_axis(Y, top, axis=1).sum(axis=1)
        out[f"p_at_{k}"] = float(np.mean(hits / k))
        out[f"r_at_{k}"] = float(np.mean(hits / Y.sum(axis=1)))
        out[f"hit_at_{k}"] = float(np.mean(hits > 0))
    return out


def multilabel_metrics(P: np.ndarray, Y: np.ndarray, thresholds: np.ndarray | float) -> dict[str, float]:
    """Micro and macro P/R/F1 at ``thresholds`` (macro over labels with gold in ``Y``), plus
    ranking metrics."""
    Y = Y > 0
    pred = P >= (np.asarray(thresholds, dtype=np.float32) if np.ndim(thresholds) else thresholds)
    tp = (pred & Y).sum(axis=0).astype(np.float64)
    fp = (pred & ~Y).sum(axis=0).astype(np.float64)
    fn = (~pred & Y).sum(axis=0).astype(np.float64)
    micro_p = tp.sum() / max(tp.sum() + fp.sum(), 1e-12)
    micro_r = tp.sum() / max(tp.sum() + fn.sum(), 1e-12)
    support = Y.sum(axis=0) > 0
    per_class = _f1(tp, fp, fn)
    out = {
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(per_class[support].mean()) if support.any() else 0.0,
        "labels_with_support": int(support.sum()),
        "mean_predicted": float(pred.sum(axis=1).mean()),
        "n": int(len(Y)),
    }
    out.update(ranking_metrics(P, Y))
    return out


def multiclass_metrics(P: np.ndarray, Y: np.ndarray) -> dict[str, float]:
    """Top-1/top-5 accuracy (a hit is any of the example's gold labels), micro and macro F1 of
    the top-1 prediction (macro over labels with gold in ``Y``)."""
    Y = Y > 0
    top1 = P.argmax(axis=1)
    pred = np.zeros_like(Y)
    pred[np.arange(len(P)), top1] = True
    tp = (pred & Y).sum(axis=0).astype(np.float64)
    fp = (pred & ~Y).sum(axis=0).astype(np.float64)
    fn = (~pred & Y).sum(axis=0).astype(np.float64)
    support = Y.sum(axis=0) > 0
    per_class = _f1(tp, fp, fn)
    rank = ranking_metrics(P, Y, (1, 5))
    return {
        "top1": rank["hit_at_1"],
        "top5": rank["hit_at_5"],
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(per_class[support].mean()) if support.any() else 0.0,
        "p_at_1": rank["p_at_1"],
        "p_at_5": rank["p_at_5"],
        "r_at_5": rank["r_at_5"],
        "labels_with_support": int(support.sum()),
        "n": int(len(Y)),
    }


def best_global_threshold(P: np.ndarray, Y: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> tuple[float, float]:
    """(threshold, micro F1) maximizing micro F1 over ``grid``."""
    Y = Y > 0
    n_gold = Y.sum()
    best = (0.5, -1.0)
    for t in grid:
        pred = P >= t
        tp = (pred & Y).sum()
        f1 = 2 * tp / max(pred.sum() + n_gold, 1)
        if f1 > best[1] + 1e-12:
            best = (float(t), float(f1))
    return best


def per_class_thresholds(P: np.ndarray, Y: np.ndarray, fallback: float, grid: np.ndarray = THRESHOLD_GRID,
                         min_positives: int = MIN_VAL_POSITIVES_PER_CLASS) -> np.ndarray:
    """Each label's F1-best threshold on (P, Y); ``fallback`` for labels with fewer than
    ``min_positives`` positives (too few to tune on)."""
    Y = Y > 0
    out = np.full(P.shape[1], fallback, dtype=np.float32)
    positives = Y.sum(axis=0)
    for j in np.nonzero(positives >= min_positives)[0]:
        p, y = P[:, j], Y[:, j]
        pred = p[None, :] >= grid[:, None]
        tp = (pred & y[None, :]).sum(axis=1)
        f1 = 2 * tp / np.maximum(pred.sum(axis=1) + y.sum(), 1)
        best = f1.max()
        # the middle of the best plateau (robust to ties)
        ties = np.nonzero(f1 >= best - 1e-12)[0]
        out[j] = float(grid[ties[len(ties) // 2]])
    return out


def choose_threshold_mode(P: np.ndarray, Y: np.ndarray, groups: Sequence[str]) -> tuple[str, dict]:
    """'global' or 'per-class', by a two-fold cross-fit on the validation rows split by entity
    (tune on one fold, score micro F1 on the other)."""
    fold = np.asarray([stable_fraction(g, "secfm-threshold-fold") < 0.5 for g in groups])
    scores = {"global": [], "per-class": []}
    for held in (True, False):
        tune, test = fold != held, fold == held
        if tune.sum() == 0 or test.sum() == 0:
            continue
        t, _ = best_global_threshold(P[tune], Y[tune])
        scores["global"].append(multilabel_metrics(P[test], Y[test], t)["micro_f1"])
        pc = per_class_thresholds(P[tune], Y[tune], t)
        scores["per-class"].append(multilabel_metrics(P[test], Y[test], pc)["micro_f1"])
    means = {k: float(np.mean(v)) if v else 0.0 for k, v in scores.items()}
    mode = "per-class" if means["per-class"] > means["global"] else "global"
    return mode, {f"crossfit_micro_f1_{k}": round(v, 4) for k, v in means.items()}


# ---------------------------------------------------------------------------------------------
# fitting a head on features
# ---------------------------------------------------------------------------------------------
#: per-kind defaults (chosen on the validation split of the ATT&CK task)
KIND_DEFAULTS = {"linear": {"lr": 5e-3, "dropout": 0.1}, "mlp": {"lr": 2e-3, "dropout": 0.3}}


@dataclass
class FitConfig:
    kind: str = "linear"
    hidden_dim: int = 1024
    dropout: float | None = None  # None: the kind's default
    epochs: int = 40
    lr: float | None = None  # None: the kind's default
    weight_decay: float = 1e-4
    batch_size: int = 256
    class_weight: str = "sqrt"  # sqrt, balanced or none
    max_pos_weight: float = 30.0
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for key, value in KIND_DEFAULTS.get(self.kind, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def describe(self) -> dict:
        return asdict(self)


def _class_weights(Y: np.ndarray, objective: str, cfg: FitConfig) -> np.ndarray:
    pos = Y.sum(axis=0)
    if objective == "multilabel":
        neg = len(Y) - pos
        ratio = neg / np.maximum(pos, 1.0)
        if cfg.class_weight == "none":
            w = np.ones_like(ratio)
        elif cfg.class_weight == "balanced":
            w = ratio
        else:
            w = np.sqrt(ratio)
        return np.clip(w, 1.0, cfg.max_pos_weight).astype(np.float32)
    freq = np.maximum(pos, 1.0)
    if cfg.class_weight == "none":
        w = np.ones_like(freq)
    elif cfg.class_weight == "balanced":
        w = freq.mean() / freq
    else:
        w = np.sqrt(freq.mean() / freq)
    return np.clip(w, 1.0 / cfg.max_pos_weight, cfg.max_pos_weight).astype(np.float32)


def _val_score(P: np.ndarray, Y: np.ndarray, objective: str) -> float:
    if objective == "multiclass":
        return multiclass_metrics(P, Y)["top1"]
    return best_global_threshold(P, Y, THRESHOLD_GRID[::3])[1]


def fit_head(X_train: np.ndarray, Y_train: np.ndarray, X_val: np.ndarray, Y_val: np.ndarray,
             objective: str, cfg: FitConfig | None = None, parents: np.ndarray | None = None,
             sample_weight: np.ndarray | None = None):
    """Train a head module on features; early stopping on the validation score (micro F1 at the
    best global threshold, or top-1). Returns (module, history)."""
    import torch
    from torch import nn

    cfg = cfg or FitConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n, d = X_train.shape
    module = build_module(d, Y_train.shape[1], cfg.kind, cfg.hidden_dim if cfg.kind == "mlp" else None, cfg.dropout)
    standardize_input(module, X_train)
    weights = torch.from_numpy(_class_weights(Y_train, objective, cfg))
    if objective == "multilabel":
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=weights, reduction="none")
    else:
        loss_fn = None
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    Xt, Yt = torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.float32)), torch.from_numpy(Y_train.astype(np.float32))
    sw = torch.from_numpy((sample_weight if sample_weight is not None else np.ones(n)).astype(np.float32))
    Xv = torch.from_numpy(np.ascontiguousarray(X_val, dtype=np.float32))
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1)

    def train_epoch(_epoch: int) -> float:
        module.train()
        perm = rng.permutation(n)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = torch.from_numpy(perm[start : start + cfg.batch_size])
            logits = module(Xt[idx])
            y = Yt[idx]
            if objective == "multilabel":
                loss = (loss_fn(logits, y).mean(dim=1) * sw[idx]).sum() / sw[idx].sum()
            else:
                target = y / y.sum(dim=1, keepdim=True).clamp(min=1.0)
                logp = torch.log_softmax(logits, dim=1)
                row_w = (target * weights).sum(dim=1) * sw[idx]
                loss = (-(target * logp).sum(dim=1) * row_w).sum() / row_w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        return total / n

    def validate() -> float:
        module.eval()
        with torch.inference_mode():
            z = module(Xv).numpy()
        return _val_score(_probabilities(z, objective, parents), Y_val, objective)

    best_state, history = early_stopping(cfg.epochs, cfg.patience, train_epoch, validate,
                                         lambda: {k: v.clone() for k, v in module.state_dict().items()})
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return module, history


def _probabilities(z: np.ndarray, objective: str, parents: np.ndarray | None) -> np.ndarray:
    """The core's rule (:func:`secfm.heads.probabilities`; no temperatures while training)."""
    return probabilities(z, objective, (), parents=parents)


def predict_module(module, X: np.ndarray, objective: str, parents: np.ndarray | None = None) -> np.ndarray:
    import torch

    with torch.inference_mode():
        z = module(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy()
    return _probabilities(z, objective, parents)


# ---------------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------------
@dataclass
class HarnessConfig:
    task: str = "attack"
    model: str | None = None  # default: the registry default
    adapter: str | None = None
    layer: int | tuple[int, ...] | None = None  # None: sweep; several: their concatenation
    pooling: str | None = None  # None: sweep
    kinds: tuple[str, ...] = ("linear", "mlp")
    sweep_layers: tuple[int, ...] = DEFAULT_SWEEP_LAYERS
    sweep_poolings: tuple[str, ...] = DEFAULT_SWEEP_POOLINGS
    sweep_train: int = SWEEP_TRAIN
    sweep_val: int = SWEEP_VAL
    max_length: int = 128
    batch_size: int = 32
    exclude_sources: tuple[str, ...] = ()
    user_data: tuple[str, ...] = ()
    limit: int | None = None  # cap train/val/test sizes (tests, smoke runs)
    baseline: bool = True
    baseline_C: tuple[float, ...] = (1.0, 4.0, 16.0)
    fit: FitConfig = field(default_factory=FitConfig)
    command: str = ""

    @property
    def objective(self) -> str:
        return "multilabel" if self.task == "attack" else "multiclass"


def build_dataset(cfg: HarnessConfig) -> HeadDataset:
    if cfg.task == "attack":
        data = build_attack_dataset(exclude_sources=list(cfg.exclude_sources), user_jsonl=cfg.user_data)
    elif cfg.task == "cwe":
        if cfg.exclude_sources:
            raise SecfmError("--exclude-sources applies to --task attack (ATT&CK groups, software, campaigns)")
        data = build_cwe_dataset(user_jsonl=cfg.user_data)
    else:
        raise SecfmError(f"--task must be attack or cwe, not {cfg.task!r}")
    if cfg.limit:
        keep: list[Example] = []
        for split in ("train", "val", "test"):
            rows = data.split(split)
            if split == "train":
                # keep knowledge rows (they cover every label) only as far as the limit allows
                kb = [e for e in rows if e.source in (KB_SOURCE, CWE_KB_SOURCE)]
                rest = [e for e in rows if e.source not in (KB_SOURCE, CWE_KB_SOURCE)]
                rows = subsample(rest, cfg.limit) + kb[: max(0, cfg.limit // 4)]
            else:
                rows = subsample(rows, max(cfg.limit // 2, 8))
            keep.extend(rows)
        data.examples = keep
    return data


def layer_list(layer: int | Sequence[int] | None) -> list[int] | None:
    """``--layer`` as a list: None, ``3``, ``(1, 3, 6)`` or ``"1,3,6"``."""
    if layer is None:
        return None
    if isinstance(layer, str):
        try:
            out = [int(x) for x in layer.replace("+", ",").split(",") if x.strip()]
        except ValueError as exc:
            raise SecfmError(f"--layer must be a layer number or a list like 1,3,6, not {layer!r}") from exc
    elif isinstance(layer, int):
        out = [layer]
    else:
        out = [int(x) for x in layer]
    if not out:
        raise SecfmError("--layer is empty")
    if len(set(out)) != len(out):
        raise SecfmError(f"--layer repeats a layer: {layer!r}")
    deepest_layer(out)
    return out


def layers_label(layers: Sequence[int]) -> str:
    return "+".join(str(x) for x in layers)


def run_sweep(data: HeadDataset, cfg: HarnessConfig, feats: FeatureSource) -> tuple[list[dict], dict]:
    """Validation score of a linear head for every (layer, pooling) on a subsample; one forward
    per batch captures every layer. Then, for the pooling the single layers pick (or the one
    asked for), the concatenation of its best 2 and best 3 layers (by the same score), in layer
    order, on the same subsample."""
    if cfg.task == "attack":
        train = subsample(data.split("train"), cfg.sweep_train)
        train += [e for e in data.split("train") if e.kind == "technique" and e not in train]
    else:
        train = subsample([e for e in data.split("train") if e.kind == "observed"], cfg.sweep_train)
    val = subsample(data.split("val"), cfg.sweep_val)
    texts = list(dict.fromkeys([e.text for e in train] + [e.text for e in val]))
    got = feats(texts, list(cfg.sweep_layers), list(cfg.sweep_poolings), label="sweep features")
    row_of = {t: i for i, t in enumerate(texts)}
    itr = [row_of[e.text] for e in train]
    iva = [row_of[e.text] for e in val]
    Ytr, Yva = label_matrix(train, data.labels), label_matrix(val, data.labels)
    parents = parent_index(data.labels) if cfg.task == "attack" else None
    rows = []
    sweep_fit = FitConfig(kind="linear", epochs=25, patience=3, seed=cfg.fit.seed)

    def score(layers: list[int], pooling: str) -> dict:
        started = time.time()
        X = stack_layers(got, layers, pooling)
        module, hist = fit_head(X[itr], Ytr, X[iva], Yva, cfg.objective, sweep_fit, parents)
        P = predict_module(module, X[iva], cfg.objective, parents)
        row = {"layer": deepest_layer(layers), "layers": list(layers), "pooling": pooling}
        if cfg.objective == "multilabel":
            t, f1 = best_global_threshold(P, Yva)
            m = multilabel_metrics(P, Yva, t)
            row.update({"val_micro_f1": round(m["micro_f1"], 4), "val_macro_f1": round(m["macro_f1"], 4),
                        "val_p_at_1": round(m["p_at_1"], 4)})
        else:
            m = multiclass_metrics(P, Yva)
            row.update({"val_top1": round(m["top1"], 4), "val_top5": round(m["top5"], 4),
                        "val_macro_f1": round(m["macro_f1"], 4)})
        row["epochs"] = hist["best_epoch"]
        row["seconds"] = round(time.time() - started, 1)
        log.info("sweep %s", row)
        return row

    for layer, pooling in sorted(got):
        rows.append(score([layer], pooling))
    # concatenations of the best layers of the chosen pooling
    pooling = cfg.pooling or pick_from_sweep(rows, cfg.objective)["pooling"]
    metric = _sweep_metric(cfg.objective)
    ranked = [r["layer"] for r in sorted((r for r in rows if r["pooling"] == pooling), key=lambda r: -r[metric])]
    for n in (2, 3):
        if len(ranked) >= n:
            best_n = sorted(ranked[:n], key=lambda x: (x < 0, x))  # layer order (from the start, then from the end)
            try:
                deepest_layer(best_n)
            except SecfmError:
                continue  # a mix of positive and negative layers: skip
            rows.append(score(best_n, pooling))
    return rows, {"train": len(train), "val": len(val)}


def _sweep_metric(objective: str) -> str:
    return "val_micro_f1" if objective == "multilabel" else "val_top1"


def pick_from_sweep(rows: list[dict], objective: str) -> dict:
    """The best row; within the tolerance the cheapest: the shallowest deepest layer, then the
    fewest layers."""
    metric = _sweep_metric(objective)
    best = max(r[metric] for r in rows)
    close = [r for r in rows if r[metric] >= best - SWEEP_TOLERANCE]
    return min(close, key=lambda r: (r["layer"], len(r.get("layers") or [r["layer"]]), -r[metric]))


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def run_harness(cfg: HarnessConfig, out: str | Path | None, results_dir: str | Path | None = None,
                engine=None, progress: Callable[[str], None] | None = None, recorder=None) -> dict:
    """Dataset -> (sweep) -> features -> heads (linear, mlp) -> thresholds -> test metrics ->
    baseline -> results files -> the chosen head saved in ``out``. Returns the results dict.
    ``recorder`` (a :class:`secfm.provenance.Recorder`) writes the results files with their provenance."""
    say = progress or (lambda msg: log.info("%s", msg))
    started = time.time()
    data = build_dataset(cfg)
    feats = FeatureSource(cfg.model, cfg.adapter, engine, cfg.max_length, cfg.batch_size)
    counts = data.counts()
    say(f"{cfg.task}: {counts['train']} train / {counts['val']} val / {counts['test']} test rows, "
        f"{len(data.labels)} labels ({counts['val_sources']} val and {counts['test_sources']} test sources held out)")
    if not data.split("val") or not data.split("test"):
        raise SecfmError("the validation or test split is empty; use more data (or no --limit)")
    sweep_rows: list[dict] = []
    sweep_sizes: dict = {}
    layers, pooling = layer_list(cfg.layer), cfg.pooling
    if layers is not None and len(layers) > 1 and pooling is None:
        pooling = "mean"
        say(f"layers {layers_label(layers)}: mean pooling (give --pooling for another)")
    if layers is None or pooling is None:
        say(f"sweep: layers {list(cfg.sweep_layers)} x pooling {list(cfg.sweep_poolings)} on a subsample")
        sweep_rows, sweep_sizes = run_sweep(data, cfg, feats)
        if layers is not None:
            sweep_rows_pick = [r for r in sweep_rows if (r.get("layers") or [r["layer"]]) == layers]
        elif pooling is not None:
            sweep_rows_pick = [r for r in sweep_rows if r["pooling"] == pooling]
        else:
            sweep_rows_pick = sweep_rows
        chosen = pick_from_sweep(sweep_rows_pick, cfg.objective)
        layers, pooling = list(chosen.get("layers") or [chosen["layer"]]), chosen["pooling"]
        say(f"sweep picked layer {layers_label(layers)}, {pooling} pooling")
    layer = deepest_layer(layers)
    splits = {s: data.split(s) for s in ("train", "val", "test")}
    texts = list(dict.fromkeys(e.text for rows in splits.values() for e in rows))
    say(f"features: {len(texts)} texts at layer {layers_label(layers)} ({pooling})")
    X_all = feats.stacked(texts, layers, pooling, label=f"{cfg.task} features")
    row_of = {t: i for i, t in enumerate(texts)}
    X = {s: X_all[[row_of[e.text] for e in rows]] for s, rows in splits.items()}
    Y = {s: label_matrix(rows, data.labels) for s, rows in splits.items()}
    parents = parent_index(data.labels) if cfg.task == "attack" else None
    feature_seconds = time.time() - started

    # heads: each kind, pick by validation
    def train_kind(kind: str) -> dict:
        # each kind trains with its own lr and dropout (KIND_DEFAULTS); the rest is shared
        fit_cfg = FitConfig(**{**cfg.fit.describe(), "kind": kind, "lr": None, "dropout": None})
        t0 = time.time()
        module, hist = fit_head(X["train"], Y["train"], X["val"], Y["val"], cfg.objective, fit_cfg, parents)
        P_val = predict_module(module, X["val"], cfg.objective, parents)
        P_test = predict_module(module, X["test"], cfg.objective, parents)
        cand = {"kind": kind, "module": module, "fit": fit_cfg, "history": hist, "seconds": round(time.time() - t0, 1),
                "P_val": P_val, "P_test": P_test}
        cand["val_score"] = hist["best_val"]
        say(f"head {kind}: val {'micro F1' if cfg.objective == 'multilabel' else 'top-1'} {hist['best_val']:.3f} "
            f"(epoch {hist['best_epoch']}, {cand['seconds']}s)")
        return cand

    best, candidates = choose_on_validation(cfg.kinds, train_kind, lambda c: c["val_score"],
                                            prefer=lambda c: c["kind"] == "linear")

    def evaluate(P_val, P_test, groups_val):
        return evaluate_scores(cfg.objective, P_val, P_test, Y, groups_val)

    groups_val = [e.source for e in splits["val"]]
    head_eval = {}
    thresholds_by_kind = {}
    for c in candidates:
        head_eval[c["kind"]], thresholds_by_kind[c["kind"]] = evaluate(c["P_val"], c["P_test"], groups_val)

    baseline_eval = None
    baseline_info = None
    if cfg.baseline:
        baseline_eval, baseline_info = fit_baseline(cfg, splits, Y, parents, groups_val, say)

    chosen_eval = head_eval[best["kind"]]
    thr = thresholds_by_kind[best["kind"]]
    from secfm.knowledge import load_attack, load_cwe

    model_name = feats.model
    manifest = HeadManifest(
        task=cfg.task,
        kind=best["kind"],
        objective=cfg.objective,
        base_model=model_name,
        adapter=cfg.adapter,
        layer=layer,
        layers=list(layers),
        pooling=pooling,
        max_length=cfg.max_length,
        input_dim=int(X["train"].shape[1]),
        hidden_dim=best["fit"].hidden_dim if best["kind"] == "mlp" else None,
        labels=list(data.labels),
        threshold=float(thr.get("threshold", 0.5)),
        class_thresholds=[round(float(x), 3) for x in thr["class_thresholds"]] if "class_thresholds" in thr else None,
        threshold_mode=thr.get("mode", "global"),
        top_k=5,
        attack_version=load_attack().version if cfg.task == "attack" else None,
        cwe_version=load_cwe().version if cfg.task == "cwe" else None,
        training_data_hash=data.data_hash(),
        trained_sources=data.entity_sources("train"),  # ATT&CK entities, or CVE ids for CWE
        excluded_sources=list(data.excluded_sources),
        metrics={"val": _round(chosen_eval["val"]), "test": _round(chosen_eval["test"]),
                 "baseline_test": _round(baseline_eval["test"]) if baseline_eval else None},
        training={
            "fit": best["fit"].describe(),
            "best_epoch": best["history"]["best_epoch"],
            "splits": counts,
            "split_rule": "by source entity (campaigns travel with their groups); stable sha256 hash, 70/15/15"
            if cfg.task == "attack" else "by CVE id; stable sha256 hash, 70/15/15",
            "command": cfg.command,
            "held_out_sources": {"val": data.entity_sources("val"), "test": data.entity_sources("test")}
            if cfg.task == "attack" else {},
        },
        created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    results = {
        "task": cfg.task,
        "command": cfg.command,
        "created": manifest.created,
        "model": model_name,
        "adapter": cfg.adapter,
        "knowledge": {"attack": manifest.attack_version, "cwe": manifest.cwe_version},
        "data": {**counts, "labels": len(data.labels), "training_data_hash": manifest.training_data_hash,
                 "excluded_sources": list(data.excluded_sources), "limit": cfg.limit},
        "sweep": {"rows": sweep_rows, "sizes": sweep_sizes, "tolerance": SWEEP_TOLERANCE,
                  "rule": "best validation score; within the tolerance, the shallowest deepest layer, then the fewest "
                          "layers (cheaper at inference); the best 2 and 3 layers of the chosen pooling are also tried "
                          "side by side"},
        "chosen": {"layer": layer, "layers": list(layers), "pooling": pooling, "kind": best["kind"], "threshold_mode": manifest.threshold_mode},
        "heads": {k: {"eval": _round(v), "fit": next(c for c in candidates if c["kind"] == k)["fit"].describe(),
                      "best_epoch": next(c for c in candidates if c["kind"] == k)["history"]["best_epoch"],
                      "seconds": next(c for c in candidates if c["kind"] == k)["seconds"]}
                  for k, v in head_eval.items()},
        "head": _round(chosen_eval),
        "baseline": {"eval": _round(baseline_eval), "config": baseline_info} if baseline_eval else None,
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_threads": _threads()},
        "seconds": {"features_and_sweep": round(feature_seconds, 1), "total": round(time.time() - started, 1)},
    }
    if out is not None:
        out = Path(out)
        save_head(out, best["module"], manifest)
        results["head_dir"] = str(out)
        results["head_bytes"] = (out / "head.safetensors").stat().st_size
        say(f"saved the {best['kind']} head to {out} ({results['head_bytes'] / 1e6:.2f} MB)")
    if results_dir is not None:
        write_results(results, Path(results_dir), recorder=recorder)
    return results


def evaluate_scores(objective: str, P_val: np.ndarray, P_test: np.ndarray, Y: dict, groups_val: Sequence[str]):
    """Val and test metrics of scores, thresholds chosen on val (multilabel: global or per-class
    by cross-fitting over the val groups). Returns (metrics, the thresholds)."""
    if objective == "multiclass":
        return {"val": multiclass_metrics(P_val, Y["val"]), "test": multiclass_metrics(P_test, Y["test"])}, {}
    t, _ = best_global_threshold(P_val, Y["val"])
    pc = per_class_thresholds(P_val, Y["val"], t)
    mode, crossfit = choose_threshold_mode(P_val, Y["val"], groups_val)
    res = {
        "threshold_mode": mode,
        "global_threshold": t,
        **crossfit,
        "val": multilabel_metrics(P_val, Y["val"], pc if mode == "per-class" else t),
        "test": multilabel_metrics(P_test, Y["test"], pc if mode == "per-class" else t),
        "test_global": multilabel_metrics(P_test, Y["test"], t),
        "test_per_class": multilabel_metrics(P_test, Y["test"], pc),
    }
    return res, {"threshold": t, "class_thresholds": pc, "mode": mode}


def fit_baseline(cfg: HarnessConfig, splits: dict, Y: dict, parents, groups_val: Sequence[str],
                 say: Callable[[str], None]) -> tuple[dict, dict]:
    """The TF-IDF + logistic regression baseline on the head's splits: C chosen among
    ``cfg.baseline_C`` by the val score, then scored like the head. Returns (metrics, its config)."""
    from secfm.training.baseline import TfidfBaseline

    tr_texts = [e.text for e in splits["train"]]

    def fit_one(C: float) -> tuple:
        b = TfidfBaseline("multilabel" if cfg.objective == "multilabel" else "multiclass", C=C).fit(tr_texts, Y["train"])
        Pv = b.scores([e.text for e in splits["val"]])
        if parents is not None:
            Pv = lift_parents(Pv, parents)
        v = _val_score(Pv, Y["val"], cfg.objective)
        say(f"baseline tfidf-logreg C={C}: val {v:.3f} ({b.fit_seconds:.0f}s)")
        return v, b, Pv

    (_, b, Pv), _ = choose_on_validation(cfg.baseline_C, fit_one, lambda r: r[0])
    Pt = b.scores([e.text for e in splits["test"]])
    if parents is not None:
        Pt = lift_parents(Pt, parents)
    metrics, _ = evaluate_scores(cfg.objective, Pv, Pt, Y, groups_val)
    info = b.describe()
    if len(cfg.baseline_C) > 1:
        info["C_candidates"] = list(cfg.baseline_C)
    return metrics, info


def refit_baseline(head_dir: str | Path, results_file: str | Path, C: Sequence[float] = (1.0, 4.0, 16.0),
                   command: str = "", progress: Callable[[str], None] | None = None, recorder=None) -> dict:
    """Fit the TF-IDF baseline on exactly the splits the head in ``head_dir`` trained on (the
    dataset is rebuilt with the head's exclusions and its hash must match the head's
    ``training_data_hash``) and put it into the head's results file ``results_file`` (JSON,
    with the markdown beside it rewritten). For a head trained with ``--no-baseline``: the
    results then report head and baseline on the same splits. Returns the results dict."""
    from secfm.heads import read_manifest

    say = progress or (lambda msg: log.info("%s", msg))
    m = read_manifest(head_dir)
    results_file = Path(results_file)
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SecfmError(f"cannot read the head's results {results_file}: {exc}") from exc
    if results.get("task") != m.task or results.get("data", {}).get("training_data_hash") not in (None, m.training_data_hash):
        raise SecfmError(f"{results_file} is not the results of the head in {head_dir} (task or data hash differ)")
    if m.task not in ("attack", "cwe"):
        raise SecfmError(f"--baseline-for takes an ATT&CK or CWE head, not a {m.task} head")
    cfg = HarnessConfig(task=m.task, model=m.base_model, exclude_sources=tuple(m.excluded_sources), baseline_C=tuple(C),
                        command=command)
    data = build_dataset(cfg)
    if data.data_hash() != m.training_data_hash:
        raise SecfmError(f"the {m.task} dataset this secfm builds (hash {data.data_hash()[:12]}) is not the one the head in "
                         f"{head_dir} trained on ({m.training_data_hash[:12]}); the baseline would not share its splits")
    splits = {s: data.split(s) for s in ("train", "val", "test")}
    Y = {s: label_matrix(rows, data.labels) for s, rows in splits.items()}
    if list(data.labels) != list(m.labels):
        raise SecfmError(f"the dataset's labels are not the head's ({len(data.labels)} vs {len(m.labels)})")
    parents = parent_index(data.labels) if cfg.task == "attack" else None
    say(f"baseline on the head's splits: {len(splits['train'])} train / {len(splits['val'])} val / {len(splits['test'])} test rows")
    metrics, info = fit_baseline(cfg, splits, Y, parents, [e.source for e in splits["val"]], say)
    info["added_by"] = command or "secfm.training.heads.refit_baseline"
    results["baseline"] = {"eval": _round(metrics), "config": info}
    # through a recorder the old provenance gives way to this run's
    write_results_files(results_file, {k: v for k, v in results.items() if k != "provenance"} if recorder is not None else results,
                        results_markdown, recorder)
    return results


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _round(value):
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 4)
    return value


# ---------------------------------------------------------------------------------------------
# results files
# ---------------------------------------------------------------------------------------------
def write_results(results: dict, directory: Path, recorder=None) -> tuple[Path, Path]:
    """heads-TASK.json/.md in ``directory``; through ``recorder`` (secfm/provenance.py) when given, so
    the JSON carries the command, commit, data, cores, load at start and end and wall time."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"heads-{results['task']}"
    if results["data"].get("excluded_sources"):
        stem += "-excl"
    jpath = directory / f"{stem}.json"
    write_results_files(jpath, results, results_markdown, recorder)
    return jpath, jpath.with_suffix(".md")


def results_markdown(r: dict) -> str:
    task = r["task"]
    lines = [f"# Classifier head: {'ATT&CK technique extraction' if task == 'attack' else 'CVE to CWE mapping'}", ""]
    lines += [f"Made by: `{r['command']}`", "",
              f"- created: {r['created']}; base model: `{r['model']}`"
              + (f" + adapter `{r['adapter']}`" if r.get("adapter") else "")
              + f"; knowledge: ATT&CK {r['knowledge']['attack'] or '-'}, CWE {r['knowledge']['cwe'] or '-'}",
              f"- data: {r['data']['train']} train / {r['data']['val']} val / {r['data']['test']} test rows, "
              f"{r['data']['labels']} labels; "
              + ("held-out entities: " f"{r['data']['val_sources']} val, {r['data']['test_sources']} test "
                 "(groups, software, campaigns; campaigns travel with their groups)" if task == "attack"
                 else f"held-out CVEs: {r['data']['val_sources']} val, {r['data']['test_sources']} test"),
              f"- chosen: layer {layers_label(r['chosen'].get('layers') or [r['chosen']['layer']])}"
              + (" (concatenated)" if len(r['chosen'].get('layers') or [0]) > 1 else "")
              + f", {r['chosen']['pooling']} pooling, {r['chosen']['kind']} head"
              + (f", {r['chosen']['threshold_mode']} thresholds" if task == "attack" else ""),
              ""]
    if r["data"].get("excluded_sources"):
        lines += [f"- excluded sources: {', '.join(r['data']['excluded_sources'])}", ""]
    lines += ["## Test split (held out)", ""]
    if task == "attack":
        cols = ["micro_f1", "macro_f1", "micro_precision", "micro_recall", "p_at_1", "p_at_5", "r_at_5"]
        header = "| system | micro F1 | macro F1 | micro P | micro R | P@1 | P@5 | R@5 |"
    else:
        cols = ["top1", "top5", "micro_f1", "macro_f1", "p_at_5"]
        header = "| system | top-1 | top-5 | micro F1 | macro F1 | P@5 |"
    lines += [header, "|" + "---|" * (len(cols) + 1)]

    def row(name, m):
        return f"| {name} | " + " | ".join(_fmt(m[c]) for c in cols) + " |"

    for kind, h in r["heads"].items():
        mark = " (chosen)" if kind == r["chosen"]["kind"] else ""
        lines.append(row(f"head {kind}{mark}", h["eval"]["test"]))
        if task == "attack":
            other = "test_global" if h["eval"]["threshold_mode"] == "per-class" else "test_per_class"
            lines.append(row(f"head {kind}, {'global' if other == 'test_global' else 'per-class'} thresholds", h["eval"][other]))
    if r.get("baseline"):
        lines.append(row("baseline TF-IDF + logistic regression", r["baseline"]["eval"]["test"]))
        if task == "attack":
            b = r["baseline"]["eval"]
            other = "test_global" if b["threshold_mode"] == "per-class" else "test_per_class"
            lines.append(row(f"baseline, {'global' if other == 'test_global' else 'per-class'} thresholds", b[other]))
    lines += ["", "Micro/macro F1 at the thresholds tuned on the validation split (macro over labels with gold "
              "in the split); P@k: share of the top k that are gold; R@5: share of gold in the top 5."
              + (" Gold and predictions include parents of sub-techniques." if task == "attack" else
                 " A hit is any CWE the catalog lists the CVE under."), ""]
    lines += ["## Validation split", "", header, "|" + "---|" * (len(cols) + 1)]
    for kind, h in r["heads"].items():
        lines.append(row(f"head {kind}", h["eval"]["val"]))
    if r.get("baseline"):
        lines.append(row("baseline", r["baseline"]["eval"]["val"]))
    if r["sweep"]["rows"]:
        s = r["sweep"]
        metric = "val_micro_f1" if task == "attack" else "val_top1"
        lines += ["", f"## Layer and pooling sweep (linear head; {s['sizes'].get('train')} train / "
                  f"{s['sizes'].get('val')} val texts)", "", f"Rule: {s['rule']} (tolerance {s['tolerance']}).", ""]
        if s.get("from"):
            lines[-1:-1] = [f"From {s['from']}.", ""]
        lines += [f"| layer | pooling | {metric} | val macro F1 |", "|---|---|---|---|"]
        for x in s["rows"]:
            lines.append(f"| {layers_label(x.get('layers') or [x['layer']])} | {x['pooling']} | {_fmt(x[metric])} | {_fmt(x['val_macro_f1'])} |")
    lines += ["", f"Seconds: {r['seconds']}; threads: {r['environment']['cpu_threads']}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# GPU path: LoRA + head, end to end (peft; head in modules_to_save)
# ---------------------------------------------------------------------------------------------
def train_joint(cfg: HarnessConfig, out: str | Path, init_head: str | Path | None = None, lora_r: int = 8,
                steps: int = 1000, lr: float = 1e-4, batch_size: int = 16, device: str | None = None,
                max_train: int | None = None) -> dict:
    """Fine-tune LoRA on the base model and the head together. The head is attached to the
    model as ``secfm_head`` and listed in peft's ``modules_to_save``; the LoRA adapter (without
    the head) is saved in ``out/adapter`` and the head in ``out`` with ``adapter: adapter``.
    Starts from ``init_head`` (a head trained on frozen features) when given."""
    import torch
    from peft import LoraConfig, get_peft_model

    from secfm.engines.transformers_engine import decoder_layers, load_causal_lm
    from secfm.heads import load_head
    from secfm.models import resolve, tokenizer_for
    from secfm.registry import default_model_name
    from secfm.settings import default_device

    device = device or default_device()
    model_name = cfg.model or default_model_name()
    if cfg.layer is None or cfg.pooling is None:
        if init_head is None:
            raise SecfmError("joint training needs --layer and --pooling (or --init-head from a frozen-feature run)")
    asked = layer_list(cfg.layer)
    if asked is not None and len(asked) > 1:
        raise SecfmError("joint training takes one layer; heads over several layers train on frozen features only")
    data = build_dataset(cfg)
    start_head = load_head(init_head, model=model_name) if init_head else None
    if start_head is not None and len(start_head.manifest.layers) > 1:
        raise SecfmError(f"joint training takes one layer; {init_head} is a head over layers "
                         f"{layers_label(start_head.manifest.layers)}")
    layer = asked[0] if asked is not None else start_head.manifest.layer
    pooling = cfg.pooling or start_head.manifest.pooling
    kind = start_head.manifest.kind if start_head else cfg.fit.kind
    resolved = resolve(model_name)
    tokenizer = tokenizer_for(resolved)
    lm = load_causal_lm(resolved, device, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    lm.train()
    train, val = data.split("train"), data.split("val")
    if max_train:
        train = subsample(train, max_train)
    labels = data.labels
    Ytr, Yva = label_matrix(train, labels), label_matrix(val, labels)
    parents = parent_index(labels) if cfg.task == "attack" else None
    hidden = lm.config.get_text_config().hidden_size
    head = start_head.module if start_head else build_module(hidden, len(labels), kind, cfg.fit.hidden_dim if kind == "mlp" else None, cfg.fit.dropout)
    head = head.to(device=device, dtype=torch.float32)
    lm.secfm_head = head
    config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], modules_to_save=["secfm_head"])
    peft_model = get_peft_model(lm, config)
    inner, blocks = decoder_layers(peft_model)
    target = blocks[layer - 1] if layer > 0 else blocks[len(blocks) + layer]
    captured = {}

    class _Stop(Exception):
        pass

    def hook(_m, _i, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    handle = target.register_forward_hook(hook)
    saved_head = peft_model.base_model.model.secfm_head  # the trainable copy (ModulesToSaveWrapper)

    def pooled(texts):
        tokenizer.padding_side = "right"
        batch = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=cfg.max_length)
        batch = {k: v.to(device) for k, v in batch.items()}
        try:
            peft_model(**batch, use_cache=False)
        except _Stop:
            pass
        h = captured["h"].float()
        mask = batch["attention_mask"].float()
        if pooling == "last":
            return h[torch.arange(h.shape[0]), batch["attention_mask"].sum(1) - 1]
        w = mask.clone()
        w[:, 0] = torch.where(mask.sum(1) > 1, 0.0, 1.0)
        return (h * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)

    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    pos_w = torch.from_numpy(_class_weights(Ytr, cfg.objective, cfg.fit)).to(device)
    rng = np.random.default_rng(cfg.fit.seed)
    losses = []
    try:
        for _step in range(steps):
            idx = rng.choice(len(train), size=min(batch_size, len(train)), replace=False)
            z = saved_head(pooled([train[i].text for i in idx]))
            y = torch.from_numpy(Ytr[idx]).to(device)
            if cfg.objective == "multilabel":
                loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y, pos_weight=pos_w)
            else:
                t = y / y.sum(1, keepdim=True).clamp(min=1)
                loss = -(t * torch.log_softmax(z, 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        peft_model.eval()
        with torch.inference_mode():
            P_val = []
            for s in range(0, len(val), batch_size):
                P_val.append(saved_head(pooled([e.text for e in val[s : s + batch_size]])).float().cpu().numpy())
            P_val = _probabilities(np.concatenate(P_val), cfg.objective, parents) if P_val else np.zeros((0, len(labels)))
    finally:
        handle.remove()
    out = Path(out)
    adapter_dir = out / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    _strip_head_from_adapter(adapter_dir, model_name)
    head_module = build_module(hidden, len(labels), kind, cfg.fit.hidden_dim if kind == "mlp" else None)
    head_module.load_state_dict({k: v.detach().float().cpu() for k, v in saved_head.state_dict().items()}
                                if not hasattr(saved_head, "modules_to_save") else
                                {k: v.detach().float().cpu() for k, v in saved_head.modules_to_save["default"].state_dict().items()})
    if cfg.objective == "multilabel":
        t, _ = best_global_threshold(P_val, Yva)
        pc = per_class_thresholds(P_val, Yva, t)
        val_metrics = multilabel_metrics(P_val, Yva, t)
    else:
        t, pc = 0.5, None
        val_metrics = multiclass_metrics(P_val, Yva)
    manifest = HeadManifest(
        task=cfg.task, kind=kind, objective=cfg.objective, base_model=model_name, adapter="adapter", layer=layer,
        pooling=pooling, max_length=cfg.max_length, input_dim=hidden,
        hidden_dim=cfg.fit.hidden_dim if kind == "mlp" else None, labels=list(labels), threshold=float(t),
        class_thresholds=[round(float(x), 3) for x in pc] if pc is not None else None, threshold_mode="global",
        training_data_hash=data.data_hash(),
        trained_sources=data.entity_sources("train"),
        excluded_sources=list(data.excluded_sources), metrics={"val": _round(val_metrics)},
        training={"joint": {"lora_r": lora_r, "steps": steps, "lr": lr, "batch_size": batch_size,
                            "final_loss": round(losses[-1], 4) if losses else None}, "command": cfg.command},
        created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    save_head(out, head_module, manifest)
    return {"out": str(out), "val": _round(val_metrics), "steps": steps, "losses": losses[-5:]}


def _strip_head_from_adapter(adapter_dir: Path, base_model: str) -> None:
    """Leave only the LoRA weights in the adapter (the head lives in head.safetensors) and name
    the registry base model, so ``get_engine(model, adapter=...)`` loads it."""
    from safetensors.torch import load_file, save_file

    weights = adapter_dir / "adapter_model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if "secfm_head" not in k}, str(weights))
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["modules_to_save"] = [m for m in (config.get("modules_to_save") or []) if m != "secfm_head"] or None
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2))

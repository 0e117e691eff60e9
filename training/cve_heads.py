"""The CVE heads trained on NVD: description -> CWE, description -> the eight CVSS v3.1 base metrics.

Input: a `secfm data cve` folder (date splits, near-duplicate groups). A head's logits are a
linear map of the description's TF-IDF features (word 1-2 grams, sublinear tf) plus, optionally,
a linear map of the standardized pooled hidden states of the embedded model (``layers``); both
parts are trained together (AdamW, early stopping on the validation split). The baseline beside
it is the TF-IDF part alone with a large vocabulary: multinomial logistic regression, its L2
strength chosen on the validation split. Every design (layers, vocabulary, class weighting,
regularization) is chosen on the validation split; the test split is scored once at the end.

* ``cwe``: softmax over the CWE ids NVD uses that have at least ``min_count`` training CVEs; a
  CVE whose CWE is rarer is trained under its nearest ancestor in the label set (CWE ChildOf
  hierarchy) or, without one, left out (counted). Soft targets over a CVE's CWEs. Metrics:
  top-1/top-5 (a hit is any of NVD's CWEs of the CVE), macro-F1 of the top-1, ECE of the top-1
  confidence, 95% bootstrap intervals.
* ``cvss``: one softmax per base metric (AV, AC, PR, UI, S, C, I, A); the vector is the most
  likely value of each, the base score comes from the ``cvss`` package. Metrics: per-metric
  accuracy, exact-vector rate, mean absolute deviation of the base score, with intervals.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from secfm.errors import SecfmError
from secfm.heads import apply_temperatures, probabilities, softmax_groups
from secfm.heads import label_groups as _groups

log = logging.getLogger(__name__)

CVSS_METRICS = {
    "AV": ("N", "A", "L", "P"), "AC": ("L", "H"), "PR": ("N", "L", "H"), "UI": ("N", "R"),
    "S": ("U", "C"), "C": ("N", "L", "H"), "I": ("N", "L", "H"), "A": ("N", "L", "H"),
}
CVSS_LABELS = [f"{m}:{v}" for m, values in CVSS_METRICS.items() for v in values]
TOKEN_PATTERN = r"(?u)\b[\w][\w.\-]*[\w]\b|\b\w\b"
BOOTSTRAP = 1000
CLASS_WEIGHTS = ("none", "sqrt", "inverse")
#: how a CVSS head turns its eight distributions into one vector: each metric's most likely
#: value, or the vector whose base score has the least expected deviation from the true one
CVSS_DECODINGS = ("argmax", "expected-score")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class CveHeadData:
    task: str
    labels: list[str]
    texts: dict[str, list[str]]
    ids: dict[str, list[str]]
    Y: dict[str, np.ndarray]  # training targets (cwe: soft over mapped labels; cvss: one-hot per group)
    gold: dict[str, list[tuple[str, ...]]]  # NVD's own labels (cwe ids, or the vector) for scoring
    years: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)


def _ancestor_map(cwe_ids: Sequence[str], label_set: set[str]) -> dict[str, str | None]:
    """Each CWE id -> itself when in ``label_set``, else its nearest ChildOf ancestor in it (BFS)."""
    from secfm.knowledge import load_cwe

    kb = load_cwe()
    out: dict[str, str | None] = {}
    for cid in cwe_ids:
        if cid in label_set:
            out[cid] = cid
            continue
        seen, frontier, found = {cid}, [cid], None
        while frontier and found is None:
            nxt = []
            for c in frontier:
                for p in (kb.parents(c) if kb.get(c) is not None else []):  # categories, unknown ids: no parents
                    pid = p.cwe_id
                    if pid in label_set:
                        found = pid
                        break
                    if pid not in seen:
                        seen.add(pid)
                        nxt.append(pid)
                if found:
                    break
            frontier = nxt
        out[cid] = found
    return out


def vector_metrics(vector: str) -> dict[str, str] | None:
    """``{"AV": "N", ...}`` of a CVSS 3.x vector (None when a base metric is missing)."""
    parts = dict(p.split(":", 1) for p in vector.split("/")[1:] if ":" in p)
    got = {m: parts.get(m) for m in CVSS_METRICS}
    if any(got[m] not in CVSS_METRICS[m] for m in CVSS_METRICS):
        return None
    return got


def build_vector(values: dict[str, str]) -> str:
    return "CVSS:3.1/" + "/".join(f"{m}:{values[m]}" for m in CVSS_METRICS)


def excluded_rows(rows: list[dict], exclude: set[str]) -> set[str]:
    """CVE ids to leave out: the listed ones and every member of their near-duplicate groups."""
    if not exclude:
        return set()
    groups = {r["group"] for r in rows if r["id"] in exclude}
    return {r["id"] for r in rows if r["id"] in exclude or r["group"] in groups}


def prepare(splits: dict[str, list[dict]], task: str, min_count: int = 10, exclude: set[str] | None = None,
            train_since: int | None = None) -> CveHeadData:
    """Rows of the `secfm data cve` splits -> texts, targets and gold for one task."""
    if task not in ("cwe", "cvss"):
        raise SecfmError(f"--task must be cwe or cvss, not {task!r}")
    names = ("train", "validation", "test", "later_test")
    all_rows = [r for s in names for r in splits.get(s, [])]
    drop = excluded_rows(all_rows, set(exclude or ()))
    info: dict = {"excluded_cves": len(drop), "excluded_listed": len(set(exclude or ()))}
    keep = {s: [r for r in splits.get(s, []) if r["id"] not in drop] for s in names}
    if train_since:
        keep["train"] = [r for r in keep["train"] if r["year"] >= train_since]
    texts, ids, Y, gold, years = {}, {}, {}, {}, {}
    if task == "cwe":
        counts = Counter(c for r in keep["train"] for c in r["cwes"])
        labels = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        label_set = set(labels)
        amap = _ancestor_map(sorted(counts), label_set)
        where = {c: i for i, c in enumerate(labels)}
        mapped_up = Counter()
        unmapped = Counter()
        for s in names:
            rows = [r for r in keep[s] if r["cwes"]]
            T, ids_, G, Yr, yr = [], [], [], [], []
            for r in rows:
                targets = set()
                for c in r["cwes"]:
                    m = amap.get(c) if s == "train" else (c if c in label_set else None)
                    if s == "train":
                        if m is None:
                            unmapped[c] += 1
                        elif m != c:
                            mapped_up[c] += 1
                    if m is not None:
                        targets.add(m)
                if s == "train" and not targets:
                    continue  # only CWEs too rare and without an ancestor in the label set
                y = np.zeros(len(labels), dtype=np.float32)
                for m in targets:
                    y[where[m]] = 1.0
                T.append(r["description"])
                ids_.append(r["id"])
                G.append(tuple(r["cwes"]))
                Yr.append(y)
                yr.append(r["year"])
            texts[s], ids[s], gold[s], years[s] = T, ids_, G, np.asarray(yr)
            Y[s] = np.stack(Yr) if Yr else np.zeros((0, len(labels)), dtype=np.float32)
        rare = [c for c in counts if c not in label_set]
        info.update({
            "cwe_ids_in_train": len(counts), "classes": len(labels), "min_count": min_count,
            "rare_cwe_ids": len(rare), "rare_train_cves_mapped_to_an_ancestor": int(sum(mapped_up.values())),
            "rare_cwe_ids_mapped": len(mapped_up), "rare_train_labels_without_ancestor": int(sum(unmapped.values())),
            "rare_cwe_ids_without_ancestor": len(unmapped),
            "coverage": {s: round(float(np.mean([any(c in label_set for c in g) for g in gold[s]])), 4) if gold[s] else None
                         for s in names},
        })
    else:
        labels = list(CVSS_LABELS)
        where = {c: i for i, c in enumerate(labels)}
        for s in names:
            T, ids_, G, Yr, yr = [], [], [], [], []
            for r in keep[s]:
                if not r["cvss_vector"]:
                    continue
                values = vector_metrics(r["cvss_vector"])
                if values is None:
                    continue
                y = np.zeros(len(labels), dtype=np.float32)
                for m, v in values.items():
                    y[where[f"{m}:{v}"]] = 1.0
                T.append(r["description"])
                ids_.append(r["id"])
                G.append((r["cvss_vector"],))
                Yr.append(y)
                yr.append(r["year"])
            texts[s], ids[s], gold[s], years[s] = T, ids_, G, np.asarray(yr)
            Y[s] = np.stack(Yr) if Yr else np.zeros((0, len(labels)), dtype=np.float32)
        info["classes"] = len(labels)
    info["rows"] = {s: len(texts[s]) for s in names}
    return CveHeadData(task, labels, texts, ids, Y, gold, years, info)


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------
def fit_vectorizer(texts: Sequence[str], max_features: int, min_df: int = 2):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df, max_features=max_features,
                          lowercase=True, token_pattern=TOKEN_PATTERN, strip_accents="unicode", dtype=np.float32)
    vec.fit(texts)
    return vec


def text_feature_params(vec) -> dict:
    return {"kind": "tfidf", "ngram_range": list(vec.ngram_range), "sublinear_tf": vec.sublinear_tf,
            "lowercase": vec.lowercase, "token_pattern": vec.token_pattern, "strip_accents": vec.strip_accents,
            "norm": vec.norm, "vocabulary_size": len(vec.vocabulary_)}


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------
@dataclass
class CveFitConfig:
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 2e-3  # the hidden-state part (Adam)
    text_lr: float = 0.5  # the text part (Adagrad, sparse)
    text_l2: float = 1e-6  # L2 on the text weights (per example, added to the loss)
    hidden_l2: float = 1e-4
    dropout: float = 0.1  # on the hidden-state part
    class_weight: str = "none"  # none, sqrt (square root of inverse frequency) or inverse (inverse frequency)
    recency: float = 0.0  # weight of a training row: exp(recency * (year - last year))
    patience: int = 2
    seed: int = 0
    kind: str = "linear"  # the hidden-state part: linear or mlp (one hidden layer)
    hidden_dim: int = 512  # mlp width

    def describe(self) -> dict:
        return asdict(self)


def _torch_sparse(T):
    import torch

    coo = T.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data.astype(np.float32)), size=coo.shape, check_invariants=False).coalesce()




def _bag(T):
    """(indices, offsets, weights) of a CSR matrix for ``nn.EmbeddingBag``."""
    import torch

    T = T.tocsr()
    return (torch.from_numpy(T.indices.astype(np.int64)), torch.from_numpy(T.indptr[:-1].astype(np.int64)),
            torch.from_numpy(T.data.astype(np.float32)))


def fit(T_train, X_train: np.ndarray | None, Y_train: np.ndarray, T_val, X_val: np.ndarray | None,
        Y_val: np.ndarray, objective: str, labels: Sequence[str], cfg: CveFitConfig,
        val_score: Callable[[np.ndarray], float], years: np.ndarray | None = None):
    """Train the head (text part, plus the hidden part when X is given); early stopping on
    ``val_score(P_val)`` (higher is better). The text part trains as a sparse ``EmbeddingBag``
    (only the features in a batch are touched: Adagrad, L2 on the touched rows). Returns
    (head module, history)."""
    import warnings

    import torch
    from torch import nn

    from secfm.heads import build_module
    from secfm.training.head_training import early_stopping, standardize_input

    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    T_train, T_val = T_train.tocsr(), T_val.tocsr()
    n, V = T_train.shape
    d = 0 if X_train is None else X_train.shape[1]
    C = Y_train.shape[1]
    hidden_part = build_module(d, C, cfg.kind if d else "linear", cfg.hidden_dim, cfg.dropout)
    if d:
        standardize_input(hidden_part, X_train)
    text = nn.EmbeddingBag(V, C, mode="sum", sparse=True)
    nn.init.zeros_(text.weight)
    groups = _groups(labels) if objective == "groups" else None
    w = np.ones(n, dtype=np.float32)
    if cfg.class_weight not in CLASS_WEIGHTS:
        raise SecfmError(f"class weighting must be one of {', '.join(CLASS_WEIGHTS)}, not {cfg.class_weight!r}")
    if cfg.class_weight != "none" and objective == "multiclass":
        freq = np.maximum(Y_train.sum(axis=0), 1.0)
        power = 0.5 if cfg.class_weight == "sqrt" else 1.0
        cw = np.clip((freq.mean() / freq) ** power, 0.2, 10.0 if power == 0.5 else 30.0)
        w *= (Y_train / np.maximum(Y_train.sum(axis=1, keepdims=True), 1) * cw).sum(axis=1)
    if cfg.recency and years is not None:
        w *= np.exp(cfg.recency * (years - years.max())).astype(np.float32)
    w = w / w.mean()
    Yt = torch.from_numpy(Y_train.astype(np.float32))
    wt = torch.from_numpy(w.astype(np.float32))
    Xt = torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.float32)) if d else None
    sparse_opt = torch.optim.Adagrad(text.parameters(), lr=cfg.text_lr)
    dense_opt = torch.optim.Adam(hidden_part.parameters(), lr=cfg.lr)
    total_steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    warm = max(1, total_steps // 20)
    val_bag = _bag(T_val)
    X_val_t = torch.from_numpy(np.ascontiguousarray(X_val, dtype=np.float32)) if d else torch.zeros((T_val.shape[0], 0))
    step = 0

    def train_epoch(_epoch: int) -> float:
        nonlocal step
        hidden_part.train()
        perm = rng.permutation(n)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            decay = min(1.0, (step + 1) / warm) * max(0.05, 1 - step / total_steps)
            for opt, base_lr in ((sparse_opt, cfg.text_lr), (dense_opt, cfg.lr)):
                for g in opt.param_groups:
                    g["lr"] = base_lr * decay
            step += 1
            bi, bo, bw = _bag(T_train[idx])
            xb = Xt[idx] if d else torch.zeros((len(idx), 0))
            z = hidden_part(xb) + text(bi, bo, per_sample_weights=bw)
            y = Yt[idx]
            if groups is None:
                target = y / y.sum(dim=1, keepdim=True).clamp(min=1.0)
                per_row = -(target * torch.log_softmax(z, dim=1)).sum(dim=1)
            else:
                per_row = sum(-(y[:, g] * torch.log_softmax(z[:, g], dim=1)).sum(dim=1) for _, g in groups)
            loss = (per_row * wt[idx]).mean()
            touched = torch.unique(bi)
            reg = cfg.text_l2 * nn.functional.embedding(touched, text.weight, sparse=True).pow(2).sum()
            if d:
                reg = reg + cfg.hidden_l2 * sum(p.pow(2).sum() for name, p in hidden_part.named_parameters()
                                                if name.startswith("net") and p.dim() > 1)
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            (loss + reg).backward()
            sparse_opt.step()
            dense_opt.step()
            total += float(loss.detach()) * len(idx)
        return total / n

    def validate() -> float:
        hidden_part.eval()
        with torch.inference_mode():
            z = (hidden_part(X_val_t) + text(*val_bag[:2], per_sample_weights=val_bag[2])).numpy()
        return float(val_score(probabilities(z, objective, labels)))

    best, history = early_stopping(
        cfg.epochs, cfg.patience, train_epoch, validate,
        lambda: ({k: v.clone() for k, v in hidden_part.state_dict().items()}, text.weight.detach().clone()),
        floor=-1e9, on_epoch=lambda epoch, loss, score: log.info("epoch %d: loss %.4f val %.4f", epoch, loss, score))
    state, text_weight = best if best is not None else (hidden_part.state_dict(), text.weight.detach())
    module = build_module(d, C, cfg.kind if d else "linear", cfg.hidden_dim, cfg.dropout, text_dim=V)
    module.load_state_dict({**state, "text_weight": text_weight}, strict=True)
    module.eval()
    return module, history


def predict(module, T, X: np.ndarray | None, objective: str, labels: Sequence[str], batch: int = 4096) -> np.ndarray:
    return probabilities(predict_logits(module, T, X, labels, batch), objective, labels)


def predict_logits(module, T, X: np.ndarray | None, labels: Sequence[str], batch: int = 4096) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, T.shape[0], batch):
            tb = _torch_sparse(T[s : s + batch])
            xb = torch.from_numpy(np.ascontiguousarray(X[s : s + batch], dtype=np.float32)) if X is not None \
                else torch.zeros((tb.shape[0], 0))
            out.append(module(xb, tb).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(labels)), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def _interval(values: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP) -> list[float]:
    from secfm.evals.metrics import ratio_ci

    lo, hi = ratio_ci(values, np.ones(len(values)), resamples, seed)
    return [round(lo, 4), round(hi, 4)]


def cwe_metrics(P: np.ndarray, labels: Sequence[str], gold: Sequence[tuple[str, ...]], seed: int = 0,
                resamples: int = BOOTSTRAP) -> dict:
    """Top-1/top-5 (any of NVD's CWEs counts), macro-F1 of the top-1 over the CWE ids in gold,
    ECE of the top-1 confidence (15 bins), each figure's 95% bootstrap interval."""
    n = len(gold)
    if n == 0:
        return {"n": 0}
    order = np.argsort(-P, axis=1)[:, :5]
    lab = np.asarray(labels)
    top1 = lab[order[:, 0]]
    hit1 = np.asarray([top1[i] in gold[i] for i in range(n)], dtype=float)
    hit5 = np.asarray([any(lab[j] in gold[i] for j in order[i]) for i in range(n)], dtype=float)
    conf = P[np.arange(n), order[:, 0]]
    # macro-F1: per CWE id seen in gold; a prediction is correct for the gold id it matches,
    # otherwise it counts for the first gold id (false negative) and the predicted id (false positive)
    classes = sorted({c for g in gold for c in g} | set(top1.tolist()))
    where = {c: i for i, c in enumerate(classes)}
    pred_idx = np.asarray([where[c] for c in top1])
    gold_idx = np.asarray([where[top1[i]] if hit1[i] else where[gold[i][0]] for i in range(n)])
    in_gold = np.zeros(len(classes), dtype=bool)
    for g in gold:
        for c in g:
            in_gold[where[c]] = True

    def macro(sel: np.ndarray) -> float:
        # over the CWE ids with gold in the whole split (fixed, so resamples measure the same
        # thing); in a resample, an id neither in gold nor predicted is left out
        k = len(classes)
        tp = np.bincount(gold_idx[sel][hit1[sel] > 0], minlength=k)
        fp = np.bincount(pred_idx[sel][hit1[sel] == 0], minlength=k)
        fn = np.bincount(gold_idx[sel][hit1[sel] == 0], minlength=k)
        denom = 2 * tp + fp + fn
        use = in_gold & (denom > 0)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        return float(f1[use].mean()) if use.any() else 0.0

    # stratified by the CVE's (scored) gold CWE: every class keeps its number of gold CVEs in each
    # resample (a plain resample drops the rare classes at random, and with them their zeros, which
    # biased the interval above the estimate)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(gold_idx == k) for k in np.unique(gold_idx)]
    boots = [macro(np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata]))
             for _ in range(min(resamples, 300))] or [float("nan")]
    return {
        "n": n, "top1": round(float(hit1.mean()), 4), "top1_ci": _interval(hit1, seed, resamples),
        "top5": round(float(hit5.mean()), 4), "top5_ci": _interval(hit5, seed, resamples),
        "macro_f1": round(macro(np.arange(n)), 4),
        "macro_f1_ci": [round(float(np.percentile(boots, 2.5)), 4), round(float(np.percentile(boots, 97.5)), 4)],
        "ece": round(ece(conf, hit1), 4), "mean_confidence": round(float(conf.mean()), 4),
        "gold_classes": int(in_gold.sum()),
    }


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width confidence bins of |accuracy - confidence| x share."""
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (confidence > lo) & (confidence <= hi)
        if m.any():
            total += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(total)



# ---------------------------------------------------------------------------------------------
# calibration (fitted on the validation split)
# ---------------------------------------------------------------------------------------------
def fit_temperatures(z: np.ndarray, Y: np.ndarray, objective: str, labels: Sequence[str]) -> list[float]:
    """One temperature per softmax group minimizing the negative log-likelihood of the (soft)
    targets ``Y`` under ``softmax(z / T)`` (temperature scaling; it never changes a ranking)."""
    from scipy.optimize import minimize_scalar

    out = []
    for _, idx in softmax_groups(objective, labels):
        zg, yg = np.asarray(z[:, idx], dtype=np.float64), np.asarray(Y[:, idx], dtype=np.float64)
        yg = yg / np.maximum(yg.sum(axis=1, keepdims=True), 1e-12)

        def nll(log_t: float, zg=zg, yg=yg) -> float:
            a = zg / np.exp(log_t)
            a = a - a.max(axis=1, keepdims=True)
            logp = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
            return float(-(yg * logp).sum(axis=1).mean())

        res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
        out.append(round(float(np.exp(res.x)), 4))
    return out


# ---------------------------------------------------------------------------------------------
# one head from several trained designs, each label group from its own (CVSS: per metric)
# ---------------------------------------------------------------------------------------------
def merge_by_group(modules: dict[str, object], choice: dict[str, str], labels: Sequence[str]):
    """A head module whose label group ``g`` is ``modules[choice[g]]``'s: its text weights and,
    for the one design with a hidden-state input if any, its
    dense part; a text-only design contributes zero dense-output weights and its bias. The
    designs must share the text vocabulary."""
    import copy

    import torch

    groups = dict(_groups(labels))
    if set(choice) != set(groups):
        raise SecfmError(f"a choice for each of {sorted(groups)} is needed, got {sorted(choice)}")
    parts = {name: modules[name] for name in set(choice.values())}
    dense = [n for n, m in parts.items() if int(m.mu.shape[0])]
    if len(dense) > 1:
        raise SecfmError(f"at most one design with a dense input can be merged per label group, not {sorted(dense)}")
    if len({tuple(m.text_weight.shape) for m in parts.values()}) != 1:
        raise SecfmError("designs merged per label group must share their text vocabulary")
    merged = copy.deepcopy(parts[dense[0]] if dense else next(iter(parts.values())))
    state = merged.state_dict()
    last = None
    if dense:
        last = max((k for k in state if k.startswith("net.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    with torch.no_grad():
        for group, name in choice.items():
            src, idx = parts[name].state_dict(), torch.as_tensor(groups[group])
            state["text_weight"][:, idx] = src["text_weight"][:, idx]
            if dense and name != dense[0]:
                state[last][idx] = 0.0
                state[last.replace(".weight", ".bias")][idx] = src["bias"][idx]
            elif not dense:
                state["bias"][idx] = src["bias"][idx]
    merged.load_state_dict(state, strict=True)
    return merged.eval()


def _vector_table(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(label index of each metric's value for every CVSS 3.1 base vector, (2592, 8); their base scores)."""
    from itertools import product

    from secfm.evals.metrics import all_base_scores
    from secfm.evals.parsers import BASE_METRICS

    where = {label: i for i, label in enumerate(labels)}
    keys = list(BASE_METRICS)
    if keys != list(CVSS_METRICS):
        raise SecfmError("the CVSS metric order differs between the evaluator and the heads")
    rows = [[where[f"{k}:{v}"] for k, v in zip(keys, values)] for values in product(*(BASE_METRICS[k] for k in keys))]
    return np.asarray(rows, dtype=np.int64), np.asarray(all_base_scores(), dtype=np.float64)


def decode_vectors(P: np.ndarray, labels: Sequence[str], decoding: str = "argmax", tolerance: float = 0.0,
                   batch: int = 2048) -> np.ndarray:
    """For each row, the label indexes (n, 8) of the chosen value of each metric.

    ``argmax``: each metric's most likely value. ``expected-score``: the metrics are taken as
    independent, each of the 2,592 vectors gets the product of its values' probabilities, and
    the chosen vector is the most likely one among those whose base score comes within
    ``tolerance`` score points of the least expected absolute deviation from the true base
    score (0: a median of the score distribution; a large tolerance gives back argmax)."""
    groups = _groups(labels)
    if decoding == "argmax":
        return np.stack([np.asarray(idx)[P[:, idx].argmax(axis=1)] for _, idx in groups], axis=1) if len(P) \
            else np.zeros((0, len(groups)), dtype=np.int64)
    if decoding != "expected-score":
        raise SecfmError(f"CVSS decoding must be one of {', '.join(CVSS_DECODINGS)}, not {decoding!r}")
    table, scores = _vector_table(labels)
    values, inverse = np.unique(scores, return_inverse=True)
    cost = np.abs(values[:, None] - values[None, :])  # (K, K) |x - y|
    out = np.zeros((len(P), table.shape[1]), dtype=np.int64)
    logP = np.log(np.clip(np.asarray(P, dtype=np.float64), 1e-12, 1.0))
    for s in range(0, len(P), batch):
        lp = logP[s : s + batch][:, table].sum(axis=2)  # (b, 2592) log-probability of each vector
        pv = np.exp(lp - lp.max(axis=1, keepdims=True))
        pv /= pv.sum(axis=1, keepdims=True)
        by_score = np.zeros((len(pv), len(values)))
        np.add.at(by_score.T, inverse, pv.T)  # probability of each base-score value
        expected = by_score @ cost  # (b, K) expected |x - true score| for each candidate score x
        best = expected <= expected.min(axis=1, keepdims=True) + tolerance + 1e-9
        allowed = best[:, inverse]  # vectors whose score is an optimum
        pick = np.where(allowed, lp, -np.inf).argmax(axis=1)
        out[s : s + batch] = table[pick]
    return out


def cvss_predictions(P: np.ndarray, labels: Sequence[str], decoding: str = "argmax",
                     tolerance: float = 0.0) -> list[tuple[str, dict[str, tuple[str, float]]]]:
    """For each row: (vector, {metric: (value, probability)}), the vector decoded by ``decoding``."""
    out = []
    groups = _groups(labels)
    for row, chosen in zip(P, decode_vectors(P, labels, decoding, tolerance)):
        values = {}
        for (metric, _), j in zip(groups, chosen):
            values[metric] = (labels[j].split(":", 1)[1], float(row[j]))
        out.append((build_vector({m: v for m, (v, _) in values.items()}), values))
    return out


def cvss_metrics(P: np.ndarray, labels: Sequence[str], gold: Sequence[tuple[str, ...]], seed: int = 0,
                 resamples: int = BOOTSTRAP, decoding: str = "argmax", tolerance: float = 0.0) -> dict:
    from secfm.evals.metrics import cvss_base_score

    n = len(gold)
    if n == 0:
        return {"n": 0}
    preds = cvss_predictions(P, labels, decoding, tolerance)
    per_metric = {m: [] for m in CVSS_METRICS}
    exact, dev = [], []
    for (vector, values), (g,) in zip(preds, gold):
        gv = vector_metrics(g)
        for m in CVSS_METRICS:
            per_metric[m].append(float(values[m][0] == gv[m]))
        exact.append(float(all(values[m][0] == gv[m] for m in CVSS_METRICS)))
        dev.append(abs(cvss_base_score(vector) - cvss_base_score(g)))
    exact, dev = np.asarray(exact), np.asarray(dev)
    return {
        "n": n, "mad": round(float(dev.mean()), 4), "mad_ci": _interval(dev, seed, resamples),
        "exact_vector": round(float(exact.mean()), 4), "exact_vector_ci": _interval(exact, seed, resamples),
        "per_metric_accuracy": {m: round(float(np.mean(v)), 4) for m, v in per_metric.items()},
        "mean_metric_accuracy": round(float(np.mean([np.mean(v) for v in per_metric.values()])), 4),
        "decoding": decoding if decoding == "argmax" else f"{decoding} (tolerance {tolerance:g})",
    }


def task_metrics(task: str, P: np.ndarray, labels: Sequence[str], gold, seed: int = 0, resamples: int = BOOTSTRAP,
                 decoding: str = "argmax", tolerance: float = 0.0) -> dict:
    if task == "cwe":
        return cwe_metrics(P, labels, gold, seed, resamples)
    return cvss_metrics(P, labels, gold, seed, resamples, decoding, tolerance)


def selection_score(task: str, P: np.ndarray, data: CveHeadData, split: str = "validation") -> float:
    """What designs are chosen by on the validation split: top-1 (cwe), mean per-metric accuracy (cvss)."""
    Y = data.Y[split]
    if task == "cwe":
        return float((Y[np.arange(len(P)), P.argmax(axis=1)] > 0).mean())
    correct = []
    for _, idx in _groups(data.labels):
        correct.append((Y[np.arange(len(P)), np.asarray(idx)[P[:, idx].argmax(axis=1)]] > 0).mean())
    return float(np.mean(correct))


# ---------------------------------------------------------------------------------------------
# one design, trained and scored
# ---------------------------------------------------------------------------------------------
@dataclass
class Design:
    name: str
    max_features: int = 50_000
    layers: tuple[int, ...] = ()
    fit: CveFitConfig = field(default_factory=CveFitConfig)

    def describe(self) -> dict:
        return {"name": self.name, "max_features": self.max_features, "layers": list(self.layers),
                "fit": self.fit.describe()}


def design_inputs(design: Design, data: CveHeadData, hidden, split: str) -> np.ndarray | None:
    """The dense input of ``design`` on ``split``: the hidden states of its layers (``hidden(split,
    layers)``), None for a text-only design."""
    return hidden(split, tuple(design.layers)) if design.layers else None


@dataclass
class Trained:
    design: Design
    vectorizer: object
    module: object
    history: dict
    val_score: float
    seconds: float
    P: dict[str, np.ndarray] = field(default_factory=dict)  # probabilities (temperatures applied)
    Z: dict[str, np.ndarray] = field(default_factory=dict)  # logits
    temperatures: list[float] | None = None  # one per softmax group, fitted on validation
    decoding: str = "argmax"  # CVSS: how the vector is read from the eight distributions
    decoding_tolerance: float = 0.0
    group_choice: dict[str, str] | None = None  # CVSS: the design each metric comes from
    task: str = "cwe"

    @property
    def objective(self) -> str:
        return "groups" if self.task == "cvss" else "multiclass"

    def calibrate(self, data: CveHeadData, split: str = "validation") -> list[float]:
        """Fit the temperatures on ``split`` (validation) and re-derive every split's probabilities."""
        self.temperatures = fit_temperatures(self.Z[split], data.Y[split], self.objective, data.labels)
        self.refresh(data.labels)
        return self.temperatures

    def refresh(self, labels: Sequence[str]) -> None:
        for s, z in self.Z.items():
            self.P[s] = probabilities(apply_temperatures(z, self.temperatures, self.objective, labels), self.objective, labels)


def train_design(data: CveHeadData, design: Design, hidden: Callable[[str, tuple[int, ...]], np.ndarray] | None = None,
                 splits: Sequence[str] = ("validation",)) -> Trained:
    """Fit ``design`` on train (early stopping on validation) and predict ``splits``."""
    started = time.time()
    objective = "multiclass" if data.task == "cwe" else "groups"
    cache = data.info.setdefault("_vectorizers", {})  # designs with the same vocabulary size share it
    if design.max_features not in cache:
        vec = fit_vectorizer(data.texts["train"], design.max_features)
        cache[design.max_features] = (vec, {})
    vec, matrices = cache[design.max_features]
    for s in set(("train", "validation", *splits)):
        if s not in matrices:
            matrices[s] = vec.transform(data.texts[s])
    T = {s: matrices[s] for s in set(("train", "validation", *splits))}
    X = {s: design_inputs(design, data, hidden, s) for s in T}
    module, history = fit(T["train"], X["train"], data.Y["train"], T["validation"], X["validation"], data.Y["validation"],
                          objective, data.labels, design.fit,
                          val_score=lambda P: selection_score(data.task, P, data), years=data.years["train"])
    trained = Trained(design, vec, module, history, history["best_val"], 0.0, task=data.task)
    for s in splits:
        trained.Z[s] = predict_logits(module, T[s], X[s], data.labels)
    trained.refresh(data.labels)
    trained.seconds = round(time.time() - started, 1)
    log.info("design %s: val %.4f (%ss)", design.name, trained.val_score, trained.seconds)
    return trained


def manifest_for(trained: Trained, data: CveHeadData, model: str, metrics: dict, command: str, out: Path,
                 max_length: int = 128) -> object:
    from secfm.heads import HeadManifest, write_trained_cves
    from secfm.knowledge import load_cwe

    d = trained.design
    layers = list(d.layers)
    input_dim = int(trained.module.mu.shape[0])
    kind = d.fit.kind if input_dim else "linear"
    hidden_dim = d.fit.hidden_dim if kind == "mlp" else None
    entry = write_trained_cves(out, data.ids["train"])
    return HeadManifest(
        task=data.task, kind=kind, objective="multiclass" if data.task == "cwe" else "groups",
        base_model=model, adapter=None, layer=max(layers) if layers else 1, layers=layers or None,
        pooling="mean", max_length=max_length, input_dim=input_dim, hidden_dim=hidden_dim, labels=list(data.labels),
        top_k=5, cwe_version=load_cwe().version if data.task == "cwe" else None,
        training_data_hash=hashlib.sha256("\n".join(sorted(data.ids["train"])).encode()).hexdigest(),
        trained_sources=[], excluded_sources=[], metrics=metrics,
        training={"design": d.describe(), "best_epoch": trained.history["best_epoch"], "command": command,
                  "group_choice": trained.group_choice,
                  "data": {k: v for k, v in data.info.items() if not k.startswith("_")}},
        temperatures=trained.temperatures, decoding=trained.decoding, decoding_tolerance=trained.decoding_tolerance,
        created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        text_features=text_feature_params(trained.vectorizer), uses_hidden=bool(layers), trained_cves=entry,
    )


def save_trained(trained: Trained, data: CveHeadData, model: str, metrics: dict, command: str, out: str | Path) -> Path:
    from secfm.heads import save_head

    out = Path(out)
    manifest = manifest_for(trained, data, model, metrics, command, out)
    return save_head(out, trained.module, manifest, vectorizer=trained.vectorizer)


__all__ = ["CVSS_DECODINGS", "CVSS_LABELS", "CVSS_METRICS", "CveFitConfig", "CveHeadData", "Design", "Trained",
           "apply_temperatures", "build_vector", "cvss_metrics", "cvss_predictions", "cwe_metrics", "decode_vectors",
           "design_inputs", "ece", "fit_temperatures", "merge_by_group", "predict_logits", "prepare", "save_trained",
           "train_design", "vector_metrics"]

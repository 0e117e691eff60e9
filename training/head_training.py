"""What every classifier head's training shares, whatever its task (ATT&CK in
:mod:`secfm.training.heads`, CWE/CVSS in :mod:`secfm.training.cve_heads` and
:mod:`secfm.training.cve_train`): the hidden-state features of the texts (cached on disk by
:mod:`secfm.features`, the model loaded only when something misses), the early-stopping loop on the validation split, the head
beside its baseline figure by figure (the rule "a shipped head never loses to the baseline
reported beside it" reads :func:`figure_losses`), and the results files (JSON and its markdown
beside it, through :mod:`secfm.provenance` when a recorder is given).

The task modules keep what is theirs: labels, losses and optimizers (the inside of an epoch),
the validation score, designs, metrics and which reported figures count (a table of
:class:`Figure`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: a validation score must beat the best so far by more than this to count as progress
MIN_DELTA = 1e-4


class FeatureSource:
    """Hidden-state features of texts for one base model (and adapter), from the feature cache;
    ``engine`` when given, else one engine built on the first miss and kept."""

    def __init__(self, model: str | None = None, adapter: str | None = None, engine=None, max_length: int = 128,
                 batch_size: int = 32):
        from secfm.registry import default_model_name

        self.model = model or default_model_name()
        self.adapter = adapter
        self.max_length = max_length
        self.batch_size = batch_size
        self._engine = engine

    def engine(self):
        if self._engine is None:
            from secfm.engines import get_engine

            log.info("loading %s for features", self.model)
            self._engine = get_engine("transformers", model=self.model, adapter=self.adapter)
        return self._engine

    def __call__(self, texts: Sequence[str], layers, poolings, label: str = "features") -> dict:
        """``{(layer, pooling): (len(texts), dim) array}`` for every layer and pooling asked."""
        from secfm.features import features

        return features(list(texts), layers, poolings, engine=self._engine, engine_factory=self.engine,
                        model=self.model, adapter=self.adapter, max_length=self.max_length,
                        batch_size=self.batch_size, label=label)

    def stacked(self, texts: Sequence[str], layers: Sequence[int], pooling: str = "mean",
                label: str = "features"):
        """One matrix: the ``pooling`` features of ``layers`` side by side, in that order."""
        from secfm.features import stack_layers

        return stack_layers(self(texts, list(layers), [pooling], label=label), list(layers), pooling)


def standardization(X) -> tuple:
    """Per-feature mean and scale of the training features (the scale floored a little above zero
    so that a constant feature does not blow up), float32."""
    mu = X.mean(axis=0)
    scale = X.std(axis=0) + 1e-4 * (X.std(axis=0).mean() + 1e-6)
    return mu.astype("float32"), scale.astype("float32")


def standardize_input(module, X_train) -> None:
    """Set a head module's input standardization (its ``mu`` and ``scale`` buffers) from the
    training features."""
    import torch

    mu, scale = standardization(X_train)
    module.mu.copy_(torch.from_numpy(mu))
    module.scale.copy_(torch.from_numpy(scale))


def choose_on_validation(options: Sequence, train: Callable, score: Callable[[object], float],
                         prefer: Callable[[object], bool] | None = None) -> tuple[object, list]:
    """Train every option (a design, a head kind, a regularization strength) with ``train`` and
    return (the trained one with the best validation ``score``, all of them in order). Ties go to
    one that ``prefer`` marks (the cheaper), then to the earliest. The test split plays no part."""
    trained = [train(option) for option in options]
    best = max(trained, key=lambda t: (score(t), bool(prefer(t)) if prefer is not None else False))
    return best, trained


def early_stopping(epochs: int, patience: int, train_epoch: Callable[[int], float], validate: Callable[[], float],
                   snapshot: Callable[[], object], *, floor: float = -1.0, min_delta: float = MIN_DELTA,
                   on_epoch: Callable[[int, float, float], None] | None = None) -> tuple[object | None, dict]:
    """Run up to ``epochs`` epochs and stop after ``patience`` epochs without progress.

    ``train_epoch(epoch)`` trains one epoch (0-based) and returns its mean training loss;
    ``validate()`` returns the validation score (higher is better); ``snapshot()`` returns a copy
    of what is to be kept (the weights) and is called at each new best. ``floor`` is the score to
    beat at the start. Returns (the best snapshot, or None when no epoch beat ``floor``; the
    history: best epoch (1-based, 0 for none), best score, epochs run and the curve of
    ``{"epoch", "loss", "val"}``)."""
    best_score, best_state, best_epoch = floor, None, 0
    curve: list[dict] = []
    bad = 0
    for epoch in range(epochs):
        loss = train_epoch(epoch)
        score = validate()
        curve.append({"epoch": epoch + 1, "loss": round(loss, 5), "val": round(score, 4)})
        if on_epoch is not None:
            on_epoch(epoch + 1, loss, score)
        if score > best_score + min_delta:
            best_score, best_state, best_epoch = score, snapshot(), epoch + 1
            bad = 0
        else:
            bad += 1
            if bad >= patience:
                break
    return best_state, {"best_epoch": best_epoch, "best_val": round(best_score, 4), "epochs_run": len(curve),
                        "curve": curve}


@dataclass(frozen=True)
class Figure:
    """A reported figure of a split's metrics: ``key`` names it (``"top1"``), or with ``.*`` a
    dict of figures named by their own keys (``"per_metric_accuracy.*"``: AV, AC, ...)."""

    key: str
    higher_is_better: bool = True

    def values(self, metrics: dict) -> list[tuple[str, float]]:
        """(name, value) of this figure in ``metrics``, in their order."""
        if self.key.endswith(".*"):
            return list(metrics[self.key[:-2]].items())
        return [(self.key, metrics[self.key])]

    def worse(self, head: float, baseline: float) -> bool:
        return head < baseline if self.higher_is_better else head > baseline


def figure_losses(head: dict, baseline: dict, figures: Sequence[Figure]) -> list[str]:
    """The figures (metrics of one split) on which ``head`` is worse than ``baseline``, in the
    order of ``figures``."""
    out = []
    for f in figures:
        theirs = dict(f.values(baseline))
        out += [name for name, value in f.values(head) if f.worse(value, theirs[name])]
    return out


def comparison(head: dict, baseline: dict | None, figures: Sequence[Figure], origin: dict[str, str] | None = None) -> dict:
    """Per split (``head`` and ``baseline`` map a split to its metrics): each figure of the head
    beside the baseline's, which is better, ``from`` (the design a figure's labels come from, in
    ``origin``), and the figures where the head loses. Splits the baseline lacks, or where the
    head scored no rows, are left out."""
    if not baseline:
        return {}
    out = {}
    for split, h in head.items():
        b = baseline.get(split)
        if not b or not h.get("n"):
            continue
        rows = {}
        for f in figures:
            theirs = dict(f.values(b))
            for name, value in f.values(h):
                rows[name] = {"head": value, "baseline": theirs[name], "better": "higher" if f.higher_is_better else "lower",
                              **({"from": origin[name]} if origin and name in origin else {})}
        out[split] = {"figures": rows, "head_loses_on": figure_losses(h, b, figures)}
    return out


def write_results_files(json_path: str | Path, payload: dict, render: Callable[[dict], str],
                        recorder=None) -> dict:
    """``payload`` as JSON at ``json_path`` and ``render(payload)`` as markdown beside it (same
    stem, ``.md``). With ``recorder`` (a :class:`secfm.provenance.Recorder`) the JSON carries the
    provenance and the markdown its footer, both written atomically; without, plain files.
    Returns what the JSON holds."""
    json_path = Path(json_path)
    md_path = json_path.with_suffix(".md")
    if recorder is not None:
        stamped = recorder.write_json(json_path, payload)
        recorder.write_text(md_path, render(stamped))
        return stamped
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render(payload), encoding="utf-8")
    return payload


__all__ = ["MIN_DELTA", "FeatureSource", "Figure", "choose_on_validation", "comparison", "early_stopping", "figure_losses", "standardization",
           "standardize_input", "write_results_files"]

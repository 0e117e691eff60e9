"""What every classifier head's training shares, whatever its task (ATT&CK in
:mod:`secfm.training.heads`, CWE/CVSS in :mod:`secfm.training.cve_heads` and
:mod:`secfm.training.cve_train`): the early-stopping loop on the validation split and the
results files (JSON and its markdown beside it, through :mod:`secfm.provenance` when a recorder
is given).

The task modules keep what is theirs: labels, losses and optimizers (the inside of an epoch),
the validation score, designs and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

#: a validation score must beat the best so far by more than this to count as progress
MIN_DELTA = 1e-4


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


__all__ = ["MIN_DELTA", "early_stopping", "write_results_files"]

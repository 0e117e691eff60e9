"""Zero-shot classification by label log-likelihood, with contextual calibration.

Each text is put into a prompt; every label is scored as a continuation of that prompt (the engine
computes the shared prompt once per text). Small base models prefer some label words whatever
the input, so scores are calibrated by dividing by the label probabilities the model gives to
content-free inputs ("N/A", empty), as in Zhao et al., "Calibrate Before Use" (ICML 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secfm.engines.base import Engine

CONTENT_FREE = ("N/A", "", "[MASK]")


@dataclass(frozen=True)
class Classification:
    text: str
    label: str
    probabilities: dict[str, float]  # calibrated, sum to one


def label_probabilities(engine: Engine, prompts: Sequence[str], labels: Sequence[str], normalise: str = "per_token") -> np.ndarray:
    """Rows of label probabilities (softmax over labels of their log-likelihoods) for each prompt."""
    continuations = [f" {label}" for label in labels]
    rows = []
    for results in engine.loglikelihood_many([(p, continuations) for p in prompts]):
        scores = np.array([r.per_token if normalise == "per_token" else r.logprob for r in results], dtype=np.float64)
        scores = np.exp(scores - scores.max())
        rows.append(scores / scores.sum())
    return np.array(rows)


def classify(
    engine: Engine,
    texts: Sequence[str],
    labels: Sequence[str],
    template: str = "Security text: {text}\nCategory:",
    calibrate: bool = True,
) -> list[Classification]:
    """Pick the most likely label for each text; ``template`` must contain ``{text}``."""
    probs = label_probabilities(engine, [template.format(text=t) for t in texts], labels)
    if calibrate:
        baseline = label_probabilities(engine, [template.format(text=t) for t in CONTENT_FREE], labels).mean(axis=0)
        probs = probs / baseline
        probs = probs / probs.sum(axis=1, keepdims=True)
    return [
        Classification(text, labels[int(row.argmax())], {label: float(p) for label, p in zip(labels, row)})
        for text, row in zip(texts, probs)
    ]


def suspicion_scores(
    engine: Engine,
    lines: Sequence[str],
    template: str = "Log line: {text}\nThis activity is",
    benign: str = "benign",
    malicious: str = "malicious",
    calibrate: bool = True,
) -> list[float]:
    """Probability that each log line is malicious rather than benign (calibrated)."""
    results = classify(engine, lines, [benign, malicious], template=template, calibrate=calibrate)
    return [r.probabilities[malicious] for r in results]


def accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold)) / max(len(gold), 1)


def precision_at_k(scores: Sequence[float], relevant: Sequence[bool], k: int) -> float:
    """Fraction of the ``k`` highest-scored items that are relevant."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(np.mean([relevant[i] for i in order])) if k else 0.0

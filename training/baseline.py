"""The baseline every head is compared with, in the same harness and splits: TF-IDF features
(word 1-2 grams, sublinear tf) and a linear classifier (one-vs-rest logistic regression).

For ATT&CK (multilabel) each label gets its own logistic regression; for CWE (multiclass) the
one-vs-rest scores are normalized over labels so they rank like probabilities. Thresholds,
metrics and splits come from :mod:`secfm.training.heads`, exactly as for the heads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


class TfidfBaseline:
    """TF-IDF + one-vs-rest logistic regression, ``scores(texts)`` -> (n, labels) in [0, 1]."""

    def __init__(self, objective: str = "multilabel", C: float = 4.0, max_features: int = 100_000,
                 ngram_range: tuple[int, int] = (1, 2), min_df: int = 1):
        self.objective = objective
        self.C = C
        self.max_features = max_features
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.vectorizer = None
        self.models: list = []
        self.constant: dict[int, float] = {}
        self.n_labels = 0
        self.fit_seconds = 0.0

    def fit(self, texts: Sequence[str], Y: np.ndarray) -> TfidfBaseline:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        started = time.time()
        Y = np.asarray(Y) > 0
        self.n_labels = Y.shape[1]
        self.vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=True, min_df=self.min_df,
                                          max_features=self.max_features, strip_accents="unicode", dtype=np.float32)
        X = self.vectorizer.fit_transform(texts)
        self.models = []
        self.constant = {}
        for j in range(self.n_labels):
            y = Y[:, j]
            if y.all() or not y.any():
                self.models.append(None)
                self.constant[j] = float(y.all())
                continue
            clf = LogisticRegression(C=self.C, solver="liblinear", max_iter=200)
            clf.fit(X, y)
            self.models.append(clf)
        # one matrix for fast scoring
        dim = X.shape[1]
        self.W = np.zeros((dim, self.n_labels), dtype=np.float32)
        self.b = np.full(self.n_labels, -30.0, dtype=np.float32)
        for j, clf in enumerate(self.models):
            if clf is None:
                self.b[j] = 30.0 if self.constant[j] else -30.0
            else:
                self.W[:, j] = clf.coef_[0]
                self.b[j] = clf.intercept_[0]
        self.models = []  # the matrix holds everything needed
        self.fit_seconds = time.time() - started
        return self

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        X = self.vectorizer.transform(texts)
        return np.asarray(X @ self.W) + self.b

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        z = self.decision(texts)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        if self.objective == "multiclass":
            return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        return p.astype(np.float32)

    def describe(self) -> dict:
        return {"name": "tfidf-logreg", "C": self.C, "ngram_range": list(self.ngram_range),
                "max_features": self.max_features, "sublinear_tf": True,
                "vocabulary": len(self.vectorizer.vocabulary_) if self.vectorizer is not None else 0,
                "fit_seconds": round(self.fit_seconds, 1)}

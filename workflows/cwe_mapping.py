"""CVE description -> CWE weakness with the classifier head (softmax over the catalog).

``map_cwe(text)`` returns the top-k weaknesses with their probabilities; :class:`CweMapper` is
also the predictor ``secfm eval cti-rcm --mode head`` uses (``predict(texts) ->
[[(CWE id, score), ...], ...]``, best first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from secfm.errors import SecfmError
from secfm.workflows.attack_extraction import _HeadRunner, _load_head


@dataclass(frozen=True)
class CweHit:
    id: str  # CWE-79
    name: str
    score: float  # probability under the head
    rank: int  # 1 = best

    def to_dict(self) -> dict:
        return asdict(self)


class CweMapper(_HeadRunner):
    task = "cwe"

    def __init__(self, head, engine=None, top_k: int = 5, batch_size: int = 16):
        if head.manifest.task != "cwe":
            raise SecfmError(f"{head.path} is a {head.manifest.task} head, not a CWE head")
        if top_k < 1:
            raise SecfmError("top_k must be at least 1")
        super().__init__(head, engine, batch_size)
        self.top_k = top_k
        from secfm.knowledge import load_cwe

        self._cwe = load_cwe()

    @classmethod
    def load(cls, head: str | Path | None = None, model: str | None = None, engine=None, **options) -> CweMapper:
        return cls(_load_head("cwe", head, model, engine), engine, **options)

    def map_many(self, texts: Sequence[str], top_k: int | None = None) -> list[list[CweHit]]:
        k = top_k or self.top_k
        P = self.scores(list(texts))
        out = []
        for row in P:
            best = np.argsort(-row)[:k]
            hits = []
            for rank, j in enumerate(best, start=1):
                cwe_id = self.head.labels[j]
                w = self._cwe.get(cwe_id)
                hits.append(CweHit(cwe_id, w.name if w else cwe_id, round(float(row[j]), 4), rank))
            out.append(hits)
        return out

    def map(self, text: str, top_k: int | None = None) -> list[CweHit]:
        return self.map_many([text], top_k)[0]

    def predict(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """For each text, the top-k CWE ids with probabilities, best first."""
        return [[(h.id, h.score) for h in hits] for hits in self.map_many(texts)]


_DEFAULTS: dict[tuple, CweMapper] = {}


def map_cwe(text: str, *, top_k: int = 5, head: str | Path | None = None, model: str | None = None, engine=None) -> list[CweHit]:
    """The CWE weaknesses a vulnerability description most likely describes, best first."""
    from secfm.inputs import check_text

    check_text(text, "text")
    key = (str(head) if head else None, model, id(engine) if engine is not None else None)
    mapper = _DEFAULTS.get(key)
    if mapper is None:
        mapper = CweMapper.load(head, model, engine)
        _DEFAULTS[key] = mapper
    return mapper.map(text, top_k)


def load_cwe_predictor(*, head: str | Path | None = None, model: str | None = None, engine=None, top_k: int = 5) -> CweMapper:
    """The predictor for ``secfm eval cti-rcm --mode head``: ``predict(texts)`` gives the top-k
    ``(CWE id, probability)`` per text, best first."""
    return CweMapper.load(head, model, engine, top_k=top_k)


__all__ = ["CweHit", "CweMapper", "load_cwe_predictor", "map_cwe"]

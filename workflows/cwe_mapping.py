"""CVE description -> CWE weakness with the CWE head trained on NVD (see :mod:`secfm.workflows.cve_analysis`).

``map_cwe(text)`` returns the top-k weaknesses with their probabilities; :class:`CweMapper` is
also the predictor ``secfm eval cti-rcm --mode head`` uses (``predict(texts) ->
[[(CWE id, score), ...], ...]``, best first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from secfm.errors import SecfmError


@dataclass(frozen=True)
class CweHit:
    id: str  # CWE-79
    name: str
    score: float  # probability under the head
    rank: int  # 1 = best

    def to_dict(self) -> dict:
        return asdict(self)


class CweMapper:
    """The CWE head (text features, and hidden states when the head uses them)."""

    task = "cwe"

    def __init__(self, head, engine=None, top_k: int = 5, batch_size: int = 16):
        from secfm.workflows.cve_analysis import CveAnalyzer

        if head.manifest.task != "cwe":
            raise SecfmError(f"{head.path} is a {head.manifest.task} head, not a CWE head")
        if top_k < 1:
            raise SecfmError("top_k must be at least 1")
        self.head = head
        self.top_k = top_k
        self.analyzer = CveAnalyzer(cwe_head=head, engine=engine, batch_size=batch_size)

    @classmethod
    def load(cls, head: str | Path | None = None, model: str | None = None, engine=None, **options) -> CweMapper:
        from secfm.workflows.cve_analysis import open_cve_head

        return cls(open_cve_head("cwe", head, model or (engine.model_name if engine is not None else None)), engine, **options)

    def map_many(self, texts: Sequence[str], top_k: int | None = None) -> list[list[CweHit]]:
        k = top_k or self.top_k
        return [[CweHit(h.id, h.name, h.score, h.rank) for h in hits]
                for hits in self.analyzer.predict_cwe(list(texts), top_k=k)]

    def map(self, text: str, top_k: int | None = None) -> list[CweHit]:
        return self.map_many([text], top_k)[0]

    def predict(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """For each text, the top-k CWE ids with probabilities, best first."""
        return [[(h.id, h.score) for h in hits] for hits in self.map_many(texts)]

    def describe(self) -> dict:
        return self.analyzer.describe().get("cwe", {})


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

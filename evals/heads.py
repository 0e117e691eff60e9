"""Head mode: classifier heads on the model's hidden states (CTI-RCM: CWE, CTI-ATE: ATT&CK).

The evaluator needs only :class:`HeadPredictor`. The heads themselves (training, saving,
loading) belong to the core (``secfm.heads``); :class:`EngineHeadPredictor` adapts a core head
to the protocol; without the core module the head mode stops with one clear line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from secfm.errors import SecfmError

Label = str
Scored = list[tuple[Label, float]]


@runtime_checkable
class HeadPredictor(Protocol):
    """Labels with scores for each text, best first (``[("CWE-79", 0.91), ("CWE-80", 0.04)]``)."""

    def predict(self, texts: Sequence[str]) -> list[Scored]: ...


def parse_exclude_sources(value: str | None) -> tuple[str, ...]:
    """``G0016,S0154`` or ``@FILE`` -> sorted ids (``secfm.heads.parse_sources``)."""
    if not value:
        return ()
    from secfm.heads import parse_sources

    return tuple(sorted(parse_sources(value)))


class EngineHeadPredictor:
    """A core head (``secfm.heads.Head``) over the engine's pooled hidden states, as a HeadPredictor.

    Labels come back best first with their probabilities; for multi-label heads only the labels
    that pass the head's own thresholds (``threshold`` is then 0: the runner keeps them all).
    """

    def __init__(self, head, engine, batch_size: int = 8):
        self.head = head
        self.engine = engine
        self.batch_size = batch_size
        m = head.manifest
        self.threshold = 0.0 if m.objective == "multilabel" else None

    def predict(self, texts: Sequence[str]) -> list[Scored]:
        m = self.head.manifest
        scores = self.head.run(texts, self.engine, batch_size=self.batch_size)
        limits = self.head.thresholds() if m.objective == "multilabel" else None
        out = []
        for row in scores:
            ranked = sorted(range(len(row)), key=lambda j: -row[j])
            if limits is not None:
                ranked = [j for j in ranked if row[j] >= limits[j]]
            out.append([(self.head.labels[j], float(row[j])) for j in ranked[: max(len(ranked), 1)]])
        return out

    def describe(self) -> dict:
        m = self.head.manifest
        return {
            "path": str(self.head.path),
            "task": m.task,
            "kind": m.kind,
            "layer": m.layer,
            "layers": list(m.layers),
            "pooling": m.pooling,
            "labels": len(m.labels),
            "threshold_mode": m.threshold_mode,
            "excluded_sources": list(m.excluded_sources),
            "attack_version": m.attack_version,
            "cwe_version": m.cwe_version,
        }


def load_head(path: str | Path | None, kind: str, engine=None, exclude_sources: Sequence[str] = ()) -> HeadPredictor:
    """The trained head at ``path`` for ``kind`` (``cwe`` or ``attack``), on ``engine``'s hidden states.

    Refuses a head of another task, one trained on another base model or adapter (the core's
    check), and one that saw any of ``exclude_sources`` (the core's one seen-sources check: the
    evaluated groups/software must be held out of head training).
    """
    from secfm.heads import open_head, seen_overlap

    model = getattr(engine, "model_name", None) if engine is not None else None
    adapter = getattr(engine, "adapter", None) if engine is not None else None
    train_hint = f"head mode needs --head DIR: a {kind} head trained by `secfm train head --task {kind}`"
    if path is None and (not model or adapter):  # heads are shipped for the registered base models only
        raise SecfmError(train_hint)
    head = open_head(kind, path, model, adapter=adapter, check_base=model is not None, train_hint=train_hint)
    leaked = seen_overlap(head.path, exclude_sources) if exclude_sources else []
    if leaked:
        raise SecfmError(
            f"the head at {head.path} saw {', '.join(leaked[:5])} (its training rows, retrieval index or calibration "
            f"documents), which this evaluation holds out (retrain with `secfm train head --task {kind} --exclude-sources ...`)"
        )
    if engine is None or not engine.has_hidden_states:
        raise SecfmError("head mode needs an engine with hidden states (the transformers engine)")
    return EngineHeadPredictor(head, engine)


# ---------------------------------------------------------------------------------------------
# CVE heads (CWE, CVSS): the heads trained on NVD; they record the CVEs they trained on
# ---------------------------------------------------------------------------------------------
CVE_KINDS = ("cwe", "cvss")
_CVE_URL = re.compile(r"CVE-\d{4}-\d{4,7}", re.IGNORECASE)


class CveHeadPredictor:
    """The CWE or CVSS head as a HeadPredictor: CWE ids with probabilities, best first; or the
    predicted CVSS vector with the product of its metric probabilities."""

    def __init__(self, analyzer, kind: str):
        self.analyzer = analyzer
        self.kind = kind
        self.head = analyzer.cwe_head if kind == "cwe" else analyzer.cvss_head
        self.threshold = None

    @property
    def needs_engine(self) -> bool:
        return self.head.needs_hidden

    def predict(self, texts: Sequence[str]) -> list[Scored]:
        if self.kind == "cwe":
            return [[(h.id, h.score) for h in hits] for hits in self.analyzer.predict_cwe(list(texts), top_k=10)]
        out = []
        for p in self.analyzer.predict_cvss(list(texts)):
            joint = 1.0
            for m in p.metrics:
                joint *= m.score
            out.append([(p.vector, joint)])
        return out

    def trained_cves(self) -> set[str]:
        from secfm.heads import trained_cves

        return trained_cves(self.head)

    def describe(self) -> dict:
        m = self.head.manifest
        return {"path": str(self.head.path), "task": m.task, "labels": len(m.labels), "uses_hidden": m.uses_hidden,
                "layers": list(m.layers) if m.uses_hidden else [], "text_features": bool(m.text_features),
                "trained_cves": (m.trained_cves or {}).get("count"), "created": m.created,
                "cwe_version": m.cwe_version}


def load_cve_head(path: str | Path | None, kind: str, model: str | None = None, engine=None) -> CveHeadPredictor:
    """The CWE (``cwe``) or CVSS (``cvss``) head at ``path`` (default: the shipped one); it needs
    an engine only when it reads hidden states."""
    from secfm.heads import find_head
    from secfm.workflows.cve_analysis import CveAnalyzer

    found = find_head(kind, path, model or (engine.model_name if engine is not None else None),
                      train_hint=f"head mode needs --head DIR: a {kind} head trained by `secfm train head --task {kind}`")
    analyzer = CveAnalyzer.load(cwe_head=found if kind == "cwe" else None, cvss_head=found if kind == "cvss" else None,
                                model=model, engine=engine, tasks=(kind,))
    return CveHeadPredictor(analyzer, kind)


def item_cve(url: str, text: str = "") -> str | None:
    """The CVE an evaluation item is about (its URL, else the first id in its text)."""
    m = _CVE_URL.search(url or "") or _CVE_URL.search(text or "")
    return m.group(0).upper() if m else None


def seen_items(head, items, text_column: str) -> tuple[list[str], int]:
    """(ids of items whose CVE the head trained on, items with a CVE)."""
    trained = head.trained_cves() if hasattr(head, "trained_cves") else set()
    seen, with_cve = [], 0
    for item in items:
        cve = item_cve(item.url, item.fields.get(text_column, ""))
        if cve is None:
            continue
        with_cve += 1
        if cve in trained:
            seen.append(item.id)
    return seen, with_cve


# ---------------------------------------------------------------------------------------------
# the ATT&CK document extractor (CTI-ATE): clean of the evaluated entities by construction
# ---------------------------------------------------------------------------------------------
_ENTITY_URL = re.compile(r"attack\.mitre\.org/(software|groups|campaigns)/([SGC]\d{4})(?![\d])", re.IGNORECASE)
_URL_PREFIX = {"software": "S", "groups": "G", "campaigns": "C"}


def item_entity(url: str) -> str | None:
    """The ATT&CK entity an item is about, from its URL (``.../software/S0066/`` -> ``S0066``,
    ``groups/Gxxxx``, ``campaigns/Cxxxx``); None when the URL names none (or the id's letter
    does not match its kind)."""
    m = _ENTITY_URL.search(url or "")
    if not m or m.group(2)[0].upper() != _URL_PREFIX[m.group(1).lower()]:
        return None
    return m.group(2).upper()


def load_attack_extractor(path: str | Path | None, items, engine=None, exclude_sources: Sequence[str] = (),
                          allow_seen: bool = False, train_limit: int | None = None, model: str | None = None,
                          progress=None):
    """The ATT&CK document extractor for CTI-ATE items, clean of their entities (read from each
    item's URL) and of ``exclude_sources``: the shipped one when clean, else one trained (or
    reused from the cache) without them; a given ``path`` that saw any of them is refused with
    one line naming how many items, unless ``allow_seen`` (then recorded as contaminated).
    ``progress(message)`` hears how the training of a clean extractor goes. Returns (extractor,
    record for metrics.json)."""
    from secfm.workflows.attack_extraction import SeenEntitiesError, expand_sources, load_attack_predictor

    if path is not None and not Path(path).expanduser().exists():
        raise SecfmError(f"head not found: {path}")
    entity_of = {item.id: item_entity(item.url) for item in items}
    from_urls = sorted({e for e in entity_of.values() if e})
    requested = sorted(set(from_urls) | {s.upper() for s in exclude_sources})
    try:
        extractor = load_attack_predictor(requested, head=path, model=model, engine=engine, allow_seen=allow_seen,
                                          train_limit=train_limit, progress=progress)
    except SeenEntitiesError as exc:
        held = expand_sources(exc.overlap)
        n = sum(1 for e in entity_of.values() if e in held)
        raise SecfmError(f"{exc}: {n} of the {len(entity_of)} items are about entities it saw; refusing to score them "
                         "(drop --head and the evaluator trains a clean extractor, or pass --allow-seen: the run is "
                         "then marked contaminated)") from None
    ex = extractor.exclusion
    seen = set(expand_sources(ex.seen)) if ex.seen else set()
    seen_ids = [i for i, e in entity_of.items() if e in seen]
    record = {
        "exclusion": {**ex.to_dict(), "entities_from_urls": from_urls,
                      "items_with_an_entity": sum(1 for e in entity_of.values() if e),
                      "check": "each item's entity (its URL: software/S…, groups/G…, campaigns/C…) and --exclude-sources "
                               "against the entities the sentence head, the retrieval index and the document model saw"},
        "contamination": {"contaminated": bool(seen_ids), "seen_items": len(seen_ids), "items": len(entity_of),
                          "allowed": allow_seen, "seen_entities": ex.seen[:50], "seen_ids": seen_ids[:50],
                          "check": "item entities (URLs) against the extractor's training, index and calibration entities"},
    }
    return extractor, record


def top_label(scored: Scored) -> Label | None:
    return max(scored, key=lambda s: s[1])[0] if scored else None


def labels_over(scored: Scored, threshold: float) -> list[Label]:
    """Labels scoring at least ``threshold``, best first."""
    return [label for label, score in sorted(scored, key=lambda s: -s[1]) if score >= threshold]

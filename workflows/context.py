"""What the workflows share: the model engine, the knowledge store, the technique source, id checks.

Everything is injectable (pass ``engine=``, ``store=``, ``technique_source=``); the defaults are
built once per process: the registry's default model on the transformers engine, the store at
``$SECFM_HOME/chroma`` (or ``$SECFM_CHROMA_URL``) when it has been built, and the ATT&CK
classifier head (``secfm.workflows.attack_extraction.extract_attack``) when that module is
installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from secfm.errors import SecfmError
from secfm.workflows.schemas import RejectedEntity, TechniqueRef

log = logging.getLogger(__name__)

#: marker for "use the default" where None means "none"
DEFAULT: Any = object()

TechniqueSource = Callable[[str], Iterable[Any]]

def default_engine(model: str | None = None, engine: str = "transformers", adapter: str | None = None, endpoint: str | None = None,
                   quantization: str | None = None):
    """The process's shared engine for (engine, model, adapter, endpoint, quantization), the one the
    heads, the API and the app use (``secfm.engines.shared_engine``)."""
    from secfm.engines import shared_engine

    return shared_engine(engine, model, adapter, endpoint, quantization)


def resolve_engine(engine, use_model: bool, model: str | None = None):
    if not use_model:
        return None
    if engine is not None:
        return engine
    return default_engine(model)


def resolve_store(store):
    """``store`` as given; DEFAULT -> the built default store or None; False -> disabled."""
    if store is DEFAULT:
        from secfm.workflows.store import default_store

        return default_store()
    return store


_HEAD_STATUS: dict[str, str] = {}


def default_technique_source(engine=None) -> tuple[TechniqueSource | None, str]:
    """``extract_attack``, the ATT&CK classifier head (run on ``engine`` when that engine has hidden
    states in process, so the weights are not loaded twice)."""
    from secfm.workflows.attack_extraction import extract_attack as fn

    if engine is not None and engine.has_hidden_states:
        return (lambda text: fn(text, engine=engine)), "head"
    return fn, "head"


def resolve_technique_source(source, engine=None) -> tuple[TechniqueSource | None, str]:
    if source is DEFAULT:
        return default_technique_source(engine)
    if source is None:
        return None, "none"
    return source, "custom"


def run_technique_source(source: TechniqueSource | None, text: str, status: list[str]) -> list[Any]:
    """Call the technique source; the first failure disables it for the rest of the batch and is
    reported in ``status[0]``."""
    if source is None or not status[0].startswith(("head", "custom")) or status[0].endswith("(failed)"):
        return []
    try:
        return list(source(text) or [])
    except SecfmError as exc:
        status[0] = f"{status[0]} unavailable: {exc} (failed)"
    except Exception as exc:  # noqa: BLE001
        status[0] = f"{status[0]} unavailable: {type(exc).__name__}: {exc} (failed)"
    log.debug("technique source failed: %s", status[0])
    return []


def _attr(hit: Any, name: str, default=None):
    if isinstance(hit, dict):
        return hit.get(name, default)
    return getattr(hit, name, default)


def check_technique(tid: str, source: str, score: float | None = None) -> tuple[TechniqueRef | None, RejectedEntity | None]:
    """A validated technique, or why it is rejected. Revoked/deprecated ids are replaced by
    their successor when there is one."""
    from secfm.knowledge import load_attack, validate_id

    check = validate_id(tid)
    if check.kind not in ("technique", "subtechnique"):
        return None, RejectedEntity(value=tid, kind="technique", reason=check.message or "not an ATT&CK technique id", source=source)
    if not check.known:
        return None, RejectedEntity(value=tid, kind="technique", reason=check.message, source=source)
    norm = check.normalized
    if not check.current:
        if not check.replaced_by:
            return None, RejectedEntity(value=tid, kind="technique", reason=check.message, source=source)
        norm = check.replaced_by  # a revoked or deprecated id stands for its successor
    tech = load_attack().techniques_by_id.get(norm)
    ref = TechniqueRef(id=norm, name=tech.name if tech else check.name, tactics=list(tech.tactics) if tech else [],
                       source=source, score=None if score is None else round(float(score), 4))
    return ref, None


def techniques_from_hits(hits: Iterable[Any], source: str = "head") -> tuple[list[TechniqueRef], list[RejectedEntity]]:
    refs, rejected = [], []
    for hit in hits:
        tid = _attr(hit, "id") or _attr(hit, "technique_id") or (hit if isinstance(hit, str) else None)
        if not tid:
            continue
        ref, bad = check_technique(str(tid), source, _attr(hit, "score"))
        if ref:
            refs.append(ref)
        if bad:
            rejected.append(bad)
    return refs, rejected


def merge_techniques(*groups: Iterable[TechniqueRef]) -> list[TechniqueRef]:
    """First mention wins (rules, then head, then model), one entry per id."""
    seen: dict[str, TechniqueRef] = {}
    for group in groups:
        for ref in group:
            if ref.id not in seen:
                seen[ref.id] = ref
    return list(seen.values())


def model_name_of(engine) -> str | None:
    return getattr(engine, "model_name", None) if engine is not None else None

"""One engine interface, several implementations, found through a registry of lazy entries.

``ENGINES`` maps an engine name to ``"module:Class"`` (in the spirit of lm-evaluation-harness's
model registry): nothing is imported until an engine of that name is built, so a GPU-only
backend costs nothing on a CPU machine. ``register_engine`` adds one (a plug-in backend is one
line); ``get_engine`` builds one; ``shared_engine`` keeps one per (name, model, adapter,
endpoint) per process, which heads, workflows, the API and the app all share.
"""

from __future__ import annotations

import threading

from secfm.engines.base import (
    LOOP_FREE,
    Engine,
    EngineUnsupported,
    Generation,
    LoglikResult,
    Message,
    SamplingParams,
    truncate_at_stop,
)
from secfm.errors import SecfmError
from secfm.lazy import resolve_target

#: engine name -> "module:Class" (imported on first use)
ENGINES: dict[str, str] = {
    "transformers": "secfm.engines.transformers_engine:TransformersEngine",
    "vllm": "secfm.engines.vllm_engine:VllmEngine",
    "openai": "secfm.engines.openai_engine:OpenAIEngine",
    "llama.cpp": "secfm.engines.llamacpp_engine:LlamaCppEngine",  # a GGUF file (the quant extra)
}
#: the names above, for option help texts (kept in registry order)
ENGINE_KINDS = tuple(ENGINES)
#: the engine a command uses unless told otherwise
DEFAULT_ENGINE = "transformers"


def register_engine(name: str, target: str) -> None:
    """Add (or replace) an engine: ``target`` is ``"package.module:ClassName"``."""
    if ":" not in target:
        raise SecfmError(f"engine target {target!r} must look like 'package.module:ClassName'")
    ENGINES[name] = target
    global ENGINE_KINDS
    ENGINE_KINDS = tuple(ENGINES)


def engine_class(name: str) -> type[Engine]:
    """The class registered under ``name`` (imported now)."""
    target = ENGINES.get(name)
    if target is None:
        raise SecfmError(f"unknown engine '{name}': choose one of {', '.join(ENGINES)}")
    try:
        return resolve_target(target)
    except ImportError as exc:
        raise SecfmError(f"the {name} engine cannot be imported ({exc})") from exc


def engine_name(kind: str = DEFAULT_ENGINE, endpoint: str | None = None) -> str:
    """The engine that ``kind`` with ``endpoint`` builds: an endpoint given with the default kind
    means ``openai`` (what status lines and run records name)."""
    return "openai" if endpoint and kind == DEFAULT_ENGINE else kind


#: every ``quantization=`` value some engine takes (``--quantization``'s choices)
QUANTIZATIONS = ("int8-dynamic",)


def check_quantization(kind: str = DEFAULT_ENGINE, endpoint: str | None = None,
                       quantization: str | None = None) -> type[Engine]:
    """The engine class ``kind`` with ``endpoint`` builds, after checking that it takes
    ``quantization`` (``None``: nothing to check); a CLI calls it before loading anything."""
    name = engine_name(kind, endpoint)
    cls = engine_class(name)
    if quantization is None:
        return cls
    if quantization not in QUANTIZATIONS:
        raise SecfmError(f"unknown quantization '{quantization}': choose {', '.join(QUANTIZATIONS)}")
    if quantization not in cls.quantizations:
        where = f"the endpoint {endpoint} serves its own weights" if endpoint else f"the {name} engine takes none"
        raise SecfmError(f"--quantization {quantization} needs the in-process transformers engine ({where})")
    return cls


def get_engine(
    kind: str = DEFAULT_ENGINE,
    model: str | None = None,
    adapter: str | None = None,
    endpoint: str | None = None,
    quantization: str | None = None,
    **options,
) -> Engine:
    """Build an engine by registry name: ``transformers`` (default), ``vllm`` (GPU) or ``openai``
    (``endpoint`` URL; an endpoint given with the default kind means ``openai``). With no model
    named, an in-process engine loads the registry's default model and an endpoint's engine asks
    the server what it serves (never the registry's default, which the server may not serve).
    ``quantization`` (``int8-dynamic``, the transformers engine on a CPU) quantizes the weights
    once loaded, an adapter merged into them first; an engine that takes none refuses it."""
    from secfm.registry import default_model_name

    cls = check_quantization(kind, endpoint, quantization)
    name = model if endpoint else (model or default_model_name())
    if quantization is not None:
        options["quantization"] = quantization
    return cls.build(model=name, adapter=adapter, endpoint=endpoint, **options)


_SHARED: dict[tuple, Engine] = {}
_SHARED_LOCK = threading.Lock()


def shared_engine(kind: str = DEFAULT_ENGINE, model: str | None = None, adapter: str | None = None,
                  endpoint: str | None = None, quantization: str | None = None) -> Engine:
    """One engine per (kind, model, adapter, endpoint, quantization) in this process: heads,
    workflows, the API and the app share it instead of loading the same weights twice.
    ``model=None`` is the registry's default model (the same entry as naming it). Heads keep
    reading the unquantized weights they were trained on (they ask without ``quantization``)."""
    from secfm.registry import default_model_name

    kind = engine_name(kind, endpoint)
    key = (kind, model or (None if endpoint else default_model_name()), adapter, endpoint, quantization)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = get_engine(kind, model=model, adapter=adapter, endpoint=endpoint, quantization=quantization)
        return _SHARED[key]


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "ENGINE_KINDS",
    "LOOP_FREE",
    "QUANTIZATIONS",
    "Engine",
    "EngineUnsupported",
    "Generation",
    "LoglikResult",
    "Message",
    "SamplingParams",
    "check_quantization",
    "engine_class",
    "engine_name",
    "get_engine",
    "register_engine",
    "shared_engine",
    "truncate_at_stop",
]

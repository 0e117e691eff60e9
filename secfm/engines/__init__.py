"""One engine interface, three implementations; ``get_engine`` picks one by name."""

from __future__ import annotations

import threading

from secfm.engines.base import Engine, LoglikResult, Message, SamplingParams, truncate_at_stop
from secfm.errors import SecfmError

ENGINE_KINDS = ("transformers", "vllm", "openai")


def get_engine(
    kind: str = "transformers",
    model: str | None = None,
    adapter: str | None = None,
    endpoint: str | None = None,
    **options,
) -> Engine:
    """Build an engine: ``transformers`` (default), ``vllm`` (GPU) or ``openai`` (``endpoint`` URL)."""
    from secfm.registry import default_model_name

    if endpoint and kind == "transformers":
        kind = "openai"
    model = model or default_model_name()
    if kind == "transformers":
        from secfm.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model=model, adapter=adapter, **options)
    if kind == "vllm":
        from secfm.engines.vllm_engine import VllmEngine

        return VllmEngine(model=model, adapter=adapter, **options)
    if kind == "openai":
        from secfm.engines.openai_engine import OpenAIEngine

        if not endpoint:
            raise SecfmError("the openai engine needs --endpoint URL (an OpenAI-compatible server)")
        return OpenAIEngine(endpoint=endpoint, model=model, **options)
    raise SecfmError(f"unknown engine '{kind}': choose one of {', '.join(ENGINE_KINDS)}")


_SHARED: dict[tuple, Engine] = {}
_SHARED_LOCK = threading.Lock()


def shared_engine(kind: str = "transformers", model: str | None = None, adapter: str | None = None,
                  endpoint: str | None = None) -> Engine:
    """One engine per (kind, model, adapter, endpoint) in this process: heads, workflows, the API
    and the app share it instead of loading the same weights twice."""
    key = (kind, model, adapter, endpoint)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = get_engine(kind, model=model, adapter=adapter, endpoint=endpoint)
        return _SHARED[key]


__all__ = ["ENGINE_KINDS", "Engine", "LoglikResult", "Message", "SamplingParams", "get_engine", "shared_engine", "truncate_at_stop"]

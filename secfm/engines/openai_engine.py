"""Any OpenAI-compatible server over HTTP: `secfm serve` (vLLM on a GPU, transformers serve on a CPU)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from secfm.engines.base import (
    Engine,
    EngineUnsupported,
    Generation,
    LoglikResult,
    Message,
    SamplingParams,
    truncate_at_stop,
)
from secfm.errors import SecfmError


class OpenAIEngine(Engine):
    kind = "openai"
    json_backend = "openai-json-schema"

    @classmethod
    def build(cls, model: str | None, adapter: str | None = None, endpoint: str | None = None, **options) -> Engine:
        if not endpoint:
            raise SecfmError("the openai engine needs --endpoint URL (an OpenAI-compatible server)")
        if adapter:
            raise SecfmError("the openai engine serves what the server serves: name the adapter's served model with --model")
        return cls(endpoint=endpoint, model=model, **options)

    @property
    def fast_decoding(self) -> bool:
        return True

    def __init__(
        self,
        endpoint: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        context_length: int | None = None,
        **_ignored,
    ):
        import openai

        base = endpoint.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        self.endpoint = base
        key = api_key or os.environ.get("SECFM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.client = openai.OpenAI(base_url=base, api_key=key, timeout=timeout, max_retries=max_retries)
        self._openai = openai
        self.model_name = model or self._first_served_model()
        self.adapter = None
        self._context_length = context_length
        self._tokenizer = None

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, fn, **kwargs):
        try:
            return fn(**kwargs)
        except self._openai.APIConnectionError as exc:
            raise SecfmError(f"cannot reach the model server at {self.endpoint}: {exc}") from exc
        except self._openai.APIStatusError as exc:
            raise SecfmError(f"model server at {self.endpoint} answered {exc.status_code}: {exc.message}") from exc

    def _first_served_model(self) -> str:
        models = self._call(self.client.models.list)
        ids = [m.id for m in models.data]
        if not ids:
            raise SecfmError(f"the server at {self.endpoint} serves no model")
        return ids[0]

    @staticmethod
    def _sampling(params: SamplingParams) -> dict:
        kwargs = {"max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p}
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = list(params.stop)
        extra = {}
        if params.repetition_penalty != 1.0:
            extra["repetition_penalty"] = params.repetition_penalty  # vLLM's and `secfm serve`'s field
        if params.no_repeat_ngram_size:
            extra["no_repeat_ngram_size"] = params.no_repeat_ngram_size  # `secfm serve`
            extra["vllm_xargs"] = {"no_repeat_ngram_size": params.no_repeat_ngram_size}  # vLLM's logits processor
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    # -- generation ----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        params = params or SamplingParams()
        out = []
        for prompt in prompts:
            resp = self._call(self.client.completions.create, model=self.model_name, prompt=prompt, **self._sampling(params))
            out.append(truncate_at_stop(resp.choices[0].text or "", params.stop))
        return out

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        params = params or SamplingParams()
        events = self._call(
            self.client.completions.create, model=self.model_name, prompt=prompt, stream=True, **self._sampling(params)
        )
        for event in events:
            if event.choices and event.choices[0].text:
                yield event.choices[0].text

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        return self._local_tokenizer().apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def chat(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None) -> list[str]:
        params = params or SamplingParams()
        out = []
        for messages in conversations:
            resp = self._call(
                self.client.chat.completions.create, model=self.model_name, messages=list(messages), **self._sampling(params)
            )
            out.append(truncate_at_stop(resp.choices[0].message.content or "", params.stop))
        return out

    def submit_chat(self, messages: Sequence[Message], params: SamplingParams | None = None) -> Generation:
        return Generation(self.stream_chat(messages, params))

    def stream_chat(self, messages: Sequence[Message], params: SamplingParams | None = None) -> Iterator[str]:
        params = params or SamplingParams()
        events = self._call(
            self.client.chat.completions.create,
            model=self.model_name,
            messages=list(messages),
            stream=True,
            **self._sampling(params),
        )
        for event in events:
            if event.choices and event.choices[0].delta and event.choices[0].delta.content:
                yield event.choices[0].delta.content

    def generate_json(self, conversations, schema, params: SamplingParams | None = None) -> list[str]:
        """``response_format={"type": "json_schema", ...}``; a server that refuses it raises
        :class:`EngineUnsupported` (the caller falls back to validate-and-retry)."""
        conversations = [list(c) for c in conversations]
        schemas = [schema] * len(conversations) if isinstance(schema, dict) else list(schema)
        params = params or SamplingParams()
        out = []
        for messages, sch in zip(conversations, schemas):
            try:
                resp = self.client.chat.completions.create(
                    model=self.model_name, messages=messages, **{**self._sampling(params), "temperature": 0},
                    response_format={"type": "json_schema", "json_schema": {"name": "secfm_output", "schema": sch}},
                )
            except self._openai.BadRequestError as exc:
                raise EngineUnsupported(f"the server at {self.endpoint} refuses response_format: {exc.message}") from exc
            except self._openai.APIConnectionError as exc:
                raise SecfmError(f"cannot reach the model server at {self.endpoint}: {exc}") from exc
            out.append(resp.choices[0].message.content or "")
        return out

    # -- scoring -------------------------------------------------------------------------------
    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[LoglikResult]:
        """Prompt log-probabilities via ``echo`` (vLLM supports it; not every server does)."""
        results = []
        for cont in continuations:
            resp = self._call(
                self.client.completions.create,
                model=self.model_name,
                prompt=context + cont,
                max_tokens=1,
                echo=True,
                logprobs=1,
                temperature=0,
            )
            lp = resp.choices[0].logprobs
            if lp is None or not lp.token_logprobs:
                raise SecfmError(f"the server at {self.endpoint} does not return prompt log-probabilities (echo)")
            offsets = lp.text_offset
            start = len(context)
            picked = [i for i, off in enumerate(offsets) if off >= start and i < len(offsets) - 1]
            token_lps = [float(lp.token_logprobs[i]) for i in picked]
            greedy = all(
                lp.top_logprobs and lp.top_logprobs[i] and max(lp.top_logprobs[i].values()) <= lp.token_logprobs[i] + 1e-6
                for i in picked
            )
            results.append(LoglikResult(cont, sum(token_lps), len(token_lps), greedy, tuple(token_lps)))
        return results

    # -- facts ---------------------------------------------------------------------------------
    def _local_tokenizer(self):
        if self._tokenizer is None:
            from secfm.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_name)
        return self._tokenizer

    @property
    def max_context(self) -> int:
        if self._context_length:
            return self._context_length
        from secfm.registry import get_spec

        spec = get_spec(self.model_name)
        return spec.context_length if spec else 8192

    def count_tokens(self, text: str) -> int:
        try:
            return len(self._local_tokenizer()(text, add_special_tokens=False)["input_ids"])
        except SecfmError:
            return max(1, len(text) // 4)  # no local tokenizer: a conservative estimate

    def describe(self) -> dict:
        return {"engine": self.kind, "model": self.model_name, "endpoint": self.endpoint}

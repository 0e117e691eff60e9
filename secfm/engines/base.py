"""The one engine interface: generate (batched, streaming), loglikelihood, hidden_states.

Three implementations live beside this file: ``transformers`` (in process, CPU or GPU),
``vllm`` (in process, GPU) and ``openai`` (any OpenAI-compatible server over HTTP).
Everything above the engines (evals, heads, workflows, app) talks to this interface only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Pooling = Literal["mean", "last"]
Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class LoglikResult:
    """Log-likelihood of one continuation given a context."""

    continuation: str
    logprob: float  # sum of token log-probabilities, natural log
    n_tokens: int
    is_greedy: bool | None = None  # every continuation token is the argmax at its position (None: not computed)
    token_logprobs: tuple[float, ...] = field(default=(), repr=False)

    @property
    def n_chars(self) -> int:
        return len(self.continuation)

    @property
    def per_token(self) -> float:
        return self.logprob / max(self.n_tokens, 1)

    @property
    def per_char(self) -> float:
        return self.logprob / max(self.n_chars, 1)

    @property
    def per_byte(self) -> float:
        return self.logprob / max(len(self.continuation.encode("utf-8")), 1)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class Engine(ABC):
    """One model behind one interface. Engines are cheap to call and expensive to build."""

    #: engine kind: "transformers", "vllm" or "openai"
    kind: str = "abstract"
    #: the registry name or path the engine was built for
    model_name: str = ""
    #: adapter directory, when one is applied
    adapter: str | None = None

    # -- text generation -------------------------------------------------------------------
    @abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        """Complete each raw prompt (no chat template applied). Returns only the new text."""

    @abstractmethod
    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield pieces of the completion of one raw prompt as they are decoded."""

    # -- chat -------------------------------------------------------------------------------
    @abstractmethod
    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        """Render a conversation into the prompt string that asks for the next assistant turn."""

    def chat(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None) -> list[str]:
        """Answer each conversation with one assistant turn (batched)."""
        return self.generate([self.apply_chat_template(c) for c in conversations], params)

    def stream_chat(self, messages: Sequence[Message], params: SamplingParams | None = None) -> Iterator[str]:
        return self.stream(self.apply_chat_template(messages), params)

    # -- scoring ----------------------------------------------------------------------------
    @abstractmethod
    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[LoglikResult]:
        """Log-likelihood of each continuation after ``context`` (context computed once)."""

    def loglikelihood_many(
        self, requests: Sequence[tuple[str, Sequence[str]]]
    ) -> list[list[LoglikResult]]:
        """Several (context, continuations) requests; engines may batch across them."""
        return [self.loglikelihood(ctx, conts) for ctx, conts in requests]

    # -- representations --------------------------------------------------------------------
    def hidden_states(
        self,
        texts: Sequence[str],
        layer: int = -1,
        pooling: Pooling = "mean",
        batch_size: int = 8,
        max_length: int = 512,
    ) -> np.ndarray:
        """Pooled hidden states, shape (len(texts), hidden_size), float32."""
        raise NotImplementedError(f"the {self.kind} engine does not expose hidden states")

    # -- facts ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def max_context(self) -> int:
        """Longest prompt plus completion, in tokens, the engine accepts."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model spends on ``text`` (no special tokens)."""

    def describe(self) -> dict:
        return {"engine": self.kind, "model": self.model_name, "adapter": self.adapter}

    def close(self) -> None:  # pragma: no cover - engines with resources override
        pass


def logsumexp_normalise(values: Sequence[float]) -> list[float]:
    """Turn log-scores into probabilities that sum to one."""
    m = max(values)
    exps = [math.exp(v - m) for v in values]
    total = sum(exps)
    return [e / total for e in exps]

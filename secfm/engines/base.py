"""The one engine interface: generate (batched, streaming), loglikelihood, hidden_states.

Three implementations live beside this file: ``transformers`` (in process, CPU or GPU),
``vllm`` (in process, GPU) and ``openai`` (any OpenAI-compatible server over HTTP).
Everything above the engines (evals, heads, workflows, app) talks to this interface only: no
caller touches an engine's private members or branches on its kind; what differs between
engines is asked through capabilities (``has_hidden_states``, ``fast_decoding``) or raised as
:class:`EngineUnsupported`. Every method is safe to call from several threads at once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Pooling = Literal["mean", "last"]
POOLINGS = ("mean", "last")
Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy.

    Repetition control, honoured by every engine (transformers, vllm, openai against `secfm serve`
    or vLLM's server):

    * ``repetition_penalty`` (> 1 discourages repeats): the CTRL penalty as transformers, vLLM and
      llama.cpp define it (a seen token's logit divided by the penalty when positive, multiplied
      when negative), over the prompt and the generated tokens.
    * ``no_repeat_ngram_size`` (0: off): a token that would complete an n-gram already present in
      the *generated* text is never chosen. The prompt is left out on purpose: a grounded answer
      must be able to copy ids and names from its context.

    ``LOOP_FREE`` holds the values the chat uses; ``SamplingParams.loop_free(...)`` applies them.
    Chat calls (``Engine.chat``/``stream_chat``) also stop at the chat template's next turn marker.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    #: record each generated token's log-probability and this many alternatives (None: none)
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not self.repetition_penalty > 0 or not math.isfinite(self.repetition_penalty):
            raise ValueError("repetition_penalty must be a positive number (1.0: off)")
        if self.no_repeat_ngram_size < 0:
            raise ValueError("no_repeat_ngram_size must be >= 0 (0: off)")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ValueError("logprobs must be between 0 and 20")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def controls_repetition(self) -> bool:
        return self.repetition_penalty != 1.0 or self.no_repeat_ngram_size > 0

    @classmethod
    def loop_free(cls, **overrides) -> SamplingParams:
        """Decoding that cannot loop: ``LOOP_FREE`` plus ``overrides``."""
        return cls(**{**LOOP_FREE, **overrides})

    def with_stop(self, extra: Sequence[str]) -> SamplingParams:
        """The same parameters with ``extra`` stop strings added (kept once, in order)."""
        merged = tuple(dict.fromkeys([*self.stop, *[s for s in extra if s]]))
        return self if merged == self.stop else replace(self, stop=merged)


#: repetition control for conversational answers: no 4-gram twice in an answer and a mild penalty
LOOP_FREE = {"repetition_penalty": 1.1, "no_repeat_ngram_size": 4}


def banned_ngram_tokens(generated: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an ``n``-gram already present in ``generated`` (the
    no-repeat-n-gram rule over the generated tokens only; every engine uses this function)."""
    if n <= 0 or len(generated) < n:
        return set()
    if n == 1:
        return set(generated)
    prefix = tuple(generated[len(generated) - n + 1 :])
    banned = set()
    for i in range(len(generated) - n + 1):
        if tuple(generated[i : i + n - 1]) == prefix:
            banned.add(generated[i + n - 1])
    return banned


def repeated_ngram(tokens: Sequence[int], n: int) -> tuple[int, ...] | None:
    """The first ``n``-gram that occurs twice in ``tokens`` (None when none does)."""
    seen = set()
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            return gram
        seen.add(gram)
    return None


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


def stop_prefix_len(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop string (a stream
    holds those back until the next piece tells; everything before them is safe to send)."""
    held = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return held


class EngineUnsupported(NotImplementedError):
    """The engine cannot do this (hidden states over HTTP, constrained decoding on a server that
    refuses it); callers fall back or say so."""


class Generation:
    """One streamed completion: iterate for text pieces; ``position`` is its place in the
    engine's queue (1: next to start; 0 once it decodes); ``cancel()`` (or closing the iterator)
    stops it and frees its slot. Engines without a queue wrap their stream in this."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = iter(pieces)
        self.text = ""
        self.finish_reason: str | None = None

    #: generated tokens (None where the engine does not count them)
    completion_tokens: int | None = None
    #: per generated token {"token", "logprob", "top": {token: logprob}} when asked for (else None)
    token_logprobs: list[dict] | None = None

    def result(self) -> str:
        for _ in self:
            pass
        return self.text

    def watch(self, event, heartbeat: float | None = None) -> Generation:
        """Cancel when ``event`` is set; engines with a queue also send ``""`` every
        ``heartbeat`` seconds while waiting. Here: checked between pieces."""
        self._watch = event
        return self

    @property
    def position(self) -> int:
        return 0

    @property
    def started(self) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if getattr(self, "_watch", None) is not None and self._watch.is_set():
            self.cancel()
            self.finish_reason = "cancelled"
            raise StopIteration
        try:
            piece = next(self._pieces)
        except StopIteration:
            self.finish_reason = self.finish_reason or "stop"
            raise
        self.text += piece
        return piece

    def cancel(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        self.cancel()


class Engine(ABC):
    """One model behind one interface. Engines are cheap to call and expensive to build."""

    #: engine kind: "transformers", "vllm" or "openai"
    kind: str = "abstract"
    #: the registry name or path the engine was built for
    model_name: str = ""
    #: adapter directory, when one is applied
    adapter: str | None = None
    #: pooled hidden states in process (heads can run on this engine)
    has_hidden_states: bool = False
    #: the ``quantization=`` values this engine takes when it is built (none: it runs the weights as given)
    quantizations: tuple[str, ...] = ()

    @classmethod
    def build(cls, model: str, adapter: str | None = None, endpoint: str | None = None, **options) -> Engine:
        """What ``get_engine`` calls; engines that need an endpoint override it."""
        if endpoint:
            raise EngineUnsupported(f"the {cls.kind} engine runs in process; it takes no endpoint")
        return cls(model=model, adapter=adapter, **options)

    @property
    def fast_decoding(self) -> bool:
        """Whether decoding is quick enough (a GPU, a served endpoint) for model-written workflow
        parts to be on by default; on a CPU they take minutes."""
        return False

    # -- text generation -------------------------------------------------------------------
    @abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        """Complete each raw prompt (no chat template applied). Returns only the new text."""

    @abstractmethod
    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield pieces of the completion of one raw prompt as they are decoded."""

    def submit(self, prompt: str, params: SamplingParams | None = None) -> Generation:
        """Start one streamed completion and return its handle (queue position, cancel)."""
        return Generation(self.stream(prompt, params))

    def submit_chat(self, messages: Sequence[Message], params: SamplingParams | None = None) -> Generation:
        return self.submit(self.apply_chat_template(messages), self.chat_params(params))

    def generate_json(
        self,
        conversations: Sequence[Sequence[Message]],
        schema: dict | Sequence[dict],
        params: SamplingParams | None = None,
    ) -> list[str]:
        """One answer per conversation, constrained by its JSON schema (one schema for all, or
        one each) with this engine's constrained-decoding backend. Returns the raw texts (a
        prefix of a valid document when the token budget cut it); parsing, repair and
        validation are the caller's (``secfm.workflows.structured``)."""
        raise EngineUnsupported(f"the {self.kind} engine has no constrained decoding")

    #: the name of the constrained-decoding backend ``generate_json`` uses
    json_backend: str = "none"

    def prepare_json(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """Build what constrained decoding needs once per process (no-op where nothing is needed)."""

    def stats(self) -> dict:
        """What the engine is doing now: ``running`` and ``waiting`` requests, ``slots``."""
        return {"running": 0, "waiting": 0, "slots": 1}

    # -- chat -------------------------------------------------------------------------------
    @abstractmethod
    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        """Render a conversation into the prompt string that asks for the next assistant turn."""

    def turn_markers(self) -> tuple[str, ...]:
        """Strings that open or close a turn in this model's chat template (``<start_of_turn>``,
        ``<end_of_turn>`` for Gemma): a chat answer stops at the first of them."""
        return ()

    def special_tokens(self) -> tuple[str, ...]:
        """The tokenizer's special tokens longer than one character (``<start_of_turn>``, ``<eos>``...):
        untrusted text carrying one is defused before it reaches a prompt. Engines that do not hold
        the tokenizer (a remote server) know none."""
        return ()

    def chat_params(self, params: SamplingParams | None) -> SamplingParams:
        """``params`` with a stop on the next turn marker (what every chat call decodes with)."""
        return (params or SamplingParams()).with_stop(self.turn_markers())

    def chat(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None) -> list[str]:
        """Answer each conversation with one assistant turn (batched), stopping at the next turn marker."""
        return self.generate([self.apply_chat_template(c) for c in conversations], self.chat_params(params))

    def stream_chat(self, messages: Sequence[Message], params: SamplingParams | None = None) -> Iterator[str]:
        return self.stream(self.apply_chat_template(messages), self.chat_params(params))

    # -- scoring ----------------------------------------------------------------------------
    @abstractmethod
    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[LoglikResult]:
        """Log-likelihood of each continuation after ``context`` (context computed once)."""

    def loglikelihood_many(
        self, requests: Sequence[tuple[str, Sequence[str]]]
    ) -> list[list[LoglikResult]]:
        """Several (context, continuations) requests; engines may batch across them."""
        return [self.loglikelihood(ctx, conts) for ctx, conts in requests]

    def prompt_logprobs(self, text: str, top: int = 1) -> list[dict]:
        """Each token of ``text`` with its log-probability given the tokens before it (None for
        the first) and the ``top`` most likely tokens there: ``{"token", "offset", "logprob",
        "top"}`` (what an OpenAI server's ``echo`` + ``logprobs`` returns)."""
        raise EngineUnsupported(f"the {self.kind} engine does not give prompt log-probabilities")

    # -- representations --------------------------------------------------------------------
    def hidden_states(
        self,
        texts: Sequence[str],
        layer: int = -1,
        pooling: Pooling | Sequence[Pooling] = "mean",
        batch_size: int = 8,
        max_length: int = 512,
        *,
        layers: Sequence[int] | None = None,
        progress=None,
    ):
        """Pooled hidden states, float32, from one forward per batch that stops after the deepest
        layer asked for. Layers are 1-based decoder layers, 0 the embeddings, negative from the end.

        * ``layer=L, pooling="mean"``: an array (len(texts), hidden_size);
        * ``layers=[...]``: a dict ``{layer: array}`` (``pooling`` a string) or
          ``{(layer, pooling): array}`` (``pooling`` a list of poolings).

        ``progress(n)`` is called after each batch with the number of texts it held.
        """
        raise EngineUnsupported(f"the {self.kind} engine does not expose hidden states")

    def base_engine(self) -> Engine:
        """The engine of this model's base weights without its adapter: what classifier heads
        trained on the base model's hidden states read (their features must come from the weights
        they were trained on). ``self`` when no adapter is applied."""
        if self.adapter is None:
            return self
        raise EngineUnsupported(f"the {self.kind} engine cannot give the base model without its adapter")

    def hidden_size(self) -> int:
        raise EngineUnsupported(f"the {self.kind} engine does not expose hidden states")

    def num_layers(self) -> int:
        raise EngineUnsupported(f"the {self.kind} engine does not expose hidden states")

    # -- facts ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def max_context(self) -> int:
        """Longest prompt plus completion, in tokens, the engine accepts."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model spends on ``text`` (no special tokens)."""

    def weights_bytes(self) -> int:
        """Bytes the loaded weights take (each tensor once; a GGUF engine: its file)."""
        raise EngineUnsupported(f"the {self.kind} engine does not hold the weights here")

    def describe(self) -> dict:
        return {"engine": self.kind, "model": self.model_name, "adapter": self.adapter}

    def close(self) -> None:  # noqa: B027  # pragma: no cover - engines with resources override
        pass

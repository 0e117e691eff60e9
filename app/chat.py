"""Chat logic, free of UI: the grounded turn (tools first, then the model's checked phrasing,
``grounded_turn``), the fixed security system prompt, trimming a history to the model's context,
and the streaming answer loop with a stop flag.

The system prompt is fixed by the app (never taken from the browser); whatever an analyst
pastes (alerts, logs, reports) is user content, i.e. data, and stays inside the user turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from secfm.workflows.chat_decode import CHAT_SYSTEM_PROMPT

log = logging.getLogger(__name__)

#: the fixed system prompt of the chat (the model phrases the tools' facts under it)
SYSTEM_PROMPT = CHAT_SYSTEM_PROMPT

#: tokens kept free between the prompt and the context limit (template drift, special tokens)
CONTEXT_MARGIN = 16
#: template overhead per message (turn markers, role, newlines) used by the first estimate
PER_MESSAGE_OVERHEAD = 8
TRUNCATION_MARK = "\n[... {n} characters cut to fit the model's context ...]\n"


@dataclass
class Prompt:
    """What is sent to the model for one turn, and what had to be left out."""

    messages: list[dict[str, str]]
    dropped_messages: int = 0  # earlier history messages left out (oldest first)
    truncated_chars: int = 0  # characters cut from the middle of the new user message
    prompt_tokens: int = 0
    budget: int = 0

    @property
    def note(self) -> str:
        parts = []
        if self.dropped_messages:
            parts.append(f"{self.dropped_messages} earlier message(s) not sent (context limit)")
        if self.truncated_chars:
            parts.append(f"{self.truncated_chars} characters cut from your message (context limit)")
        return "; ".join(parts)


def prompt_budget(max_context: int, max_new_tokens: int, margin: int = CONTEXT_MARGIN) -> int:
    """Tokens the prompt may use so that prompt + answer fit in ``max_context``."""
    return max(32, int(max_context) - int(max_new_tokens) - margin)


def build_prompt(
    history: Sequence[dict[str, str]],
    user_text: str,
    count_tokens: Callable[[str], int],
    max_context: int,
    max_new_tokens: int,
    system_prompt: str = SYSTEM_PROMPT,
    render: Callable[[list[dict[str, str]]], str] | None = None,
) -> Prompt:
    """System prompt + as much recent history as fits + the new user message.

    Whole messages are dropped oldest first (an assistant answer never stays without its
    question). When the new message alone does not fit, its middle is cut. ``render`` (the
    engine's chat template), when given, checks the estimate against the exact prompt.
    """
    budget = prompt_budget(max_context, max_new_tokens)
    system = {"role": "system", "content": system_prompt}
    cost = lambda m: count_tokens(m["content"]) + PER_MESSAGE_OVERHEAD  # noqa: E731

    fixed = cost(system)
    user = {"role": "user", "content": user_text}
    truncated = 0
    if fixed + cost(user) > budget:
        user, truncated = _fit_text(user_text, budget - fixed - PER_MESSAGE_OVERHEAD, count_tokens)
    used = fixed + cost(user)

    past = list(history)
    # keep turns from the newest back while they fit; start on a user message
    keep_from = len(past)
    running = used
    for i in range(len(past) - 1, -1, -1):
        c = cost(past[i])
        if running + c > budget:
            break
        running += c
        keep_from = i
    while keep_from < len(past) and past[keep_from]["role"] != "user":
        running -= cost(past[keep_from])
        keep_from += 1
    kept = past[keep_from:]

    def assemble(kept_msgs):
        return [system, *({"role": m["role"], "content": m["content"]} for m in kept_msgs), user]

    messages = assemble(kept)
    tokens = running
    if render is not None:
        try:
            tokens = count_tokens(render(messages))
            while tokens > budget and kept:
                # drop the oldest turn (user + its answer) and measure again
                drop = 1
                while drop < len(kept) and kept[drop]["role"] != "user":
                    drop += 1
                kept = kept[drop:]
                messages = assemble(kept)
                tokens = count_tokens(render(messages))
        except Exception as exc:  # noqa: BLE001 - a template problem must not break the chat
            log.debug("exact prompt count failed: %s", exc)
    return Prompt(messages, len(past) - len(kept), truncated, tokens, budget)


def _fit_text(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> tuple[dict[str, str], int]:
    """Cut the middle of ``text`` (keeping its head and tail) until it fits ``max_tokens``."""
    max_tokens = max(8, max_tokens)
    lo, hi = 0, len(text)  # characters to keep
    best = ""
    while lo <= hi:
        keep = (lo + hi) // 2
        head, tail = text[: keep // 2], text[len(text) - (keep - keep // 2):] if keep else ""
        candidate = head + TRUNCATION_MARK.format(n=len(text) - keep) + tail
        if count_tokens(candidate) <= max_tokens:
            best = candidate
            lo = keep + 1
        else:
            hi = keep - 1
    kept = max(lo - 1, 0)
    if not best:
        best = TRUNCATION_MARK.format(n=len(text)).strip()
        kept = 0
    return {"role": "user", "content": best}, len(text) - kept


@dataclass
class StreamStats:
    started: float = field(default_factory=time.monotonic)
    first_piece: float | None = None
    pieces: int = 0
    chars: int = 0
    stopped: bool = False

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_piece is None else self.first_piece - self.started

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


def stream_answer(pieces: Iterator[str], stop=None, stats: StreamStats | None = None) -> Iterator[str]:
    """Pass the engine's pieces through until they end or ``stop`` (an Event) is set.

    The engine iterator is closed on the way out so a stopped or abandoned stream frees it.
    """
    stats = stats if stats is not None else StreamStats()
    try:
        for piece in pieces:
            if stop is not None and stop.is_set():
                stats.stopped = True
                break
            if not piece:
                if stats.first_piece is None:
                    yield piece  # a heartbeat while queued: the caller may show the place in the queue
                continue
            if stats.first_piece is None:
                stats.first_piece = time.monotonic()
            stats.pieces += 1
            stats.chars += len(piece)
            yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class TurnUpdate:
    """One refresh of the chat while a grounded answer is built."""

    content: str  # the bot message (Markdown with the tool cards' HTML)
    status: str
    kind: str  # busy, done, error
    answer: object | None = None  # the final ChatAnswer (last update only)


#: seconds between two refreshes of the bot message while the model phrases (the first piece shows at
#: once, the final message always): with 20 analysts, a refresh per piece per session takes the
#: interpreter from the decode thread (issue #17)
PHRASING_REFRESH_S = 0.4


def grounded_turn(pipeline, text: str, conversation, *, cancel=None, use_model: bool = True,
                  max_new_tokens: int | None = None, temperature: float = 0.0,
                  refresh_s: float = PHRASING_REFRESH_S) -> Iterator[TurnUpdate]:
    """The bot message as it is built: the tool cards and facts first, then the model's phrasing
    (its first piece at once, then at most one refresh every ``refresh_s`` seconds), then the
    final message with its sources (``secfm.workflows.chat``). A place in the queue is shown when
    it changes."""
    from secfm.workflows.chat_render import message_markdown

    phrasing = ""
    shown_at: float | None = None  # when the phrasing was last shown
    pending = False  # pieces not shown yet
    answer = None
    from secfm.workflows.protocol import get_workflow

    events = get_workflow("chat").stream({"message": text, "conversation": conversation, "use_model": use_model,
                                          "max_new_tokens": max_new_tokens, "temperature": temperature},
                                         pipeline=pipeline, cancel=cancel)
    try:
        for event in events:
            answer = event.answer
            if event.kind == "tools":
                wait = " · the model is phrasing the facts…" if use_model and pipeline.can_phrase(answer) else ""
                yield TurnUpdate(message_markdown(answer, "", done=False), f"Tools done in {answer.timings.tools_s:.1f} s{wait}",
                                 "busy")
            elif event.kind == "queued":
                if event.position:
                    yield TurnUpdate(message_markdown(answer, "", done=False),
                                     f"Tools done · waiting for the model… {event.position} in the queue", "busy")
            elif event.kind == "piece":
                phrasing += event.piece
                now = time.monotonic()
                pending = shown_at is not None and now - shown_at < refresh_s
                if not pending:
                    shown_at = now
                    yield TurnUpdate(message_markdown(answer, phrasing, done=False), "Phrasing…", "busy")
            else:
                pending = False
                yield TurnUpdate(message_markdown(answer, done=True), turn_summary(answer), "done", answer)
        if pending and answer is not None:  # the stream ended without its final message: show what came
            yield TurnUpdate(message_markdown(answer, phrasing, done=False), "Phrasing…", "busy")
    finally:
        events.close()


def turn_summary(answer) -> str:
    t = answer.timings
    parts = [f"Done: {len(answer.facts)} fact(s) from {len(answer.sources)} source(s), tools {t.tools_s:.1f} s"]
    if t.first_model_piece_s is not None:
        parts.append(f"model first piece {t.first_model_piece_s:.1f} s")
    parts.append(f"total {t.total_s:.1f} s")
    model = answer.model
    if model.status != "skipped":
        parts.append(f"model {model.status}" + (f" ({model.detail})" if model.detail else ""))
    return " · ".join(parts)


__all__ = [
    "CONTEXT_MARGIN",
    "PHRASING_REFRESH_S",
    "TurnUpdate",
    "grounded_turn",
    "turn_summary",
    "Prompt",
    "SYSTEM_PROMPT",
    "StreamStats",
    "build_prompt",
    "prompt_budget",
    "stream_answer",
]

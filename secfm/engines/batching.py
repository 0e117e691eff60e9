"""Continuous batching for the transformers engine: requests that arrive while others decode join
the running batch at the next step.

One scheduler thread per engine owns the decode loop. Each step it (1) admits waiting requests
up to ``max_batch`` running ones: their prompts are prefilled together in one left-padded
forward and their key/value caches joined to the running batch (padded on the left to a common
length), (2) runs one decode forward for every running request, (3) picks each request's next
token with its own sampling parameters (temperature, top-p, its own seeded generator, repetition
penalty, no-repeat n-grams, a JSON-schema constraint), and (4) sends each request its new text
and drops the finished, the cancelled and the stopped ones from the batch (freeing their slot).

Why not transformers' own continuous batching (``generate_batch`` / ``ContinuousBatchingManager``,
``transformers serve --continuous-batching``): in transformers 5.24 it applies per-request
temperature, top-k and top-p only; repetition penalties, n-gram blocking, constrained decoding
and per-request seeds are not per request there, and those are what the chat and the workflows
need. The measurements that chose this design are in app/results/bench-serve.json.

Every forward, here and in the engine's other operations (log-likelihoods, hidden states), runs
under the engine's one model lock, so hooks and caches never see another caller's forward; the
lock is taken per step, so a hidden-state batch waits at most one decode step and the decode
loop at most one hidden-state batch.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from secfm.engines.base import (
    Generation,
    SamplingParams,
    banned_ngram_tokens,
    stop_prefix_len,
    truncate_at_stop,
)

log = logging.getLogger(__name__)

_DONE = object()


@dataclass(eq=False)
class Request:
    """One completion in the scheduler. ``constraint.allowed(generated)`` (optional) lists the
    tokens a JSON schema allows next."""

    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    stop_texts: tuple[str, ...]
    constraint: object | None = None
    stop_sequences: tuple[tuple[int, ...], ...] = ()  # token sequences that end the request (not kept)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already sent
    text: str = ""
    finish_reason: str | None = None
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    out: queue.Queue = field(default_factory=queue.Queue)
    enqueued_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    generator: object | None = None
    logprobs: list[dict] | None = None


class BatchedGeneration(Generation):
    """A request's handle: text pieces as they decode, its place in the queue, cancel()."""

    def __init__(self, scheduler: Scheduler, request: Request):
        self._scheduler, self.request = scheduler, request
        self._watch: threading.Event | None = None
        self._heartbeat: float | None = None

    def watch(self, event: threading.Event | None, heartbeat: float | None = None) -> BatchedGeneration:
        """Cancel as soon as ``event`` is set (a Stop button), even while still queued; with
        ``heartbeat`` seconds, yield ``""`` at that interval while waiting (so a UI can show
        ``position``)."""
        self._watch, self._heartbeat = event, heartbeat
        return self

    @property
    def position(self) -> int:
        return self._scheduler.position(self.request)

    @property
    def started(self) -> bool:
        return self.request.started.is_set()

    @property
    def text(self) -> str:
        return self.request.text

    @property
    def finish_reason(self) -> str | None:
        return self.request.finish_reason

    @property
    def completion_tokens(self) -> int:
        return len(self.request.generated)

    @property
    def token_logprobs(self) -> list[dict] | None:
        return self.request.logprobs

    def __next__(self) -> str:
        while True:
            if self._watch is not None and self._watch.is_set() and not self.request.cancelled.is_set():
                self.cancel()
            if self._watch is None and self._heartbeat is None:
                item = self.request.out.get()
            else:
                try:
                    item = self.request.out.get(timeout=self._heartbeat or 0.2)
                except queue.Empty:
                    if self._watch is not None and self._watch.is_set():
                        self.cancel()
                    elif self._heartbeat is not None:
                        return ""
                    continue
            if item is _DONE:
                self.request.out.put(_DONE)  # later next() calls end too
                if self.request.error is not None:
                    raise self.request.error
                raise StopIteration
            if item:
                return item

    def cancel(self) -> None:
        self._scheduler.cancel(self.request)

    def result(self) -> str:
        """Wait for the whole completion; returns its text (stop strings cut)."""
        for _ in self:
            pass
        return self.request.text

    def __del__(self):  # a handle dropped without being read to the end frees its slot
        try:
            if self.request.finish_reason is None:
                self._scheduler.cancel(self.request)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class Scheduler:
    """The decode loop of one engine (see the module docstring)."""

    def __init__(self, model, tokenizer, device: str, lock: threading.Lock, max_batch: int = 32,
                 decode: Callable[[list[int]], str] | None = None):
        self.model, self.tokenizer, self.device, self.lock = model, tokenizer, device, lock
        self.max_batch = max(1, int(max_batch))
        self._decode = decode or (lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False  # set by close() (at interpreter exit too): the loop ends, requests are cancelled
        atexit.register(_close_at_exit, weakref.ref(self))  # a daemon thread still inside torch at exit can abort
        self._cache = None  # DynamicCache of the running batch, rows in self._running order
        self._mask = None  # attention mask (rows, columns) of the running batch
        self._positions = None  # next position id of each running row
        self._last = None  # last token of each running row, fed at the next step
        self._prefixes: OrderedDict[tuple[int, ...], list] = OrderedDict()  # prompt -> per-layer (keys, values)
        self.steps = 0
        self.forward_s = 0.0  # time in decode forwards (the rest of a step is sampling and bookkeeping)

    # -- submission ---------------------------------------------------------------------------
    def submit(self, request: Request) -> BatchedGeneration:
        with self._cv:
            if self._closing:
                self._finish(request, "cancelled")
                return BatchedGeneration(self, request)
            self._waiting.append(request)
            self._ensure_thread()
            self._cv.notify_all()
        return BatchedGeneration(self, request)

    def cancel(self, request: Request) -> None:
        request.cancelled.set()
        with self._cv:
            if request in self._waiting:
                self._waiting.remove(request)
                self._finish(request, "cancelled")
            self._cv.notify_all()

    def position(self, request: Request) -> int:
        with self._cv:
            try:
                return self._waiting.index(request) + 1
            except ValueError:
                return 0

    def stats(self) -> dict:
        with self._cv:
            return {"running": len(self._running), "waiting": len(self._waiting), "slots": self.max_batch,
                    "steps": self.steps, "decode_forward_s": round(self.forward_s, 3)}

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="secfm-batching", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """End the decode loop: waiting and running requests finish "cancelled", the thread is joined."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        while True:
            with self._cv:
                while not self._waiting and not self._running and not self._closing:
                    self._cv.wait()
                if self._closing:
                    for request in [*self._waiting, *self._running]:
                        self._finish(request, "cancelled")
                    self._waiting.clear()
                    self._running, self._cache = [], None
                    return
                admitted = []
                while self._waiting and len(self._running) + len(admitted) < self.max_batch:
                    admitted.append(self._waiting.popleft())
            try:
                with self.lock, torch.inference_mode():
                    self._drop_finished()
                    if admitted:
                        self._prefill(admitted)
                    if self._running:
                        self._decode_step()
                    self._drop_finished()
            except BaseException as exc:  # noqa: BLE001 - every caller hears of it, the loop goes on
                log.exception("decode step failed")
                for request in [*self._running, *admitted]:
                    if request.finish_reason is None:
                        request.error = exc
                        self._finish(request, "error")
                self._running, self._cache = [], None

    def _prefill(self, requests: list[Request]) -> None:
        """One left-padded forward over the new prompts; their caches join the running batch. When
        every new prompt starts with a prompt prefix computed before (the app's system prompt),
        its keys and values are reused and only the rest is computed."""
        import torch
        from transformers import DynamicCache

        shared, length = self._shared_prefix(requests)
        # Row i reuses the first cached_i = max(0, len_i - width) prefix tokens, right-aligned in
        # ``length`` cache columns, and computes the rest of its prompt right-aligned in ``width``
        # input columns: every row is [padding | its tokens], never a gap inside (sliding-window
        # layers count columns).
        width = max(len(r.prompt_ids) - length for r in requests)
        cached = [max(0, len(r.prompt_ids) - width) for r in requests]
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(requests), width), pad, dtype=torch.long)
        mask = torch.zeros((len(requests), length + width), dtype=torch.long)
        positions = torch.zeros((len(requests), width), dtype=torch.long)
        for row, (r, c) in enumerate(zip(requests, cached)):
            rest = r.prompt_ids[c:]
            ids[row, width - len(rest):] = torch.tensor(rest)
            positions[row, width - len(rest):] = torch.arange(c, len(r.prompt_ids))
            mask[row, length - c:length] = 1
            mask[row, length + width - len(rest):] = 1
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        cache = DynamicCache()
        if shared is not None:  # the kept prefix's keys and values, right-aligned per row
            for index, (keys, values) in enumerate(shared):
                k = keys.new_zeros((len(requests), keys.shape[1], length, keys.shape[3]))
                v = values.new_zeros((len(requests), values.shape[1], length, values.shape[3]))
                for row, c in enumerate(cached):
                    if c:
                        k[row, :, length - c:] = keys[0, :, :c]
                        v[row, :, length - c:] = values[0, :, :c]
                cache.update(k, v, index)
        else:
            mask = mask[:, length:]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        self._remember_prefix(requests[0].prompt_ids, cache, mask[0])
        self._join(cache, mask, mask.sum(-1))
        self._running.extend(requests)
        chosen = [self._choose(r, logits[row]) for row, r in enumerate(requests)]
        start = len(self._running) - len(requests)
        for offset, (r, token) in enumerate(zip(requests, chosen)):
            r.started.set()
            self._accept(r, token, start + offset)

    #: prompts whose keys and values are kept for reuse, and the shortest prefix worth reusing
    PREFIX_ENTRIES, MIN_PREFIX = 8, 16

    def _shared_prefix(self, requests: list[Request]):
        """(per-layer keys/values, length) of the longest kept prompt prefix that every request
        starts with (leaving each at least one token to compute), or (None, 0)."""
        best, best_len = None, 0
        for key, layers in self._prefixes.items():
            length = min(_common_prefix(key, r.prompt_ids) for r in requests)
            length = min(length, min(len(r.prompt_ids) for r in requests) - 1)
            if length > best_len:
                best, best_len = (key, layers), length
        if best is None or best_len < self.MIN_PREFIX:
            return None, 0
        self._prefixes.move_to_end(best[0])
        return best[1], best_len

    def _remember_prefix(self, prompt_ids: list[int], cache, row_mask) -> None:
        """Keep the first request's prompt keys/values (its real columns only) for later prompts."""
        key = tuple(prompt_ids)
        if len(key) < self.MIN_PREFIX or key in self._prefixes:
            return
        columns = row_mask.nonzero().flatten()
        self._prefixes[key] = [(layer.keys[:1, :, columns].clone(), layer.values[:1, :, columns].clone())
                               for layer in cache.layers]
        while len(self._prefixes) > self.PREFIX_ENTRIES:
            self._prefixes.popitem(last=False)

    def _join(self, cache, mask, lengths) -> None:
        """Append the new rows' cache to the running one, both right-aligned (padded on the left)."""
        import torch

        if self._cache is None or not self._running:
            self._cache, self._mask = cache, mask
            self._positions = lengths.clone()
            self._last = torch.zeros(len(lengths), dtype=torch.long, device=mask.device)
            return
        old_w, new_w = self._mask.shape[1], mask.shape[1]
        width = max(old_w, new_w)

        def widen(t, w, dim):
            if w == width:
                return t
            shape = list(t.shape)
            shape[dim] = width - w
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for old_layer, new_layer in zip(self._cache.layers, cache.layers):
            old_layer.keys = torch.cat([widen(old_layer.keys, old_w, 2), widen(new_layer.keys, new_w, 2)], dim=0)
            old_layer.values = torch.cat([widen(old_layer.values, old_w, 2), widen(new_layer.values, new_w, 2)], dim=0)
        self._mask = torch.cat([widen(self._mask, old_w, 1), widen(mask, new_w, 1)], dim=0)
        self._positions = torch.cat([self._positions, lengths])
        self._last = torch.cat([self._last, torch.zeros(len(lengths), dtype=torch.long, device=mask.device)])

    def _decode_step(self) -> None:
        import torch

        rows = len(self._running)
        self._mask = torch.cat([self._mask, self._mask.new_ones((rows, 1))], dim=1)
        t0 = time.perf_counter()
        out = self.model(
            input_ids=self._last.view(rows, 1),
            attention_mask=self._mask,
            position_ids=self._positions.view(rows, 1),
            cache=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._positions = self._positions + 1
        logits = out.logits[:, -1, :].float()
        self.steps += 1
        self.forward_s += time.perf_counter() - t0
        for row, r in enumerate(self._running):
            if r.finish_reason is None and not r.cancelled.is_set():
                self._accept(r, self._choose(r, logits[row]), row)

    def _choose(self, r: Request, logits) -> int:
        """The next token of ``r`` under its own sampling parameters."""
        import torch

        p = r.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(r.prompt_ids) | set(r.generated)), dtype=torch.long, device=logits.device)
            scores = logits[seen]
            logits[seen] = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
        if p.no_repeat_ngram_size > 0:
            banned = banned_ngram_tokens(r.generated, p.no_repeat_ngram_size)
            if banned:
                logits[list(banned)] = float("-inf")
        if r.constraint is not None:
            allowed = [t for t in r.constraint.allowed(r.generated) if t < logits.shape[0]]
            keep = torch.full_like(logits, float("-inf"))
            keep[torch.tensor(allowed, dtype=torch.long, device=logits.device)] = 0
            logits = logits + keep
        if p.greedy:
            token = int(torch.argmax(logits))
            self._record(r, logits, token)
            return token
        scored = logits
        logits = logits / p.temperature
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            cut = probs.cumsum(-1) - probs > p.top_p  # keep the smallest set whose mass reaches top_p
            sorted_logits[cut] = float("-inf")
            logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
        probs = torch.softmax(logits, dim=-1)
        if r.generator is None:
            r.generator = torch.Generator(device=logits.device)
            if p.seed is not None:
                r.generator.manual_seed(int(p.seed))
            else:
                r.generator.seed()
        token = int(torch.multinomial(probs, 1, generator=r.generator))
        self._record(r, scored, token)
        return token

    def _record(self, r: Request, logits, token: int) -> None:
        """The chosen token's log-probability (and the top alternatives) when the request asks."""
        import torch

        k = r.params.logprobs
        if k is None:
            return
        logp = torch.log_softmax(logits, dim=-1)
        top = torch.topk(logp, k) if k else None
        entry = {"token_id": token, "token": self.tokenizer.decode([token]), "logprob": float(logp[token]),
                 "top": {self.tokenizer.decode([int(i)]): float(v) for v, i in zip(top.values, top.indices)} if top is not None else {}}
        if r.logprobs is None:
            r.logprobs = []
        r.logprobs.append(entry)

    def _accept(self, r: Request, token: int, row: int) -> None:
        """Record ``token`` for ``r``: end on a stop id, stop string or budget; send new text."""
        if r.first_token_at is None:
            r.first_token_at = time.monotonic()
        if token in r.stop_ids:
            if r.logprobs:
                r.logprobs.pop()  # the stop token is not part of the completion
            self._flush(r, final=True)
            self._finish(r, "stop")
            return
        r.generated.append(token)
        self._last[row] = token
        for seq in r.stop_sequences:
            if len(r.generated) >= len(seq) and tuple(r.generated[-len(seq):]) == seq:
                del r.generated[-len(seq):]
                if r.logprobs:
                    del r.logprobs[-len(seq):]
                r.text = self._decode(r.generated)
                self._flush(r, final=True)
                self._finish(r, "stop")
                return
        full = self._decode(r.generated)
        cut = truncate_at_stop(full, r.stop_texts)
        if len(cut) < len(full):
            r.text = cut
            self._flush(r, final=True)
            self._finish(r, "stop")
            return
        r.text = full
        if len(r.generated) >= r.params.max_new_tokens:
            self._flush(r, final=True)
            self._finish(r, "length")
            return
        self._flush(r, final=False)

    def _flush(self, r: Request, final: bool) -> None:
        """Send the text not sent yet; mid-stream, hold back what could be the start of a stop
        string or an unfinished character."""
        if final:
            r.text = r.text.rstrip("\ufffd")
        end = len(r.text)
        if not final:  # only a tail that could begin a stop string waits (the first token shows at once)
            end = max(r.sent, len(r.text) - stop_prefix_len(r.text, r.stop_texts))
            while end > r.sent and r.text[end - 1] == "\ufffd":
                end -= 1
        if end > r.sent:
            r.out.put(r.text[r.sent:end])
            r.sent = end

    def _finish(self, r: Request, reason: str) -> None:
        if r.finish_reason is None:
            r.finish_reason = reason
            r.text = r.text.rstrip("\ufffd")
            r.started.set()
            r.out.put(_DONE)

    def _drop_finished(self) -> None:
        """Free the slots of finished and cancelled requests; trim all-padding columns."""
        import torch

        for r in self._running:
            if r.cancelled.is_set() and r.finish_reason is None:
                self._finish(r, "cancelled")
        keep = [i for i, r in enumerate(self._running) if r.finish_reason is None]
        if len(keep) == len(self._running):
            return
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._positions = self._last = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        self._mask, self._positions, self._last = self._mask[index], self._positions[index], self._last[index]
        used = self._mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        self._mask = self._mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def run_all(handles: Sequence[BatchedGeneration]) -> list[str]:
    """Wait for every handle; their texts in order."""
    return [h.result() for h in handles]


def iterate(handle: BatchedGeneration) -> Iterator[str]:
    """A generator over a handle's pieces that cancels the request when closed early."""
    try:
        yield from handle
    finally:
        if handle.request.finish_reason is None:
            handle.cancel()


def _close_at_exit(ref: weakref.ref) -> None:
    scheduler = ref()
    if scheduler is not None:
        scheduler.close()

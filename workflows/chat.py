"""The grounded analyst chat: each answer is built from what secfm's tools find, with sources.

    from secfm.workflows import ChatPipeline, Conversation

    chat = ChatPipeline(engine)              # engine=None or use_model=False: no model at all
    conversation = Conversation()
    answer = chat.answer("What is CVE-2021-44228?", conversation)
    answer.answer, answer.sources, answer.cards

For each turn:

1. find what it is about (``chat_turn.analyse_turn``: ids, IOCs, ATT&CK names, pasted alerts,
   configs, reports or vulnerability descriptions, intents; a follow-up keeps the conversation's
   entities);
2. call the tools (``chat_tools``): knowledge-base lookups (ATT&CK, CWE, CVE with the NVD store),
   triage, config review, ATT&CK extraction, the CWE head, IOC extraction, retrieval over the
   Chroma index; every fact they return carries its source;
3. answer: the deterministic summary of the facts (with sources) always; when a model is on, its
   phrasing over those facts only (``chat_decode``: a token-budgeted prompt, loop-free decoding,
   ids checked against what the tools returned as the text streams, sentences echoing injected
   text dropped). When nothing is found, the answer says so plainly.

:meth:`ChatPipeline.stream` yields :class:`ChatEvent` s: ``tools`` (cards and facts, before the
model starts), ``queued`` (while the phrasing waits behind other analysts' answers in the shared
engine, with its place), ``piece`` (checked model text), ``done`` (the final :class:`ChatAnswer`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from secfm.engines import EngineUnsupported
from secfm.errors import SecfmError
from secfm.workflows import chat_decode, chat_tools
from secfm.workflows.chat_schemas import ChatAnswer, Conversation, Fact, ModelPhrasing, Source, Timings
from secfm.workflows.chat_turn import NamedEntities, analyse_turn
from secfm.workflows.context import DEFAULT
from secfm.workflows.schemas import RejectedEntity
from secfm.workflows.untrusted import find_injection, injection_warnings, screen_model_text

log = logging.getLogger(__name__)

#: the chat's model when none is named: chosen on the gold set's DEV split
#: (workflows/results/eval-chat-dev/: six runs, gemma-3-270m and secfm-270m x three prompt styles;
#: all recall 0.979 with 0 invented ids shown; secfm-270m with the facts-block prompt is the one
#: whose checked phrasing restates the most gold facts, 3/48). The heads run on its base weights.
DEFAULT_CHAT_MODEL = "secfm-270m"
MAX_QUESTION_CHARS = 200_000
NOTHING_FOUND = "secfm found nothing about this in its knowledge base (ATT&CK, CWE, NVD) or its tools."


def chat_model(model: str | None = None, adapter: str | None = None, endpoint: str | None = None) -> str | None:
    """The model a chat runs on: ``model`` when named; :data:`DEFAULT_CHAT_MODEL` when nothing
    is (no model, adapter or endpoint); None (the engine's own default, or the served model
    behind ``endpoint``) otherwise."""
    if model or adapter or endpoint:
        return model
    return DEFAULT_CHAT_MODEL


@dataclass
class ChatEvent:
    kind: str  # "tools", "queued", "piece", "done"
    answer: ChatAnswer
    piece: str = ""
    position: int = 0  # "queued": the place in the shared engine's queue (1: next)


class ChatPipeline:
    """One chat configuration (engine, knowledge index, model limits); cheap to call per turn."""

    def __init__(self, engine=None, *, use_model: bool = True, store=DEFAULT, max_new_tokens: int = chat_decode.DEFAULT_MAX_NEW_TOKENS,
                 prompt_budget: int = chat_decode.DEFAULT_PROMPT_BUDGET, temperature: float = 0.0, use_heads: bool = True,
                 cve_store=DEFAULT, prompt_style: str = chat_decode.DEFAULT_PROMPT_STYLE):
        self.engine = engine
        self.use_model = bool(use_model and engine is not None)
        self.max_new_tokens = int(max_new_tokens)
        self.prompt_budget = int(prompt_budget)
        self.temperature = float(temperature)
        self.use_heads = use_heads
        self._store_arg = store
        self._store = None
        self._store_lock = threading.Lock()
        self._names: NamedEntities | None = None
        self._cve_store = cve_store
        self._cve_analyzer = None
        self._heads_engine = None
        if prompt_style not in chat_decode.PROMPT_STYLES:
            raise SecfmError(f"unknown prompt style {prompt_style!r}: one of {', '.join(chat_decode.PROMPT_STYLES)}")
        self.prompt_style = prompt_style
        #: seconds between ``queued`` events while the phrasing waits for the engine (None: no events)
        self.heartbeat = chat_decode.QUEUE_HEARTBEAT_S

    # -- shared resources ------------------------------------------------------------------------
    @property
    def store(self):
        """The knowledge index (None when not built or disabled), opened on first use."""
        with self._store_lock:
            if self._store is None:
                from secfm.workflows.context import resolve_store

                resolved = resolve_store(self._store_arg)
                self._store = resolved if resolved not in (None, False) else False
            return self._store or None

    @property
    def cve_store(self):
        """The local NVD store (``cve_store`` as given; DEFAULT: ``$SECFM_HOME``'s, looked up each
        turn so that ``secfm kb add-nvd`` in another terminal is seen without a restart)."""
        if self._cve_store is DEFAULT:
            from secfm.workflows.chat_cve import default_cve_store

            return default_cve_store()
        return self._cve_store

    @cve_store.setter
    def cve_store(self, store) -> None:
        self._cve_store = store

    @property
    def cve_analyzer(self):
        """(the CVE heads the chat can run or None, what is missing), loaded once."""
        if self._cve_analyzer is None:
            self._cve_analyzer = chat_tools.cve_analyzer(self._head_engine())
        return self._cve_analyzer

    @property
    def names(self) -> NamedEntities:
        if self._names is None:
            self._names = NamedEntities()
        return self._names

    def _head_engine(self):
        """The engine the classifier heads run on (None: names and rules only): the base weights
        of the chat's model (``Engine.base_engine``), since the shipped heads were trained on the
        base model's hidden states; a chat on an adapter (secfm-270m) keeps its CWE, CVSS and
        ATT&CK heads. Resolved once (it may load the base model's shared engine)."""
        if not self.use_heads or self.engine is None:
            return None
        with self._store_lock:
            if self._heads_engine is None:
                try:
                    self._heads_engine = self.engine.base_engine()
                except EngineUnsupported as exc:
                    log.info("the heads run on the chat's engine: %s", exc)
                    self._heads_engine = self.engine
            return self._heads_engine

    def warm_up(self) -> None:
        """Build what the first turn would wait for: the name index and the CWE catalog."""
        from secfm.knowledge import load_cwe

        self.names  # noqa: B018 - builds the index
        self.cve_analyzer  # noqa: B018 - loads the CVE heads it can run
        load_cwe()

    # -- one turn ----------------------------------------------------------------------------------
    def answer(self, text: str, conversation: Conversation | None = None, cancel=None, **overrides) -> ChatAnswer:
        final = None
        for event in self.stream(text, conversation, cancel, **overrides):
            if event.kind == "done":
                final = event.answer
        return final

    def can_phrase(self, answer: ChatAnswer, use_model: bool | None = None) -> bool:
        """Whether the model will phrase this answer (a model is on and the tools found facts)."""
        on = self.use_model if use_model is None else bool(use_model and self.engine is not None)
        return on and bool(answer.facts) and not answer.nothing_found

    def stream(self, text: str, conversation: Conversation | None = None, cancel=None, *, use_model: bool | None = None,
               max_new_tokens: int | None = None, temperature: float | None = None) -> Iterator[ChatEvent]:
        """The answer in events: ``tools`` first, then ``piece`` s of the checked model text, then
        ``done``. ``use_model``, ``max_new_tokens`` and ``temperature`` override the pipeline's for
        this turn."""
        started = chat_decode.now()
        text = _check_question(text)
        topic = analyse_turn(text, conversation, self.names)
        answer = ChatAnswer(question=text, topic=topic)
        answer.warnings = injection_warnings(text, "your message")
        result = self._run_tools(text, topic)
        answer.cards, answer.facts, answer.notes = result.cards, result.facts, result.notes
        answer.warnings += [w for w in result.warnings if w not in answer.warnings]
        if topic.paste in ("alert", "report", "vulnerability") or not topic.entities:
            # a pasted alert or report: the techniques the tools found are what follow-ups ask about
            topic.entities = list(result.entities) + [e for e in topic.entities if e not in result.entities]
        else:
            topic.related = [e for e in result.entities if e not in topic.entities] or topic.related
        answer.sources = _sources(answer.facts)
        answer.nothing_found = all(f.negative for f in answer.facts)
        answer.summary = summary_text(answer)
        answer.answer = answer.summary
        answer.timings = Timings(tools_s=round(chat_decode.now() - started, 3))
        yield ChatEvent("tools", answer)

        if self.can_phrase(answer, use_model):
            yield from self._phrase(answer, started, cancel, max_new_tokens or self.max_new_tokens,
                                    self.temperature if temperature is None else float(temperature))
        else:
            model_on = self.use_model if use_model is None else bool(use_model and self.engine is not None)
            answer.model = ModelPhrasing(status="skipped", detail="nothing to phrase" if model_on else "the model is off")
        answer.answer = compose_answer(answer)
        answer.timings.total_s = round(chat_decode.now() - started, 3)
        if conversation is not None:
            conversation.remember(answer)
        yield ChatEvent("done", answer)

    # -- tools ---------------------------------------------------------------------------------------
    def _run_tools(self, text: str, topic) -> chat_tools.ToolResult:
        ctx = chat_tools.ToolContext.default(self._head_engine(), lambda: self.store, text, self.cve_store)
        out = chat_tools.ToolResult()
        pasted = topic.pasted(text)  # without the question written around it
        try:
            if topic.paste == "alert":
                out.extend(chat_tools.triage(pasted, ctx, topic.paste_form or "lines"))
            elif topic.paste == "config":
                out.extend(chat_tools.config_review(pasted, topic.config_kind, ctx))
            elif topic.paste == "report":
                out.extend(chat_tools.extraction(pasted, ctx, topic.named))
            elif topic.paste == "vulnerability":
                out.extend(chat_tools.vulnerability(pasted, ctx, *self.cve_analyzer))
            ids = list(topic.ids) if not topic.follow_up else list(topic.entities)
            ids += [n for n in topic.named if n not in ids and topic.paste != "report"]
            if topic.follow_up and set(topic.intents) & {"detect", "mitigate", "groups"} \
                    and all(i.startswith("CVE-") for i in ids):
                ids += [r for r in topic.related if r not in ids]  # "how do I detect it?" after a CVE: its technique
            if topic.paste in ("alert", "report", "vulnerability"):
                # the techniques the tools found, described (with detection and mitigations when asked)
                ids += [e for e in out.entities[:2] if e not in ids]
            if not ids and topic.paste == "none" and not topic.iocs:
                found, retrieved = chat_tools.retrieval(text, ctx)
                out.extend(found)
                ids = retrieved
            intents = topic.intents
            if topic.paste in ("alert", "report") and intents == ["what"]:
                intents = ["detect", "mitigate"] if topic.paste == "alert" else ["what"]
            out.extend(chat_tools.lookup(ids, intents, ctx, topic.follow_up))
            out.extend(chat_tools.indicators(topic.iocs))
        except SecfmError as exc:
            out.notes.append(f"A tool failed: {exc}")
        return out

    # -- the model -----------------------------------------------------------------------------------
    def _phrase(self, answer: ChatAnswer, started: float, cancel, max_new_tokens: int, temperature: float) -> Iterator[ChatEvent]:
        report = ModelPhrasing(status="ok")
        answer.model = report
        try:
            plan = chat_decode.phrasing_messages(answer.question, answer.facts, self.engine.count_tokens,
                                                 self.prompt_budget, answer.topic.paste, style=self.prompt_style)
            report.prompt_tokens, report.budget_tokens, report.facts_in_prompt = plan.tokens, plan.budget, plan.facts_used
            allowed = answer.known_ids()
            text = ""
            for piece in chat_decode.stream_phrasing(self.engine, plan, allowed,
                                                     max_new_tokens=max_new_tokens, temperature=temperature,
                                                     cancel=cancel, report=report, heartbeat=self.heartbeat):
                if isinstance(piece, chat_decode.Queued):
                    yield ChatEvent("queued", answer, position=piece.position)
                    continue
                if answer.timings.first_model_piece_s is None:
                    answer.timings.first_model_piece_s = round(chat_decode.now() - started, 3)
                text += piece
                yield ChatEvent("piece", answer, piece)
        except Exception as exc:  # noqa: BLE001 - a model failure never removes the facts
            log.warning("chat phrasing failed: %s", exc)
            report.status, report.detail = "failed", f"{type(exc).__name__}: {exc}"[:300]
            return
        if report.stopped_by == "loop":  # the stream showed a few words of the repeat: cut the raw text at its start
            guard = chat_decode.IdGuard(allowed)
            text = guard.feed(chat_decode.LoopGuard().cut(report.raw)) + guard.flush()
        spans = find_injection(answer.question)
        checked = chat_decode.check_phrasing(text, answer.question, answer.facts, spans)
        # the workflows' one screen of model text (control tokens, instructions, claimed actions,
        # indicators from nowhere, a "benign" verdict the input asked for or the rules contradict)
        screened = screen_model_text(checked.text, _evidence(answer), spans, verdict_allowed=_verdict_allowed(answer, spans))
        checked = chat_decode.PhrasingCheck(screened.text, [*checked.dropped, *screened.dropped])
        for sentence, why in checked.dropped:
            answer.flagged.append(RejectedEntity(value=sentence[:300], kind="sentence", reason=why))
        for norm in report.invented_ids:
            answer.flagged.append(RejectedEntity(value=norm, kind="id", reason="no tool returned this id; removed"))
        answer.phrasing = checked.text
        if not checked.text:
            report.status = "failed"
            report.detail = report.detail or f"no usable sentence (stopped by {report.stopped_by})"
        elif checked.dropped or report.invented_ids or report.stopped_by == "loop":
            report.status = "repaired"
            report.detail = "; ".join(filter(None, [
                f"{len(report.invented_ids)} unverified id(s) removed" if report.invented_ids else "",
                f"{len(checked.dropped)} sentence(s) dropped" if checked.dropped else "",
                "a repetition loop was cut" if report.stopped_by == "loop" else ""]))


# ---------------------------------------------------------------------------------------------
# text of the answer
# ---------------------------------------------------------------------------------------------
def _check_question(text: str) -> str:
    text = (text or "").replace("\x00", "").strip()
    if not text:
        raise SecfmError("type a question, or paste an alert, a log line, a configuration or a report")
    if len(text) > MAX_QUESTION_CHARS:
        raise SecfmError(f"the message is {len(text):,} characters; the chat takes at most {MAX_QUESTION_CHARS:,}")
    return text


def _evidence(answer: ChatAnswer) -> str:
    """What the model's indicators may come from: the question and the tools' facts."""
    return answer.question + "\n" + "\n".join(f.text for f in answer.facts)


def _verdict_allowed(answer: ChatAnswer, spans) -> bool:
    """Whether the phrasing may call the activity benign: not when the input held instruction-like
    text, nor when triage rated it high or critical."""
    rated = {str(c.fields.get("severity", "")).lower() for c in answer.cards if c.kind == "triage"}
    return not spans and not rated & {"high", "critical"}


def _sources(facts: list[Fact]) -> list[Source]:
    seen: dict[str, Source] = {}
    for f in facts:
        seen.setdefault(f.source.key, f.source)
    return list(seen.values())


def source_number(answer: ChatAnswer, fact: Fact) -> int:
    keys = [s.key for s in answer.sources]
    return keys.index(fact.source.key) + 1


def summary_text(answer: ChatAnswer) -> str:
    """The deterministic answer: each fact with the number of its source ([1] ...)."""
    if answer.nothing_found:
        lines = [NOTHING_FOUND] + [f"- {f.text}" for f in answer.facts]
    else:
        lines = [f"- {f.text} [{source_number(answer, f)}]" for f in answer.facts]
    lines += [f"Note: {n}" for n in answer.notes]
    if answer.warnings:
        where = ", ".join(dict.fromkeys(w.location for w in answer.warnings[:3]))
        lines.append(f"Input warning: instruction-like text in {where}; it was treated as data, not followed.")
    return "\n".join(lines)


def compose_answer(answer: ChatAnswer) -> str:
    """What the analyst reads: the model's checked phrasing (when it passed) above the facts."""
    if answer.phrasing:
        return f"{answer.phrasing}\n\n{answer.summary}"
    return answer.summary


def chat_turn_events(message: str, conversation: Conversation | None = None, use_model: bool | None = None,
                     max_new_tokens: int | None = None, temperature: float | None = None, *, engine=None,
                     pipeline: ChatPipeline | None = None, cancel=None) -> Iterator[ChatEvent]:
    """The Workflow protocol's streaming chat turn: :meth:`ChatPipeline.stream` on ``pipeline``
    (the front end's, built once) or on a pipeline for ``engine``."""
    if pipeline is None:
        pipeline = ChatPipeline(engine, use_model=use_model is not False)
    return pipeline.stream(message, conversation, cancel, use_model=use_model, max_new_tokens=max_new_tokens,
                           temperature=temperature)


def chat_turn(message: str, conversation: Conversation | None = None, use_model: bool | None = None,
              max_new_tokens: int | None = None, temperature: float | None = None, *, engine=None,
              pipeline: ChatPipeline | None = None, cancel=None) -> ChatAnswer:
    """The Workflow protocol's chat turn: the final answer of :func:`chat_turn_events`."""
    final = None
    for event in chat_turn_events(message, conversation, use_model, max_new_tokens, temperature, engine=engine,
                                  pipeline=pipeline, cancel=cancel):
        if event.kind == "done":
            final = event.answer
    return final


def answer_question(text: str, conversation: Conversation | None = None, *, engine=None, use_model: bool = True,
                    store=DEFAULT, **options) -> ChatAnswer:
    """One grounded answer (see :class:`ChatPipeline`)."""
    return ChatPipeline(engine, use_model=use_model, store=store, **options).answer(text, conversation)


__all__ = ["DEFAULT_CHAT_MODEL", "ChatEvent", "ChatPipeline", "NOTHING_FOUND", "chat_model", "chat_turn", "chat_turn_events", "answer_question", "compose_answer", "summary_text"]

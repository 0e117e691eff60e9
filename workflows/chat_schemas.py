"""Typed boundaries of the grounded chat: sources, facts, tool cards, the answer, the conversation.

Every fact the chat states carries a :class:`Source` (an ATT&CK, CWE or NVD id with its link, or
the secfm tool that produced it). Cards are the tools' results in a compact, render-ready shape;
the answer text is built from facts, and the model's phrasing (when it runs) is checked against
the ids the tools returned.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from secfm.workflows.schemas import InputWarning, RejectedEntity

SourceKind = Literal["attack", "cwe", "nvd", "tool"]
CardKind = Literal["technique", "tactic", "mitigation", "group", "software", "campaign", "cwe", "cve",
                   "triage", "config", "iocs", "extraction", "retrieval", "notice"]
PasteKind = Literal["none", "alert", "config", "report", "vulnerability"]
ModelStatus = Literal["ok", "repaired", "failed", "skipped"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Model):
    """Where a fact comes from: a catalog entry (``id`` + ``url``) or a secfm tool."""

    kind: SourceKind
    tool: str  # "ATT&CK knowledge base", "CWE catalog", "NVD feed", "alert triage", ...
    id: str | None = None
    name: str = ""
    url: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}" if self.id and self.kind != "tool" else f"tool:{self.tool}:{self.id or ''}"

    def label(self) -> str:
        """``T1490 Inhibit System Recovery (ATT&CK)``, ``CVE-2014-6271 (NVD)``, ``alert triage``."""
        catalog = {"attack": "ATT&CK", "cwe": "CWE", "nvd": "NVD"}.get(self.kind)
        name = f"{self.id} {self.name}".strip() if self.id else ""
        if catalog:
            return f"{name} ({catalog})"
        return f"{self.tool}: {name}" if name else self.tool


class Fact(_Model):
    """One sentence the chat states, with its source and the ids it names."""

    text: str
    source: Source
    ids: list[str] = Field(default_factory=list)
    topic: str = ""  # the entity the fact is about (T1490, CVE-2021-44228, alert 1)
    negative: bool = False  # states that something was not found (an unknown id, a CVE without data)


class Card(_Model):
    """A tool result in a compact shape (the app renders one box per card)."""

    kind: CardKind
    title: str
    id: str | None = None
    url: str | None = None
    tool: str = ""
    fields: dict[str, Any] = Field(default_factory=dict)


class TurnTopic(_Model):
    """What a user turn is about, as found by the extractors (no model involved)."""

    ids: list[str] = Field(default_factory=list)  # ids written in the turn (normalised, shape-valid)
    named: list[str] = Field(default_factory=list)  # ATT&CK ids found by name or alias
    iocs: dict[str, list[str]] = Field(default_factory=dict)  # kind -> values (refanged)
    paste: PasteKind = "none"
    paste_form: Literal["", "lines", "command"] = ""  # how triage read a pasted alert (a command line as a process event)
    #: where the pasted material stands in the turn when a question is written around it
    #: ("is this bad? {alert}"): [start, end) character offsets; None: the whole turn is the paste
    paste_span: tuple[int, int] | None = None
    config_kind: str | None = None
    intents: list[str] = Field(default_factory=list)  # what, detect, mitigate, groups, techniques, map, cwe, cvss
    question: bool = False
    follow_up: bool = False  # entities were carried over from the conversation
    entities: list[str] = Field(default_factory=list)  # what the answer is about (ids), most specific first
    related: list[str] = Field(default_factory=list)  # ids the tools derived (a CVE's exploitation technique)

    def pasted(self, text: str) -> str:
        """The pasted material of ``text`` (the turn this topic was read from)."""
        return text[self.paste_span[0]:self.paste_span[1]] if self.paste_span else text


class ModelPhrasing(_Model):
    """What happened to the model's part of one answer."""

    status: ModelStatus = "skipped"
    detail: str = ""
    model: str | None = None
    prompt_tokens: int = 0
    budget_tokens: int = 0
    facts_in_prompt: int = 0
    raw: str = ""  # the model's text as decoded (before the checks), cut to 2,000 characters
    stopped_by: str = ""  # "eos", "max_new_tokens", "loop", "stop", "cancelled"
    proposed_ids: list[str] = Field(default_factory=list)  # ids the model wrote
    invented_ids: list[str] = Field(default_factory=list)  # of those, ids no tool returned (removed)


class Timings(_Model):
    tools_s: float = 0.0  # from the question to the cards
    first_model_piece_s: float | None = None  # from the question to the model's first piece
    total_s: float = 0.0


class ChatAnswer(_Model):
    """One answer: the tool cards, the facts with their sources, the text shown, the checks."""

    question: str
    topic: TurnTopic
    cards: list[Card] = Field(default_factory=list)
    facts: list[Fact] = Field(default_factory=list)
    summary: str = ""  # the deterministic answer (from the facts)
    phrasing: str = ""  # the model's phrasing after the checks ("" when off or failed)
    answer: str = ""  # what the analyst reads: the phrasing when it passed the checks, else the summary
    sources: list[Source] = Field(default_factory=list)
    nothing_found: bool = False
    flagged: list[RejectedEntity] = Field(default_factory=list)
    warnings: list[InputWarning] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # what was missing (no NVD data, no index...) and how to add it
    model: ModelPhrasing = Field(default_factory=ModelPhrasing)
    timings: Timings = Field(default_factory=Timings)

    def known_ids(self) -> set[str]:
        """Every id a tool returned in this answer (facts and cards)."""
        out = {i for f in self.facts for i in f.ids}
        out.update(s.id for s in self.sources if s.id)
        out.update(c.id for c in self.cards if c.id)
        return out


class Conversation(_Model):
    """What a follow-up question keeps: the entities of the last turns and their intents."""

    entities: list[str] = Field(default_factory=list)  # focus of the last answer, most specific first
    related: list[str] = Field(default_factory=list)  # what the tools derived from them (T1190 for a CVE)
    intents: list[str] = Field(default_factory=list)
    turns: list[dict[str, str]] = Field(default_factory=list)  # {"user": ..., "answer": ...}, newest last
    max_turns: int = 20

    def remember(self, answer: ChatAnswer) -> None:
        if answer.topic.entities:
            self.entities = list(answer.topic.entities)
            self.related = list(answer.topic.related)
        if answer.topic.intents:
            self.intents = list(answer.topic.intents)
        self.turns.append({"user": answer.question[:2000], "answer": answer.answer[:2000]})
        del self.turns[:-self.max_turns]


class ChatInput(BaseModel):
    """One chat turn as a Workflow request (``secfm chat``, ``POST /v1/chat``, the app's chat tab).

    ``conversation`` is the caller's own :class:`Conversation` (kept as the same object, so the
    turn is remembered in it); None answers without one. ``use_model``, ``max_new_tokens`` and
    ``temperature``: this turn's overrides (None: the pipeline's settings)."""

    model_config = ConfigDict(allow_inf_nan=False)

    message: str
    conversation: Conversation | None = None
    use_model: bool | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)


__all__ = ["Card", "ChatAnswer", "ChatInput", "Conversation", "Fact", "ModelPhrasing", "Source", "Timings", "TurnTopic"]

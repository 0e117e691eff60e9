"""The one adapter between the UI and the rest of secfm.

Every tab calls exactly one method here (``chat_prompt``/``stream_chat``, ``triage``,
``summarize``, ``review``, ``extract``); each returns a plain, JSON-ready *view* dict in the
shape the tab renders, built from whatever the workflow returns. When a workflow's signature
or result model changes, only this module follows.

View shapes (what the tabs rely on):

- triage:    {"alerts": [{"id", "title", "severity", "score", "techniques": [..], "evidence": [..],
              "next_steps": [..], "fields": {..}}], "queue": [alert ids, most urgent first],
              "raw": <the workflow result as JSON>}
- summarize: {"markdown": str, "raw": ...}
- review:    {"kind": str, "findings": [{"rule", "severity", "title", "line_start", "line_end",
              "evidence", "fix"}], "raw": ...}
- extract:   {"hits": [TechniqueHit.to_dict()], "method": str, "note": str, "layer": dict,
              "stix": str (bundle JSON), "text": str}
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from secfm.app.chat import SYSTEM_PROMPT, Prompt, build_prompt
from secfm.errors import SecfmError

log = logging.getLogger(__name__)

SEVERITY_ORDER = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0, "informational": 0}
MAX_INPUT_CHARS = 200_000


class Backend:
    """One engine shared by every session; workflows reached through one method per tab."""

    def __init__(self, engine, *, context_tokens: int | None = None, system_prompt: str = SYSTEM_PROMPT,
                 chat_engine=None, chat_model_name: str | None = None):
        self.engine = engine
        #: the chat tab's engine when it is not ``engine``: a callable, built on first use
        self._chat_engine = chat_engine
        self.chat_model_name = chat_model_name if chat_engine is not None else None
        self.system_prompt = system_prompt
        self._context_tokens = context_tokens
        self._count = functools.lru_cache(maxsize=8192)(self._count_uncached)
        self._attack_lock = threading.Lock()
        self._chat = None
        self._warm_thread: threading.Thread | None = None

    @classmethod
    def from_options(cls, model: str | None = None, endpoint: str | None = None, *, engine: str = "transformers",
                     adapter: str | None = None, context_tokens: int | None = None,
                     quantization: str | None = None) -> Backend:
        """The engine the app talks to: the process's shared engine for a registered model in
        process (the same one the heads, workflows and API use), or an endpoint. With no model,
        adapter or endpoint named, the chat tab runs on the chat's default model (secfm-270m,
        loaded on first use or by the warm-up) and the other tabs on the default model.
        ``quantization`` (``int8-dynamic``) applies to both engines the app writes text with; the
        heads keep their unquantized base weights."""
        from secfm.engines import check_quantization, shared_engine
        from secfm.workflows.chat import chat_model

        check_quantization(engine, endpoint, quantization)  # one clear line before any weights load
        chat = chat_model(model, adapter, endpoint)
        chat_engine = None if chat == model else (lambda: shared_engine(engine, model=chat, quantization=quantization))
        return cls(shared_engine(engine, model=model, adapter=adapter, endpoint=endpoint, quantization=quantization),
                   context_tokens=context_tokens, chat_engine=chat_engine, chat_model_name=chat)

    def warm_up(self) -> None:
        """Load what the first triage, review or extraction would otherwise wait for: the ATT&CK
        knowledge base and the retrieval store with its embedding model. Failures only log."""
        steps = (("ATT&CK knowledge", _warm_attack), ("retrieval store", _warm_store),
                 ("chat name index", lambda: self.chat_pipeline().warm_up()), ("chat turn", self._warm_chat))
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - warming is best effort
                log.info("warm-up of %s skipped: %s", name, exc)

    def _warm_chat(self) -> None:
        """One grounded turn with a one-token phrasing: the tools' first-call costs and the model's
        first forward are paid here, and the phrasing prompt's shared start (system prompt, data
        rules) is left in the engine's prompt-prefix cache for the analysts' turns."""
        from secfm.workflows.chat_schemas import Conversation

        self.chat_pipeline().answer("What is T1059.001?", Conversation(), max_new_tokens=1)

    def warm_up_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.warm_up, name="secfm-app-warm-up", daemon=True)
        thread.start()
        self._warm_thread = thread
        return thread

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait for the background warm-up (if one runs); True when it has finished."""
        thread = self._warm_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # -- facts ---------------------------------------------------------------------------------
    @property
    def max_context(self) -> int:
        ctx = int(self.engine.max_context)
        return min(ctx, self._context_tokens) if self._context_tokens else ctx

    @property
    def fast_model(self) -> bool:
        """Whether model-written workflow parts are quick enough to be on by default (a GPU or a
        served endpoint); on a CPU they take minutes, so the tabs leave them to the analyst."""
        return bool(self.engine.fast_decoding)

    def describe(self) -> dict:
        info = dict(self.engine.describe())
        info["max_context"] = self.max_context
        return {k: v for k, v in info.items() if v is not None}

    def info_html(self) -> str:
        """The model (or endpoint) the app talks to, for the page header."""
        import html

        d = self.describe()
        where = f"endpoint {d['endpoint']}" if d.get("endpoint") else f"in process · {d.get('engine', '?')}"
        adapter = f" + {d['adapter']}" if d.get("adapter") else ""
        name = html.escape(str(d.get("model", "?")) + adapter)
        chat = (f' <span class="label">chat</span> <code>{html.escape(self.chat_model_name)}</code>'
                if self.chat_model_name else "")
        return (f'<div class="model-info"><span class="label">model</span> <code>{name}</code>{chat}'
                f' <span class="where">{html.escape(where)} · context {int(d["max_context"])} tokens</span></div>')

    def info_markdown(self) -> str:
        d = self.describe()
        where = f"endpoint `{d['endpoint']}`" if d.get("endpoint") else f"in process ({d.get('engine', '?')})"
        adapter = f" + adapter `{d['adapter']}`" if d.get("adapter") else ""
        chat = f" · chat `{self.chat_model_name}`" if self.chat_model_name else ""
        return f"**Model** `{d.get('model', '?')}`{adapter}{chat} · {where} · context {d['max_context']} tokens"

    # -- chat ----------------------------------------------------------------------------------
    def _count_uncached(self, text: str) -> int:
        return int(self.engine.count_tokens(text))

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def chat_prompt(self, history: Sequence[dict[str, str]], user_text: str, max_new_tokens: int) -> Prompt:
        render = getattr(self.engine, "apply_chat_template", None)
        return build_prompt(history, user_text, self.count_tokens, self.max_context, max_new_tokens,
                            system_prompt=self.system_prompt, render=render)

    def stream_chat(self, messages: list[dict[str, str]], max_new_tokens: int = 256, temperature: float = 0.0,
                    stop: threading.Event | None = None, heartbeat: float | None = None):
        """The engine's streamed answer (an ``Engine.Generation``: iterate for pieces; its
        ``position`` is the place in the shared engine's queue). Decoding cannot loop
        (``SamplingParams.loop_free``) and stops at the next turn marker. ``stop`` (the Stop
        button's event) cancels it at once, queued or decoding, and frees its slot; with
        ``heartbeat`` seconds, ``""`` pieces arrive while it waits so the UI can show its place."""
        from secfm.engines import SamplingParams

        params = SamplingParams.loop_free(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
        return self.engine.submit_chat(messages, params).watch(stop, heartbeat)

    def chat_pipeline(self):
        """The grounded chat (``secfm.workflows.chat``) on this backend's engine, built once."""
        if self._chat is None:
            from secfm.workflows.chat import ChatPipeline

            self._chat = ChatPipeline(self._chat_engine() if self._chat_engine is not None else self.engine)
        return self._chat

    # -- triage --------------------------------------------------------------------------------
    def triage(self, text: str, use_model: bool = False) -> dict:
        text = _check(text, "alerts")
        from secfm.workflows.protocol import get_workflow

        result = get_workflow("triage").run({"alerts": text, "use_model": use_model}, engine=self.engine,
                                            **self._technique_kwargs())
        try:
            from secfm.workflows import parse_alerts

            parsed = parse_alerts(text)
        except Exception:  # noqa: BLE001 - ids are a nicety; the result stands without them
            parsed = None
        return triage_view(result, parsed)

    def _technique_kwargs(self) -> dict:
        """Let the workflows run the ATT&CK head on the app's engine (not a second model copy)."""
        if not self.engine.has_hidden_states:
            return {}
        from secfm.workflows.attack_extraction import extract_attack

        return {"technique_source": lambda text: extract_attack(text, engine=self.engine)}

    # -- summarize -----------------------------------------------------------------------------
    def summarize(self, text: str, audience: str = "analyst", use_model: bool = True) -> dict:
        text = _check(text, "incident text")
        from secfm.workflows.protocol import get_workflow

        result = get_workflow("summarize").run({"text": text, "audience": audience, "use_model": use_model},
                                               engine=self.engine, **self._technique_kwargs())
        return summary_view(result)

    # -- config review -------------------------------------------------------------------------
    def review(self, text: str, kind: str = "auto", use_model: bool = True, filename: str | None = None) -> dict:
        text = _check(text, "configuration")
        from secfm.workflows.protocol import get_workflow

        result = get_workflow("review-config").run({"text": text, "kind": kind or "auto", "filename": filename,
                                                    "use_model": use_model}, engine=self.engine)
        return review_view(result)

    def config_kinds(self) -> list[str]:
        """'auto' and the configuration kinds the review rules know."""
        from secfm.workflows.config_rules import KINDS

        return ["auto", *KINDS]

    # -- ATT&CK extraction ---------------------------------------------------------------------
    def extract(self, text: str) -> dict:
        text = _check(text, "report text")
        hits, method, note = self._extract_hits(text)
        from secfm.workflows.navigator import navigator_layers
        from secfm.workflows.stix_export import bundle_json, stix_bundle

        # one Navigator layer per ATT&CK domain; the app shows the domain with the most hits
        layer = next(iter(navigator_layers(hits, description=f"secfm app, {method}").values()))
        stix = bundle_json(stix_bundle(hits, text))
        return {"hits": [_hit_dict(h) for h in hits], "method": method, "note": note, "layer": layer,
                "stix": stix, "text": text}

    def _extract_hits(self, text: str):
        from secfm.workflows.protocol import get_workflow

        engine = self.engine if self.engine.has_hidden_states else None
        try:
            with self._attack_lock:  # one extractor build at a time; the engine lock orders forwards
                hits = get_workflow("attack").run({"text": text}, engine=engine).techniques
            return hits, "classifier head", ""
        except SecfmError as exc:
            if "head" not in str(exc):
                raise
            hits = keyword_hits(text)
            return hits, "ids and names", (
                f"No ATT&CK classifier head is available ({exc}); showing techniques named or cited by id in the text.")


def _warm_attack() -> None:
    from secfm.knowledge import load_attack

    _name_index_for(load_attack().version)


def _warm_store() -> None:
    from secfm.workflows.store import default_store

    store = default_store()
    if store is not None:
        store.search("encoded powershell", k=1)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _check(text: str | None, what: str) -> str:
    text = (text or "").strip("\ufeff")
    if not text.strip():
        raise SecfmError(f"paste or upload some {what} first")
    if len(text) > MAX_INPUT_CHARS:
        raise SecfmError(f"the {what} is {len(text):,} characters; the app takes at most {MAX_INPUT_CHARS:,}")
    return text


def to_jsonable(obj: Any) -> Any:
    """Pydantic models, dataclasses, tuples and sets as plain JSON values."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return str(obj)


def _first(d: dict, *names, default=None):
    for n in names:
        if isinstance(d, dict) and d.get(n) not in (None, "", [], {}):
            return d[n]
    return default


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def _strings(v) -> list[str]:
    out = []
    for item in _as_list(v):
        if isinstance(item, dict):
            item = _first(item, "text", "description", "step", "value", "id", "name", default=json.dumps(item))
        out.append(str(item))
    return out




def _hit_dict(h) -> dict:
    d = to_jsonable(h)
    d.setdefault("evidence", [])
    d["tactics"] = list(d.get("tactics") or [])
    return d


# -- triage ------------------------------------------------------------------------------------
_ID_FIELDS = ("id", "alert_id", "alertid", "event_id", "eventid", "uid", "_id", "incident_id")


def triage_view(result, parsed: Sequence | None = None) -> dict:
    """``TriageResult`` -> rows keyed by a display id (the alert's own id field when it has
    one, else ``#<n>``), the ranked queue and the per-alert detail."""
    raw = to_jsonable(result)
    items = raw if isinstance(raw, list) else _first(raw, "alerts", "results", default=[])
    by_index = {getattr(a, "index", i): a for i, a in enumerate(parsed or [])}
    alerts, ids_by_index = [], {}
    for pos, a in enumerate(_as_list(items)):
        if not isinstance(a, dict):
            continue
        index = a.get("index", pos)
        src = by_index.get(index)
        own = None
        if src is not None and hasattr(src, "get"):
            try:
                own = src.get(*_ID_FIELDS)
            except Exception:  # noqa: BLE001
                own = None
        aid = str(own) if own else f"#{index + 1}"
        if aid in ids_by_index.values():
            aid = f"{aid} (#{index + 1})"
        ids_by_index[index] = aid
        title = str(a.get("title") or "")
        sigs = a.get("signatures") or []
        if (not title or title.lstrip().startswith(("{", "["))) and sigs:
            title = sigs[0].get("title") or title
        score = a.get("score")
        model_view = a.get("model_view") or {}
        alerts.append({
            "id": aid,
            "index": index,
            "line": a.get("line"),
            "format": a.get("format", ""),
            "title": title,
            "severity": str(a.get("severity", "unknown")).lower(),
            "score": float(score) if isinstance(score, (int, float)) else None,
            "signatures": [f"{s.get('id')}: {s.get('title')}" for s in sigs if isinstance(s, dict)],
            "techniques": [t for t in (a.get("techniques") or []) if isinstance(t, dict)],
            "evidence": [e for e in (a.get("evidence") or []) if isinstance(e, dict)],
            "rationale": str(a.get("rationale") or ""),
            "model_view": model_view if model_view.get("status") not in (None, "skipped") else None,
            "next_steps": [n for n in (a.get("next_steps") or []) if isinstance(n, dict)],
            "knowledge": [k for k in (a.get("related_knowledge") or []) if isinstance(k, dict)],
            "warnings": [w for w in (a.get("warnings") or []) if isinstance(w, dict)],
            "rejected": [r for r in (a.get("rejected") or []) if isinstance(r, dict)],
            "fields": dict(getattr(src, "fields", {}) or {}) if src is not None else {},
        })
    order = []
    for q in _as_list(_first(raw, "queue", default=[]) if isinstance(raw, dict) else []):
        if isinstance(q, dict) and q.get("index") in ids_by_index:
            order.append(ids_by_index[q["index"]])
    if len(order) != len(alerts):
        order = [a["id"] for a in sorted(
            alerts, key=lambda a: (-SEVERITY_ORDER.get(a["severity"], -1), -(a["score"] or 0.0), a["index"]))]
    meta = {k: raw.get(k) for k in ("counts", "technique_source", "knowledge") if isinstance(raw, dict) and k in raw}
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        meta["model"] = {k: raw["model"].get(k) for k in ("status", "detail", "method", "calls")}
    return {"alerts": alerts, "queue": order, "meta": meta, "raw": raw}


# -- summary -----------------------------------------------------------------------------------
def summary_view(result) -> dict:
    """``IncidentSummary`` -> Markdown: headline, summary (and where it came from), timeline,
    techniques, indicators, ids, and what was flagged or cut."""
    raw = to_jsonable(result)
    if isinstance(raw, str):
        return {"markdown": raw, "raw": {"summary": raw}}
    md = [f"### {_md(raw['headline'])}"] if raw.get("headline") else []
    md.append(_md(raw.get("summary") or raw.get("extractive") or "_(no summary)_"))
    source = raw.get("summary_source")
    model = raw.get("model") or {}
    if source:
        why = ""
        if source == "extractive" and model.get("detail"):
            why = f" (model {model.get('status')}: {model.get('detail')})"
        md.append(f"<sub>summary source: {source}{_md(why)}</sub>")
    if raw.get("timeline"):
        md.append("**Timeline**\n\n" + "\n".join(
            f"- `{_md(t.get('time'))}` {_md(t.get('text'))}" for t in raw["timeline"]))
    if raw.get("techniques"):
        md.append("**ATT&CK techniques**\n\n" + "\n".join(
            f"- `{t.get('id')}` {_md(t.get('name') or '')} ({t.get('source')})" for t in raw["techniques"]))
    iocs = raw.get("iocs") or {}
    if iocs:
        md.append("**Indicators**\n\n" + "\n".join(
            f"- {_md(kind)}: " + ", ".join(f"`{_md(v)}`" for v in values) for kind, values in iocs.items() if values))
    ids = [i for i in raw.get("ids") or [] if i.get("kind") not in ("technique", "subtechnique")]
    if ids:
        md.append("**Ids mentioned**\n\n" + "\n".join(
            f"- `{i.get('id')}` {_md(i.get('name') or '')}{'' if i.get('known') else ' (unknown id)'}" for i in ids))
    flags = raw.get("flags") or []
    warnings = raw.get("warnings") or []
    if flags or warnings:
        md.append("**Checks**\n\n" + "\n".join(
            [f"- removed: {_md(f.get('kind'))} `{_md(f.get('value'))}` {_md(f.get('detail') or '')}" for f in flags]
            + [f"- input warning: {_md(w.get('kind'))} {_md(w.get('location') or '')}: {_md(w.get('detail'))}"
               for w in warnings]))
    return {"markdown": "\n\n".join(md), "raw": raw}


def _md(text) -> str:
    """Text from the input or the model, safe inside Markdown (no HTML, no link syntax)."""
    import html

    return html.escape(str(text or ""), quote=False).replace("[", "\\[").replace("]", "\\]")


# -- config review -----------------------------------------------------------------------------
def _lines(f: dict) -> tuple[int | None, int | None]:
    start = _first(f, "line_start", "start_line", "line", default=None)
    end = _first(f, "line_end", "end_line", default=None)
    rng = _first(f, "lines", "line_range", default=None)
    if isinstance(rng, (list, tuple)) and rng:
        start, end = rng[0], rng[-1]
    elif isinstance(rng, dict):
        start, end = _first(rng, "start", default=start), _first(rng, "end", default=end)
    elif isinstance(rng, str):
        m = re.match(r"\s*(\d+)\s*(?:[-–:]\s*(\d+))?", rng)
        if m:
            start, end = int(m.group(1)), int(m.group(2) or m.group(1))
    start = int(start) if isinstance(start, (int, float, str)) and str(start).isdigit() else None
    end = int(end) if isinstance(end, (int, float, str)) and str(end).isdigit() else start
    return start, end


def review_view(result) -> dict:
    raw = to_jsonable(result)
    items = raw if isinstance(raw, list) else _first(raw, "findings", "issues", "results", default=[])
    findings = []
    for f in _as_list(items):
        if not isinstance(f, dict):
            continue
        start, end = _lines(f)
        findings.append({
            "rule": str(_first(f, "rule_id", "rule", "id", "check", default="")),
            "severity": str(_first(f, "severity", "level", default="unknown")).lower(),
            "title": str(_first(f, "title", "message", "description", "name", default="")),
            "why": str(_first(f, "why", "rationale", "reason", default="")),
            "line_start": start,
            "line_end": end,
            "evidence": str(_first(f, "evidence", "line_text", "snippet", "match", default="")),
            "fix": str(_first(f, "fix", "remediation", "recommendation", "suggestion", default="")),
            "references": [str(r) for r in _as_list(f.get("references"))],
            "source": str(f.get("source") or "rule"),
        })
    findings.sort(key=lambda f: (-SEVERITY_ORDER.get(f["severity"], -1), f["line_start"] or 0))
    kind, meta = "auto", {}
    if isinstance(raw, dict):
        kind = _first(raw, "kind", "detected_kind", "config_kind", "type", default="auto")
        meta = {k: raw.get(k) for k in ("kind_detected_by", "lines", "counts", "knowledge") if k in raw}
        meta["warnings"] = [w for w in raw.get("warnings") or [] if isinstance(w, dict)]
        meta["rejected"] = [r for r in raw.get("rejected") or [] if isinstance(r, dict)]
        if isinstance(raw.get("model"), dict):
            meta["model"] = {k: raw["model"].get(k) for k in ("status", "detail", "method", "calls")}
    return {"kind": str(kind), "findings": findings, "meta": meta, "raw": raw}


# -- ATT&CK fallback without a head -------------------------------------------------------------
_ID_RE = re.compile(r"\bT\d{4}(?:\.\d{3})?\b")


def keyword_hits(text: str, max_hits: int = 30) -> list:
    """Techniques cited by id (T1059.001) or named (``PowerShell``) in ``text``, with the
    sentences that cite them as evidence. Used only when no classifier head is available."""
    from secfm.knowledge import load_attack
    from secfm.workflows.attack_extraction import Evidence, TechniqueHit, split_sentences

    kb = load_attack()
    segments = split_sentences(text)
    found: dict[str, list[tuple[object, float]]] = {}
    names = _name_index(kb)
    for seg in segments:
        for m in _ID_RE.finditer(seg.text):
            if m.group(0) in kb.techniques_by_id:
                found.setdefault(m.group(0), []).append((seg, 0.95))
        low = seg.text.casefold()
        for name, tid in names:
            i = low.find(name)
            if i != -1 and (i == 0 or not low[i - 1].isalnum()) and (
                    i + len(name) == len(low) or not low[i + len(name)].isalnum()):
                found.setdefault(tid, []).append((seg, 0.6))
    hits = []
    for tid, ev in found.items():
        tech = kb.techniques_by_id[tid]
        best = max(s for _, s in ev)
        seen, evidence = set(), []
        for seg, s in sorted(ev, key=lambda x: -x[1]):
            if seg.index in seen:
                continue
            seen.add(seg.index)
            evidence.append(Evidence(seg.index, seg.text, seg.start, seg.end, s))
        hits.append(TechniqueHit(tid, tech.name, tuple(tech.tactics), best, tuple(evidence[:3]), tech.url))
    hits.sort(key=lambda h: (-h.score, h.id))
    return hits[:max_hits]


@functools.lru_cache(maxsize=1)
def _name_index_for(version: str) -> tuple[tuple[str, str], ...]:
    """Names distinctive enough to cite a technique: shared names are left out, and a one-word
    sub-technique name counts only when it is a proper name (PowerShell, Rundll32)."""
    from collections import Counter

    from secfm.knowledge import load_attack

    prep = {"reconnaissance", "resource-development"}
    # a name shared with a pre-compromise technique (Spearphishing Attachment) means the intrusion one
    techniques = [t for t in load_attack().techniques() if not prep & set(t.tactics)] or load_attack().techniques()
    shared = Counter(t.name.casefold() for t in techniques)
    items = []
    for t in techniques:
        name = t.name.casefold()
        if len(name) < 6 or shared[name] > 1:
            continue
        if " " not in t.name and t.is_subtechnique and not re.search(r".[A-Z0-9]", t.name):
            continue
        items.append((name, t.id))
    items.sort(key=lambda x: -len(x[0]))
    return tuple(items)


def _name_index(kb) -> tuple[tuple[str, str], ...]:
    """(lower-cased name, technique id) for current techniques with distinctive names."""
    return _name_index_for(kb.version)


__all__ = ["Backend", "keyword_hits", "review_view", "summary_view", "to_jsonable", "triage_view"]

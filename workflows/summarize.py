"""Incident summaries for an executive or an analyst, with every entity checked against the input.

Deterministic part (always there): IOCs (``secfm.text.iocs``) and ATT&CK/CWE/CVE ids
(``find_ids`` + ``validate_id``) extracted from the report and listed, techniques from the ids
and the technique source, a timeline of timestamped lines, and an extractive summary.

Model part: map-reduce within the model's context. The report is cut into chunks of about
``chunk_tokens`` tokens (bounded by the model's context), each chunk is summarised under a JSON
schema (batched), and the partial summaries are combined the same way, level by level, until one
summary remains. Then code checks it: every id must be a real ATT&CK/CWE/CVE id that the report
mentions, every IOC must appear in the report, and no sentence may repeat an instruction found
in the report; sentences that fail are removed and flagged (an "invented entity"). When the model
part fails or nothing survives, the extractive summary stands and the reason is given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from secfm.workflows import context
from secfm.workflows.context import DEFAULT
from secfm.workflows.schemas import (
    IdMention,
    IncidentSummary,
    ModelPart,
    SummaryFlag,
    SummaryInput,
    TechniqueRef,
    TimelineEntry,
)
from secfm.workflows.untrusted import (
    control_strings,
    data_rules,
    delimit,
    find_injection,
    injection_warnings,
    screen_model_text,
    split_sentences,
)

log = logging.getLogger(__name__)

ID_KINDS = ("cve", "cwe", "attack")
DEFAULT_CHUNK_TOKENS = 1200
DEFAULT_MAX_NEW_TOKENS = 128
MAX_TIMELINE = 40
Progress = Callable[[int, int], None]

_AUDIENCE = {
    "executive": ("a senior executive: plain language, business impact, what is at risk and what decision or "
                  "action is needed; no raw indicators"),
    "analyst": ("a SOC analyst: technical detail, attacker actions in order, affected hosts and accounts, "
                "techniques and indicators"),
}
_TIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}| ?UTC)?"
    r"|\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* +\d{1,2}(?:,? \d{4})?,? \d{1,2}:\d{2}(?::\d{2})?(?: ?UTC)?"
    r"|\b\d{1,2}:\d{2}(?::\d{2})? ?UTC\b"
)


# --------------------------------------------------------------------------------------------
# deterministic part
# --------------------------------------------------------------------------------------------
def extract_entities(text: str) -> tuple[dict[str, list[str]], list[IdMention]]:
    """(IOCs by kind, ids with their validation) found in ``text``."""
    from secfm.knowledge import find_ids, validate_id
    from secfm.text.iocs import extract_iocs, unique_iocs

    iocs = {k: v for k, v in unique_iocs(extract_iocs(text)).items() if k not in ID_KINDS}
    ids = []
    for found in find_ids(text):
        check = validate_id(found)
        ids.append(IdMention(id=check.normalized or found, kind=check.kind, name=check.name, known=check.known,
                             current=check.current, replaced_by=check.replaced_by, in_input=True))
    return iocs, ids


def timeline(text: str, limit: int = MAX_TIMELINE) -> list[TimelineEntry]:
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        m = _TIME.search(line)
        if m:
            clean = " ".join(line.split())
            entries.append(TimelineEntry(time=m.group(0), line=n, text=clean if len(clean) <= 200 else clean[:197] + "..."))
            if len(entries) >= limit:
                break
    return entries


def _lede(text: str, n: int = 2) -> tuple[str, str]:
    """(title, first sentences of the first paragraph)."""
    title = ""
    body_lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            if body_lines:
                break
            continue
        if stripped.startswith("#") and not title and not body_lines:
            title = stripped.lstrip("#").strip()
            continue
        if not body_lines and not title and len(stripped) < 90 and not stripped.endswith("."):
            title = stripped
            continue
        body_lines.append(stripped)
    sentences = split_sentences(" ".join(body_lines))
    lede = " ".join(sentences[:n])
    return title, lede if len(lede) <= 500 else lede[:497] + "..."


_PLAIN = {"ipv4": "an address", "ipv6": "an address", "domain": "a look-alike domain", "url": "a malicious link",
          "email": "an e-mail address", "md5": "a file", "sha1": "a file", "sha256": "a file", "windows_path": "a file",
          "posix_path": "a file", "registry_key": "a registry key"}


def plain_language(text: str) -> str:
    """``text`` with raw indicators replaced by plain words (for executives)."""
    from secfm.text.iocs import extract_iocs

    for ioc in sorted(extract_iocs(text), key=lambda i: -i.start):
        if ioc.kind in _PLAIN:
            text = text[:ioc.start] + _PLAIN[ioc.kind] + text[ioc.end:]
    return text


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}{'es' if word.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


_IOC_WORDS = {"ipv4": "IPv4 address", "ipv6": "IPv6 address", "domain": "domain", "url": "URL", "email": "e-mail address",
              "md5": "MD5 hash", "sha1": "SHA-1 hash", "sha256": "SHA-256 hash", "windows_path": "Windows path",
              "posix_path": "file path", "registry_key": "registry key"}


def extractive_summary(text: str, audience: str, iocs: dict[str, list[str]], ids: list[IdMention],
                       techniques: list[TechniqueRef], events: list[TimelineEntry]) -> tuple[str, str]:
    """(headline, summary) built from the text and the extracted entities (no model)."""
    title, lede = _lede(text)
    techs = [t for t in techniques if t.current]
    cves = [i.id for i in ids if i.kind == "cve"]
    tactics = sorted({tac for t in techs for tac in t.tactics})
    n_iocs = sum(len(v) for v in iocs.values())
    if audience == "executive":
        lede = plain_language(lede)
    parts = [lede] if lede else []
    if audience == "executive":
        if techs:
            parts.append(f"The report describes attacker activity mapped to {_plural(len(techs), 'ATT&CK technique')}"
                         + (f" across {', '.join(t.replace('-', ' ') for t in tactics[:6])}." if tactics else "."))
        if cves:
            parts.append(f"It names {_plural(len(cves), 'vulnerability')} ({', '.join(cves[:5])}); patch status should be confirmed.")
        if n_iocs:
            parts.append(f"{_plural(n_iocs, 'indicator')} of compromise were extracted for blocking and threat hunting.")
    else:
        if n_iocs:
            counts = ", ".join(_plural(len(v), _IOC_WORDS.get(k, k)) for k, v in iocs.items())
            parts.append(f"Indicators: {counts}.")
        if techs:
            parts.append("ATT&CK: " + ", ".join(f"{t.id} {t.name}" for t in techs[:8]) + ".")
        if cves:
            parts.append("Vulnerabilities: " + ", ".join(cves[:8]) + ".")
        if events:
            parts.append(f"Timeline: {_plural(len(events), 'timestamped line')}, from {events[0].time} to {events[-1].time}.")
    headline = title or (split_sentences(lede)[0] if lede else "Incident report")
    return headline[:160], " ".join(parts) if parts else "The report has no summarisable text."


# --------------------------------------------------------------------------------------------
# model part
# --------------------------------------------------------------------------------------------
def _schema(final: bool) -> dict:
    if final:
        return {"type": "object", "properties": {"headline": {"type": "string", "maxLength": 100},
                                                  "summary": {"type": "string", "maxLength": 600}},
                "required": ["headline", "summary"], "additionalProperties": False}
    return {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 400}},
            "required": ["summary"], "additionalProperties": False}


def _map_prompt(chunk: str, i: int, n: int, audience: str, controls) -> list[dict]:
    body = (f"Summarize part {i} of {n} of an incident report for {_AUDIENCE[audience]}.\n"
            f"{data_rules('REPORT')}\n"
            "Only state what the report says. Copy indicators and ids exactly; do not invent any.\n"
            'Answer with one JSON object: {"summary": "..."} (at most three sentences).\n\n'
            f"{delimit('REPORT', chunk, controls=controls)}")
    return [{"role": "user", "content": body}]


def _final_prompt(material: str, audience: str, partial: bool, controls) -> list[dict]:
    what = "summaries of consecutive parts of an incident report" if partial else "an incident report"
    body = (f"Write the summary of {what} for {_AUDIENCE[audience]}.\n"
            f"{data_rules('REPORT')}\n"
            "Only state what the material says. Copy indicators and ids exactly; do not invent any.\n"
            'Answer with one JSON object: {"headline": "...", "summary": "..."} (headline under 15 words, '
            "summary at most four sentences).\n\n"
            f"{delimit('REPORT', material, controls=controls)}")
    return [{"role": "user", "content": body}]


def _chunks(engine, text: str, chunk_tokens: int) -> list[str]:
    from secfm.workflows.corpus import split_text

    try:
        n_tokens = max(1, engine.count_tokens(text))
    except Exception:  # noqa: BLE001
        n_tokens = max(1, len(text) // 4)
    if n_tokens <= chunk_tokens:
        return [text]
    chars_per_token = len(text) / n_tokens
    size = max(200, int(chunk_tokens * chars_per_token))
    return [text[a:b] for a, b in split_text(text, size, overlap=min(200, size // 10))]


def _budget(engine, chunk_tokens: int, max_new_tokens: int) -> int:
    try:
        limit = int(engine.max_context) - max_new_tokens - 256  # instructions and markers
    except Exception:  # noqa: BLE001
        limit = chunk_tokens
    return max(128, min(chunk_tokens, limit))


def _reduce_further(engine, joined: str, audience: str, budget: int, max_new_tokens: int, part: ModelPart, controls) -> str:
    """Summaries that still do not fit: summarise them again, level by level (one document)."""
    from secfm.workflows.structured import generate_structured

    while engine.count_tokens(joined) > budget:
        level = _chunks(engine, joined, budget)
        if len(level) <= 1:
            break
        batch = generate_structured(engine, [_map_prompt(c, i + 1, len(level), audience, controls) for i, c in enumerate(level)],
                                    _schema(False), max_new_tokens)
        part.calls += len(level)
        part.raw.extend(r.raw for r in batch.results)
        summaries = [r.value["summary"] for r in batch.results if r.value is not None and r.value.get("summary")]
        if not summaries:
            break
        new = "\n\n".join(f"Part {i + 1}: {x}" for i, x in enumerate(summaries))
        if len(new) >= len(joined):  # no progress: keep the first budget's worth
            break
        joined = new
    n = engine.count_tokens(joined)
    return joined if n <= budget else joined[: int(len(joined) * budget / n)]


def _map_reduce_many(engine, texts: list[str], audiences: list[str], chunk_tokens: int, max_new_tokens: int,
                     parts: list[ModelPart], tick: Callable[[int, int], None] | None) -> list[tuple[dict | None, int]]:
    """Map-reduce for several reports at once: every map step of every report in one batched
    generation, then every final step in another. Returns (final JSON or None, chunks) each."""
    from secfm.workflows.structured import generate_structured

    controls = control_strings(engine)
    budget = _budget(engine, chunk_tokens, max_new_tokens)
    chunked = [_chunks(engine, t, budget) for t in texts]
    planned = sum(len(c) + (1 if len(c) > 1 else 0) for c in chunked)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if tick:
            tick(done, max(planned, done))

    for part, chunks in zip(parts, chunked):
        part.detail = f"{len(chunks)} chunk(s) of at most {budget} tokens"
    finals: dict[int, tuple[str, bool]] = {}
    owners, prompts = [], []
    for i, chunks in enumerate(chunked):
        if len(chunks) == 1:
            finals[i] = (texts[i], False)
        else:
            for j, c in enumerate(chunks):
                owners.append(i)
                prompts.append(_map_prompt(c, j + 1, len(chunks), audiences[i], controls))
    out: list[tuple[dict | None, int]] = [(None, len(c)) for c in chunked]
    if prompts:
        batch = generate_structured(engine, prompts, _schema(False), max_new_tokens)
        advance(len(prompts))
        per_doc: dict[int, list[str]] = {}
        failed: dict[int, int] = {}
        for owner, res in zip(owners, batch.results):
            parts[owner].method = batch.method
            parts[owner].calls += 1
            parts[owner].raw.append(res.raw)
            if res.value is not None and res.value.get("summary"):
                per_doc.setdefault(owner, []).append(res.value["summary"])
            else:
                failed[owner] = failed.get(owner, 0) + 1
        for i in sorted(set(owners)):
            if failed.get(i):
                parts[i].detail += f"; {failed[i]} part(s) failed"
            if i not in per_doc:
                parts[i].status = "failed"
                parts[i].detail += "; no part could be summarised"
                continue
            joined = "\n\n".join(f"Part {k + 1}: {x}" for k, x in enumerate(per_doc[i]))
            finals[i] = (_reduce_further(engine, joined, audiences[i], budget, max_new_tokens, parts[i], controls), True)
    order = sorted(finals)
    if order:
        batch = generate_structured(engine, [_final_prompt(finals[i][0], audiences[i], finals[i][1], controls) for i in order],
                                    _schema(True), max_new_tokens)
        advance(len(order))
        for i, res in zip(order, batch.results):
            part = parts[i]
            part.method = batch.method
            part.calls += 1
            part.raw.append(res.raw)
            if res.value is None:
                part.status = "failed"
                part.detail += f"; the {'final ' if finals[i][1] else ''}summary failed: {res.error}"
            else:
                part.status = res.status
                out[i] = (res.value, len(chunked[i]))
    return out


def check_summary(summary: str, text: str, iocs: dict[str, list[str]], ids: list[IdMention]) -> tuple[str, list[SummaryFlag], int]:
    """(the summary without unverified sentences, the flags, how many entities it named)."""
    from secfm.knowledge import find_ids, validate_id
    from secfm.text.iocs import extract_iocs

    input_ids = {i.id for i in ids}
    input_values = {v.lower() for values in iocs.values() for v in values}
    spans = find_injection(text)
    flags: list[SummaryFlag] = []
    kept: list[str] = []
    entities = 0
    for sentence in split_sentences(summary):
        bad = False
        for found in find_ids(sentence):
            entities += 1
            check = validate_id(found)
            norm = check.normalized or found
            if not check.known:
                flags.append(SummaryFlag(kind="invented-id" if check.well_formed else "unknown-id", value=found,
                                         detail=check.message or "not a known id"))
                bad = True
            elif norm not in input_ids:
                flags.append(SummaryFlag(kind="invented-id", value=norm, detail="a real id, but the report does not mention it"))
                bad = True
        for ioc in extract_iocs(sentence):
            if ioc.kind in ID_KINDS:
                continue
            entities += 1
            if ioc.value.lower() not in input_values and ioc.raw not in text and ioc.value not in text:
                flags.append(SummaryFlag(kind="invented-ioc", value=ioc.value, detail=f"{ioc.kind} not in the report"))
                bad = True
        if not bad:
            screened = screen_model_text(sentence, text, spans, verdict_allowed=not spans)
            for dropped, reason in screened.dropped:
                kind = "claimed-action" if reason.startswith("claims an action") else "injection-echo"
                flags.append(SummaryFlag(kind=kind, value=dropped[:160], detail=reason))
                bad = True
            sentence = screened.text or sentence
        if not bad:
            kept.append(sentence)
    return " ".join(kept), flags, entities


def _corroborate_head(head: list[TechniqueRef], named_ids: list[TechniqueRef], text: str) -> tuple[list[TechniqueRef], list[TechniqueRef]]:
    """Head techniques the report supports (cited by id, parent or name) and the other confident ones."""
    cited = {t.id for t in named_ids} | {t.id.split(".")[0] for t in named_ids}
    kept, candidates = [], []
    for t in sorted(head, key=lambda r: -(r.score or 0.0)):
        if (t.score or 0.0) < 0.5:
            continue
        if t.id in cited or (t.name and len(t.name) >= 5 and re.search(rf"\b{re.escape(t.name)}\b", text, re.IGNORECASE)):
            kept.append(t)
        elif len(candidates) < 10:
            candidates.append(t)
    return kept, candidates


def _deterministic(text: str, audience: str, technique_source, engine=None) -> IncidentSummary:
    from secfm.errors import SecfmError
    from secfm.inputs import check_text

    if audience not in _AUDIENCE:
        raise SecfmError(f"unknown audience {audience!r} (executive or analyst)")
    check_text(text, "report")
    iocs, ids = extract_entities(text)
    input_techs, _ = context.techniques_from_hits([i.id for i in ids if i.kind in ("technique", "subtechnique") and i.known], "input")
    source, status = context.resolve_technique_source(technique_source, engine)
    status_box = [status]
    head_techs, _ = context.techniques_from_hits(context.run_technique_source(source, text, status_box), "head")
    named, candidates = _corroborate_head(head_techs, input_techs, text)
    techniques = context.merge_techniques(input_techs, named)
    events = timeline(text)
    headline, extractive = extractive_summary(text, audience, iocs, ids, techniques, events)
    return IncidentSummary(audience=audience, headline=headline, summary=extractive, summary_source="extractive",
                           extractive=extractive, iocs=iocs, ids=ids, techniques=techniques, timeline=events,
                           candidate_techniques=candidates,
                           warnings=injection_warnings(text), technique_source=status_box[0].removesuffix(" (failed)"),
                           model=ModelPart(status="skipped", detail="use_model is off"))


def _apply_model(result: IncidentSummary, text: str, value: dict) -> None:
    part = result.model
    model_headline = str(value.get("headline", "")).strip()
    checked, flags, entities = check_summary(str(value.get("summary", "")), text, result.iocs, result.ids)
    head_checked, head_flags, head_entities = check_summary(model_headline, text, result.iocs, result.ids) if model_headline else ("", [], 0)
    result.flags = head_flags + flags
    part.proposed = entities + head_entities
    part.invented = sum(f.kind in ("invented-id", "unknown-id", "invented-ioc") for f in result.flags)
    if checked.strip():
        result.summary = checked
        result.summary_source = "model"
        if head_checked.strip():
            result.headline = head_checked
    else:
        part.detail += "; nothing of the model summary survived the checks" if flags else "; the model summary was empty"


def summarize_incidents(
    reports: list[tuple[str, str]] | list[str],
    *,
    use_model: bool = True,
    engine=None,
    model: str | None = None,
    technique_source=DEFAULT,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: Progress | None = None,
) -> list[IncidentSummary]:
    """Summarise several reports (``text`` or ``(text, audience)`` each); the model steps of all
    of them run as batched generations."""
    items = [(r, "analyst") if isinstance(r, str) else r for r in reports]
    results = [_deterministic(text, audience, technique_source, engine if use_model else None) for text, audience in items]
    from secfm.workflows.cve_analysis import analyze_cves_in_texts

    for result, analyses in zip(results, analyze_cves_in_texts([t for t, _ in items])):
        result.cves = analyses
    if not use_model or not results:
        return results
    parts = [ModelPart(status="failed") for _ in results]
    try:
        engine = context.resolve_engine(engine, True, model)
        for part in parts:
            part.model = context.model_name_of(engine)
        values = _map_reduce_many(engine, [t for t, _ in items], [a for _, a in items], chunk_tokens, max_new_tokens, parts, progress)
    except Exception as exc:  # noqa: BLE001 - the extractive summaries stand
        for part in parts:
            part.status = "failed"
            part.detail = f"{part.detail}; {type(exc).__name__}: {exc}".strip("; ")[:400]
        values = [(None, r.chunks) for r in results]
    for result, part, (text, _), (value, chunks) in zip(results, parts, items, values):
        result.model = part
        result.chunks = chunks
        if value is not None:
            _apply_model(result, text, value)
    return results


def summarize_incident(
    text: str,
    audience: str = "analyst",
    *,
    use_model: bool = True,
    engine=None,
    model: str | None = None,
    technique_source=DEFAULT,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: Progress | None = None,
) -> IncidentSummary:
    """Summarise an incident report; see the module docstring."""
    return summarize_incidents([(text, audience)], use_model=use_model, engine=engine, model=model, technique_source=technique_source,
                               chunk_tokens=chunk_tokens, max_new_tokens=max_new_tokens, progress=progress)[0]


def summarize_runnable(**defaults):
    """``summarize_incident`` as a LangChain runnable: SummaryInput (or a dict) -> IncidentSummary."""
    from langchain_core.runnables import RunnableLambda

    def run(value: SummaryInput | dict) -> IncidentSummary:
        inp = value if isinstance(value, SummaryInput) else SummaryInput.model_validate(value)
        return summarize_incident(inp.text, inp.audience, use_model=inp.use_model, **defaults)

    return RunnableLambda(run, name="summarize_incident").with_types(input_type=SummaryInput, output_type=IncidentSummary)

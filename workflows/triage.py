"""Alert triage: severity with a score, ATT&CK techniques, quoted evidence, recommended next steps,
related knowledge, and a ranked queue.

Deterministic first: :mod:`~secfm.workflows.signatures` scores every alert from its fields
(known-bad signatures, event ids, Suricata severity, CloudTrail event names, command lines...),
the technique source (the ATT&CK classifier head by default) adds techniques, the knowledge base
adds related ATT&CK/CWE/runbook entries. The model then gives its own view under a JSON schema:
a severity (recorded, advisory), up to three technique ids (each validated; unknown ones are
rejected), up to three alert fields it relies on (the schema only offers the alert's own field
names; each is checked against the input) and one sentence of rationale. The final severity is
the rules' severity: an alert cannot talk its way down the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from secfm.workflows import context
from secfm.workflows.alerts import Alert, alert_title, parse_alerts
from secfm.workflows.context import DEFAULT
from secfm.workflows.schemas import (
    SEVERITIES,
    SEVERITY_RANK,
    AlertTriage,
    Evidence,
    KnowledgeRef,
    ModelPart,
    ModelTriage,
    NextStep,
    QueueEntry,
    RejectedEntity,
    SignatureHit,
    TechniqueRef,
    TriageInput,
    TriageResult,
    severity_for_score,
)
from secfm.workflows.signatures import correlate, score_alert
from secfm.workflows.untrusted import (
    control_strings,
    data_rules,
    delimit,
    find_injection,
    injection_warnings,
    record_text,
    screen_model_text,
)

log = logging.getLogger(__name__)

MAX_PROMPT_FIELDS = 40
MAX_PROMPT_VALUE = 240
DEFAULT_MAX_NEW_TOKENS = 96
Progress = Callable[[int, int], None]


def alert_text(alert: Alert, max_fields: int = MAX_PROMPT_FIELDS, max_value: int = MAX_PROMPT_VALUE) -> str:
    """The alert as ``field: value`` lines (what the head and the model read)."""
    lines = []
    for key, value in list(alert.fields.items())[:max_fields]:
        value = value.replace("\n", " ")
        lines.append(f"{key}: {value if len(value) <= max_value else value[:max_value] + '...'}")
    return "\n".join(lines)


#: fields whose values are prose the ATT&CK head can read (it is trained on report sentences,
#: not on "field: value" dumps, on which it fires on almost everything)
PROSE_FIELDS = ("message", "msg", "description", "details", "title", "summary", "note", "alert.signature", "signature",
                "rule.name", "rule.description", "CommandLine", "command_line", "ScriptBlockText", "TaskContent", "ImagePath",
                "threat.name", "reason", "action_description")
HEAD_MIN_SCORE = 0.5
MAX_CANDIDATES = 5


def head_text(alert: Alert) -> str:
    """The prose of an alert (what the technique head reads); empty when it has none."""
    parts = []
    for name in PROSE_FIELDS:
        key = alert.key(name)
        if key is not None and alert.fields[key].strip() and alert.fields[key] not in parts:
            parts.append(alert.fields[key])
    return ". ".join(parts)[:2000]


def corroborate(suggested: list[TechniqueRef], asserted: list[TechniqueRef], alert: Alert,
                agree: set[str] = frozenset()) -> tuple[list[TechniqueRef], list[TechniqueRef]]:
    """(suggested techniques kept as techniques, the rest as candidates). A suggestion (from the
    head or the model) is kept when it is, or is the parent or child of, an asserted technique,
    when the alert names it (its id, or its name as words), or when the other source suggested it
    too (``agree``); the other confident ones are listed as candidates for the analyst."""
    import re as _re

    rule_ids = {t.id for t in asserted}
    rule_parents = {t.id.split(".")[0] for t in asserted}
    text = alert.text()
    promoted, candidates = [], []
    for t in sorted(suggested, key=lambda r: -(r.score if r.score is not None else 1.0)):
        if t.score is not None and t.score < HEAD_MIN_SCORE:
            continue
        related = t.id in rule_ids or t.id.split(".")[0] in rule_ids or (("." not in t.id) and t.id in rule_parents)
        named = t.id in text or (t.name and len(t.name) >= 5 and _re.search(rf"\b{_re.escape(t.name)}\b", text, _re.IGNORECASE))
        if related or named or t.id in agree:
            promoted.append(t)
        elif len(candidates) < MAX_CANDIDATES:
            candidates.append(t)
    return promoted, candidates


def triage_schema(field_names: list[str]) -> dict:
    return {
        "type": "object",
        "properties": {
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "techniques": {"type": "array", "items": {"type": "string", "pattern": "^T[0-9]{4}(\\.[0-9]{3})?$"}, "maxItems": 3},
            "fields": {"type": "array", "items": {"type": "string", "enum": field_names}, "maxItems": 2},
            "rationale": {"type": "string", "maxLength": 160},
        },
        "required": ["severity", "techniques", "fields", "rationale"],
        "additionalProperties": False,
    }


def _rationale(title: str, scored, evidence: list[Evidence], techniques: list[TechniqueRef]) -> str:
    parts = []
    if scored.hits:
        top = max(scored.hits, key=lambda h: h[0].score)[0]
        quoted = ", ".join(f"{e.field}={e.value!r}" for e in evidence[:3] if e.source == "rule")
        parts.append(f"{top.title} ({top.id})" + (f" on {quoted}" if quoted else "") + ".")
        if len(scored.hits) > 1:
            parts.append("Also matched: " + ", ".join(h[0].id for h in scored.hits if h[0] is not top) + ".")
    else:
        parts.append("No known-bad signature matched.")
    if scored.source is not None:
        parts.append(f"Source severity {scored.source.field}={scored.source.value!r}.")
    if techniques:
        parts.append("Techniques: " + ", ".join(f"{t.id} {t.name}" for t in techniques[:4]) + ".")
    return " ".join(parts)


def _next_steps(scored, techniques: list[TechniqueRef]) -> list[NextStep]:
    steps: list[NextStep] = []
    seen: set[str] = set()
    for sig, _keys in sorted(scored.hits, key=lambda h: -h[0].score):
        for action in sig.steps:
            if action not in seen:
                seen.add(action)
                steps.append(NextStep(action=action, reason=f"{sig.id}: {sig.title}", source="rule"))
    from secfm.knowledge import load_attack

    kb = load_attack()
    added = 0
    for tech in techniques[:2]:
        try:
            mitigations = kb.mitigations_for(tech.id)
        except Exception:  # noqa: BLE001
            continue
        for mit in mitigations[:1]:
            action = f"Review mitigation {mit.id} {mit.name}"
            if action not in seen and added < 2:
                seen.add(action)
                added += 1
                steps.append(NextStep(action=action, reason=f"ATT&CK mitigation for {tech.id} {tech.name}", source="attack"))
    if not steps:
        steps.append(NextStep(action="Review the alert in context (host, user, time) and close it if it is expected activity",
                              reason="no signature matched", source="rule"))
    return steps


def _query(alert: Alert, title: str, scored, techniques: list[TechniqueRef]) -> str:
    parts = [title]
    parts += [h[0].title for h in scored.hits[:3]]
    parts += [f"{t.id} {t.name}" for t in techniques[:3]]
    return ". ".join(parts)


def triage_alerts(
    alerts: Any,
    *,
    input_format: str = "auto",
    use_model: bool = True,
    engine=None,
    model: str | None = None,
    store=DEFAULT,
    technique_source=DEFAULT,
    k: int = 3,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 8,
    progress: Progress | None = None,
    where: str = "input",
    skip_bad: bool = False,
) -> TriageResult:
    """Triage alerts (text in any supported format, or parsed records); see the module docstring.

    ``store``: a :class:`~secfm.workflows.store.KnowledgeStore`, ``False`` for no retrieval, or
    the default. ``technique_source``: a callable ``text -> [hits with .id and .score]``, None for
    none, or the default (the ATT&CK classifier head when installed).
    """
    parsed = parse_alerts(alerts, input_format, where, skip_bad)
    source, source_status = context.resolve_technique_source(technique_source, engine if use_model else None)
    status = [source_status]
    store = context.resolve_store(store)
    from secfm.workflows.store import knowledge_status

    knowledge = knowledge_status(store if store is not None else None) if store is not False else "disabled"
    total_steps = len(parsed) * (2 if use_model else 1)
    done = 0
    results: list[AlertTriage] = []
    scoreds = []
    correlated = correlate(parsed)
    for alert in parsed:
        title = alert_title(alert)
        prose = head_text(alert)
        head_hits = context.run_technique_source(source, prose, status) if prose else []
        head_refs, head_rejected = context.techniques_from_hits(head_hits, "head")
        rule_refs: list[TechniqueRef] = []
        rejected: list[RejectedEntity] = list(head_rejected)
        scored = score_alert(alert, 0.0, correlated.get(alert.index))
        for sig, _keys in scored.hits:
            for tid in sig.techniques:
                ref, bad = context.check_technique(tid, "rule")
                if ref:
                    rule_refs.append(ref)
                if bad:
                    rejected.append(bad)
        promoted, candidates = corroborate(head_refs, rule_refs, alert)
        if promoted:  # the head agrees with the rules (or the alert names the technique): a little more weight
            scored = score_alert(alert, max(t.score or 0.0 for t in promoted), correlated.get(alert.index))
        techniques = context.merge_techniques(rule_refs, promoted)
        evidence: list[Evidence] = []
        seen_keys: set[str] = set()
        for _sig, keys in scored.hits:
            for key in keys:
                if key not in seen_keys:
                    seen_keys.add(key)
                    value = alert.fields[key]
                    evidence.append(Evidence(field=key, value=value, verified=alert.value_in_input(key, value)))
        if scored.source is not None and scored.source.field not in seen_keys:
            evidence.append(Evidence(field=scored.source.field, value=scored.source.value,
                                     verified=alert.value_in_input(scored.source.field, scored.source.value)))
        severity = severity_for_score(scored.score)
        results.append(AlertTriage(
            index=alert.index, line=alert.line, format=alert.family, title=title, severity=severity, score=scored.score,
            signatures=[SignatureHit(id=s.id, title=s.title, score=s.score, fields=keys) for s, keys in scored.hits],
            techniques=techniques, evidence=evidence, rationale=_rationale(title, scored, evidence, techniques),
            candidate_techniques=candidates, next_steps=_next_steps(scored, techniques), rejected=rejected,
            warnings=injection_warnings(record_text(alert.fields), f"alert {alert.index + 1} (input line {alert.line})"),
        ))
        scoreds.append(scored)
        done += 1
        if progress:
            progress(done, total_steps)

    if store not in (None, False) and k > 0:
        try:
            queries = [_query(a, r.title, s, r.techniques) for a, r, s in zip(parsed, results, scoreds)]
            found = store.search_many(queries, k=k * 4, kind=["technique", "mitigation", "document"])
            for result, refs in zip(results, found):
                result.related_knowledge = _dedupe_refs(refs, k)
        except Exception as exc:  # noqa: BLE001 - retrieval is an addition, not a requirement
            knowledge = f"failed: {type(exc).__name__}: {exc}"[:300]
            log.warning("retrieval failed: %s", knowledge)

    from secfm.workflows.cve_analysis import analyze_cves_in_texts

    for result, analyses in zip(results, analyze_cves_in_texts([record_text(a.fields) for a in parsed])):
        result.cves = analyses

    model_part = ModelPart(status="skipped", detail="use_model is off")
    if use_model:
        model_part = _model_step(parsed, results, engine, model, max_new_tokens, batch_size,
                                 lambda n: progress(len(parsed) + n, total_steps) if progress else None)

    queue = sorted(results, key=lambda r: (SEVERITY_RANK[r.severity], -r.score, r.index))
    counts = {s: sum(r.severity == s for r in results) for s in SEVERITIES}
    return TriageResult(
        alerts=results,
        queue=[QueueEntry(rank=i + 1, index=r.index, severity=r.severity, score=r.score, title=r.title) for i, r in enumerate(queue)],
        counts=counts, model=model_part, technique_source=status[0].removesuffix(" (failed)"), knowledge=knowledge,
    )


def _dedupe_refs(refs: list[KnowledgeRef], k: int) -> list[KnowledgeRef]:
    out: dict[str, KnowledgeRef] = {}
    for ref in refs:
        if ref.id not in out:
            out[ref.id] = ref
        if len(out) >= k:
            break
    return list(out.values())


def _prompt(alert: Alert, result: AlertTriage, controls) -> list[dict]:
    findings = "; ".join(f"{s.id} ({s.title})" for s in result.signatures) or "none"
    candidates = ", ".join(f"{t.id} {t.name}" for t in result.techniques[:4]) or "none"
    related = "; ".join(f"{r.id} {r.name}" for r in result.related_knowledge) or "none"
    body = (
        "You are assisting a SOC analyst with alert triage.\n"
        f"{data_rules('ALERT')}\n"
        f"Rule-based findings (trusted): signatures: {findings}; candidate ATT&CK techniques: {candidates}.\n"
        f"Related knowledge: {related}.\n"
        'Answer with one JSON object: "severity" (critical, high, medium, low or info), "techniques" (at most 3 '
        'ATT&CK technique ids), "fields" (at most 2 names of alert fields your judgement rests on) and "rationale" '
        "(one short sentence).\n\n"
        f"{delimit('ALERT', alert_text(alert), controls=controls)}"
    )
    return [{"role": "user", "content": body}]


def _model_step(parsed: list[Alert], results: list[AlertTriage], engine, model, max_new_tokens, batch_size, tick) -> ModelPart:
    from secfm.workflows.structured import generate_structured

    try:
        engine = context.resolve_engine(engine, True, model)
    except Exception as exc:  # noqa: BLE001 - no model: keep the deterministic triage
        return ModelPart(status="failed", detail=f"no model: {exc}"[:300])
    controls = control_strings(getattr(engine, "tokenizer", None))
    part = ModelPart(status="ok", model=context.model_name_of(engine))
    failures = repaired = 0
    done = 0
    for start in range(0, len(parsed), batch_size):
        alerts = parsed[start:start + batch_size]
        rows = results[start:start + batch_size]
        conversations = [_prompt(a, r, controls) for a, r in zip(alerts, rows)]
        schemas = [triage_schema(list(a.fields)[:MAX_PROMPT_FIELDS]) for a in alerts]
        try:
            batch = generate_structured(engine, conversations, schemas, max_new_tokens=max_new_tokens)
        except Exception as exc:  # noqa: BLE001
            for r in rows:
                r.model_view = ModelTriage(status="failed", error=f"{type(exc).__name__}: {exc}"[:300])
            failures += len(rows)
            continue
        part.method = batch.method
        part.calls += batch.calls
        for alert, row, res in zip(alerts, rows, batch.results):
            part.raw.append(res.raw)
            if res.value is None:
                failures += 1
                row.model_view = ModelTriage(status="failed", error=res.error)
                continue
            repaired += res.status == "repaired"
            part.proposed += _apply_model(alert, row, res.value, res.status)
        done += len(alerts)
        if tick:
            tick(done)
    for row in results:
        if row.model_view.status in ("ok", "repaired"):
            part.invented += sum(r.source == "model" and r.kind in ("technique", "field", "id") for r in row.rejected)
    if failures == len(parsed):
        part.status = "failed"
        part.detail = f"the model output could not be used for any of the {len(parsed)} alerts; the rule-based triage stands"
    elif failures or repaired:
        part.status = "repaired" if repaired and not failures else "ok"
        part.detail = f"{failures} of {len(parsed)} alerts without a usable model answer, {repaired} repaired"
    return part


def _apply_model(alert: Alert, row: AlertTriage, value: dict, status: str) -> int:
    """Check and merge the model's answer into the row; returns how many entities it named."""
    evidence = record_text(alert.fields)
    spans = find_injection(evidence)
    rationale = str(value.get("rationale", "")).strip()
    named = len(value.get("techniques", [])) + len(value.get("fields", [])) + len(_rationale_ids(rationale))
    screened = screen_model_text(rationale, evidence, spans,
                                 verdict_allowed=not spans and SEVERITY_RANK[row.severity] > SEVERITY_RANK["high"])
    for sentence, reason in screened.dropped:
        row.rejected.append(RejectedEntity(value=sentence, kind="rationale", reason=reason))
    rationale = screened.text
    if rationale:
        rationale = _drop_unknown_ids(rationale, row)
    severity = value.get("severity")
    if spans and severity in SEVERITY_RANK and SEVERITY_RANK[severity] > SEVERITY_RANK[row.severity]:
        row.rejected.append(RejectedEntity(value=str(severity), kind="severity",
                                           reason=f"below the rules' {row.severity} on an alert that holds instructions to the model"))
        severity = None
    row.model_view = ModelTriage(status="repaired" if status == "repaired" else "ok", severity=severity, rationale=rationale,
                                 proposed_techniques=[str(t) for t in value.get("techniques", [])],
                                 proposed_fields=[str(f) for f in value.get("fields", [])])
    model_refs = []
    for tid in value.get("techniques", []):
        ref, bad = context.check_technique(str(tid), "model")
        if ref:
            model_refs.append(ref)
        if bad:
            row.rejected.append(bad)
    head_ids = {t.id for t in row.candidate_techniques if t.source == "head"}
    promoted, candidates = corroborate(model_refs, row.techniques, alert, head_ids)
    promoted_ids = {t.id for t in promoted}
    agreed = [t for t in row.candidate_techniques if t.id in promoted_ids]  # head and model agree
    row.techniques = context.merge_techniques(row.techniques, agreed, promoted)
    row.candidate_techniques = context.merge_techniques([t for t in row.candidate_techniques if t.id not in promoted_ids], candidates)[:MAX_CANDIDATES * 2]
    have = {e.field for e in row.evidence}
    for name in value.get("fields", []):
        if name in have:
            continue
        have.add(name)
        if name not in alert.fields:
            row.rejected.append(RejectedEntity(value=str(name), kind="field", reason="not a field of this alert"))
            continue
        val = alert.fields[name]
        row.evidence.append(Evidence(field=name, value=val, verified=alert.value_in_input(name, val), source="model"))
    return named


def _rationale_ids(text: str) -> list[str]:
    from secfm.knowledge import find_ids

    return find_ids(text)


def _drop_unknown_ids(text: str, row: AlertTriage) -> str:
    from secfm.knowledge import find_ids, validate_id

    for found in find_ids(text):
        check = validate_id(found)
        if not check.known:
            row.rejected.append(RejectedEntity(value=found, kind="id", reason=check.message or "unknown id"))
            text = text.replace(found, "[unverified id]")
    return text


def triage_input(value: TriageInput | dict) -> TriageInput:
    return value if isinstance(value, TriageInput) else TriageInput.model_validate(value)


def triage_runnable(**defaults):
    """``triage_alerts`` as a LangChain runnable: TriageInput (or a dict) -> TriageResult."""
    from langchain_core.runnables import RunnableLambda

    def run(value: TriageInput | dict) -> TriageResult:
        inp = triage_input(value)
        return triage_alerts(inp.alerts, input_format=inp.input_format, use_model=inp.use_model, k=inp.k, **defaults)

    return RunnableLambda(run, name="triage_alerts").with_types(input_type=TriageInput, output_type=TriageResult)

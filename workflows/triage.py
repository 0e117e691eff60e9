"""Alert triage: severity with a score, ATT&CK techniques, quoted evidence, recommended next steps,
related knowledge, and a ranked queue.

Deterministic first: Sigma rules are the detection layer. SigmaHQ's community rules (the shipped
snapshot or a newer ``secfm kb update sigma``), the project's own rules for what they do not cover,
and a team's own (``rules=`` / ``secfm triage --rules DIR``) run against every alert through the
logsource index (:mod:`~secfm.workflows.sigma_rules`, field mappings in
:mod:`~secfm.workflows.sigma_fields`). A matched rule gives the alert its severity (the rule's
level, :mod:`~secfm.workflows.signatures`), its techniques (the rule's ATT&CK tags, validated) and
its evidence (rule id, title, the fields that matched, the documented false positives). Sigma
correlation rules and the project's grouping then fold the batch into findings
(:mod:`~secfm.workflows.sigma_correlate`): fifty failed logins are one brute-force finding.

The technique source (the ATT&CK classifier head by default) and the model stay advisory: the head
adds techniques where no rule fired (marked ``head_only``), the knowledge base adds related
ATT&CK/CWE/runbook entries, and the model gives its own view under a JSON schema: a severity
(recorded), up to three technique ids (each validated; unknown ones are rejected), up to two alert
fields it relies on (checked against the input) and one sentence of rationale. The final severity
is the rules' severity: an alert cannot talk its way below its rule's level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC
from typing import Any

from secfm.workflows import context
from secfm.workflows.alerts import Alert, alert_title, parse_alerts
from secfm.workflows.context import DEFAULT
from secfm.workflows.schemas import (
    SEVERITIES,
    SEVERITY_RANK,
    AlertTriage,
    CorrelationFinding,
    Evidence,
    KnowledgeRef,
    ModelPart,
    ModelTriage,
    NextStep,
    QueueEntry,
    RejectedEntity,
    RulesInfo,
    SignatureHit,
    TechniqueRef,
    TriageInput,
    TriageResult,
    severity_for_score,
)
from secfm.workflows.signatures import LEVEL_SCORE, score_matches
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


def _rationale(title: str, hits: list[SignatureHit], scored, evidence: list[Evidence], techniques: list[TechniqueRef]) -> str:
    parts = []
    if hits:
        top = max(hits, key=lambda h: h.score)
        quoted = ", ".join(f"{e.field}={e.value[:80]!r}" for e in evidence[:3] if e.source == "rule")
        parts.append(f"Sigma rule {top.title!r} ({top.id}, level {top.level})" + (f" on {quoted}" if quoted else "") + ".")
        if len(hits) > 1:
            parts.append("Also matched: " + ", ".join(h.id for h in hits if h is not top)[:400] + ".")
        if top.falsepositives:
            parts.append("Documented false positives: " + "; ".join(top.falsepositives)[:200] + ".")
    else:
        parts.append("No Sigma rule matched.")
    if scored.source is not None:
        parts.append(f"Source severity {scored.source.field}={scored.source.value!r}.")
    if techniques:
        parts.append("Techniques: " + ", ".join(f"{t.id} {t.name}" + (" (head only)" if t.head_only else "") for t in techniques[:4]) + ".")
    return " ".join(parts)


def _next_steps(hits: list[SignatureHit], matches, techniques: list[TechniqueRef]) -> list[NextStep]:
    steps: list[NextStep] = []
    seen: set[str] = set()
    for m in sorted(matches, key=lambda m: -LEVEL_SCORE[m.rule.level]):
        for action in m.rule.next_steps:
            if action not in seen:
                seen.add(action)
                steps.append(NextStep(action=action, reason=f"{m.rule.label}: {m.rule.title}", source="rule"))
    if hits and not steps:
        top = max(hits, key=lambda h: h.score)
        fps = "; ".join(f for f in top.falsepositives if f.lower() not in ("unknown", "unlikely", "none"))[:200]
        action = "Check the matched fields against the rule's documented false positives" + (f" ({fps})" if fps else "") + \
            " and the host's normal activity"
        steps.append(NextStep(action=action, reason=f"{top.id}: {top.title}", source="rule"))
    from secfm.knowledge import load_attack

    kb = load_attack()
    added = 0
    for tech in [t for t in techniques if not t.head_only][:2]:
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
                              reason="no rule matched", source="rule"))
    return steps


def _query(alert: Alert, title: str, hits: list[SignatureHit], techniques: list[TechniqueRef]) -> str:
    parts = [title]
    parts += [h.title for h in hits[:3]]
    parts += [f"{t.id} {t.name}" for t in techniques[:3]]
    return ". ".join(parts)


def _drop_covered_parents(refs: list[TechniqueRef]) -> list[TechniqueRef]:
    """A parent technique is dropped when one of its sub-techniques is listed (T1071 beside T1071.001)."""
    subs = {t.id.split(".")[0] for t in refs if "." in t.id}
    return [t for t in refs if "." in t.id or t.id not in subs]


def _refine_parents(asserted: list[TechniqueRef], lower: list[TechniqueRef]) -> tuple[list[TechniqueRef], list[TechniqueRef]]:
    """A parent technique the top-level rules name is refined by the sub-technique a lower-level
    rule on the same alert names (a correlation's T1078 and the root login rule's T1078.003 give
    T1078.003): the sub-technique is asserted, and the parent then dropped as covered."""
    parents = {t.id for t in asserted if "." not in t.id}
    refining = [t for t in lower if "." in t.id and t.id.split(".")[0] in parents]
    if not refining:
        return asserted, lower
    ids = {t.id for t in refining}
    return asserted + refining, [t for t in lower if t.id not in ids]


def resolve_rules(rules=None, pipelines=()):
    """The rule set: a loaded :class:`~secfm.workflows.sigma_rules.RuleSet`, or folders of a team's
    own rules to add to the default set (community + project), or None for the default set."""
    from secfm.workflows.sigma_rules import RuleSet, load_rules

    if isinstance(rules, RuleSet):
        return rules
    extra = [] if rules is None else ([rules] if isinstance(rules, (str, bytes)) or hasattr(rules, "__fspath__") else list(rules))
    return load_rules(extra, pipelines=pipelines)


def _hit(match, alert: Alert, event) -> SignatureHit:
    from secfm.workflows.sigma_fields import alert_key

    keys = [alert_key(event, name, i) for name, i in match.fields]
    keys = [k for k in dict.fromkeys(keys) if k in alert.fields]
    meta = match.rule
    return SignatureHit(id=meta.label, title=meta.title, score=LEVEL_SCORE[meta.level], fields=keys, rule_id=meta.id, level=meta.level,
                        source=meta.source, techniques=list(meta.techniques), falsepositives=list(meta.falsepositives),
                        description=meta.description, path=meta.path, threat_hunting=meta.threat_hunting)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    from datetime import datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def triage_alerts(
    alerts: Any,
    *,
    input_format: str = "auto",
    use_model: bool = True,
    engine=None,
    model: str | None = None,
    store=DEFAULT,
    technique_source=DEFAULT,
    rules=None,
    pipelines=(),
    k: int = 3,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 8,
    progress: Progress | None = None,
    where: str = "input",
    skip_bad: bool = False,
) -> TriageResult:
    """Triage alerts (text in any supported format, or parsed records); see the module docstring.

    ``rules``: a loaded rule set, folders of a team's own Sigma rules added to the default set, or
    None (community + project rules). ``pipelines``: pySigma processing pipeline files applied to
    the team's rules. ``store``: a :class:`~secfm.workflows.store.KnowledgeStore`, ``False`` for no
    retrieval, or the default. ``technique_source``: a callable ``text -> [hits with .id and
    .score]``, None for none, or the default (the ATT&CK classifier head when installed).
    """
    from secfm.workflows.sigma_correlate import correlate
    from secfm.workflows.sigma_fields import event_view

    parsed = parse_alerts(alerts, input_format, where, skip_bad)
    ruleset = resolve_rules(rules, pipelines)
    source, source_status = context.resolve_technique_source(technique_source, engine if use_model else None)
    status = [source_status]
    store = context.resolve_store(store)
    from secfm.workflows.store import knowledge_status

    knowledge = knowledge_status(store if store is not None else None) if store is not False else "disabled"
    total_steps = len(parsed) * (2 if use_model else 1)
    done = 0
    events = [event_view(a) for a in parsed]
    matches = [ruleset.match(e) for e in events]
    found = correlate(ruleset, events, matches)
    completing: dict[int, list] = {}
    for f in found:
        if f.completes is not None:
            completing.setdefault(f.completes, []).append(f)
    results: list[AlertTriage] = []
    all_hits: list[list[SignatureHit]] = []
    for alert, event, alert_matches in zip(parsed, events, matches):
        title = alert_title(alert)
        prose = head_text(alert)
        head_hits = context.run_technique_source(source, prose, status) if prose else []
        head_refs, head_rejected = context.techniques_from_hits(head_hits, "head")
        rejected: list[RejectedEntity] = list(head_rejected)
        hits = [_hit(m, alert, event) for m in alert_matches]
        levels = [m.rule.level for m in alert_matches]
        caps = [m.rule.severity_cap for m in alert_matches]
        for f in completing.get(alert.index, []):  # the alert that completed a temporal correlation carries it
            hits.append(SignatureHit(id=f.rule.label, title=f.rule.title, score=LEVEL_SCORE[f.rule.level], rule_id=f.rule.id,
                                     level=f.rule.level, source="correlation", techniques=list(f.rule.techniques),
                                     falsepositives=list(f.rule.falsepositives), description=f.rule.description, path=f.rule.path))
            levels.append(f.rule.level)
            caps.append(None)
        rule_refs: list[TechniqueRef] = []  # the techniques of the rules at the alert's top level
        context_refs: list[TechniqueRef] = []  # those of lower-level rules: shown as candidates
        top_rank = max((LEVEL_SCORE[h.level] for h in hits), default=0)
        for h in hits:
            for tid in h.techniques:
                ref, bad = context.check_technique(tid, "rule")
                if ref:
                    (rule_refs if LEVEL_SCORE[h.level] == top_rank else context_refs).append(ref)
                if bad:
                    rejected.append(bad)
        rule_refs, context_refs = _refine_parents(rule_refs, context_refs)
        rule_refs = _drop_covered_parents(context.merge_techniques(rule_refs))
        for m in alert_matches:
            for tag in m.rule.rejected_tags:
                rejected.append(RejectedEntity(value=tag, kind="technique", reason=f"tag of rule {m.rule.label} unknown to the ATT&CK catalog",
                                               source="rule"))
        if hits:
            promoted, candidates = corroborate(head_refs, rule_refs, alert)
        else:  # no rule fired: the head's confident techniques are shown as such
            promoted = [t.model_copy(update={"head_only": True}) for t in head_refs
                        if t.score is None or t.score >= HEAD_MIN_SCORE][:MAX_CANDIDATES]
            candidates = []
        confirms = bool(hits) and any((t.score or 0.0) >= 0.6 for t in promoted)
        scored = score_matches(levels, caps, alert, head_confirms=confirms)
        techniques = _drop_covered_parents(context.merge_techniques(rule_refs, promoted))
        asserted = {t.id for t in techniques}
        candidates = context.merge_techniques([t for t in context_refs if t.id not in asserted], candidates)[:MAX_CANDIDATES * 2]
        evidence: list[Evidence] = []
        seen_keys: set[str] = set()
        for h in hits:
            for key in h.fields:
                if key not in seen_keys:
                    seen_keys.add(key)
                    value = alert.fields[key]
                    evidence.append(Evidence(field=key, value=value, verified=alert.value_in_input(key, value)))
        if scored.source is not None and scored.source.field not in seen_keys:
            evidence.append(Evidence(field=scored.source.field, value=scored.source.value,
                                     verified=alert.value_in_input(scored.source.field, scored.source.value)))
        results.append(AlertTriage(
            index=alert.index, line=alert.line, format=alert.family, title=title, severity=scored.severity, score=scored.score,
            signatures=hits, techniques=techniques, evidence=evidence, logsource=event.logsource(),
            rationale=_rationale(title, hits, scored, evidence, techniques),
            candidate_techniques=candidates, next_steps=_next_steps(hits, alert_matches, techniques), rejected=rejected,
            warnings=injection_warnings(record_text(alert.fields), f"alert {alert.index + 1} (input line {alert.line})"),
        ))
        all_hits.append(hits)
        done += 1
        if progress:
            progress(done, total_steps)

    findings = _findings(found, results)

    if store not in (None, False) and k > 0:
        try:
            queries = [_query(a, r.title, h, r.techniques) for a, r, h in zip(parsed, results, all_hits)]
            refs_found = store.search_many(queries, k=k * 4, kind=["technique", "mitigation", "document"])
            for result, refs in zip(results, refs_found):
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

    counts = {s: sum(r.severity == s for r in results) for s in SEVERITIES}
    info = RulesInfo(rules=len(ruleset.rules) + len(ruleset.correlations), by_source=ruleset.counts(), snapshot=ruleset.snapshot,
                     from_cache=ruleset.from_cache, load_seconds=ruleset.load_seconds, errors=len(ruleset.errors))
    return TriageResult(
        alerts=results, queue=_queue(results, findings), counts=counts, model=model_part,
        technique_source=status[0].removesuffix(" (failed)"), knowledge=knowledge, findings=findings, rules=info,
    )


def _findings(found, results: list[AlertTriage]) -> list[CorrelationFinding]:
    """The correlation findings as the result shows them (each alert lists the findings it is in)."""

    out: list[CorrelationFinding] = []
    for f in found:
        refs = []
        for tid in f.rule.techniques:
            ref, _bad = context.check_technique(tid, "rule")
            if ref:
                refs.append(ref)
        base = LEVEL_SCORE[f.rule.level]
        member_top = max((results[i].score for i in f.alerts), default=0)
        score = max(base, member_top) if f.kind == "grouping" else base
        severity = severity_for_score(score)
        if f.kind == "grouping":
            title = f"{f.count} x {f.rule.title}"
        else:
            title = f.rule.title
        out.append(CorrelationFinding(
            id=f.rule.label, rule_id=f.rule.id, title=title, kind=f.kind, severity=severity, score=score, techniques=refs,
            alerts=list(f.alerts), group={k: v for k, v in f.group.items() if v is not None}, count=f.count,
            first_seen=_iso(f.first), last_seen=_iso(f.last), detail=f.detail, falsepositives=list(f.rule.falsepositives),
            next_steps=list(f.rule.next_steps)))
        for i in f.alerts:
            results[i].findings.append(len(out) - 1)
    return out


def _queue(results: list[AlertTriage], findings: list[CorrelationFinding]) -> list[QueueEntry]:
    """Alerts and findings ranked together. An alert folded into a finding at least as severe is
    not queued again on its own (fifty failed logins: one entry)."""
    entries: list[tuple] = []
    folded: set[int] = set()
    for n, f in enumerate(findings):
        entries.append((SEVERITY_RANK[f.severity], -f.score, f.alerts[0], 0,
                        QueueEntry(rank=0, index=f.alerts[0], severity=f.severity, score=f.score, title=f.title[:100],
                                   kind="finding", finding=n, alerts=list(f.alerts))))
        for i in f.alerts:
            if SEVERITY_RANK[results[i].severity] >= SEVERITY_RANK[f.severity]:
                folded.add(i)
    for r in results:
        if r.index not in folded:
            entries.append((SEVERITY_RANK[r.severity], -r.score, r.index, 1,
                            QueueEntry(rank=0, index=r.index, severity=r.severity, score=r.score, title=r.title)))
    entries.sort(key=lambda e: e[:4])
    queue = []
    for rank, e in enumerate(entries, 1):
        entry = e[4]
        entry.rank = rank
        queue.append(entry)
    return queue


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
    controls = control_strings(engine)
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

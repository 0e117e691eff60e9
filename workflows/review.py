"""Configuration review: deterministic rules per kind, plus a model review grounded in retrieved
guidance, every finding tied to lines that exist.

Rule findings come from :mod:`~secfm.workflows.config_rules` (rule id, severity, line range,
quoted lines, why, fix, CWE / ATT&CK mitigation references). The model is then shown the
numbered configuration as untrusted data, the rule findings, and guidance retrieved from the
knowledge base (mitigations, CWE entries, runbooks), and may add up to two findings under a JSON
schema. Code keeps a model finding only if its line range exists in the input and is not blank,
it talks about what those lines contain (a shared term), it does not repeat a rule finding, and
it neither echoes an instruction found in the config nor names an unknown id; otherwise it is
listed in ``rejected``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from secfm.errors import SecfmError
from secfm.workflows import context
from secfm.workflows.config_rules import KINDS, ConfigDoc, detect_kind, run_rules
from secfm.workflows.context import DEFAULT
from secfm.workflows.schemas import (
    SEVERITIES,
    SEVERITY_RANK,
    ConfigInput,
    ConfigReview,
    Finding,
    InputWarning,
    KnowledgeRef,
    ModelPart,
    RejectedEntity,
)
from secfm.workflows.untrusted import (
    control_strings,
    data_rules,
    delimit,
    find_injection,
    injection_warnings,
    screen_model_text,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128
MAX_PROMPT_TOKENS = 1500
Progress = Callable[[int, int], None]

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "findings": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "line_start": {"type": "integer"},
                    "line_end": {"type": "integer"},
                    "severity": {"type": "string", "enum": list(SEVERITIES)},
                    "title": {"type": "string", "maxLength": 80},
                    "why": {"type": "string", "maxLength": 160},
                },
                "required": ["line_start", "line_end", "severity", "title", "why"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["findings"],
    "additionalProperties": False,
}


def _valid_refs(refs) -> list[str]:
    from secfm.knowledge import validate_id

    out = []
    for r in refs:
        check = validate_id(r)
        if check.current and check.kind in ("cwe", "mitigation"):
            out.append(check.normalized)
    return out


def rule_findings(doc: ConfigDoc) -> list[Finding]:
    findings = []
    for rule, (start, end) in run_rules(doc):
        findings.append(Finding(rule_id=rule.id, title=rule.title, severity=rule.severity, line_start=start, line_end=end,
                                evidence=doc.quote(start, end), why=rule.why, fix=rule.fix,
                                references=_valid_refs(rule.references), source="rule"))
    return findings


def _numbered(doc: ConfigDoc, engine, budget_tokens: int) -> tuple[str, int]:
    """The config with line numbers, cut to the token budget; (text, last line included)."""
    lines = []
    used = 0
    last = 0
    for n, line in enumerate(doc.lines, 1):
        entry = f"{n:>4}| {line}"
        cost = max(1, len(entry) // 3)
        if used + cost > budget_tokens and lines:
            break
        lines.append(entry)
        used += cost
        last = n
    text = "\n".join(lines)
    try:
        while engine.count_tokens(text) > budget_tokens and len(lines) > 1:
            lines = lines[: max(1, int(len(lines) * 0.8))]
            text = "\n".join(lines)
            last = len(lines)
    except Exception:  # noqa: BLE001 - a remote engine without a tokenizer: keep the estimate
        pass
    return text, last


def _prompt(doc: ConfigDoc, numbered: str, findings: list[Finding], guidance: list[KnowledgeRef], controls) -> list[dict]:
    found = "; ".join(f"{f.rule_id} at lines {f.line_start}-{f.line_end}" for f in findings) or "none"
    notes = "\n".join(f"- {g.id} {g.name}: {g.text[:160]}" for g in guidance) or "- none"
    body = (f"Review this {doc.kind} configuration for security misconfigurations.\n"
            f"{data_rules('CONFIG')}\n"
            "Each line is shown as 'number| text'. Cite only line numbers that exist.\n"
            f"Already found by rules (do not repeat): {found}.\n"
            f"Guidance from the knowledge base:\n{notes}\n"
            'Answer with one JSON object: {"findings": [...]} with at most 2 further findings, each with '
            '"line_start", "line_end", "severity", "title" and "why"; an empty list when there is nothing more.\n\n'
            f"{delimit('CONFIG', numbered, controls=controls)}")
    return [{"role": "user", "content": body}]


_STOP = frozenset("""the and for with this that these those are was were not but from into onto over under than then
there their its it's has have had can could should would will may might must any all some each per via use used using
file files line lines config configs configuration configurations setting settings value values option options security
secure insecure issue issues risk risks problem problems finding findings enabled disabled allowed allow allows missing
set sets default defaults critical high medium low info severity true false yes none null""".split())


def _terms(text: str) -> set[str]:
    import re

    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text)
    return {w for w in re.findall(r"[a-z][a-z0-9]{2,}", spaced.lower()) if w not in _STOP}


def grounded(claim: str, evidence: str) -> bool:
    """Whether a model finding talks about what the cited lines contain (a shared term, after
    splitting camelCase and dropping generic words), e.g. "root login" for ``PermitRootLogin yes``."""
    return bool(_terms(claim) & _terms(evidence))


def _check_model_findings(doc: ConfigDoc, value: dict, findings: list[Finding], last_line: int, store) -> tuple[list[Finding], list[RejectedEntity]]:
    from secfm.knowledge import find_ids, validate_id

    spans = find_injection(doc.text)
    accepted: list[Finding] = []
    rejected: list[RejectedEntity] = []
    for i, item in enumerate(value.get("findings", []), 1):
        start, end = int(item.get("line_start", 0)), int(item.get("line_end", 0))
        title, why = str(item.get("title", "")).strip(), str(item.get("why", "")).strip()
        label = f"lines {start}-{end}: {title}"[:200]
        if not (1 <= start <= end <= len(doc.lines)):
            rejected.append(RejectedEntity(value=label, kind="line-range", reason=f"the config has lines 1-{len(doc.lines)}"))
            continue
        if end > last_line:
            rejected.append(RejectedEntity(value=label, kind="line-range", reason=f"the model was shown lines 1-{last_line} only"))
            continue
        if not doc.quote(start, end).strip():
            rejected.append(RejectedEntity(value=label, kind="line-range", reason="the cited lines are blank"))
            continue
        if not title:
            rejected.append(RejectedEntity(value=label, kind="finding", reason="no title"))
            continue
        text = f"{title}. {why}"
        screened = screen_model_text(text, doc.text, spans, verdict_allowed=not spans)
        if screened.dropped:
            rejected.append(RejectedEntity(value=label, kind="finding", reason=screened.dropped[0][1]))
            continue
        unknown = [x for x in find_ids(text) if not validate_id(x).known]
        if unknown:
            rejected.append(RejectedEntity(value=label, kind="id", reason=f"names unknown ids: {', '.join(unknown)}"))
            continue
        if not grounded(text, doc.quote(start, end)):
            rejected.append(RejectedEntity(value=label, kind="finding", reason="does not refer to anything in the cited lines"))
            continue
        if any(f.line_start <= end and start <= f.line_end for f in findings + accepted):
            continue  # the same lines are already covered: not an invented finding, just a repeat
        refs: list[str] = []
        if store not in (None, False):
            try:
                hits = store.search(f"{doc.kind} {title}. {why}", k=4, kind=["cwe", "mitigation"])
                refs = _valid_refs(dict.fromkeys(h.id for h in hits if h.score >= 0.3))[:2]
            except Exception:  # noqa: BLE001
                refs = []
        accepted.append(Finding(rule_id=f"MODEL-{i}", title=title[:80], severity=item.get("severity", "low"), line_start=start,
                                line_end=end, evidence=doc.quote(start, end), why=why, fix="", references=refs, source="model"))
    return accepted, rejected


def _prepare(text: str, kind: str, filename: str | None, store, k: int) -> dict:
    """The deterministic review of one file (rules, warnings, retrieved guidance)."""
    from secfm.inputs import check_text
    from secfm.workflows.store import knowledge_status

    check_text(text, filename or "configuration")
    if kind in (None, "", "auto"):
        kind, how = detect_kind(text, filename)
    else:
        if kind not in KINDS:
            raise SecfmError(f"unknown configuration kind {kind!r} (one of auto, {', '.join(KINDS)})")
        how = "argument"
    doc = ConfigDoc(text, kind, filename)
    findings = rule_findings(doc)
    knowledge = knowledge_status(store) if store is not False else "disabled"
    guidance: list[KnowledgeRef] = []
    if store not in (None, False) and k > 0:
        try:
            titles = "; ".join(dict.fromkeys(f.title for f in findings))
            query = f"{kind} configuration hardening: {titles}" if findings else f"{kind} configuration security hardening misconfiguration"
            guidance = store.search(query, k=k, kind=["mitigation", "cwe", "document"])
        except Exception as exc:  # noqa: BLE001
            knowledge = f"failed: {type(exc).__name__}: {exc}"[:300]
    return {"doc": doc, "how": how, "findings": findings, "warnings": injection_warnings(text), "guidance": guidance,
            "knowledge": knowledge, "rejected": [], "part": ModelPart(status="skipped", detail="use_model is off")}


def _model_reviews(items: list[dict], engine, model, store, max_new_tokens: int) -> None:
    """The model part for several files in one batched, constrained generation."""
    from secfm.workflows.structured import generate_structured

    try:
        engine = context.resolve_engine(engine, True, model)
    except Exception as exc:  # noqa: BLE001 - no model: the rule findings stand
        for it in items:
            it["part"] = ModelPart(status="failed", detail=f"no model: {exc}"[:300])
        return
    controls = control_strings(engine)
    budget = min(MAX_PROMPT_TOKENS, max(256, int(getattr(engine, "max_context", 4096)) - max_new_tokens - 700))
    prompts = []
    for it in items:
        doc = it["doc"]
        it["part"] = ModelPart(status="failed", model=context.model_name_of(engine))
        numbered, it["last"] = _numbered(doc, engine, budget)
        if it["last"] < len(doc.lines):
            it["warnings"].append(InputWarning(kind="truncated", detail=f"the model saw lines 1-{it['last']} of {len(doc.lines)}; rules covered all lines",
                                               location=f"line {it['last'] + 1}"))
        prompts.append(_prompt(doc, numbered, it["findings"], it["guidance"], controls))
    try:
        batch = generate_structured(engine, prompts, REVIEW_SCHEMA, max_new_tokens)
    except Exception as exc:  # noqa: BLE001 - the rule findings stand
        for it in items:
            it["part"].detail = f"{type(exc).__name__}: {exc}"[:400]
        return
    for it, res in zip(items, batch.results):
        part = it["part"]
        part.method, part.calls, part.raw = batch.method, batch.calls, [res.raw]
        if res.value is None:
            part.status, part.detail = "failed", f"{res.error}; the rule findings stand"
            continue
        try:
            accepted, rejected = _check_model_findings(it["doc"], res.value, it["findings"], it["last"], store)
        except Exception as exc:  # noqa: BLE001
            part.status, part.detail = "failed", f"{type(exc).__name__}: {exc}"[:400]
            continue
        it["findings"] = it["findings"] + accepted
        it["rejected"] = rejected
        part.proposed = len(res.value.get("findings", []))
        part.invented = sum(r.kind in ("line-range", "id") for r in rejected)
        part.status = res.status
        part.detail = f"{len(accepted)} model finding(s) kept, {len(rejected)} rejected"


def _result(it: dict) -> ConfigReview:
    findings = sorted(it["findings"], key=lambda f: (SEVERITY_RANK[f.severity], f.line_start, f.rule_id))
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    doc = it["doc"]
    return ConfigReview(kind=doc.kind, kind_detected_by=it["how"], lines=len(doc.lines), findings=findings, counts=counts,
                        guidance=it["guidance"], rejected=it["rejected"], warnings=it["warnings"], model=it["part"],
                        knowledge=it["knowledge"])


def review_configs(
    configs: list[tuple[str, str, str | None]] | list[str],
    *,
    use_model: bool = True,
    engine=None,
    model: str | None = None,
    store=DEFAULT,
    k: int = 3,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: Progress | None = None,
) -> list[ConfigReview]:
    """Review several files (``text`` or ``(text, kind, filename)`` each); the model part of all of
    them runs as one batched generation."""
    store = context.resolve_store(store)
    items = []
    for entry in configs:
        text, kind, filename = (entry, "auto", None) if isinstance(entry, str) else entry
        items.append(_prepare(text, kind, filename, store, k))
    if progress:
        progress(1, 2 if use_model else 1)
    if use_model and items:
        _model_reviews(items, engine, model, store, max_new_tokens)
        if progress:
            progress(2, 2)
    return [_result(it) for it in items]


def review_config(
    text: str,
    kind: str = "auto",
    *,
    filename: str | None = None,
    use_model: bool = True,
    engine=None,
    model: str | None = None,
    store=DEFAULT,
    k: int = 3,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: Progress | None = None,
) -> ConfigReview:
    """Review one configuration file; see the module docstring."""
    return review_configs([(text, kind, filename)], use_model=use_model, engine=engine, model=model, store=store, k=k,
                          max_new_tokens=max_new_tokens, progress=progress)[0]


def review_runnable(**defaults):
    """``review_config`` as a LangChain runnable: ConfigInput (or a dict) -> ConfigReview."""
    from langchain_core.runnables import RunnableLambda

    def run(value: ConfigInput | dict) -> ConfigReview:
        inp = value if isinstance(value, ConfigInput) else ConfigInput.model_validate(value)
        return review_config(inp.text, inp.kind, filename=inp.filename, use_model=inp.use_model, **defaults)

    return RunnableLambda(run, name="review_config").with_types(input_type=ConfigInput, output_type=ConfigReview)

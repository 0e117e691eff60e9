"""Pydantic inputs and outputs of the three workflows (alert triage, incident summary, config review).

Every output separates what code established (rules, extraction, retrieval, validation) from what
the model suggested, and carries a :class:`ModelPart` that says whether the model part ran, how
its output was constrained, and why it failed when it did. A model failure never removes the
deterministic part.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from secfm.workflows.cve_analysis import CveAnalysis

Severity = Literal["critical", "high", "medium", "low", "info"]
#: most severe first
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
Audience = Literal["executive", "analyst"]
AUDIENCES: tuple[str, ...] = ("executive", "analyst")
ModelStatus = Literal["ok", "repaired", "failed", "skipped"]


def severity_for_score(score: float) -> str:
    """The severity bucket of a 0-100 score: 85+ critical, 65+ high, 40+ medium, 20+ low, else info."""
    if score >= 85:
        return "critical"
    if score >= 65:
        return "high"
    if score >= 40:
        return "medium"
    if score >= 20:
        return "low"
    return "info"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelPart(_Model):
    """What happened to the generative step."""

    status: ModelStatus = "skipped"
    detail: str = ""  # why it was skipped or failed, or what was repaired
    method: str | None = None  # lmfe | vllm-guided | openai-json-schema | validate-retry
    model: str | None = None
    calls: int = 0
    proposed: int = 0  # entities the model named (techniques, fields, ids, IOCs, findings), before checks
    invented: int = 0  # of those, how many failed the checks (unknown ids, IOCs or fields not in the input, bad lines)
    raw: list[str] = Field(default_factory=list)  # raw model outputs (cut to 2,000 characters each)


class InputWarning(_Model):
    """Something in the untrusted input that looks like it addresses the model."""

    kind: Literal["prompt-injection", "control-token", "obfuscated-text", "truncated"]
    detail: str
    location: str = ""  # "line 3", "alert 2 field message"


class TechniqueRef(_Model):
    id: str
    name: str | None = None
    tactics: list[str] = Field(default_factory=list)
    source: Literal["rule", "head", "model", "input"]
    score: float | None = None
    current: bool = True
    replaced_by: str | None = None
    #: suggested by the classifier head alone, no rule supports it (advisory, never scored)
    head_only: bool = False


class RejectedEntity(_Model):
    """Something the model produced that did not check out (an invented entity)."""

    value: str
    kind: str  # technique, id, ioc, field, line-range, next-step
    reason: str
    source: str = "model"


class KnowledgeRef(_Model):
    """One retrieved chunk of the knowledge base."""

    id: str  # the ATT&CK / CWE id or the document path
    kind: str  # technique, mitigation, cwe, document
    name: str = ""
    score: float  # cosine similarity, higher is closer
    chunk: str = ""  # chunk id (content hash)
    text: str = ""  # the first characters of the chunk


# --------------------------------------------------------------------------------------------
# triage
# --------------------------------------------------------------------------------------------
class TriageInput(_Model):
    """Alerts as text (JSON, JSONL, CSV, Zeek TSV or raw log lines) or as parsed records."""

    alerts: str | list[dict[str, Any]] | list[str] | dict[str, Any]
    input_format: Literal["auto", "json", "jsonl", "csv", "zeek", "lines"] = "auto"
    use_model: bool = True
    k: int = Field(default=3, ge=0, le=20)


class Evidence(_Model):
    """An alert field a judgement rests on, quoted, and whether it was found in the input."""

    field: str
    value: str
    verified: bool
    source: Literal["rule", "model"] = "rule"


class SignatureHit(_Model):
    """A Sigma rule that matched the alert (a detection rule, or a correlation the alert completed)."""

    id: str  # the rule's name when it has one (secfm-win-lsass-access-user-writable), else its id
    title: str
    score: int
    fields: list[str] = Field(default_factory=list)  # the alert fields the rule matched on
    rule_id: str = ""  # the rule's UUID
    level: str = ""  # informational, low, medium, high, critical
    source: str = ""  # sigmahq, secfm, custom or correlation
    techniques: list[str] = Field(default_factory=list)  # the rule's ATT&CK tags, validated
    falsepositives: list[str] = Field(default_factory=list)  # as the rule documents them
    description: str = ""
    path: str = ""  # the rule's file (SigmaHQ's layout for the community rules)
    threat_hunting: bool = False  # a SigmaHQ threat-hunting rule (broad by design)


class NextStep(_Model):
    action: str
    reason: str = ""
    source: Literal["rule", "attack", "model"] = "rule"
    status: Literal["recommended"] = "recommended"  # secfm recommends; it never acts


class ModelTriage(_Model):
    """The model's own view of one alert (advisory: the severity above comes from rules)."""

    status: ModelStatus = "skipped"
    severity: Severity | None = None
    rationale: str = ""
    proposed_techniques: list[str] = Field(default_factory=list)  # as the model wrote them, before validation
    proposed_fields: list[str] = Field(default_factory=list)
    error: str = ""


class AlertTriage(_Model):
    index: int  # 0-based position in the input
    line: int  # first input line of the alert
    format: str  # windows, cloudtrail, suricata, zeek, syslog, json, csv, line
    title: str
    severity: Severity
    score: int  # 0-100
    severity_source: str = "rules"
    signatures: list[SignatureHit] = Field(default_factory=list)
    techniques: list[TechniqueRef] = Field(default_factory=list)
    #: confident head predictions nothing else supports (shown, not asserted; not used for scoring)
    candidate_techniques: list[TechniqueRef] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    findings: list[int] = Field(default_factory=list)  # indices into TriageResult.findings
    logsource: str = ""  # product/categories/services as the rule index saw the alert
    rationale: str = ""
    model_view: ModelTriage = Field(default_factory=ModelTriage)
    next_steps: list[NextStep] = Field(default_factory=list)
    related_knowledge: list[KnowledgeRef] = Field(default_factory=list)
    rejected: list[RejectedEntity] = Field(default_factory=list)
    warnings: list[InputWarning] = Field(default_factory=list)
    #: every CVE id the alert mentions, analysed (CWE, CVSS, NVD's own facts): secfm.workflows.analyze_cve
    cves: list[CveAnalysis] = Field(default_factory=list)


class QueueEntry(_Model):
    rank: int
    index: int  # the alert's index; for a finding, its first alert's
    severity: Severity
    score: int
    title: str
    kind: Literal["alert", "finding"] = "alert"
    finding: int | None = None  # index into TriageResult.findings
    alerts: list[int] = Field(default_factory=list)  # the alerts a finding folds together


class CorrelationFinding(_Model):
    """Alerts that belong together: a Sigma correlation that fired, or the project's grouping."""

    id: str  # the correlation rule's name or id; for a grouping, the grouped rule's
    rule_id: str = ""
    title: str
    kind: Literal["event_count", "value_count", "temporal", "temporal_ordered", "grouping"]
    severity: Severity
    score: int
    techniques: list[TechniqueRef] = Field(default_factory=list)
    alerts: list[int]  # indices of the alerts it folds together
    group: dict[str, str] = Field(default_factory=dict)  # the group-by fields and their values
    count: int  # events (event_count), distinct values (value_count) or alerts (grouping)
    first_seen: str | None = None  # ISO 8601 UTC
    last_seen: str | None = None
    detail: str = ""
    falsepositives: list[str] = Field(default_factory=list)
    next_steps: list[str] = Field(default_factory=list)


class RulesInfo(_Model):
    """The rule set triage used."""

    rules: int = 0
    by_source: dict[str, int] = Field(default_factory=dict)
    snapshot: str | None = None  # the SigmaHQ snapshot date
    from_cache: bool = False
    load_seconds: float = 0.0
    errors: int = 0  # rules pySigma or the matcher could not use


class TriageResult(_Model):
    alerts: list[AlertTriage]
    queue: list[QueueEntry]
    counts: dict[str, int]
    model: ModelPart = Field(default_factory=ModelPart)
    technique_source: str = ""  # "head", "head unavailable: ...", "custom", "none"
    knowledge: str = ""  # "ok", "absent: ...", "disabled"
    findings: list[CorrelationFinding] = Field(default_factory=list)
    rules: RulesInfo = Field(default_factory=RulesInfo)


# --------------------------------------------------------------------------------------------
# incident summary
# --------------------------------------------------------------------------------------------
class SummaryInput(_Model):
    text: str
    audience: Audience = "analyst"
    use_model: bool = True


class IdMention(_Model):
    id: str
    kind: str
    name: str | None = None
    known: bool
    current: bool
    replaced_by: str | None = None
    in_input: bool = True


class TimelineEntry(_Model):
    time: str
    line: int
    text: str


class SummaryFlag(_Model):
    kind: Literal["invented-id", "unknown-id", "invented-ioc", "injection-echo", "claimed-action"]
    value: str
    detail: str = ""


class IncidentSummary(_Model):
    audience: Audience
    headline: str = ""
    summary: str  # the model summary with unverified sentences removed, else the extractive one
    summary_source: Literal["model", "extractive"] = "extractive"
    extractive: str  # deterministic summary built from the extracted entities and the text
    iocs: dict[str, list[str]] = Field(default_factory=dict)
    ids: list[IdMention] = Field(default_factory=list)
    techniques: list[TechniqueRef] = Field(default_factory=list)
    #: confident head predictions the report does not cite or name (shown, not asserted)
    candidate_techniques: list[TechniqueRef] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    flags: list[SummaryFlag] = Field(default_factory=list)
    chunks: int = 1
    model: ModelPart = Field(default_factory=ModelPart)
    warnings: list[InputWarning] = Field(default_factory=list)
    technique_source: str = ""
    #: every CVE id the report mentions, analysed (CWE, CVSS, NVD's own facts): secfm.workflows.analyze_cve
    cves: list[CveAnalysis] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# config review
# --------------------------------------------------------------------------------------------
class ConfigInput(_Model):
    text: str
    kind: str = "auto"
    filename: str | None = None
    use_model: bool = True


class Finding(_Model):
    rule_id: str
    title: str
    severity: Severity
    line_start: int
    line_end: int
    evidence: str  # the quoted lines, exactly as in the input
    why: str
    fix: str = ""
    references: list[str] = Field(default_factory=list)  # validated CWE / ATT&CK mitigation ids
    source: Literal["rule", "model"] = "rule"


class ConfigReview(_Model):
    kind: str
    kind_detected_by: str  # "argument", "filename", "content"
    lines: int
    findings: list[Finding]
    counts: dict[str, int]
    guidance: list[KnowledgeRef] = Field(default_factory=list)
    rejected: list[RejectedEntity] = Field(default_factory=list)
    warnings: list[InputWarning] = Field(default_factory=list)
    model: ModelPart = Field(default_factory=ModelPart)
    knowledge: str = ""

"""Scoring an alert from the Sigma rules that matched it and the severity its source gave it.

The project's own signatures are Sigma rules now (``sigma/secfm/*.yml``, beside SigmaHQ's); this
module turns matches into a 0-100 score and a severity:

    score = the top rule level's score (critical 90, high 75, medium 50, low 25, informational 10)
            + 3 for each other rule that matched (staying inside the top level's band)
            + 3 when the technique source (the classifier head) confirms a rule technique
    severity = the top rule's level: more rules order alerts within a level, never across

The source's own severity (Suricata 1-3, syslog PRI, a ``severity`` field) can raise an alert above
its rules (it is the sensor's judgement), except where every matched rule carries a
``severity_cap`` (IDS scan and policy rules: the sensor's "high" for an Nmap user agent is noise).
Nothing lowers an alert below its top rule's level: the rules' severity is the floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secfm.workflows.alerts import Alert
from secfm.workflows.schemas import severity_for_score

#: score of each Sigma level (inside the severity bands of severity_for_score)
LEVEL_SCORE = {"critical": 90, "high": 75, "medium": 50, "low": 25, "informational": 10}
#: the highest score of each level's band
BAND_TOP = {"critical": 100, "high": 84, "medium": 64, "low": 39, "informational": 19}
SEVERITY_LEVEL = {"critical": "critical", "high": "high", "medium": "medium", "low": "low", "info": "informational"}
EXTRA_RULE = 3
HEAD_CONFIRMS = 3

_LEVEL_WORDS = {"critical": 90, "crit": 90, "emergency": 90, "alert": 80, "high": 70, "severe": 70, "error": 45,
                "medium": 50, "moderate": 50, "warning": 35, "warn": 35, "low": 25, "notice": 15, "info": 10,
                "informational": 10, "debug": 5}


@dataclass(frozen=True)
class SourceSeverity:
    score: int
    field: str
    value: str


def source_severity(alert: Alert) -> SourceSeverity | None:
    """The severity the source itself assigned (Suricata's 1-3, syslog PRI, a severity field).
    A Windows event's ``Level`` is its log level (4 = information), not a verdict: not read."""
    if alert.family == "suricata":
        key = alert.key("alert.severity")
        if key is not None:
            score = {"1": 70, "2": 50, "3": 30}.get(alert.fields[key].strip(), 40)
            return SourceSeverity(score, key, alert.fields[key])
    if alert.family == "syslog":
        key = alert.key("syslog_severity")
        if key is not None:
            value = alert.fields[key]
            score = {"0": 80, "1": 75, "2": 70, "3": 45, "4": 30}.get(value)
            if score:
                return SourceSeverity(score, key, value)
    for name in ("severity", "level", "priority", "risk", "risk_level", "severity_label", "rule.level"):
        if alert.family in ("windows", "auditd") and name in ("level", "priority"):
            continue
        key = alert.key(name)
        if key is None:
            continue
        value = alert.fields[key].strip()
        word = value.lower()
        if word in _LEVEL_WORDS:
            return SourceSeverity(_LEVEL_WORDS[word], key, value)
        try:
            number = float(value)
        except ValueError:
            continue
        if name == "rule.level" or 0 <= number <= 15 and name == "level":  # Wazuh-style 0-15
            return SourceSeverity(int(min(95, number * 6)), key, value)
        if 0 <= number <= 10:
            return SourceSeverity(int(number * 9.5), key, value)
        if 10 < number <= 100:
            return SourceSeverity(int(number), key, value)
    return None


@dataclass
class Scored:
    score: int
    severity: str
    top_level: str | None
    source: SourceSeverity | None
    reasons: list[str] = field(default_factory=list)


def score_matches(levels: list[str], caps: list[str | None], alert: Alert, head_confirms: bool = False) -> Scored:
    """Score one alert from the levels of the rules that matched it (``caps``: each rule's
    ``severity_cap`` or None) and its source severity; see the module docstring."""
    source = source_severity(alert)
    reasons: list[str] = []
    if levels:
        top = max(levels, key=lambda lv: LEVEL_SCORE[lv])
        score = LEVEL_SCORE[top]
        reasons.append(f"top rule level {top} scores {score}")
        extra = min(BAND_TOP[top] - score, EXTRA_RULE * (len(levels) - 1))
        if extra > 0:
            score += extra
            reasons.append(f"+{extra} for {len(levels) - 1} more rule(s)")
    else:
        top = None
        score = LEVEL_SCORE["informational"]
        reasons.append("no rule matched")
    if source is not None and source.score > score:
        if levels and all(c is not None for c in caps):
            cap = max(LEVEL_SCORE[SEVERITY_LEVEL.get(c, c)] for c in caps)
            if source.score > cap:
                reasons.append(f"source severity {source.field}={source.value} capped at {cap} (low-value rule family)")
            score = max(score, min(source.score, cap))
        else:
            reasons.append(f"source severity {source.field}={source.value} scores {source.score}")
            score = source.score
    if head_confirms and top is not None:
        band = BAND_TOP[SEVERITY_LEVEL[severity_for_score(score)]]
        if score + HEAD_CONFIRMS <= band:
            score += HEAD_CONFIRMS
            reasons.append(f"+{HEAD_CONFIRMS}: the technique head confirms the rules")
    return Scored(min(100, score), severity_for_score(score), top, source, reasons)


def match_signatures(alert: Alert, rules=None) -> list[tuple[object, list[str]]]:
    """The Sigma rules that match one alert (default: the community and project rules), each
    with the alert fields it matched on: ``[(RuleMeta, [field keys])]``."""
    from secfm.workflows.sigma_fields import alert_key, event_view
    from secfm.workflows.sigma_rules import load_rules

    ruleset = rules if rules is not None else load_rules()
    event = event_view(alert)
    out = []
    for m in ruleset.match(event):
        keys = [k for k in dict.fromkeys(alert_key(event, name, i) for name, i in m.fields) if k in alert.fields]
        out.append((m.rule, keys))
    return out

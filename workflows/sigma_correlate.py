"""Correlation over a batch of alerts: Sigma correlation rules, then the project's own grouping.

Sigma correlation rules (``event_count``, ``value_count``, ``temporal``, ``temporal_ordered``;
a correlation may reference other correlations) run over the rule matches of the whole batch:
events are grouped by the rule's ``group-by`` fields (with its field ``aliases``), and a group
fires when, within ``timespan``, it has enough events (``event_count``), enough distinct values
of a field (``value_count``), or every referenced rule (``temporal``; in order for
``temporal_ordered``). Each firing group is one :class:`Finding`: a burst of 50 failed logins is
one brute-force finding at the correlation rule's level, not fifty separate alerts.

The project's own grouping then folds what is left: alerts that matched the same rule on the same
host and user within ``window`` seconds become one ``grouping`` finding at that rule's level (no
escalation: repetition alone is not a new fact).

Time comes from the alerts (:func:`~secfm.workflows.sigma_fields.event_time`); a group whose
alerts carry no time is treated as one window (the batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secfm.workflows.sigma_rules import LEVELS, CompiledCorrelation, RuleMatch, RuleMeta, RuleSet

GROUP_WINDOW = 600.0  # seconds: the project's grouping window


@dataclass
class Occurrence:
    """One event (or one fired correlation) that a correlation counts."""

    alerts: tuple[int, ...]
    time: float | None
    values: dict[str, str]  # lower-case field -> first value (for group-by and value_count)


@dataclass
class Finding:
    rule: RuleMeta
    kind: str  # event_count, value_count, temporal, temporal_ordered, grouping
    alerts: list[int]
    group: dict[str, str]
    count: int
    first: float | None = None
    last: float | None = None
    detail: str = ""
    #: the alert that completed a temporal pattern (it carries the finding as a hit)
    completes: int | None = None
    members_rules: list[str] = field(default_factory=list)


def _first_value(event, name: str) -> str | None:
    vals = event.view.fields.get(name)
    return vals[0] if vals else None


def _occurrences(corr: CompiledCorrelation, rule_id: str, events, matches, fired: dict[str, list[Occurrence]]) -> list[Occurrence]:
    """The occurrences of one referenced rule (a detection rule's matching alerts, or a correlation's findings)."""
    if rule_id in fired:
        return fired[rule_id]
    out = []
    for i, (event, hits) in enumerate(zip(events, matches)):
        if any(h.rule.id == rule_id for h in hits):
            values = {}
            for g in corr.group_by:
                name = corr.aliases.get(g, {}).get(rule_id, g)
                values[g] = _first_value(event, name)
            if corr.fieldref:
                values["__field__"] = _first_value(event, corr.fieldref)
            out.append(Occurrence((i,), event.time, values))
    return out


def _satisfies(op: str, n: float, count: float) -> bool:
    return {"gte": n >= count, "gt": n > count, "lte": n <= count, "lt": n < count, "eq": n == count, "neq": n != count}[op]


def _windows(occ: list[Occurrence], span: float):
    """Sliding windows (lists of occurrences, time order) of at most ``span`` seconds."""
    timed = sorted((o for o in occ if o.time is not None), key=lambda o: o.time)
    if not timed:
        yield list(occ)
        return
    start = 0
    for end in range(len(timed)):
        while timed[end].time - timed[start].time > span:
            start += 1
        yield timed[start:end + 1]


def run_correlation(corr: CompiledCorrelation, events, matches, fired: dict[str, list[Occurrence]]) -> list[Finding]:
    by_group: dict[tuple, list[tuple[str, Occurrence]]] = {}
    for rid in corr.rules:
        for o in _occurrences(corr, rid, events, matches, fired):
            key = tuple(o.values.get(g) for g in corr.group_by)
            if corr.group_by and any(v is None for v in key):
                continue  # an event without the group-by field does not belong to any group
            by_group.setdefault(key, []).append((rid, o))
    findings = []
    for key, items in by_group.items():
        members: set[int] = set()
        best = 0
        completes = None
        occ = [o for _, o in items]
        rid_of = {id(o): rid for rid, o in items}
        for window in _windows(occ, corr.timespan):
            if corr.type == "event_count":
                n = len(window)
                ok = _satisfies(corr.op, n, corr.count)
            elif corr.type == "value_count":
                n = len({o.values.get("__field__") for o in window if o.values.get("__field__") is not None})
                ok = _satisfies(corr.op, n, corr.count)
            elif corr.type in ("temporal", "temporal_ordered"):
                seen = [rid_of[id(o)] for o in window]
                if corr.type == "temporal":
                    ok = set(corr.rules) <= set(seen)
                else:  # each referenced rule after the previous one, in the rules' order
                    pos, ok = 0, False
                    for rid in seen:
                        if rid == corr.rules[pos]:
                            pos += 1
                            if pos == len(corr.rules):
                                ok = True
                                break
                n = len(set(seen))
            else:
                ok, n = False, 0
            if ok:
                best = max(best, n)
                for o in window:
                    members.update(o.alerts)
                if corr.type in ("temporal", "temporal_ordered"):
                    last = window[-1]
                    completes = last.alerts[-1]
        if members:
            times = [events[i].time for i in members if events[i].time is not None]
            group = {g: v for g, v in zip(corr.group_by, key)}
            what = {"event_count": f"{best} events", "value_count": f"{best} distinct {corr.fieldref}",
                    "temporal": "all referenced rules", "temporal_ordered": "the referenced rules in order"}.get(corr.type, "")
            span = f"within {int(corr.timespan)} s"
            findings.append(Finding(corr.meta, corr.type, sorted(members), group, best, min(times) if times else None,
                                    max(times) if times else None, f"{what} {span}" + (f" for {group}" if group else ""),
                                    completes, list(corr.rules)))
    return findings


def _order(correlations: list[CompiledCorrelation]) -> list[CompiledCorrelation]:
    """Correlations that others reference first."""
    ids = {c.meta.id for c in correlations}
    done: list[CompiledCorrelation] = []
    placed: set[str] = set()
    pending = list(correlations)
    while pending:
        progress = False
        for c in list(pending):
            if all(r not in ids or r in placed for r in c.rules):
                done.append(c)
                placed.add(c.meta.id)
                pending.remove(c)
                progress = True
        if not progress:  # a cycle: keep the rest as they are
            done.extend(pending)
            break
    return done


def correlate(ruleset: RuleSet, events, matches: list[list[RuleMatch]], window: float = GROUP_WINDOW) -> list[Finding]:
    """Sigma correlations, then the project's grouping (see the module docstring)."""
    findings: list[Finding] = []
    fired: dict[str, list[Occurrence]] = {}
    for corr in _order(ruleset.correlations):
        got = run_correlation(corr, events, matches, fired)
        findings += got
        occ = []
        for f in got:  # a correlation's findings are occurrences for the correlations that reference it
            values = dict(f.group)
            values["__finding__"] = "1"
            occ.append(Occurrence(tuple(f.alerts), f.last, values))
        fired[corr.meta.id] = occ
    in_finding = {i for f in findings for i in f.alerts}
    groups: dict[tuple, list[int]] = {}
    for i, (event, hits) in enumerate(zip(events, matches)):
        if i in in_finding or not hits:
            continue
        top = max(hits, key=lambda h: LEVELS.index(h.rule.level))
        groups.setdefault((top.rule.id, event.host, event.user), []).append(i)
    for (rid, host, user), members in groups.items():
        if len(members) < 2:
            continue
        chunks = _split_by_time(members, events, window)
        for chunk in chunks:
            if len(chunk) < 2:
                continue
            rule = next(h.rule for h in matches[chunk[0]] if h.rule.id == rid)
            times = [events[i].time for i in chunk if events[i].time is not None]
            group = {k: v for k, v in (("host", host), ("user", user)) if v}
            findings.append(Finding(rule, "grouping", chunk, group, len(chunk), min(times) if times else None,
                                    max(times) if times else None,
                                    f"{len(chunk)} alerts of the same rule" + (f" for {group}" if group else "")
                                    + f" within {int(window)} s", None, [rid]))
    return findings


def _split_by_time(members: list[int], events, window: float) -> list[list[int]]:
    timed = sorted((i for i in members if events[i].time is not None), key=lambda i: events[i].time)
    untimed = [i for i in members if events[i].time is None]
    chunks: list[list[int]] = []
    for i in timed:
        if chunks and events[i].time - events[chunks[-1][-1]].time <= window:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    if untimed:
        chunks.append(untimed)
    return [sorted(c) for c in chunks]

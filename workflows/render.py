"""Markdown views of the workflow results (``--format md``)."""

from __future__ import annotations

from secfm.workflows.schemas import ConfigReview, IncidentSummary, ModelPart, TriageResult


def _model_line(part: ModelPart) -> str:
    how = f" via {part.method}" if part.method else ""
    detail = f" ({part.detail})" if part.detail else ""
    return f"_Model part: {part.status}{how}{detail}._"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def triage_md(result: TriageResult) -> str:
    out = ["# Alert triage", "", "| rank | severity | score | alert | techniques |", "|---|---|---|---|---|"]
    by_index = {a.index: a for a in result.alerts}
    for q in result.queue:
        a = by_index[q.index]
        techs = ", ".join(t.id for t in a.techniques[:4])
        out.append(f"| {q.rank} | {q.severity} | {q.score} | {_md(q.title)} (line {a.line}) | {techs} |")
    out += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in result.counts.items() if v), "",
            f"_Techniques: {result.technique_source}. Knowledge: {result.knowledge}._", _model_line(result.model), ""]
    for q in result.queue:
        a = by_index[q.index]
        out += [f"## {q.rank}. {_md(a.title)}", "", f"**{a.severity}** (score {a.score}, input line {a.line}, {a.format})", "",
                a.rationale, ""]
        if a.evidence:
            out.append("Evidence:")
            out += [f"- `{e.field}` = `{_md(e.value[:160])}`" + ("" if e.verified else " (not found verbatim in the input)")
                    + (" (model)" if e.source == "model" else "") for e in a.evidence]
            out.append("")
        if a.techniques:
            out.append("Techniques: " + ", ".join(f"{t.id} {t.name} ({t.source})" for t in a.techniques))
            out.append("")
        if a.candidate_techniques:
            out.append("Unconfirmed head suggestions: " + ", ".join(f"{t.id} {t.name} ({t.score})" for t in a.candidate_techniques))
            out.append("")
        if a.model_view.status in ("ok", "repaired") and a.model_view.rationale:
            out += [f"Model view ({a.model_view.severity}): {_md(a.model_view.rationale)}", ""]
        out.append("Recommended next steps:")
        out += [f"- {s.action}" for s in a.next_steps]
        out.append("")
        if a.related_knowledge:
            out.append("Related knowledge: " + ", ".join(f"{r.id} {r.name}" for r in a.related_knowledge))
            out.append("")
        for w in a.warnings:
            out.append(f"> warning ({w.kind}, {w.location}): {_md(w.detail)}")
        for r in a.rejected:
            out.append(f"> rejected model output ({r.kind}): {_md(r.value)} - {r.reason}")
        if a.warnings or a.rejected:
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def summary_md(result: IncidentSummary) -> str:
    out = [f"# {result.headline or 'Incident summary'}", "", f"_Audience: {result.audience}; summary from the {result.summary_source} step._", "",
           result.summary, ""]
    if result.summary_source == "model":
        out += ["## Extracted summary", "", result.extractive, ""]
    if result.iocs:
        out.append("## Indicators (extracted from the report)")
        for kind, values in result.iocs.items():
            out.append(f"- {kind}: " + ", ".join(f"`{v}`" for v in values[:50]) + (" ..." if len(values) > 50 else ""))
        out.append("")
    if result.ids:
        out.append("## Identifiers")
        out += [f"- {i.id} {i.name or ''}" + ("" if i.known else " (not in the offline catalogs)") for i in result.ids]
        out.append("")
    if result.techniques:
        out.append("## ATT&CK techniques")
        out += [f"- {t.id} {t.name} ({t.source})" for t in result.techniques]
        out.append("")
    if result.timeline:
        out.append("## Timeline")
        out += [f"- {e.time} (line {e.line}): {_md(e.text)}" for e in result.timeline]
        out.append("")
    if result.flags:
        out.append("## Flagged model output (removed from the summary)")
        out += [f"- {f.kind}: `{_md(f.value)}` {f.detail}" for f in result.flags]
        out.append("")
    for w in result.warnings:
        out.append(f"> warning ({w.kind}, {w.location}): {_md(w.detail)}")
    out += ["", _model_line(result.model)]
    return "\n".join(out).rstrip() + "\n"


def review_md(result: ConfigReview) -> str:
    out = [f"# Configuration review ({result.kind}, {result.lines} lines)", "",
           "Counts: " + (", ".join(f"{k} {v}" for k, v in result.counts.items() if v) or "no findings"), ""]
    for f in result.findings:
        lines = f"line {f.line_start}" if f.line_start == f.line_end else f"lines {f.line_start}-{f.line_end}"
        out += [f"## [{f.severity}] {f.title} ({f.rule_id}, {lines})", "", "```", f.evidence, "```", "", f"Why: {f.why}"]
        if f.fix:
            out.append(f"Fix: {f.fix}")
        if f.references:
            out.append("References: " + ", ".join(f.references))
        if f.source == "model":
            out.append("_Found by the model; lines checked against the input._")
        out.append("")
    if result.guidance:
        out.append("Guidance retrieved: " + ", ".join(f"{g.id} {g.name}" for g in result.guidance))
        out.append("")
    for w in result.warnings:
        out.append(f"> warning ({w.kind}, {w.location}): {_md(w.detail)}")
    for r in result.rejected:
        out.append(f"> rejected model finding ({r.kind}): {_md(r.value)} - {r.reason}")
    out += ["", f"_Knowledge: {result.knowledge}._", _model_line(result.model)]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# terminal tables (``--format table``): (title, columns, rows)
# ---------------------------------------------------------------------------------------------
def triage_table(result: TriageResult):
    by_index = {a.index: a for a in result.alerts}
    return ("triage queue", ("rank", "severity", "score", "line", "alert", "techniques"),
            [(q.rank, q.severity, q.score, by_index[q.index].line, q.title,
              ", ".join(t.id for t in by_index[q.index].techniques[:4])) for q in result.queue])


def review_table(result: ConfigReview):
    return (f"{result.kind} review", ("severity", "lines", "rule", "title"),
            [(f.severity, f"{f.line_start}-{f.line_end}", f.rule_id, f.title) for f in result.findings])


def summary_table(result: IncidentSummary):
    return (result.headline, ("kind", "value"),
            [("summary", result.summary)] + [(k, ", ".join(v)) for k, v in result.iocs.items() if v]
            + [("techniques", ", ".join(t.id for t in result.techniques))])


def attack_table(result):
    """ATT&CK extraction (``secfm.workflows.attack_extraction.AttackExtraction``): one row per technique."""
    hits = result.techniques
    return (f"ATT&CK techniques ({len(hits)})", ("id", "name", "tactics", "score", "evidence"),
            [(h.id, h.name, ", ".join(h.tactics), f"{h.score:.2f}", " / ".join(e.text for e in h.evidence)) for h in hits])


def attack_md(result) -> str:
    from secfm.formats import markdown_table

    return markdown_table(*attack_table(result))

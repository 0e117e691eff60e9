"""Chat answers for people: HTML cards and Markdown for the app, plain text for the terminal.

Everything that came from the analyst's paste or a tool is escaped (no HTML, no Markdown links of
its own); the only links are the sources' catalog URLs (ATT&CK, CWE, NVD).
"""

from __future__ import annotations

import html
import re

from secfm.workflows.chat_schemas import Card, ChatAnswer, Source

KIND_LABELS = {"technique": "Technique", "tactic": "Tactic", "mitigation": "Mitigation", "group": "Group",
               "software": "Software", "campaign": "Campaign", "cwe": "CWE", "cve": "CVE", "triage": "Triage",
               "config": "Config review", "iocs": "Indicators", "extraction": "ATT&CK extraction",
               "retrieval": "Related knowledge", "notice": "Note"}
_SAFE_URL = re.compile(r"^https://(?:attack\.mitre\.org|cwe\.mitre\.org|nvd\.nist\.gov|www\.cve\.org)/[\w./?=#%-]*$")


def esc(text) -> str:
    """Text safe inside the cards' HTML (which sits in a Markdown message: no link syntax either)."""
    return html.escape(str(text if text is not None else ""), quote=True).replace("[", "&#91;").replace("]", "&#93;")


def md(text) -> str:
    """Text safe inside Markdown: no HTML, no link or image syntax of its own."""
    return html.escape(str(text or ""), quote=False).replace("[", "\\[").replace("]", "\\]")


def safe_url(url: str | None) -> str | None:
    return url if url and _SAFE_URL.match(url) else None


def link(label: str, url: str | None) -> str:
    url = safe_url(url)
    if not url:
        return esc(label)
    return f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer">{esc(label)}</a>'


def md_link(label: str, url: str | None) -> str:
    url = safe_url(url)
    return f"[{md(label)}]({url})" if url else md(label)


# ---------------------------------------------------------------------------------------------
# HTML cards (the app)
# ---------------------------------------------------------------------------------------------
def _refs(items, limit: int = 8) -> str:
    return " · ".join(f"{link(i['id'], i.get('url'))} {esc(i.get('name', ''))}".strip() for i in items[:limit])


def _row(label: str, value: str) -> str:
    return f'<div class="card-row"><span class="card-label">{esc(label)}</span> {value}</div>' if value else ""


def card_html(card: Card) -> str:
    f = card.fields
    rows: list[str] = []
    if card.kind == "cve":
        rows.append(f'<div class="card-text">{esc(f.get("description"))}</div>')
        rows.append(_row("CWE", _refs(f.get("cwes") or [])))
        cvss = f.get("cvss")
        if cvss:
            rows.append(_row("CVSS", f"<b>{esc(cvss['score'])}</b> {esc(cvss.get('severity') or '')} "
                                     f"<code>{esc(cvss.get('vector') or '')}</code>"))
        else:
            rows.append(_row("CVSS", "not in the local data (load NVD feeds with <code>secfm kb add-nvd</code>)"))
        exp = f.get("exploitation")
        if exp:
            rows.append(_row("ATT&CK", f"{link(exp['id'], exp['url'])} {esc(exp['name'])} "
                                       f'<span class="card-why">({esc(exp["reason"])})</span>'))
        rows.append(_row("Source", esc(f.get("source"))))
    elif card.kind == "technique":
        rows.append(f'<div class="card-text">{esc(f.get("description"))}</div>')
        rows.append(_row("Tactics", _refs(f.get("tactics") or [])))
        if f.get("parent"):
            rows.append(_row("Parent", _refs([f["parent"]])))
        for a in f.get("analytics") or []:
            logs = f' <span class="card-why">({esc("; ".join(a["log_sources"][:2]))})</span>' if a.get("log_sources") else ""
            rows.append(_row(f"Detection ({', '.join(a['platforms'])})", esc(a["description"]) + logs))
        if f.get("detection") and not f.get("analytics"):
            rows.append(_row("Detection", _refs(f["detection"])))
        rows.append(_row("Mitigations", _refs(f.get("mitigations") or [])))
    elif card.kind in ("group", "software", "campaign"):
        rows.append(f'<div class="card-text">{esc(f.get("description"))}</div>')
        if f.get("aliases"):
            rows.append(_row("Aliases", esc(", ".join(f["aliases"]))))
        rows.append(_row(f"Techniques ({f.get('count', 0)})", _refs(f.get("techniques") or [], 6)))
    elif card.kind == "mitigation":
        rows.append(f'<div class="card-text">{esc(f.get("description"))}</div>')
        rows.append(_row(f"Mitigates ({f.get('count', 0)})", _refs(f.get("mitigates") or [], 6)))
    elif card.kind == "tactic":
        rows.append(_row(f"Techniques ({f.get('count', 0)})", _refs(f.get("techniques") or [], 8)))
    elif card.kind == "cwe":
        if f.get("candidates"):
            rows.append(_row("Candidates", " · ".join(f"{link(c['id'], c['url'])} {esc(c['name'])} ({c['score']:.2f})"
                                                      for c in f["candidates"])))
        else:
            rows.append(f'<div class="card-text">{esc(f.get("description"))}</div>')
            rows.append(_row("Parents", _refs(f.get("parents") or [])))
            rows.append(_row(f"Observed examples ({f.get('observed_count', 0)})", esc(", ".join(f.get("observed_examples") or []))))
    elif card.kind == "triage":
        sev = esc(f.get("severity", ""))
        rows.append(_row("Severity", f'<span class="sev sev-{sev}">{sev.upper()}</span> (score {esc(f.get("score"))})'))
        rows.append(_row("Signatures", esc(", ".join(f.get("signatures") or [])) or "none fired"))
        rows.append(_row("Techniques", _refs(f.get("techniques") or [])))
        if f.get("next_steps"):
            rows.append(_row("Next steps", esc("; ".join(f["next_steps"][:3]))))
    elif card.kind == "config":
        for x in (f.get("findings") or [])[:6]:
            rows.append(_row(f"line {x['line']}", f'<span class="sev sev-{esc(x["severity"])}">{esc(x["severity"])}</span> '
                                                  f"{esc(x['title'])} <code>{esc(x['rule'])}</code>"))
        if not f.get("findings"):
            rows.append(_row("Findings", "none"))
    elif card.kind == "extraction":
        for t in (f.get("techniques") or [])[:6]:
            score = f" ({t['score']:.2f})" if t.get("score") is not None else ""
            rows.append(_row(t["id"], f"{link(t['name'], t.get('url'))}{esc(score)}"))
    elif card.kind == "iocs":
        rows.append(_row("Found", esc(", ".join(f"{i['kind']} {i['value']}" for i in (f.get("indicators") or [])[:12]))))
    elif card.kind == "retrieval":
        rows.append(_row("Closest", esc(", ".join(f"{e['id']} {e['name']} ({e['score']:.2f})" for e in f.get("entries") or []))))
    title = link(card.title, card.url) if card.url else esc(card.title)
    return (f'<div class="chat-card card-{esc(card.kind)}"><div class="card-head"><span class="card-kind">'
            f'{esc(KIND_LABELS.get(card.kind, card.kind))}</span> {title}</div>{"".join(r for r in rows if r)}</div>')


def cards_html(cards: list[Card], limit: int = 6) -> str:
    if not cards:
        return ""
    return '<div class="chat-cards">' + "".join(card_html(c) for c in cards[:limit]) + "</div>"


# ---------------------------------------------------------------------------------------------
# the message (Markdown with the cards' HTML on top)
# ---------------------------------------------------------------------------------------------
def source_md(source: Source) -> str:
    catalog = {"attack": "ATT&CK", "cwe": "CWE", "nvd": "NVD"}.get(source.kind)
    if source.id and safe_url(source.url):
        name = f"{source.id} {source.name}".strip()
        where = catalog or source.tool
        return f"{md_link(name, source.url)} ({md(where)})"
    return md(source.label())


def facts_md(answer: ChatAnswer) -> str:
    keys = [s.key for s in answer.sources]
    lines = []
    for fact in answer.facts:
        n = keys.index(fact.source.key) + 1
        lines.append(f"- {md(fact.text)} <sup>[{n}]</sup>")
    return "\n".join(lines)


def message_markdown(answer: ChatAnswer, phrasing: str | None = None, done: bool = True) -> str:
    """The bot message: cards, the model's phrasing (while it streams: as far as it got), the facts
    with their source numbers, the sources as links, notes, checks."""
    parts = [cards_html(answer.cards)]
    text = answer.phrasing if done else (phrasing or "")
    if answer.nothing_found:
        parts.append(f"**{md('secfm found nothing about this in its knowledge base (ATT&CK, CWE, NVD) or its tools.')}**")
    elif text:
        parts.append(f"**Answer** — {md(text)}" + ("" if done else " ▌"))
    if answer.facts:
        parts.append("**Facts**\n\n" + facts_md(answer))
    if answer.sources:
        parts.append("**Sources** " + " · ".join(f"[{i}] {source_md(s)}" for i, s in enumerate(answer.sources, 1)))
    for note in answer.notes:
        parts.append(f"_Note:_ {md(note)}")
    for w in answer.warnings[:3]:
        parts.append(f"_Input warning ({md(w.location)}):_ {md(w.detail)}")
    flagged = [f for f in answer.flagged if f.kind == "id"]
    if flagged:
        parts.append("_Checked:_ " + md(f"{len(flagged)} id(s) the model wrote were not returned by any tool and were "
                                         f"removed ({', '.join(f.value for f in flagged[:5])})."))
    return "\n\n".join(p for p in parts if p)


def answer_table(answer: ChatAnswer):
    """(title, columns, rows): the answer's facts with their sources (``--format table``)."""
    keys = [s.key for s in answer.sources]
    rows = [(keys.index(f.source.key) + 1 if f.source.key in keys else "", f.source.id or f.source.tool, f.text)
            for f in answer.facts]
    title = " ".join(answer.question.split())[:60] or "chat"
    return (title, ("source", "from", "fact"), rows)


# ---------------------------------------------------------------------------------------------
# the terminal
# ---------------------------------------------------------------------------------------------
def card_text(card: Card) -> str:
    f = card.fields
    lines = [f"[{KIND_LABELS.get(card.kind, card.kind)}] {card.title}" + (f"  {card.url}" if card.url else "")]

    def refs(items, limit=6):
        return ", ".join(f"{i['id']} {i.get('name', '')}".strip() for i in items[:limit])

    if f.get("description"):
        lines.append(f"  {f['description']}")
    if card.kind == "cve":
        if f.get("cwes"):
            lines.append(f"  CWE: {refs(f['cwes'])}")
        cvss = f.get("cvss")
        lines.append(f"  CVSS: {cvss['score']} {cvss.get('severity') or ''} {cvss.get('vector') or ''}".rstrip()
                     if cvss else "  CVSS: not in the local data")
        if f.get("exploitation"):
            lines.append(f"  ATT&CK: {f['exploitation']['id']} {f['exploitation']['name']}")
    elif card.kind == "technique":
        lines.append(f"  Tactics: {refs(f.get('tactics') or [])}")
        for a in f.get("analytics") or []:
            lines.append(f"  Detection ({', '.join(a['platforms'])}): {a['description']}")
        if f.get("mitigations"):
            lines.append(f"  Mitigations: {refs(f['mitigations'], 8)}")
    elif card.kind == "triage":
        lines.append(f"  Severity: {f.get('severity', '').upper()} (score {f.get('score')}); "
                     f"signatures: {', '.join(f.get('signatures') or []) or 'none'}")
        if f.get("techniques"):
            lines.append(f"  Techniques: {refs(f['techniques'])}")
    elif card.kind == "config":
        for x in (f.get("findings") or [])[:6]:
            lines.append(f"  line {x['line']}: {x['severity']} {x['title']} ({x['rule']})")
    elif card.kind in ("group", "software", "campaign", "tactic"):
        if f.get("techniques"):
            lines.append(f"  Techniques ({f.get('count')}): {refs(f['techniques'])}")
    elif card.kind == "extraction":
        lines.append(f"  {refs(f.get('techniques') or [])}")
    return "\n".join(lines)


def answer_text(answer: ChatAnswer, with_cards: bool = True) -> str:
    """Plain text: cards, the phrasing, the facts with source numbers, the sources with links."""
    parts = []
    if with_cards and answer.cards:
        parts.append("\n".join(card_text(c) for c in answer.cards[:6]))
    if answer.phrasing:
        parts.append(answer.phrasing)
    parts.append(answer.summary)
    if answer.sources:
        parts.append("Sources:\n" + "\n".join(f"  [{i}] {s.label()}" + (f"  {s.url}" if s.url else "")
                                               for i, s in enumerate(answer.sources, 1)))
    return "\n\n".join(p for p in parts if p)


__all__ = ["answer_table", "answer_text", "card_html", "card_text", "cards_html", "message_markdown"]

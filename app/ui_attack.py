"""The ATT&CK tab: a report -> techniques with their evidence highlighted in the text, a tactic
heatmap, and downloads of the ATT&CK Navigator layer and a STIX 2.1 bundle."""

from __future__ import annotations

import gradio as gr

from secfm.app.sessions import Session
from secfm.app.ui_common import UPLOAD_TYPES, esc, json_box, json_text, read_upload, sample, user_errors

HEADERS = ["Technique", "Name", "Tactics", "Score", "Evidence"]

#: Enterprise tactics in kill-chain order (shortnames as techniques list them)
TACTIC_ORDER = [
    ("reconnaissance", "Reconnaissance"),
    ("resource-development", "Resource Development"),
    ("initial-access", "Initial Access"),
    ("execution", "Execution"),
    ("persistence", "Persistence"),
    ("privilege-escalation", "Privilege Escalation"),
    ("defense-evasion", "Defense Evasion"),
    ("credential-access", "Credential Access"),
    ("discovery", "Discovery"),
    ("lateral-movement", "Lateral Movement"),
    ("collection", "Collection"),
    ("command-and-control", "Command and Control"),
    ("exfiltration", "Exfiltration"),
    ("impact", "Impact"),
]


def _heat(score: float) -> str:
    """The Navigator layer's gradient (white -> yellow -> red) at ``score`` in [0, 1]."""
    s = max(0.0, min(1.0, float(score)))
    stops = [(0.0, (255, 255, 255)), (0.5, (255, 231, 102)), (1.0, (255, 102, 102))]
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if s <= b:
            t = (s - a) / (b - a)
            r, g, bl = (round(x + (y - x) * t) for x, y in zip(ca, cb))
            return f"#{r:02x}{g:02x}{bl:02x}"
    return "#ff6666"


def _tactic_order(domain: str) -> list[tuple[str, str]]:
    """(shortname, name) of a domain's tactics in matrix order (Enterprise: the fixed order)."""
    if domain == "enterprise":
        return TACTIC_ORDER
    from secfm.knowledge import load_attack

    return [(t.shortname, t.name) for t in load_attack().tactics(domain)]


def heatmap_html(hits: list[dict]) -> str:
    """A tactic x technique grid of the hits' ATT&CK domain (the one most hits are in; the
    Mobile and ICS matrices have their own tactics): one column per tactic, cells coloured by score."""
    domains = [h.get("domain") or "enterprise" for h in hits]
    domain = max(set(domains), key=domains.count) if domains else "enterprise"
    tactic_order = _tactic_order(domain)
    by_tactic: dict[str, list[dict]] = {}
    for h, d in zip(hits, domains):
        if d != domain:
            continue  # another domain's tactics share shortnames with these: shown in the table only
        for t in h.get("tactics") or ["(no tactic)"]:
            by_tactic.setdefault(t, []).append(h)
    names = dict(tactic_order)
    order = [t for t, _ in tactic_order] + sorted(t for t in by_tactic if t not in names)
    cols = []
    for t in order:
        items = sorted(by_tactic.get(t, []), key=lambda h: -h["score"])
        top = max((h["score"] for h in items), default=0.0)
        head_bg = _heat(top) if items else "#f1f5f9"
        cells = "".join(
            f'<div class="hm-cell" style="background:{_heat(h["score"])}" title="{esc(h["name"])} · {h["score"]:.2f}">'
            f'<b>{esc(h["id"])}</b> {esc(h["name"])}</div>' for h in items)
        cols.append(
            f'<div class="hm-col{" empty" if not items else ""}"><div class="hm-head" style="background:{head_bg}">'
            f'{esc(names.get(t, t))}<span class="hm-count">{len(items)}</span></div>{cells}</div>')
    legend = ('<div class="hm-legend">score <span style="background:#ffffff">0</span>'
              '<span style="background:#ffe766">0.5</span><span style="background:#ff6666">1</span></div>')
    return f'<div class="heatmap" id="attack-heatmap-grid">{"".join(cols)}</div>{legend}'


def highlighted(text: str, hits: list[dict]) -> list[tuple[str, str | None]]:
    """``text`` cut at evidence boundaries; each evidence span labelled with its technique ids."""
    spans = []
    for h in hits:
        for ev in h.get("evidence") or []:
            a, b = int(ev.get("start", -1)), int(ev.get("end", -1))
            if 0 <= a < b <= len(text):
                spans.append((a, b, h["id"]))
    if not spans:
        return [(text, None)]
    points = sorted({0, len(text), *(a for a, _, _ in spans), *(b for _, b, _ in spans)})
    out: list[tuple[str, str | None]] = []
    for a, b in zip(points, points[1:]):
        ids = sorted({tid for s, e, tid in spans if s <= a and b <= e})
        label = ", ".join(ids) if ids else None
        if out and out[-1][1] == label:
            out[-1] = (out[-1][0] + text[a:b], label)
        else:
            out.append((text[a:b], label))
    return out


def _rows(hits: list[dict]) -> list[list]:
    rows = []
    for h in hits:
        ev = (h.get("evidence") or [{}])[0].get("text", "")
        rows.append([h["id"], h["name"], ", ".join(h.get("tactics") or []), f"{h['score']:.2f}",
                     ev if len(ev) <= 240 else ev[:239] + "…"])
    return rows


def build_attack_tab(backend, state: gr.State) -> dict:
    with gr.Tab("ATT&CK", id="attack", elem_id="tab-attack"):
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                text = gr.Textbox(label="Report, alert or paragraph", lines=12, max_lines=40, elem_id="attack-input")
                with gr.Row():
                    upload = gr.UploadButton("Upload file", file_types=UPLOAD_TYPES, type="filepath",
                                             size="sm", elem_id="attack-upload")
                    load = gr.Button("Load sample", size="sm", elem_id="attack-sample")
                    run = gr.Button("Extract techniques", variant="primary", elem_id="attack-run")
                with gr.Row():
                    nav = gr.DownloadButton("Navigator layer", value=None, interactive=False, size="sm",
                                            elem_id="attack-navigator")
                    stix = gr.DownloadButton("STIX 2.1 bundle", value=None, interactive=False, size="sm",
                                             elem_id="attack-stix")
            with gr.Column(scale=3, min_width=420):
                note = gr.Markdown(elem_id="attack-note")
                marked = gr.HighlightedText(label="Evidence in the text", combine_adjacent=True,
                                            show_legend=False, elem_id="attack-highlight", interactive=False)
                table = gr.Dataframe(headers=HEADERS, value=None, interactive=False, wrap=True,
                                     label="Techniques", elem_id="attack-table", max_height=320,
                                     column_widths=["96px", "180px", "160px", "64px", "auto"])
        heat = gr.HTML(label="Tactics", elem_id="attack-heatmap")
        with gr.Accordion("Navigator layer JSON", open=False):
            raw = json_box("attack-json")

    upload.upload(read_upload, [upload], [text], queue=False, api_visibility="private")
    load.click(lambda: sample("report.txt"), None, [text], queue=False, api_visibility="private")

    @user_errors
    def on_extract(body: str, session: Session, request: gr.Request):
        session.claim(request)
        view = backend.extract(body)
        session.results["attack"] = {k: v for k, v in view.items() if k != "text"}
        hits = view["hits"]
        layer_path = session.write_json("navigator-layer.json", view["layer"])
        stix_path = session.write_json("stix-bundle.json", view["stix"])
        tactics = len({t for h in hits for t in h.get("tactics") or []})
        head = f"**{len(hits)} technique(s)** across {tactics} tactic(s) · method: {view['method']}"
        if view.get("note"):
            head += f"\n\n_{view['note']}_"
        return (head, highlighted(view["text"], hits), {"data": _rows(hits), "headers": HEADERS},
                heatmap_html(hits), gr.DownloadButton(value=layer_path, interactive=True),
                gr.DownloadButton(value=stix_path, interactive=True), json_text(view["layer"]), session)

    run.click(on_extract, [text, state], [note, marked, table, heat, nav, stix, raw, state],
              api_name="extract_attack", concurrency_id="model")
    return {"input": text, "run": run, "table": table, "navigator": nav, "stix": stix, "heatmap": heat}


__all__ = ["build_attack_tab", "heatmap_html", "highlighted"]

"""The Triage tab: paste or upload alerts -> a ranked queue and per-alert detail."""

from __future__ import annotations

import gradio as gr

from secfm.app.sessions import Session
from secfm.app.ui_common import (
    UPLOAD_TYPES,
    badge,
    esc,
    json_box,
    json_text,
    read_upload,
    sample,
    style_severity,
    user_errors,
)

HEADERS = ["Rank", "Severity", "Score", "Alert", "Title", "Techniques"]


def _rows(view: dict) -> list[list]:
    by_id = {a["id"]: a for a in view["alerts"]}
    rows = []
    for rank, aid in enumerate(view["queue"], 1):
        a = by_id.get(aid)
        if a is None:
            continue
        score = "" if a["score"] is None else f"{a['score']:g}"
        rows.append([rank, a["severity"].upper(), score, a["id"], a["title"],
                     ", ".join(t.get("id", "") for t in a["techniques"])])
    return rows


def _list(title: str, items: list[str]) -> str:
    return f"<h4>{title}</h4><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else ""


def _evidence_row(e: dict) -> str:
    check = "<td class='ok'>verified</td>" if e.get("verified") else "<td class='bad'>not in input</td>"
    return (f"<tr><th>{esc(e.get('field'))}</th><td><code>{esc(e.get('value'))}</code></td>{check}"
            f"<td class='muted'>{esc(e.get('source', ''))}</td></tr>")


def detail_html(alert: dict | None) -> str:
    """One alert: severity, score, why, techniques, evidence, next steps, related knowledge."""
    if not alert:
        return ""
    parts = [f'<div class="alert-detail"><h3>{badge(alert["severity"])} {esc(alert["id"])}'
             f'{" · " + esc(alert["title"]) if alert["title"] else ""}</h3>']
    facts = []
    if alert["score"] is not None:
        facts.append(f"score <b>{alert['score']:g}</b>/100")
    if alert.get("format"):
        facts.append(f"format {esc(alert['format'])}")
    if alert.get("line"):
        facts.append(f"input line {esc(alert['line'])}")
    if facts:
        parts.append(f"<p class='facts'>{' · '.join(facts)}</p>")
    for w in alert.get("warnings") or []:
        parts.append(f"<div class='warn-box'><b>{esc(w.get('kind', 'warning'))}</b> {esc(w.get('location', ''))}: "
                     f"{esc(w.get('detail', ''))}</div>")
    if alert.get("rationale"):
        parts.append(f"<p class='rationale'>{esc(alert['rationale'])}</p>")
    parts.append(_list("Signatures", [esc(s) for s in alert.get("signatures") or []]))
    parts.append(_list("ATT&amp;CK techniques", [
        f"<code>{esc(t.get('id'))}</code> {esc(t.get('name') or '')}"
        f" <span class='muted'>({esc(', '.join(t.get('tactics') or []))}; {esc(t.get('source', ''))}"
        f"{'; score ' + format(t['score'], '.2f') if isinstance(t.get('score'), (int, float)) else ''})</span>"
        for t in alert["techniques"]]))
    if alert["evidence"]:
        rows = "".join(_evidence_row(e) for e in alert["evidence"])
        parts.append(f"<h4>Evidence</h4><table class='fields'>{rows}</table>")
    mv = alert.get("model_view")
    if mv:
        sev = f" suggests {badge(mv['severity'])}" if mv.get("severity") else ""
        why = esc(mv.get("rationale") or mv.get("error") or "")
        parts.append(f"<h4>Model view</h4><p>{esc(mv.get('status', ''))}{sev} {why}</p>")
    parts.append(_list("Next steps (recommended)", [
        f"{esc(n.get('action'))} <span class='muted'>— {esc(n.get('reason', ''))}</span>"
        for n in alert["next_steps"]]))
    parts.append(_list("Related knowledge", [
        f"<code>{esc(k.get('id'))}</code> {esc(k.get('name', ''))} <span class='muted'>({esc(k.get('kind', ''))}, "
        f"{float(k.get('score') or 0):.2f})</span>" for k in alert.get("knowledge") or []]))
    parts.append(_list("Rejected (did not check out)", [
        f"<code>{esc(r.get('value'))}</code> {esc(r.get('kind', ''))}: {esc(r.get('reason', ''))}"
        for r in alert.get("rejected") or []]))
    fields = alert.get("fields")
    if isinstance(fields, dict) and fields:
        rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>" for k, v in fields.items())
        parts.append(f"<details><summary>All fields ({len(fields)})</summary>"
                     f"<table class='fields'>{rows}</table></details>")
    parts.append("</div>")
    return "".join(p for p in parts if p)


def _summary(view: dict) -> str:
    meta = view.get("meta") or {}
    counts = meta.get("counts") or {}
    line = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing"
    notes = []
    if meta.get("technique_source") and not str(meta["technique_source"]).startswith(("head", "custom")):
        notes.append(f"techniques: {meta['technique_source']}")
    elif str(meta.get("technique_source", "")).startswith("head unavailable"):
        notes.append("techniques from rules only (no classifier head)")
    model = meta.get("model") or {}
    if model.get("status") and model["status"] != "skipped":
        notes.append(f"model: {model['status']}" + (f" ({model['detail']})" if model.get("detail") else ""))
    tail = f"<div class='muted small'>{esc('; '.join(notes))}</div>" if notes else ""
    return f"<div class='triage-summary'><b>{len(view['alerts'])} alert(s)</b>: {esc(line)}{tail}</div>"


def build_triage_tab(backend, state: gr.State) -> dict:
    with gr.Tab("Triage", id="triage", elem_id="tab-triage"):
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                alerts = gr.Textbox(label="Alerts", lines=12, max_lines=30, elem_id="triage-input",
                                    placeholder="Paste alerts: a JSON array, JSON lines, or one alert per line")
                use_model = gr.Checkbox(label="Also ask the model (slow on a CPU)", value=backend.fast_model,
                                        elem_id="triage-use-model")
                with gr.Row():
                    upload = gr.UploadButton("Upload file", file_types=UPLOAD_TYPES, type="filepath",
                                             size="sm", elem_id="triage-upload")
                    load = gr.Button("Load sample", size="sm", elem_id="triage-sample")
                    run = gr.Button("Triage", variant="primary", elem_id="triage-run")
            with gr.Column(scale=3, min_width=420):
                summary = gr.HTML(elem_id="triage-summary")
                table = gr.Dataframe(headers=HEADERS, value=None, interactive=False, wrap=True,
                                     label="Queue (most urgent first) · click a row for detail",
                                     elem_id="triage-table", max_height=320,
                                     column_widths=["64px", "104px", "68px", "130px", "auto", "150px"])
                pick = gr.Dropdown(label="Alert", choices=[], elem_id="triage-pick", interactive=True)
                detail = gr.HTML(elem_id="triage-detail")
                with gr.Accordion("JSON", open=False, elem_id="triage-json-box"):
                    raw = json_box("triage-json")

    upload.upload(read_upload, [upload], [alerts], queue=False, api_visibility="private")
    load.click(lambda: sample("alerts.jsonl"), None, [alerts], queue=False, api_visibility="private")

    @user_errors
    def on_triage(text: str, model: bool, session: Session, request: gr.Request):
        session.claim(request)
        view = backend.triage(text, use_model=bool(model))
        session.results["triage"] = view
        first = view["queue"][0] if view["queue"] else None
        by_id = {a["id"]: a for a in view["alerts"]}
        return (_summary(view), style_severity(_rows(view), HEADERS), gr.Dropdown(choices=view["queue"], value=first),
                detail_html(by_id.get(first)), json_text(view["raw"]), session)

    run.click(on_triage, [alerts, use_model, state], [summary, table, pick, detail, raw, state], api_name="triage",
              concurrency_id="model")

    def show(aid: str | None, session: Session):
        view = session.results.get("triage") or {"alerts": []}
        by_id = {a["id"]: a for a in view["alerts"]}
        return detail_html(by_id.get(aid))

    pick.change(show, [pick, state], [detail], queue=False, api_visibility="private")

    def on_select(evt: gr.SelectData, session: Session):
        view = session.results.get("triage")
        if not view or evt.index is None:
            return gr.skip()
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not 0 <= row < len(view["queue"]):
            return gr.skip()
        return view["queue"][row]

    table.select(on_select, [state], [pick], queue=False, api_visibility="private")
    return {"input": alerts, "run": run, "table": table, "detail": detail, "json": raw}


__all__ = ["build_triage_tab", "detail_html"]

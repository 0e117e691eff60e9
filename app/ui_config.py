"""The Config review tab: a configuration -> findings with rule ids, severities, line numbers,
evidence and fixes, and the file with the flagged lines marked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr

from secfm.app.backend import SEVERITY_ORDER
from secfm.app.sessions import Session
from secfm.app.ui_common import (
    SEVERITY_COLORS,
    UPLOAD_TYPES,
    esc,
    json_box,
    json_text,
    read_upload,
    sample,
    style_severity,
    user_errors,
)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


HEADERS = ["Severity", "Rule", "Lines", "Finding", "Evidence", "Fix"]


def _lines_label(f: dict) -> str:
    a, b = f.get("line_start"), f.get("line_end")
    if a is None:
        return ""
    return f"{a}" if b in (None, a) else f"{a}-{b}"


def _rows(view: dict) -> list[list]:
    rows = []
    for f in view["findings"]:
        finding = f["title"] + (f" — {f['why']}" if f.get("why") else "")
        if f.get("source") == "model":
            finding += " (model)"
        fix = f["fix"] + (f" [{', '.join(f['references'])}]" if f.get("references") else "")
        rows.append([f["severity"].upper(), f["rule"], _lines_label(f), finding, f["evidence"], fix])
    return rows


def annotated_config(text: str, findings: list[dict]) -> str:
    """The configuration with line numbers; flagged lines coloured by their worst severity."""
    worst: dict[int, tuple[int, str, list[str]]] = {}
    for f in findings:
        a, b = f.get("line_start"), f.get("line_end")
        if a is None:
            continue
        for n in range(a, (b or a) + 1):
            rank = SEVERITY_ORDER.get(f["severity"], -1)
            cur = worst.get(n)
            rules = (cur[2] if cur else []) + [f["rule"]]
            if cur is None or rank > cur[0]:
                worst[n] = (rank, f["severity"], rules)
            else:
                worst[n] = (cur[0], cur[1], rules)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if n in worst:
            _, sev, rules = worst[n]
            fg, bg = SEVERITY_COLORS.get(sev, ("#374151", "#e5e7eb"))
            tag = f'<span class="cfg-rule" style="color:{fg}">{esc(", ".join(dict.fromkeys(rules)))}</span>'
            out.append(f'<div class="cfg-line flagged" style="background:{bg}" data-line="{n}">'
                       f'<span class="ln">{n}</span><span class="code">{esc(line) or " "}</span>{tag}</div>')
        else:
            out.append(f'<div class="cfg-line" data-line="{n}"><span class="ln">{n}</span>'
                       f'<span class="code">{esc(line) or " "}</span></div>')
    return f'<div class="cfg-view">{"".join(out)}</div>'


def build_config_tab(backend, state: gr.State) -> dict:
    kinds = backend.config_kinds() if hasattr(backend, "config_kinds") else ["auto"]
    with gr.Tab("Config review", id="config", elem_id="tab-config"):
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                text = gr.Textbox(label="Configuration", lines=14, max_lines=40, elem_id="config-input",
                                  placeholder="Paste an sshd_config, nginx.conf, Dockerfile, Kubernetes manifest, …")
                with gr.Row():
                    kind = gr.Dropdown(kinds, value=kinds[0], label="Kind", elem_id="config-kind",
                                       allow_custom_value=True)
                    use_model = gr.Checkbox(label="Also ask the model (slow on a CPU)", value=backend.fast_model,
                                            elem_id="config-use-model")
                with gr.Row():
                    upload = gr.UploadButton("Upload file", file_types=UPLOAD_TYPES + [".tf", ".dockerfile"],
                                             type="filepath", size="sm", elem_id="config-upload")
                    load = gr.Button("Load sample", size="sm", elem_id="config-sample")
                    run = gr.Button("Review", variant="primary", elem_id="config-run")
            with gr.Column(scale=3, min_width=420):
                summary = gr.Markdown(elem_id="config-summary")
                table = gr.Dataframe(headers=HEADERS, value=None, interactive=False, wrap=True, label="Findings",
                                     elem_id="config-table", max_height=360,
                                     column_widths=["96px", "190px", "64px", "auto", "200px", "240px"])
                view = gr.HTML(elem_id="config-view")
                with gr.Accordion("JSON", open=False):
                    raw = json_box("config-json")

    def on_upload(path: str | None, session: Session):
        body = read_upload(path)
        if isinstance(body, str):  # remember the name: it tells the review the kind (Dockerfile, ...)
            session.results["config_file"] = (Path(path).name, _digest(body))
        return body, session

    upload.upload(on_upload, [upload, state], [text, state], queue=False, api_visibility="private")
    load.click(lambda: sample("sshd_config"), None, [text], queue=False, api_visibility="private")

    @user_errors
    def on_review(body: str, which: str, model: bool, session: Session, request: gr.Request):
        session.claim(request)
        name, digest = session.results.get("config_file") or (None, None)
        filename = name if digest == _digest(body or "") else None  # only while the upload is unedited
        result = backend.review(body, kind=which or "auto", use_model=bool(model), filename=filename)
        session.results["review"] = result
        counts: dict[str, int] = {}
        for f in result["findings"]:
            counts[f["severity"]] = counts.get(f["severity"], 0) + 1
        order = sorted(counts, key=lambda s: -SEVERITY_ORDER.get(s, -1))
        line = ", ".join(f"{counts[s]} {s}" for s in order) or "no findings"
        meta = result.get("meta") or {}
        how = f" (detected from {meta['kind_detected_by']})" if meta.get("kind_detected_by") else ""
        head = f"**{len(result['findings'])} finding(s)** in a `{result['kind']}` configuration{how}: {line}"
        for w in meta.get("warnings") or []:
            head += f"\n\n⚠ input warning: {w.get('kind')} {w.get('location', '')}: {w.get('detail', '')}"
        model = meta.get("model") or {}
        if model.get("status") not in (None, "skipped"):
            detail = f": {model['detail']}" if model.get("detail") else ""
            head += f"\n\n<sub>model review: {model['status']}{detail}</sub>"
        return (head, style_severity(_rows(result), HEADERS), annotated_config(body, result["findings"]),
                json_text(result["raw"]), session)

    run.click(on_review, [text, kind, use_model, state], [summary, table, view, raw, state], api_name="review_config",
              concurrency_id="model")
    return {"input": text, "run": run, "table": table, "view": view, "json": raw}


__all__ = ["annotated_config", "build_config_tab"]

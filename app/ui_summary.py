"""The Summarize tab: incident notes or a report -> a summary for executives or analysts."""

from __future__ import annotations

import gradio as gr

from secfm.app.sessions import Session
from secfm.app.ui_common import UPLOAD_TYPES, json_box, json_text, read_upload, sample, user_errors


def build_summary_tab(backend, state: gr.State) -> dict:
    with gr.Tab("Summarize", id="summarize", elem_id="tab-summarize"):
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                text = gr.Textbox(label="Incident notes, timeline or report", lines=14, max_lines=40,
                                  elem_id="summary-input")
                with gr.Row():
                    audience = gr.Radio(["executive", "analyst"], value="executive", label="Audience",
                                        elem_id="summary-audience")
                    use_model = gr.Checkbox(label="Write it with the model (slow on a CPU)", value=backend.fast_model,
                                            elem_id="summary-use-model")
                with gr.Row():
                    upload = gr.UploadButton("Upload file", file_types=UPLOAD_TYPES, type="filepath",
                                             size="sm", elem_id="summary-upload")
                    load = gr.Button("Load sample", size="sm", elem_id="summary-sample")
                    run = gr.Button("Summarize", variant="primary", elem_id="summary-run")
            with gr.Column(scale=3, min_width=420):
                out = gr.Markdown(label="Summary", elem_id="summary-output", container=True,
                                  buttons=["copy"], min_height=200)
                with gr.Accordion("JSON", open=False):
                    raw = json_box("summary-json")

    upload.upload(read_upload, [upload], [text], queue=False, api_visibility="private")
    load.click(lambda: sample("incident.txt"), None, [text], queue=False, api_visibility="private")

    @user_errors
    def on_summarize(body: str, who: str, model: bool, session: Session, request: gr.Request):
        session.claim(request)
        view = backend.summarize(body, audience=who or "executive", use_model=bool(model))
        session.results["summary"] = view
        return view["markdown"], json_text(view["raw"]), session

    run.click(on_summarize, [text, audience, use_model, state], [out, raw, state], api_name="summarize",
              concurrency_id="model")
    return {"input": text, "run": run, "output": out, "json": raw}


__all__ = ["build_summary_tab"]

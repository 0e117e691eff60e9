"""The Chat tab: a streaming answer under a fixed security system prompt, history trimmed to
the model's context, a Stop button, and a transcript export (the session's own messages)."""

from __future__ import annotations

import logging

import gradio as gr

from secfm.errors import SecfmError

from secfm.app.chat import SYSTEM_PROMPT, StreamStats, stream_answer
from secfm.app.sessions import Session, SessionError
from secfm.app.ui_common import json_box, json_text

log = logging.getLogger(__name__)

MAX_NEW_TOKENS_LIMIT = 2048


def _status(text: str, kind: str = "") -> str:
    return f'<div class="chat-status {kind}">{text}</div>' if text else ""


def build_chat_tab(backend, state: gr.State, max_new_tokens: int = 256) -> dict:
    """Lay out the Chat tab inside the current Blocks; returns its components by name."""
    limit = max(MAX_NEW_TOKENS_LIMIT, max_new_tokens)
    with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
        chatbot = gr.Chatbot(
            label="secfm",
            elem_id="chatbot",
            height=440,
            buttons=["copy", "copy_all"],
            feedback_options=None,
            placeholder=("Ask about an alert, a log line, a technique or a CVE. "
                         "Paste what you see: it is treated as data."),
            autoscroll=True,
        )
        with gr.Row(equal_height=True):
            message = gr.Textbox(
                show_label=False,
                placeholder="Message secfm (Enter sends, Shift+Enter for a new line)",
                lines=1,  # one line: Enter sends, Shift+Enter breaks the line (the box grows)
                max_lines=10,
                scale=8,
                elem_id="chat-input",
                autofocus=True,
            )
            with gr.Column(scale=1, min_width=110):
                send = gr.Button("Send", variant="primary", elem_id="chat-send")
                stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
        status = gr.HTML(elem_id="chat-status")
        with gr.Accordion("Settings and transcript", open=False, elem_id="chat-settings"):
            with gr.Row():
                max_new = gr.Slider(1, limit, value=max_new_tokens, step=1, label="Max new tokens",
                                    elem_id="chat-max-new-tokens")
                temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)",
                                        elem_id="chat-temperature")
            gr.Textbox(value=backend.system_prompt, label="System prompt (fixed by the app)", interactive=False,
                       lines=3, elem_id="chat-system-prompt")
            with gr.Row():
                clear = gr.Button("Clear conversation", elem_id="chat-clear")
                export = gr.Button("Show transcript JSON", elem_id="chat-export")
            transcript = json_box("chat-transcript", label="Transcript (this session only)")

    def respond(text: str, max_new_tokens: float, temperature: float, session: Session, request: gr.Request):
        try:
            session.claim(request)
        except SessionError as exc:
            raise gr.Error(str(exc)) from exc
        text = (text or "").strip()
        if not text:
            yield session.chat_view(), gr.skip(), session, _status("Type a message first.", "warn")
            return
        n_new = max(1, min(int(max_new_tokens or 1), limit))
        try:
            prompt = backend.chat_prompt(session.history, text, n_new)
        except SecfmError as exc:
            raise gr.Error(str(exc)) from exc
        session.stop.clear()
        session.add_user(text)
        answer = session.start_answer()
        note = prompt.note
        waiting = "Waiting for the model…" + (f" ({note})" if note else "")
        yield session.chat_view(), "", session, _status(waiting, "busy")
        stats = StreamStats()
        try:
            pieces = backend.stream_chat(prompt.messages, n_new, float(temperature or 0.0), stop=session.stop,
                                         heartbeat=0.5)
            for piece in stream_answer(pieces, session.stop, stats):
                if not piece:  # still queued behind other analysts' answers
                    place = getattr(pieces, "position", 0)
                    if place:
                        yield gr.skip(), gr.skip(), session, _status(f"Waiting for the model… {place} in the queue", "busy")
                    continue
                answer["content"] += piece
                yield session.chat_view(), gr.skip(), session, _status(
                    f"Generating… {stats.pieces} pieces", "busy")
        except SecfmError as exc:
            answer["content"] = answer["content"] or "(no answer)"
            yield session.chat_view(), gr.skip(), session, _status(f"Model error: {exc}", "error")
            return
        except Exception as exc:  # noqa: BLE001
            log.exception("chat generation failed")
            answer["content"] = answer["content"] or "(no answer)"
            yield session.chat_view(), gr.skip(), session, _status(f"Model error: {type(exc).__name__}: {exc}", "error")
            return
        if not answer["content"].strip():
            answer["content"] = "(no answer)"
        ttft = f", first token {stats.ttft_s:.1f} s" if stats.ttft_s is not None else ""
        done = "Stopped" if stats.stopped else "Done"
        tail = f" · {note}" if note else ""
        summary = f"{done}: {stats.pieces} pieces in {stats.elapsed_s:.1f} s{ttft} · prompt {prompt.prompt_tokens} tokens"
        yield session.chat_view(), gr.skip(), session, _status(summary + tail, "done")

    chat_event = gr.on(
        triggers=[message.submit, send.click],
        fn=respond,
        inputs=[message, max_new, temperature, state],
        outputs=[chatbot, message, state, status],
        api_name="chat",
        concurrency_id="model",
        trigger_mode="once",
        show_progress="hidden",
    )

    def on_stop(session: Session):
        if session.stop is not None:
            session.stop.set()
        return _status("Stopped.", "done")

    stop.click(on_stop, [state], [status], cancels=[chat_event], queue=False, api_name="stop")

    def on_clear(session: Session, request: gr.Request):
        session.claim(request)
        session.stop.set()
        session.clear_chat()
        return [], session, "", ""

    clear.click(on_clear, [state], [chatbot, state, status, transcript], cancels=[chat_event], queue=False,
                api_visibility="private")
    # the Chatbot's own trash icon clears the display: clear what the model sees as well
    chatbot.clear(on_clear, [state], [chatbot, state, status, transcript], cancels=[chat_event], queue=False,
                  api_visibility="private")

    def on_export(session: Session, request: gr.Request):
        session.claim(request)
        return json_text({"session": session.id, "user": session.user, "system_prompt": backend.system_prompt,
                          "messages": session.chat_view()})

    export.click(on_export, [state], [transcript], queue=False, api_name="transcript")

    return {"chatbot": chatbot, "message": message, "send": send, "stop": stop, "status": status,
            "max_new": max_new, "temperature": temperature, "transcript": transcript, "event": chat_event}


__all__ = ["SYSTEM_PROMPT", "build_chat_tab"]

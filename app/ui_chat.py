"""The Chat tab: grounded answers (tool cards and facts first, with their sources as links, then the
model's checked phrasing streaming), follow-ups that keep the conversation's entities, a Stop button,
a button that sends a pasted alert to the Triage tab, and a transcript export (the session's own
messages)."""

from __future__ import annotations

import logging

import gradio as gr

from secfm.app.chat import SYSTEM_PROMPT, grounded_turn, turn_summary
from secfm.app.sessions import Session, SessionError
from secfm.app.ui_common import json_box, json_text
from secfm.errors import SecfmError
from secfm.workflows.chat import MAX_QUESTION_CHARS
from secfm.workflows.chat_schemas import Conversation

log = logging.getLogger(__name__)

MAX_NEW_TOKENS_LIMIT = 2048
#: what the chat keeps in the session (``Session.results``): the conversation's entities, the model switch,
#: the last pasted alert (for the Triage button)
CONVERSATION_KEY = "chat_conversation"
USE_MODEL_KEY = "chat_use_model"
LAST_ALERT_KEY = "chat_last_alert"


def _status(text: str, kind: str = "") -> str:
    return f'<div class="chat-status {kind}">{text}</div>' if text else ""


def build_chat_tab(backend, state: gr.State, max_new_tokens: int = 256) -> dict:
    """Lay out the Chat tab inside the current Blocks; returns its components by name."""
    limit = max(MAX_NEW_TOKENS_LIMIT, max_new_tokens)
    with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
        chatbot = gr.Chatbot(
            label="secfm",
            elem_id="chatbot",
            height=620,
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
        to_triage = gr.Button("Send this alert to the Triage tab", visible=False, size="sm", elem_id="chat-to-triage")
        with gr.Accordion("Settings and transcript", open=False, elem_id="chat-settings"):
            use_model = gr.Checkbox(value=True, label="Let the model phrase the answer (off: the tools' facts only)",
                                    elem_id="chat-use-model")
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
            yield session.chat_view(), gr.skip(), session, _status("Type a message first.", "warn"), gr.skip()
            return
        if len(text) > MAX_QUESTION_CHARS:  # refused before it joins the history; the box keeps it
            yield (session.chat_view(), gr.skip(), session, _status(
                f"Error: the message is {len(text):,} characters; the chat takes at most {MAX_QUESTION_CHARS:,}"
                " at a time (your text is still in the box)", "error"), gr.skip())
            return
        n_new = max(1, min(int(max_new_tokens or 1), limit))
        use_model = bool(session.results.get(USE_MODEL_KEY, True))
        conversation = Conversation.model_validate(session.results.get(CONVERSATION_KEY) or {})
        session.stop.clear()
        session.add_user(text)
        answer = session.start_answer()
        yield session.chat_view(), "", session, _status("Looking it up…", "busy"), gr.update(visible=False)
        final = None
        try:
            for update in grounded_turn(backend.chat_pipeline(), text, conversation, cancel=session.stop,
                                        use_model=use_model, max_new_tokens=n_new, temperature=float(temperature or 0.0)):
                answer["content"] = update.content
                final = update.answer or final
                if session.stop.is_set():
                    break
                yield session.chat_view(), gr.skip(), session, _status(update.status, update.kind), gr.skip()
        except SecfmError as exc:
            answer["content"] = answer["content"] or "(no answer)"
            yield session.chat_view(), gr.skip(), session, _status(f"Error: {exc}", "error"), gr.skip()
            return
        except Exception as exc:  # noqa: BLE001
            log.exception("chat turn failed")
            answer["content"] = answer["content"] or "(no answer)"
            yield session.chat_view(), gr.skip(), session, _status(f"Error: {type(exc).__name__}: {exc}", "error"), gr.skip()
            return
        if not answer["content"].strip():
            answer["content"] = "(no answer)"
        if final is None:  # stopped before the end
            yield session.chat_view(), gr.skip(), session, _status("Stopped.", "done"), gr.skip()
            return
        session.results[CONVERSATION_KEY] = conversation.model_dump(mode="json")
        pasted_alert = final.topic.paste == "alert"
        session.results[LAST_ALERT_KEY] = final.topic.pasted(text) if pasted_alert else None  # without the question
        yield (session.chat_view(), gr.skip(), session, _status(turn_summary(final), "done"),
               gr.update(visible=pasted_alert))

    chat_event = gr.on(
        triggers=[message.submit, send.click],
        fn=respond,
        inputs=[message, max_new, temperature, state],
        outputs=[chatbot, message, state, status, to_triage],
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
        session.results.pop(CONVERSATION_KEY, None)
        session.results.pop(LAST_ALERT_KEY, None)
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

    def on_use_model(value: bool, session: Session, request: gr.Request):
        session.claim(request)
        session.results[USE_MODEL_KEY] = bool(value)
        return session

    use_model.change(on_use_model, [use_model, state], [state], queue=False, api_visibility="private")

    return {"chatbot": chatbot, "message": message, "send": send, "stop": stop, "status": status,
            "max_new": max_new, "temperature": temperature, "transcript": transcript, "event": chat_event,
            "to_triage": to_triage, "use_model": use_model}


def wire_chat_to_triage(chat: dict, triage: dict, tabs: gr.Tabs, state: gr.State) -> None:
    """The chat's "send to triage" button: the pasted alert goes into the Triage tab's input."""

    def send(session: Session, request: gr.Request):
        session.claim(request)
        text = session.results.get(LAST_ALERT_KEY)
        if not text:
            return gr.skip(), gr.skip()
        return text, gr.Tabs(selected="triage")

    chat["to_triage"].click(send, [state], [triage["input"], tabs], queue=False, api_visibility="private")


__all__ = ["SYSTEM_PROMPT", "build_chat_tab", "wire_chat_to_triage"]

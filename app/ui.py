"""The analyst app: Gradio Blocks with Chat, Triage, Summarize, Config review and ATT&CK tabs.

``build_ui(backend)`` lays the app out; ``launch_app(...)`` builds the engine, the queue and
the server (``secfm app`` calls it). Binding beyond loopback requires ``auth``.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from secfm.errors import SecfmError
from secfm.serving import is_loopback  # the one loopback check

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
CSS_PATH = ASSETS / "app.css"
TITLE = "secfm · analyst workbench"
DEFAULT_PORT = 7860
DEFAULT_CONCURRENCY = 32  # events at once across sessions; the engine batches their model calls and queues the rest
DEFAULT_QUEUE_SIZE = 64
DEFAULT_MAX_NEW_TOKENS = 256
MAX_FILE_SIZE = "5mb"  # Gradio's own limit on uploads
# Every request's body, counted as it streams in (uploads included): above the upload limit and
# above the largest paste the tabs take (200,000 characters, JSON-escaped), far below what would hurt.
MAX_BODY_BYTES = 8 * 2**20


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` (the password may contain ':') -> (user, password); None stays None."""
    if value is None or value == "":
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SecfmError("--auth takes USER:PASS (both non-empty)")
    return user, password


def body_limit_message(max_bytes: int) -> str:
    return (f"this request is over {max_bytes / 2**20:g} MB and was refused before it was read; the app takes up to "
            "200,000 characters of text (or a 2 MB file) at a time: your text is still in the box, send it in parts")


def app_kwargs(max_body_bytes: int = MAX_BODY_BYTES) -> dict:
    """What the app's FastAPI server is built with: the body limit (a 413 with a message the page
    shows as a toast; the oversized body is dropped as it arrives, never parsed or kept)."""
    from starlette.middleware import Middleware

    from secfm.app.api import BodyLimit

    limit = Middleware(BodyLimit, max_bytes=int(max_body_bytes), message=body_limit_message(max_body_bytes), drain=True)
    return {"middleware": [limit]}


def check_exposure(host: str, auth) -> None:
    """Refuse to serve beyond loopback without authentication."""
    if not is_loopback(host) and not auth:
        raise SecfmError(
            f"binding to {host} exposes the app beyond this machine: pass --auth USER:PASS "
            "(or bind to 127.0.0.1)")


def theme():
    """A theme with system fonts only (nothing is fetched from the internet)."""
    return gr.themes.Default(
        primary_hue="blue",
        neutral_hue="slate",
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"],
    )


def launch_options() -> dict:
    """Theme and CSS for ``Blocks.launch`` (Gradio 6 takes them there, not in ``Blocks``)."""
    return {"theme": theme(), "css_paths": [str(CSS_PATH)] if CSS_PATH.is_file() else None}


def header_html(backend, user: str | None = None) -> str:
    """The page header: the brand, the model or endpoint behind the app, the signed-in user."""
    who = f'<div class="who">signed in as <b>{html.escape(user)}</b></div>' if user else ""
    return (f'<div class="app-header"><div class="brand"><span class="logo">◆</span> secfm '
            f'<span class="sub">analyst workbench</span></div>{backend.info_html()}{who}</div>')


def build_ui(backend, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
    """The app's Blocks for ``backend`` (an :class:`secfm.app.backend.Backend` or an engine)."""
    from secfm.app.backend import Backend
    from secfm.app.sessions import new_state
    from secfm.app.ui_attack import build_attack_tab
    from secfm.app.ui_chat import build_chat_tab, wire_chat_to_triage
    from secfm.app.ui_config import build_config_tab
    from secfm.app.ui_cve import build_cve_tab
    from secfm.app.ui_summary import build_summary_tab
    from secfm.app.ui_triage import build_triage_tab

    if not isinstance(backend, Backend):
        backend = Backend(backend)

    with gr.Blocks(title=TITLE, analytics_enabled=False, fill_width=True) as demo:
        state = new_state()
        header = gr.HTML(header_html(backend), elem_id="app-header")
        with gr.Tabs(elem_id="tabs") as tabs:
            chat = build_chat_tab(backend, state, max_new_tokens=max_new_tokens)
            triage = build_triage_tab(backend, state)
            build_summary_tab(backend, state)
            build_config_tab(backend, state)
            build_attack_tab(backend, state)
            build_cve_tab(backend, state)

        wire_chat_to_triage(chat, triage, tabs, state)

        def on_load(request: gr.Request):
            return header_html(backend, getattr(request, "username", None))

        demo.load(on_load, None, [header], queue=False, api_visibility="private")
    demo.secfm_backend = backend  # for tests and the benchmark
    return demo


def launch_app(
    model: str | None = None,
    endpoint: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    auth: tuple[str, str] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    engine: str = "transformers",
    adapter: str | None = None,
    context_tokens: int | None = None,
    quantization: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    max_body_bytes: int = MAX_BODY_BYTES,
    backend=None,
    block: bool = True,
    quiet: bool = False,
    warm: bool = True,
):
    """Build the engine (``model`` in process, or ``endpoint``) and serve the app.

    ``auth`` is required when ``host`` is not a loopback address. ``concurrency`` is how many
    model calls (chat, triage, summaries, ...) run at once across all sessions; more wait in a
    queue of ``queue_size``. ``context_tokens`` caps the context the chat uses (default: the
    model's). ``quantization`` (``int8-dynamic``) quantizes the in-process engines' weights. ``warm`` loads the knowledge base and retrieval store in the background so the
    first triage is not slow. A request body over ``max_body_bytes`` (counted as it streams in) gets
    a 413 whose message the page shows; the text stays in its box. ``block=False`` returns the running Blocks (``demo.close()``
    stops it; ``demo.local_url`` is its address).
    """
    from secfm.app.backend import Backend

    check_exposure(host, auth)
    if concurrency < 1:
        raise SecfmError("--concurrency must be at least 1")
    if model and endpoint and backend is None:
        log.info("using --endpoint %s; --model %s names the served model", endpoint, model)
    if backend is None:
        backend = Backend.from_options(model, endpoint, engine=engine, adapter=adapter, context_tokens=context_tokens,
                                       quantization=quantization)
    if warm:
        backend.warm_up_in_background()
    demo = build_ui(backend, max_new_tokens=max_new_tokens)
    demo.queue(default_concurrency_limit=int(concurrency), max_size=int(queue_size))
    try:
        demo.launch(
            server_name=host,
            server_port=int(port),
            auth=[tuple(auth)] if auth else None,
            auth_message="secfm: sign in to continue" if auth else None,
            prevent_thread_lock=not block,
            show_error=True,
            quiet=quiet,
            ssr_mode=False,
            max_file_size=MAX_FILE_SIZE,
            app_kwargs=app_kwargs(max_body_bytes),
            footer_links=["api", "gradio"],
            run_history=False,  # alerts and reports must not linger in browser storage
            **launch_options(),
        )
    except OSError as exc:
        raise SecfmError(f"cannot serve on {host}:{port}: {exc}") from exc
    return demo


__all__ = ["build_ui", "check_exposure", "is_loopback", "launch_app", "launch_options", "parse_auth"]

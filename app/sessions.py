"""Per-analyst session state: nothing one browser session does is visible to another.

Gradio keeps one copy of a ``gr.State`` value per browser session (per ``session_hash``) on
the server. :class:`Session` is that value: the chat history the model sees, the last
results of each tab (for downloads) and a private folder for files offered for download.
Nothing is kept in module globals, so two analysts never share a history, a result or a file.

A session is claimed on first use: it takes a fresh random id and, when the app runs with
authentication, the user name of the request. A later request from another user name for the
same session is refused (defence in depth: Gradio already binds sessions to the browser).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: how long an idle session lives on the server (seconds)
SESSION_TTL_S = 8 * 3600

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class SessionError(Exception):
    """A request that does not belong to the session it names."""


@dataclass
class Session:
    """One analyst's browser session (a ``gr.State`` value)."""

    id: str | None = None
    user: str | None = None
    created: float = 0.0
    history: list[dict[str, str]] = field(default_factory=list)  # user/assistant turns, no system
    results: dict[str, Any] = field(default_factory=dict)  # tab name -> last result (plain JSON)
    stop: threading.Event | None = field(default=None, repr=False)
    _dir: str | None = field(default=None, repr=False)

    # -- ownership -------------------------------------------------------------------------
    def claim(self, request: Any = None) -> Session:
        """Bind the session to this request's user on first use; refuse another user later."""
        user = getattr(request, "username", None) if request is not None else None
        if self.id is None:
            self.id = uuid.uuid4().hex
            self.user = user
            self.created = time.time()
            self.stop = threading.Event()
        elif self.user is not None and user != self.user:
            raise SessionError("this session belongs to another user")
        if self.stop is None:
            self.stop = threading.Event()
        return self

    # -- chat ----------------------------------------------------------------------------------
    def add_user(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})

    def start_answer(self) -> dict[str, str]:
        msg = {"role": "assistant", "content": ""}
        self.history.append(msg)
        return msg

    def clear_chat(self) -> None:
        self.history.clear()

    def chat_view(self) -> list[dict[str, str]]:
        """The history as the Chatbot shows it (copies: the display never aliases the state)."""
        return [{"role": m["role"], "content": m["content"]} for m in self.history]

    # -- files ---------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        """A private folder for this session's downloads (created on demand, removed on close)."""
        if self._dir is None or not Path(self._dir).is_dir():
            self._dir = tempfile.mkdtemp(prefix=f"secfm-app-{(self.id or 'anon')[:12]}-")
        return Path(self._dir)

    def write_json(self, name: str, data: Any) -> str:
        """Write ``data`` as pretty JSON into the session folder; returns the path."""
        path = self.folder / (_SAFE_NAME.sub("_", name) or "result.json")
        text = data if isinstance(data, str) else json.dumps(data, indent=2, ensure_ascii=False, default=str)
        path.write_text(text, encoding="utf-8")
        return str(path)

    def close(self) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def close_session(session: Session | None) -> None:
    """``gr.State(delete_callback=...)``: drop the session's files when Gradio forgets it."""
    if isinstance(session, Session):
        session.close()


def new_state():
    """The ``gr.State`` holding a :class:`Session` (one per browser session)."""
    import gradio as gr

    return gr.State(Session(), time_to_live=SESSION_TTL_S, delete_callback=close_session)


__all__ = ["SESSION_TTL_S", "Session", "SessionError", "close_session", "new_state"]

"""Helpers shared by the tabs: reading uploads, turning errors into toasts, small renderers."""

from __future__ import annotations

import functools
import html
import json
import logging
from pathlib import Path
from typing import Any

from secfm.app.sessions import SessionError
from secfm.errors import SecfmError

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
SAMPLES = ASSETS / "samples"
UPLOAD_TYPES = [".txt", ".log", ".json", ".jsonl", ".ndjson", ".csv", ".md", ".conf", ".cfg", ".ini", ".yaml",
                ".yml", ".xml", ".config"]
MAX_UPLOAD_BYTES = 2 * 1024 * 1024

SEVERITY_COLORS = {
    "critical": ("#7f1d1d", "#fecaca"),
    "high": ("#9a3412", "#fed7aa"),
    "medium": ("#854d0e", "#fef08a"),
    "low": ("#1e3a8a", "#bfdbfe"),
    "info": ("#374151", "#e5e7eb"),
    "informational": ("#374151", "#e5e7eb"),
}


def sample(name: str) -> str:
    """A sample input shipped with the app (alerts, a report, a config)."""
    path = SAMPLES / name
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def read_upload(path: str | None) -> str:
    """The text of an uploaded file (UTF-8, at most 2 MB)."""
    import gradio as gr

    if not path:
        return gr.skip()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise gr.Error(f"cannot read the upload: {exc.strerror}") from exc
    if len(data) > MAX_UPLOAD_BYTES:
        limit = MAX_UPLOAD_BYTES // 2**20
        raise gr.Error(f"{p.name} is {len(data) / 1e6:.1f} MB; the app reads files up to {limit} MB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise gr.Error(f"{p.name} is not UTF-8 text (byte {exc.start})") from exc


def user_errors(fn):
    """Show SecfmError (bad input, missing model or head) as a toast; log anything else."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (SecfmError, SessionError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001
            log.exception("app handler %s failed", getattr(fn, "__name__", fn))
            raise gr.Error(f"internal error: {type(exc).__name__}: {exc}") from exc

    return wrapper


def json_box(elem_id: str, label: str | None = None):
    """A read-only JSON view with copy and download buttons."""
    import gradio as gr

    return gr.Code(language="json", label=label, max_lines=28, wrap_lines=True, buttons=["copy", "download"],
                   interactive=False, elem_id=elem_id)


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def badge(severity: str) -> str:
    fg, bg = SEVERITY_COLORS.get((severity or "").lower(), ("#374151", "#e5e7eb"))
    return (f'<span class="sev-badge" style="color:{fg};background:{bg}">'
            f"{html.escape((severity or 'unknown').upper())}</span>")


def style_severity(rows: list[list], headers: list[str], column: str = "Severity"):
    """A pandas Styler colouring the severity column (the Dataframe shows it read-only)."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=headers)
    if not rows or column not in headers:
        return df

    def colour(v):
        fg, bg = SEVERITY_COLORS.get(str(v).lower(), ("#374151", "#e5e7eb"))
        return f"color: {fg}; background-color: {bg}; font-weight: 600"

    return df.style.map(colour, subset=[column])


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


__all__ = ["SAMPLES", "UPLOAD_TYPES", "badge", "esc", "json_box", "json_text", "read_upload", "sample", "style_severity",
           "user_errors"]

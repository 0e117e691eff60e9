"""Reading what the user gives (text, files, stdin) with one clear error on bad input."""

from __future__ import annotations

import sys
from pathlib import Path

from secfm.errors import SecfmError


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SecfmError(f"{where} is not valid UTF-8 (byte {exc.start}, line {line})") from exc


def check_text(text: str, what: str = "input") -> str:
    """Reject text that arrived with undecodable bytes (surrogate escapes from argv) or is empty."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SecfmError(f"{what} is not valid UTF-8 (character {exc.start})") from exc
    if not text.strip():
        raise SecfmError(f"{what} is empty")
    return text


def read_file_text(path: str | Path) -> str:
    path = Path(path).expanduser()
    if not path.exists():
        raise SecfmError(f"file not found: {path}")
    if path.is_dir():
        raise SecfmError(f"{path} is a folder, not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecfmError(f"cannot read {path}: {exc.strerror}") from exc
    return check_text(decode_utf8(data, str(path)), str(path))


def text_or_file(value: str, what: str = "input") -> str:
    """A literal text, ``-`` for standard input, ``@PATH`` for a file, or an existing file path."""
    if value == "-":
        return check_text(decode_utf8(sys.stdin.buffer.read(), "standard input"), "standard input")
    if value.startswith("@"):
        return read_file_text(value[1:])
    candidate = Path(value).expanduser()
    if len(value) < 4096 and "\n" not in value and candidate.is_file():
        return read_file_text(candidate)
    return check_text(value, what)


def jsonl_rows(path: str | Path, text: str | None = None):
    """``(line number, parsed value)`` for each non-blank line of a JSONL file (``text``: its
    content when already read); one clear error naming the file and line that is not JSON."""
    import json

    if text is None:
        text = read_file_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except ValueError as exc:
            raise SecfmError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from exc

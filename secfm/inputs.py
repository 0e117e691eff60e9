"""Reading what the user gives (text, files, stdin) with one clear error on bad input."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


def existing_file(value: str) -> Path | None:
    """``value`` as the path of an existing file, or None when it is not one (a literal text that
    is too long for a file name, holds a newline or NUL, or names nothing, is not an error)."""
    if not value or "\n" in value or "\x00" in value or len(value.encode("utf-8", "surrogateescape")) > 4096:
        return None
    try:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_file() else None
    except (OSError, ValueError):  # ENAMETOOLONG for a component over 255 bytes, and the like
        return None


def text_or_file(value: str, what: str = "input") -> str:
    """A literal text, ``-`` for standard input, ``@PATH`` for a file, or an existing file path."""
    if value == "-":
        return check_text(decode_utf8(sys.stdin.buffer.read(), "standard input"), "standard input")
    if value.startswith("@"):
        return read_file_text(value[1:])
    candidate = existing_file(value)
    if candidate is not None:
        return read_file_text(candidate)
    return check_text(value, what)


#: deeper JSON than this is refused with one line (Python's parser would overflow its stack near 1,000)
MAX_JSON_DEPTH = 200


def load_json(text: str, where: str):
    """``json.loads`` with one clear error for bad JSON and for nesting deeper than
    :data:`MAX_JSON_DEPTH` (never a ``RecursionError``)."""
    value, problem, line = _parse_json(text)
    if problem:
        raise SecfmError(f"{where}{f' line {line}' if line else ''}: {problem}")
    return value


def _parse_json(text: str):
    """(value, problem, line of the problem): problem is '' when the text is JSON."""
    import json

    depth = _max_depth(text)
    if depth > MAX_JSON_DEPTH:
        return None, f"JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})", 0
    try:
        return json.loads(text), "", 0
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg}, column {exc.colno})", exc.lineno
    except RecursionError:  # pragma: no cover - the depth check comes first
        return None, "JSON nested too deeply", 0


def _max_depth(text: str) -> int:
    """The deepest bracket nesting outside strings (an upper bound is enough; linear)."""
    import re

    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    depth = best = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*+"|[\[{]|[\]}]', text):
        ch = m.group(0)
        if ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return best


@dataclass(frozen=True)
class BadLine:
    """A line of a JSONL input that was skipped (``--skip-bad``)."""

    where: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.where} line {self.line}: {self.reason}"


_REPORTED: set[BadLine] = set()


def report_bad_line(bad: BadLine) -> None:
    """Tell the user about a skipped line (one warning on standard error, once per process)."""
    if bad in _REPORTED:
        return
    _REPORTED.add(bad)
    logging.getLogger("secfm.inputs").warning("skipped %s", bad)


SKIP_BAD_HINT = "pass --skip-bad to skip such lines"


def jsonl_rows(path: str | Path, text: str | None = None, *, skip_bad: bool = False,
               bad_lines: list[BadLine] | None = None, hint: str | None = SKIP_BAD_HINT):
    """``(line number, parsed value)`` for each non-blank line of a JSONL file (``text``: its
    content when already read); one clear error naming the file and line that is not JSON (and
    ``hint``, what the user can do: by default the ``--skip-bad`` option; None for files the
    user does not pass, such as the shipped gold sets), or, with ``skip_bad``, that line reported
    (:func:`report_bad_line`, and appended to ``bad_lines``) and the good lines still read."""
    if text is None:
        text = read_file_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        value, problem, _ = _parse_json(line)
        if not problem:
            yield lineno, value
            continue
        if not skip_bad:
            raise SecfmError(f"{path} line {lineno}: {problem}" + (f"; {hint}" if hint else ""))
        bad = BadLine(str(path), lineno, problem)
        report_bad_line(bad)
        if bad_lines is not None:
            bad_lines.append(bad)


def labelled_set(path: str | Path) -> tuple[dict, list[dict]]:
    """``(meta, rows)`` of a derived labelled JSONL set whose ``{"_meta": {...}}`` line names its
    sources, commits and licences (the gitleaks and scanner-fixture vectors)."""
    meta: dict = {}
    rows: list[dict] = []
    for _, row in jsonl_rows(path):
        if "_meta" in row:
            meta = row["_meta"]
        else:
            rows.append(row)
    return meta, rows


def id_list_pieces(value: str | Iterable[str] | None, what: str) -> Iterator[tuple[str, bool]]:
    """The pieces of an id-list option (``--exclude-sources G0016,S0154``, ``--exclude-cves @FILE``):
    ``(token, False)`` for each comma-, semicolon- or space-separated token given, and
    ``(text, True)`` for the text of each ``@FILE`` with its ``#`` comments removed."""
    import re

    if value is None:
        return
    for item in [value] if isinstance(value, str) else list(value):
        item = item.strip()
        if item.startswith("@"):
            path = Path(item[1:]).expanduser()
            if not path.is_file():
                raise SecfmError(f"{what} file not found: {path}")
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            yield "\n".join(line.split("#", 1)[0] for line in lines), True
        else:
            yield from ((token, False) for token in re.split(r"[\s,;]+", item) if token)

"""Reading alerts: JSON, JSONL, CSV, Zeek TSV and raw log lines into flat records.

Accepted input (``fmt="auto"`` tells them apart):

* JSON: one object, an array of objects, ``{"Records": [...]}`` (a CloudTrail file) or
  ``{"alerts"|"events"|"items"|"hits": [...]}``;
* JSONL: one object per line (Suricata EVE, Windows events exported as JSON, CloudTrail records,
  Zeek JSON logs...);
* CSV with a header row;
* Zeek TSV logs (``#separator`` / ``#fields`` header);
* raw lines: syslog (RFC 3164 and 5424, with sshd/sudo details pulled out), auditd records
  (``type=SYSCALL msg=audit(...)``, also when forwarded by syslog), or any text line.

Each record becomes an :class:`Alert` with its flattened fields (``a.b.c`` paths, values as
strings), the exact text it came from, the input line it starts on, and the family it belongs
to (``windows``, ``cloudtrail``, ``suricata``, ``zeek``, ``syslog``, ``auditd``, ``json``, ``csv``,
``line``). The records of one auditd event (SYSCALL, PATH, EXECVE... with the same
``msg=audit(time:serial)``) become one alert; a second record's fields that repeat a name are kept
as ``TYPE.name`` (``PATH.name``, ``PATH.1.name``). Malformed input raises :class:`SecfmError` naming the line that failed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from secfm.errors import SecfmError

FORMATS = ("auto", "json", "jsonl", "csv", "zeek", "lines")
MAX_FIELDS = 400
MAX_VALUE = 4000


@dataclass
class Alert:
    index: int
    line: int
    family: str
    fields: dict[str, str]
    raw: str
    _lower: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _normalized: tuple[Alert, dict[str, str]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in self.fields:
            leaf = key.rsplit(".", 1)[-1].lower()
            self._lower.setdefault(leaf, []).append(key)
            self._lower.setdefault(key.lower(), []).append(key)

    # -- lookups --------------------------------------------------------------------------------
    def key(self, *names: str) -> str | None:
        """The first field whose full path or last component matches one of ``names``
        (case-insensitive)."""
        for name in names:
            keys = self._lower.get(name.lower())
            if keys:
                return keys[0]
        return None

    def get(self, *names: str) -> str | None:
        key = self.key(*names)
        return self.fields[key] if key is not None else None

    def number(self, *names: str) -> float | None:
        value = self.get(*names)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def text(self) -> str:
        """All values, one per line (what keyword signatures look at)."""
        return "\n".join(self.fields.values())

    def normalized(self) -> tuple[Alert, dict[str, str]]:
        """This alert with field names and values normalised for matching
        (:func:`secfm.text.normalize.fold`: invisible and tag characters gone, NFKC, homoglyphs
        folded), and the map from its field names back to this alert's; computed once."""
        if self._normalized is None:
            from secfm.text.normalize import fold

            fields: dict[str, str] = {}
            back: dict[str, str] = {}
            for key, value in self.fields.items():
                norm_key = fold(key)
                if norm_key not in fields:
                    fields[norm_key] = fold(value)
                    back[norm_key] = key
            view = Alert(self.index, self.line, self.family, fields, fold(self.raw))
            view._normalized = (view, {k: k for k in fields})
            self._normalized = (view, back)
        return self._normalized

    def value_in_input(self, key: str, value: str) -> bool:
        """Whether ``key`` holds ``value`` and the value is written in the record's text."""
        if self.fields.get(key) != value:
            return False
        if value in self.raw:
            return True
        return json.dumps(value)[1:-1] in self.raw


# --------------------------------------------------------------------------------------------
# flattening and families
# --------------------------------------------------------------------------------------------
MAX_DEPTH = 24  # deeper parts of a record are kept as one JSON-text field


def flatten(obj: Any, prefix: str = "", out: dict[str, str] | None = None, depth: int = 0) -> dict[str, str]:
    out = {} if out is None else out
    if len(out) >= MAX_FIELDS:
        return out
    if isinstance(obj, (dict, list)) and depth >= MAX_DEPTH:
        out[prefix or "value"] = json.dumps(obj, ensure_ascii=False)[:MAX_VALUE]
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            out[prefix or "value"] = ", ".join(_scalar(v) for v in obj)[:MAX_VALUE]
        else:
            for i, v in enumerate(obj):
                flatten(v, f"{prefix}.{i}" if prefix else str(i), out, depth + 1)
    else:
        out[prefix or "value"] = _scalar(obj)[:MAX_VALUE]
    return out


def _scalar(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def family_of(fields: dict[str, str]) -> str:
    keys = {k.lower() for k in fields}
    leaves = {k.rsplit(".", 1)[-1].lower() for k in fields}
    if "eventsource" in leaves and "eventname" in leaves:
        return "cloudtrail"
    if "event_type" in leaves and ({"src_ip", "dest_ip", "flow_id"} & leaves):
        return "suricata"
    if {"eventid", "eventcode"} & leaves or any(k.startswith(("winlog.", "event.system.")) for k in keys):
        return "windows"
    if "_path" in leaves or "id.orig_h" in keys or ("uid" in leaves and "ts" in leaves):
        return "zeek"
    return "json"


# --------------------------------------------------------------------------------------------
# syslog
# --------------------------------------------------------------------------------------------
_RFC5424 = re.compile(r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\S+) (?P<msgid>\S+) (?P<sd>-|(?:\[[^\]]*\])+) ?(?P<msg>.*)$")
_RFC3164 = re.compile(
    r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    r"(?P<host>\S+) (?P<tag>[^:\[\s]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)$"
)
_SSH_FAILED = re.compile(r"(?P<result>Failed|Accepted) (?P<method>password|publickey|keyboard-interactive/pam|none) for (?:(?P<invalid>invalid user) )?(?P<user>\S+) from (?P<src_ip>\S+) port (?P<src_port>\d+)")
_SSH_INVALID = re.compile(r"Invalid user (?P<user>\S*) from (?P<src_ip>\S+)")  # ssh_result keeps the words as written
_SUDO = re.compile(r"^\s*(?P<user>\S+) : (?:(?P<problem>[^;]+) ; )?TTY=(?P<tty>\S+) ; PWD=(?P<pwd>\S+) ; USER=(?P<target_user>\S+) ; COMMAND=(?P<command>.*)$")
_KV = re.compile(r"(?<![\w.])(?P<k>[A-Za-z_][\w.\-]{0,40})=(?P<v>\"[^\"]*\"|'[^']*'|\S+)")


def parse_syslog(line: str) -> dict[str, str] | None:
    m = _RFC5424.match(line)
    if m:
        fields = {"timestamp": m["ts"], "host": m["host"], "program": m["app"], "pid": m["pid"], "msgid": m["msgid"], "message": m["msg"]}
        pri = int(m["pri"])
    else:
        m = _RFC3164.match(line)
        if not m:
            return None
        fields = {"timestamp": m["ts"], "host": m["host"], "program": m["tag"], "message": m["msg"]}
        if m["pid"]:
            fields["pid"] = m["pid"]
        pri = int(m["pri"]) if m["pri"] else None
    if pri is not None:
        fields["facility"] = str(pri // 8)
        fields["syslog_severity"] = str(pri % 8)
    msg = fields["message"]
    program = fields["program"].lower()
    if program.startswith("sshd"):
        if mm := _SSH_FAILED.search(msg):
            fields.update({"ssh_result": mm["result"], "auth_method": mm["method"], "user": mm["user"],
                           "src_ip": mm["src_ip"], "src_port": mm["src_port"]})
            if mm["invalid"]:
                fields["invalid_user"] = "true"
        elif mm := _SSH_INVALID.search(msg):
            fields.update({"ssh_result": "Invalid user", "user": mm["user"], "src_ip": mm["src_ip"], "invalid_user": "true"})
    elif program == "sudo" and (mm := _SUDO.match(msg)):
        fields.update({k: v for k, v in mm.groupdict().items() if v})
    for kv in _KV.finditer(msg):
        key = kv["k"]
        if key not in fields:
            fields[key] = kv["v"].strip("\"'")
    return {k: v for k, v in fields.items() if v not in (None, "-")}


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------
def _clip(line: str, n: int = 80) -> str:
    line = line.strip()
    return line if len(line) <= n else line[: n - 3] + "..."


def _json_records(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in ("Records", "records", "alerts", "events", "items", "hits"):
            inner = value.get(key)
            if isinstance(inner, list) and inner and all(isinstance(v, dict) for v in inner):
                return inner
        return [value]
    raise SecfmError("JSON input must be an object or an array of objects")


def _record_lines(text: str, records: list[Any]) -> list[int]:
    """Best-effort first line of each record of a JSON document (for messages and evidence)."""
    lines = []
    pos = 0
    for rec in records:
        probe = None
        if isinstance(rec, dict) and rec:
            k, v = next(iter(rec.items()))
            probe = json.dumps(k)
        found = text.find(probe, pos) if probe else -1
        if found == -1:
            lines.append(text.count("\n", 0, pos) + 1)
        else:
            lines.append(text.count("\n", 0, found) + 1)
            pos = found + 1
    return lines


def _from_object(index: int, line: int, obj: Any, raw: str, where: str) -> Alert:
    if isinstance(obj, str):
        return _from_line(index, line, obj)
    if not isinstance(obj, dict):
        raise SecfmError(f"{where} line {line}: an alert must be a JSON object, not {type(obj).__name__}")
    if not obj:
        raise SecfmError(f"{where} line {line}: empty JSON object")
    fields = flatten(obj)
    return Alert(index, line, family_of(fields), fields, raw)


_AUDIT = re.compile(r"(?:^|\s)(?:node=\S+ )?type=(?P<type>[A-Z_]+|UNKNOWN\[\d+\]) msg=audit\((?P<id>\d+(?:\.\d+)?:\d+)\):\s?(?P<body>.*)$")
_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")
_HEX_FIELDS = re.compile(r"^(proctitle|a\d+|cmd|data)$")


def _audit_value(key: str, value: str) -> str:
    """auditd writes a value with spaces or odd bytes as hex (proctitle, EXECVE arguments): decode it."""
    if value.startswith('"') or not _HEX_FIELDS.match(key) or len(value) < 4 or not _HEX.match(value):
        return value.strip("\"'")
    try:
        decoded = bytes.fromhex(value).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return value
    return decoded.replace("\x00", " ").strip() if decoded.replace("\x00", "").isprintable() else value


def parse_audit(text: str) -> tuple[str, str, dict[str, str]] | None:
    """(record type, event id ``ts:serial``, fields) of one auditd record line, else None."""
    m = _AUDIT.search(text)
    if not m:
        return None
    fields = {"type": m["type"]}
    for kv in _KV.finditer(m["body"].replace("\x1d", " ")):
        fields.setdefault(kv["k"], _audit_value(kv["k"], kv["v"]))
    return m["type"], m["id"], fields


def _merge_audit(alert: Alert, record_type: str, fields: dict[str, str], text: str) -> None:
    """Add one more record of the same auditd event (SYSCALL, PATH, EXECVE, CWD...) to its alert."""
    n = 0
    prefix = record_type
    while any(k.startswith(prefix + ".") for k in alert.fields):
        n += 1
        prefix = f"{record_type}.{n}"
    for k, v in fields.items():
        key = k if k not in alert.fields else f"{prefix}.{k}"
        alert.fields[key] = v
        leaf = key.rsplit(".", 1)[-1].lower()
        alert._lower.setdefault(leaf, []).append(key)
        alert._lower.setdefault(key.lower(), []).append(key)
    alert.raw += "\n" + text


def _from_line(index: int, line: int, text: str) -> Alert:
    audit = parse_audit(text)
    if audit is not None:
        fields = dict(audit[2])
        head = parse_syslog(text)
        if head is not None:  # an audit record forwarded by syslog (audispd, kernel: audit:)
            for k in ("timestamp", "host", "program"):
                if k in head:
                    fields.setdefault(k, head[k])
        fields["audit_id"] = audit[1]
        return Alert(index, line, "auditd", fields, text)
    fields = parse_syslog(text)
    if fields is not None:
        return Alert(index, line, "syslog", fields, text)
    fields = {"message": text}
    for kv in _KV.finditer(text):
        fields.setdefault(kv["k"], kv["v"].strip("\"'"))
    return Alert(index, line, "line", fields, text)


def _json_stream(text: str) -> list[tuple[Any, int, str]] | None:
    """Concatenated JSON documents (what EVTX dumpers print: one pretty-printed object after
    another): [(value, first line, its text)], or None when the text is not only that."""
    from secfm.inputs import _parse_json as parse

    decoder = json.JSONDecoder()
    out = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            _, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            return None
        value, problem, _ = parse(text[pos:end])  # the depth limit of every JSON input
        if problem:
            return None
        out.append((value, text.count("\n", 0, pos) + 1, text[pos:end]))
        pos = end
    return out if len(out) > 1 else None


def _parse_json(text: str, where: str, skip_bad: bool = False) -> list[Alert]:
    from secfm.inputs import _parse_json as parse

    value, problem, lineno = parse(text)
    if problem and "Extra data" in problem:
        stream = _json_stream(text)
        if stream is not None:
            alerts = []
            for value, line, raw in stream:
                for rec in _json_records(value):
                    alerts.append(_from_object(len(alerts), line, rec, raw if not isinstance(value, list) else json.dumps(rec), where))
            return alerts
        if any(ln.strip() and not ln.lstrip().startswith(("{", "[", "}", "]", '"')) for ln in text.splitlines()[1:]):
            return _parse_lines(text, where, skip_bad)  # JSON lines mixed with raw log lines
    if problem:
        lines = text.splitlines()
        bad = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
        raise SecfmError(f"{where}{f' line {lineno}' if lineno else ''}: {problem}" + (f": {_clip(bad)}" if bad else ""))
    records = _json_records(value)
    lines = _record_lines(text, records)
    alerts = []
    for i, (rec, line) in enumerate(zip(records, lines)):
        raw = json.dumps(rec, ensure_ascii=False) if not isinstance(rec, str) else rec
        # keep the original text when the record sits on its own lines
        alerts.append(_from_object(i, line, rec, text if len(records) == 1 else raw, where))
    return alerts


def _parse_jsonl(text: str, where: str, skip_bad: bool = False) -> list[Alert]:
    from secfm.inputs import jsonl_rows

    alerts = []
    lines = text.splitlines()
    for n, obj in jsonl_rows(where, text, skip_bad=skip_bad):
        alerts.append(_from_object(len(alerts), n, obj, lines[n - 1], where))
    return alerts


def _parse_csv(text: str, where: str, skip_bad: bool = False) -> list[Alert]:
    reader = csv.reader(io.StringIO(text))
    text_lines = text.splitlines()
    rows = list(_csv_rows(reader, where))
    if not rows:
        raise SecfmError(f"{where}: empty CSV")
    (header_line, header), body = rows[0], rows[1:]
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or not all(header):
        raise SecfmError(f"{where} line {header_line}: the CSV header needs unique, non-empty column names")
    alerts = []
    for line, row in body:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise SecfmError(f"{where} line {line}: {len(row)} columns where the header has {len(header)}")
        fields = {h: v for h, v in zip(header, row) if v != ""}
        raw = text_lines[line - 1] if line - 1 < len(text_lines) else ",".join(row)
        alerts.append(Alert(len(alerts), line, "csv" if family_of(fields) == "json" else family_of(fields), fields, raw))
    return alerts


def _csv_rows(reader, where: str) -> Iterable[tuple[int, list[str]]]:
    try:
        line = 1
        for row in reader:
            yield line, row
            line = reader.line_num + 1
    except csv.Error as exc:
        raise SecfmError(f"{where} line {reader.line_num}: malformed CSV ({exc})") from exc


# a log line, a CSV cell or a command line can be long; the csv module refuses fields over 128 KiB
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


_ZEEK_SEPARATOR = re.compile(r"(?:\\x[0-9A-Fa-f]{2})+|[^\\\s]")


def _zeek_separator(line: str, n: int, where: str) -> str:
    """``#separator \\x09`` (hex escapes, as Zeek writes it) or a literal character."""
    value = line[len("#separator"):].strip()
    if not value:
        return "\t"
    m = _ZEEK_SEPARATOR.fullmatch(value)
    if m is None:
        raise SecfmError(f"{where} line {n}: Zeek #separator {value[:20]!r} is not a character or \\xHH escapes")
    if value.startswith("\\x"):
        return bytes.fromhex(value.replace("\\x", "")).decode("latin-1")
    return value


def _zeek_header_value(line: str, sep: str) -> str:
    """The value after a ``#name`` header (separated by the separator or whitespace); may be empty."""
    rest = line.split(sep, 1)[1] if sep in line else (line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "")
    return rest.strip()


def _parse_zeek(text: str, where: str, skip_bad: bool = False) -> list[Alert]:
    sep, names, path = "\t", None, "zeek"
    alerts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith("#separator"):
                sep = _zeek_separator(line, n, where)
            elif line.startswith("#fields"):
                names = [f for f in line.split(sep)[1:] if f] if sep in line else line.split()[1:]
                if not names:
                    raise SecfmError(f"{where} line {n}: Zeek #fields header names no fields")
            elif line.startswith("#path"):
                path = _zeek_header_value(line, sep) or "zeek"
            continue
        if names is None:
            raise SecfmError(f"{where} line {n}: Zeek data before the #fields header")
        values = line.split(sep)
        if len(values) != len(names):
            raise SecfmError(f"{where} line {n}: {len(values)} Zeek columns where #fields names {len(names)}")
        fields = {k: v for k, v in zip(names, values) if v not in ("-", "(empty)", "")}
        fields["_path"] = path
        alerts.append(Alert(len(alerts), n, "zeek", fields, line))
    return alerts


def _parse_lines(text: str, where: str, skip_bad: bool = False) -> list[Alert]:
    from secfm.inputs import BadLine, _parse_json, report_bad_line

    alerts = []
    audit_events: dict[str, Alert] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        audit = parse_audit(line) if "msg=audit(" in line else None
        if audit is not None and audit[1] in audit_events:  # another record of the same auditd event
            _merge_audit(audit_events[audit[1]], audit[0], audit[2], line)
            continue
        if line.lstrip().startswith("{"):
            obj, problem, _ = _parse_json(line)
            if problem:
                if skip_bad:
                    report_bad_line(BadLine(where, n, problem))
                    continue
                raise SecfmError(f"{where} line {n}: {problem}: {_clip(line)}; pass --skip-bad to skip such lines")
            alerts.append(_from_object(len(alerts), n, obj, line, where))
        else:
            alerts.append(_from_line(len(alerts), n, line))
            if audit is not None:
                audit_events[audit[1]] = alerts[-1]
    return alerts


_IDENT = re.compile(r"^[A-Za-z_@#][\w .@#/()-]{0,60}$")


def _whole_object(line: str) -> bool:
    from secfm.inputs import _parse_json

    value, problem, _ = _parse_json(line)
    return not problem and isinstance(value, dict)


def detect_format(text: str) -> str:
    stripped = text.lstrip("\ufeff").lstrip()
    lines = [line for line in stripped.splitlines() if line.strip()]
    if not lines:
        return "lines"
    first = lines[0].strip()
    if first.startswith("#separator") or first.startswith("#fields") or (first.startswith("#") and any(line.startswith("#fields") for line in lines[:12])):
        return "zeek"
    if first.startswith("["):
        return "json"
    if first.startswith("{"):
        others = [line for line in lines[1:] if not line.lstrip().startswith("{")]
        if others and _whole_object(first) and all(parse_audit(line) or parse_syslog(line) for line in others[:50]):
            return "lines"  # JSON records mixed with syslog or auditd lines (one export of several sources)
        if len(lines) > 1 and (all(line.lstrip().startswith("{") for line in lines) or _whole_object(first)):
            return "jsonl"  # one object per line (a bad line among them is reported as such)
        return "json"
    try:
        cells = next(csv.reader([first[:4096]]), [])
    except csv.Error:
        return "lines"
    if len(cells) >= 3 and all(_IDENT.match(c.strip()) for c in cells):
        return "csv"
    return "lines"


def parse_alerts(data: str | bytes | list | dict, fmt: str = "auto", where: str = "input", skip_bad: bool = False) -> list[Alert]:
    """Alerts from text in any accepted format, or from already parsed records; ``skip_bad``:
    a JSONL line that is not JSON is reported and skipped instead of stopping the run."""
    if fmt not in FORMATS:
        raise SecfmError(f"unknown alert format {fmt!r} (one of {', '.join(FORMATS)})")
    if isinstance(data, bytes):
        from secfm.inputs import decode_utf8

        data = decode_utf8(data, where)
    if isinstance(data, dict):
        data = _json_records(data)
    if isinstance(data, list):
        alerts = []
        for i, rec in enumerate(data):
            raw = rec if isinstance(rec, str) else json.dumps(rec, ensure_ascii=False)
            alerts.append(_from_object(i, i + 1, rec, raw, where))
        if not alerts:
            raise SecfmError(f"{where}: no alerts")
        return alerts
    if not isinstance(data, str):
        raise SecfmError(f"{where}: alerts must be text or a list of records")
    text = data.lstrip("\ufeff")
    if not text.strip():
        raise SecfmError(f"{where} is empty")
    fmt = detect_format(text) if fmt == "auto" else fmt
    parser = {"json": _parse_json, "jsonl": _parse_jsonl, "csv": _parse_csv, "zeek": _parse_zeek, "lines": _parse_lines}[fmt]
    alerts = parser(text, where, skip_bad)
    if not alerts:
        raise SecfmError(f"{where}: no alerts found")
    return alerts


def alert_title(alert: Alert) -> str:
    """A one-line title for the queue."""
    f = alert.family
    if f == "windows":
        eid = alert.get("EventID", "EventCode", "event_id")
        host = alert.get("Computer", "computer_name", "hostname", "host")
        return _clip(f"Windows event {eid}" + (f" on {host}" if host else ""), 100)
    if f == "cloudtrail":
        who = alert.get("userIdentity.arn", "userName", "userIdentity.type")
        return _clip(f"CloudTrail {alert.get('eventName')}" + (f" by {who}" if who else ""), 100)
    if f == "suricata":
        sig = alert.get("alert.signature", "signature")
        return _clip(f"Suricata {alert.get('event_type')}: {sig}" if sig else f"Suricata {alert.get('event_type')} {alert.get('src_ip')} -> {alert.get('dest_ip')}", 100)
    if f == "zeek":
        what = alert.get("note", "query", "host", "msg", "name") or ""
        return _clip(f"Zeek {alert.get('_path') or ''} {what}".strip(), 100)
    if f == "syslog":
        return _clip(f"{alert.get('program')}@{alert.get('host')}: {alert.get('message')}", 100)
    if f == "auditd":
        what = alert.get("name") or alert.get("exe") or alert.get("comm") or alert.get("a0") or ""
        types = [v for k, v in alert.fields.items() if k == "type" or k.endswith(".type")]
        return _clip(f"auditd {'+'.join(types)} {what}".strip(), 100)
    for name in ("title", "rule.name", "rule_name", "signature", "name", "alert", "message", "msg", "description", "summary"):
        value = alert.get(name)
        if value:
            return _clip(value, 100)
    return _clip(alert.raw, 100)

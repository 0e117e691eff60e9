"""An alert as Sigma rules see it: its log sources, and its fields under the rules' names.

:func:`event_view` reads an :class:`~secfm.workflows.alerts.Alert` of any family the project
reads (Windows Security/System/PowerShell and Sysmon, flat or in the ``Event.System`` /
``Event.EventData`` shape of an EVTX export or winlogbeat's ``winlog.*``; EDR process telemetry;
auditd; syslog; CloudTrail; Zeek; Suricata) and returns a :class:`SigmaEvent`:

* ``product``, ``categories``, ``services``: what the rule index uses, so an event meets only
  rules whose ``logsource`` fits (a Sysmon event 10 is ``windows / process_access``, an sshd line
  is ``linux / sshd, auth, syslog``...);
* ``view``: field name (lower case) -> values, the values normalised for matching
  (:func:`~secfm.workflows.sigma_text.normalize_value`: NFKC, invisible and tag characters,
  homoglyphs); ``names`` maps each view name back to the alert field it came from (for the
  evidence).

The tables (event ids, channels, field aliases per format) are data: ``sigma/fields.yaml``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import yaml

from secfm.workflows.alerts import Alert
from secfm.workflows.sigma_match import EventView
from secfm.workflows.sigma_text import normalize_value

FIELDS_YAML = Path(__file__).parent / "sigma" / "fields.yaml"


@lru_cache(maxsize=1)
def tables() -> dict:
    data = yaml.safe_load(FIELDS_YAML.read_text(encoding="utf-8"))
    win = data["windows"]
    win["_channels"] = {}
    win["_channel_prefixes"] = []
    for service, channel in win["services"].items():
        if channel.endswith("*"):
            win["_channel_prefixes"].append((channel[:-1].lower(), service))
        else:
            win["_channels"][channel.lower()] = service
    win["_eid_service"] = {int(e): s for s, ids in win["services_by_event_id"].items() for e in ids}
    return data


@dataclass
class SigmaEvent:
    """One alert, ready for the rule index."""

    product: str | None
    categories: frozenset[str]
    services: frozenset[str]
    view: EventView
    names: dict[str, str]  # view name -> the alert field key of its first value
    time: float | None = None  # epoch seconds, when the alert says
    host: str | None = None
    user: str | None = None
    extra: dict = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)  # view name -> the alert field key of each value

    def logsource(self) -> str:
        parts = [self.product or "-", ",".join(sorted(self.categories)) or "-", ",".join(sorted(self.services)) or "-"]
        return "/".join(parts)


# ---------------------------------------------------------------------------------------------
# field names
# ---------------------------------------------------------------------------------------------
_WIN_PREFIXES = ("Event.EventData.", "Event.System.", "Event.UserData.", "EventData.", "System.", "UserData.",
                 "winlog.event_data.", "winlog.user_data.", "event_data.", "Event.")
_DATA_NAME = re.compile(r"^(?P<base>.*\bData)\.(?P<i>\d+)\.(?:#attributes\.Name|@Name|Name)$")
_INDEX = re.compile(r"\.\d+(?=\.|$)")


def _windows_name(key: str) -> str:
    rest = key
    for prefix in _WIN_PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if prefix in ("Event.UserData.", "UserData.", "winlog.user_data.") and "." in rest:
                rest = rest.split(".", 1)[1]  # UserData.<Element>.Field
            break
    parts = [p for p in rest.split(".") if p not in ("#text", "#value")]
    out = []
    for p in parts:
        if p == "#attributes":
            continue
        out.append(p.lstrip("@"))
    return "_".join(out) if "#attributes" in rest.split(".") else ".".join(out)


def _add(view: dict[str, list[str]], names: dict[str, str], name: str, value: str, key: str) -> None:
    """Add the normalised value; the value as written too when normalising changed it (a rule may
    look for the very character normalising removes, e.g. a right-to-left override)."""
    low = name.lower()
    values = view.setdefault(low, [])
    keys = names.setdefault("\0keys", {}).setdefault(low, [])
    norm = normalize_value(value)
    values.append(norm)
    keys.append(key)
    if norm != value:
        values.append(value)
        keys.append(key)
    names.setdefault(low, key)


def _alias(view, names, alert: Alert, sigma_name: str, candidates: list[str]) -> None:
    low = sigma_name.lower()
    if low in view:
        return
    for cand in candidates:
        key = alert.key(cand)
        if key is not None and alert.fields[key] != "":
            _add(view, names, sigma_name, alert.fields[key], key)
            return


# ---------------------------------------------------------------------------------------------
# families
# ---------------------------------------------------------------------------------------------
_SYSMON_HINTS = {"utctime", "processguid", "image", "sourceimage", "targetimage", "targetfilename", "targetobject",
                 "queryname", "imageloaded", "pipename", "parentimage", "hashes", "sourceprocessguid"}


def _windows(alert: Alert, view, names) -> tuple[str, set[str], set[str]]:
    t = tables()["windows"]
    pairs = {}
    for key, value in alert.fields.items():
        m = _DATA_NAME.match(key)
        if m:  # EventData.Data[i] {"@Name": ..., "#text": ...}
            base, i = m["base"], m["i"]
            for text_key in (f"{base}.{i}.#text", f"{base}.{i}.#value", f"{base}.{i}.value", f"{base}.{i}.text"):
                if text_key in alert.fields:
                    pairs[value] = text_key
                    break
            continue
        if re.search(r"\bData\.\d+\.(#text|#value|value|text)$", key):
            continue
        _add(view, names, _windows_name(key), value, key)
    for name, key in pairs.items():
        _add(view, names, name, alert.fields[key], key)
    for sigma_name, cands in t["aliases"].items():
        _alias(view, names, alert, sigma_name, cands)
    eid_text = (view.get("eventid") or [""])[0].strip()
    eid = int(eid_text) if eid_text.isdigit() else None
    channel = (view.get("channel") or [""])[0].strip().lower()
    provider = (view.get("provider_name") or [""])[0].strip().lower()
    services: set[str] = set()
    if channel:
        if channel in t["_channels"]:
            services.add(t["_channels"][channel])
        for prefix, service in t["_channel_prefixes"]:
            if channel.startswith(prefix):
                services.add(service)
    if "sysmon" in provider:
        services.add("sysmon")
    if not channel and not provider and eid is not None:
        if eid in t["sysmon_categories"] and _SYSMON_HINTS & set(view):
            services.add("sysmon")
        elif eid in t["_eid_service"]:
            services.add(t["_eid_service"][eid])
    categories: set[str] = set()
    if "sysmon" in services and eid in t["sysmon_categories"]:
        categories.update(t["sysmon_categories"][eid])
    for service in list(services):
        categories.update(t["service_categories"].get(service, {}).get(eid, []))
    if "process_creation" in categories and "security" in services:
        for sigma_name, cands in t["process_creation_aliases"].items():
            _alias(view, names, alert, sigma_name, cands)
    return "windows", categories, services


def _edr(alert: Alert, view, names) -> tuple[str | None, set[str], set[str]]:
    t = tables()["edr"]
    pc = t["process_creation"]
    has_process = any(alert.key(c) is not None for c in pc["Image"] + pc["CommandLine"])
    if not has_process:
        return None, set(), set()
    for sigma_name, cands in pc.items():
        _alias(view, names, alert, sigma_name, cands)
    product = None
    os_value = next((alert.get(f) for f in t["os_fields"] if alert.get(f)), "") or ""
    os_value = os_value.lower()
    image = (view.get("image") or view.get("commandline") or [""])[0]
    if "win" in os_value or re.match(r"^[a-z]:\\|^\\\\", image, re.IGNORECASE) or re.search(r"\.exe\b", image, re.IGNORECASE):
        product = "windows"
    elif "mac" in os_value or "darwin" in os_value or image.startswith(("/Applications/", "/System/", "/Library/")):
        product = "macos"
    elif "linux" in os_value or image.startswith("/"):
        product = "linux"
    return product, {"process_creation"}, set()


_AUDIT_ID = re.compile(r"audit\((?P<ts>\d+(?:\.\d+)?):(?P<serial>\d+)\)")


def _auditd(alert: Alert, view, names) -> tuple[str, set[str], set[str]]:
    for key, value in alert.fields.items():
        leaf = key.split(".")[-1] if re.match(r"^[A-Z_]+(\.\d+)?\.", key) else key
        _add(view, names, leaf, value, key)
    return "linux", set(), {"auditd"}


def _syslog(alert: Alert, view, names) -> tuple[str, set[str], set[str]]:
    for key, value in alert.fields.items():
        _add(view, names, key, value, key)
    program = (alert.get("program") or "").lower()
    program = re.sub(r"[\[:].*$", "", program)
    services = {"syslog", *tables()["syslog"]["services"].get(program, [])}
    return "linux", set(), services


def _plain(alert: Alert, view, names) -> None:
    for key, value in alert.fields.items():
        _add(view, names, key, value, key)
        stripped = _INDEX.sub("", key)
        if stripped != key:
            _add(view, names, stripped, value, key)


def event_view(alert: Alert) -> SigmaEvent:
    """The alert as the rule index and the matcher see it (see the module docstring)."""
    view: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    t = tables()
    family = alert.family
    product: str | None = None
    categories: set[str] = set()
    services: set[str] = set()
    if family == "windows":
        product, categories, services = _windows(alert, view, names)
    elif family == "auditd":
        product, categories, services = _auditd(alert, view, names)
    elif family == "syslog" or (alert.get("program") and alert.get("message") and family in ("json", "csv")):
        product, categories, services = _syslog(alert, view, names)
    else:
        _plain(alert, view, names)
        if family == "cloudtrail":
            product, services = "aws", {"cloudtrail"}
        elif family == "zeek":
            product = "zeek"
            path = (alert.get("_path") or "").lower()
            if path:
                services.add(path)
            if path == "dns":
                categories.add("dns")
                for sigma_name, cands in t["zeek"]["dns_aliases"].items():
                    _alias(view, names, alert, sigma_name, cands)
        elif family == "suricata":
            product = "suricata"
            kind = (alert.get("event_type") or "").lower()
            if kind:
                services.add(kind)
            if kind == "dns":
                categories.add("dns")
                for sigma_name, cands in t["suricata"]["dns_aliases"].items():
                    _alias(view, names, alert, sigma_name, cands)
        else:
            product, categories, services = _edr(alert, view, names)
    for sigma_name, cands in t["derived"].items():
        _alias(view, names, alert, sigma_name, cands)
    if "dns" in categories or family in ("zeek", "suricata"):
        _dns_shape(view, names)
    frozen = EventView({k: tuple(v) for k, v in view.items()})
    host = _first(view, "secfm_host")
    user = _first(view, "secfm_user")
    keys = names.pop("\0keys", {})
    return SigmaEvent(product, frozenset(categories), frozenset(services), frozen, names, event_time(alert), host, user,
                      keys=keys)


def alert_key(event: SigmaEvent, name: str, index: int) -> str:
    """The alert field that holds value ``index`` of view field ``name``."""
    keys = event.keys.get(name)
    if keys and index < len(keys):
        return keys[index]
    return event.names.get(name, name)


def _dns_shape(view: dict[str, list[str]], names: dict[str, str]) -> None:
    """``secfm_dns_*`` fields: the shape of the queried name's labels (for the DGA and tunnel rules)."""
    query = next((view[k][0] for k in ("query", "dns.rrname", "rrname", "dns.query", "queryname") if view.get(k)), None)
    if not query:
        return
    key = names.get("query") or names.get("dns.rrname") or names.get("queryname") or "query"
    labels = [x for x in query.strip(".").split(".") if x]
    if not labels:
        return
    first = labels[0].lower()
    counts = Counter(first)
    entropy = -sum(n / len(first) * math.log2(n / len(first)) for n in counts.values())
    vowels = sum(first.count(v) for v in "aeiou") / len(first)
    longest = max(labels, key=len)
    derived = {
        "secfm_dns_label_length": str(len(first)), "secfm_dns_label_entropy": f"{entropy:.3f}",
        "secfm_dns_label_vowels": f"{vowels:.3f}", "secfm_dns_label_alnum": "true" if first.isalnum() else "false",
        "secfm_dns_longest_label_length": str(len(longest)),
        "secfm_dns_longest_label_encoded": "true" if re.fullmatch(r"[A-Za-z0-9+/=_-]+", longest) else "false",
        "secfm_dns_longest_label_mixed": str(sum(c.isdigit() or c.isupper() for c in longest)),
    }
    for name, value in derived.items():
        view[name] = [value]
        names[name] = key
        names.setdefault("\0keys", {})[name] = [key]


def _first(view: dict[str, list[str]], name: str) -> str | None:
    values = view.get(name)
    return values[0] if values else None


# ---------------------------------------------------------------------------------------------
# time
# ---------------------------------------------------------------------------------------------
_TIME_FIELDS = ("Event.System.TimeCreated.#attributes.SystemTime", "TimeCreated.SystemTime", "SystemTime", "TimeCreated",
                "UtcTime", "@timestamp", "timestamp", "eventTime", "time", "ts", "date", "event.created", "EventTime")
_SYSLOG_TIME = re.compile(r"^(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)$")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_time(value: str) -> float | None:
    """Epoch seconds from the time formats alerts carry (ISO 8601, epoch, syslog's ``May 12 03:14:07``)."""
    value = value.strip()
    if not value:
        return None
    if re.fullmatch(r"\d{9,10}(\.\d+)?", value):
        return float(value)
    if re.fullmatch(r"\d{12,13}", value):
        return int(value) / 1000.0
    if m := _SYSLOG_TIME.match(value):  # no year: the current one (only differences matter)
        year = datetime.now(UTC).year
        return datetime(year, _MONTHS[m["mon"]], int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"]), tzinfo=UTC).timestamp()
    text = value.replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # nanoseconds
    if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d", text):
        text = text.replace(" ", "T", 1)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def event_time(alert: Alert) -> float | None:
    if alert.family == "auditd":
        m = _AUDIT_ID.search(alert.raw)
        if m:
            return float(m["ts"])
    for name in _TIME_FIELDS:
        value = alert.fields.get(name) if "." in name else alert.get(name)
        if value:
            got = parse_time(value)
            if got is not None:
                return got
    return None

"""Answer parsers: the official CTIBench rules, hardened against awkward model outputs.

Every parser returns a :class:`Parsed`: the answer (None when there is none) and a status:
``ok``; ``empty`` (no text at all); ``refusal`` (no answer and the text declines to answer; the
official notebook's ``X``: counted wrong, kept in the official denominator); ``unparseable``
(anything else without an answer; dropped from the official figure, wrong in the strict one).

Rules (from the benchmark's evaluation code and README):
- MCQ: the last non-empty line; ``A)``..``D)`` (also ``(A)``, ``A.``, ``A:``) at its start, or
  a standalone trailing letter, is the answer. Markdown emphasis is removed first.
- RCM: the last ``CWE-<n>`` anywhere in the output (case-insensitive).
- VSP: the last complete CVSS v3 base vector in the output (the ``CVSS:3.x/`` prefix optional).
- ATE: technique ids on the last non-empty line that has any, folded to their parents; when
  that line holds none, every id in the output.
- TAA: the first known threat-actor name in the output (see ``secfm.evals.taa``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from secfm.errors import SecfmError

OK, EMPTY, REFUSAL, UNPARSEABLE = "ok", "empty", "refusal", "unparseable"


@dataclass(frozen=True)
class Parsed:
    answer: object | None
    status: str = OK

    @property
    def ok(self) -> bool:
        return self.status == OK


_MARKDOWN = re.compile(r"(\*\*|__|\*|`+|~~|^#+\s*|^>\s*)", re.MULTILINE)
_REFUSAL = re.compile(
    r"\b(I\s+(?:cannot|can(?:'|’)t|can\s+not|am\s+(?:not\s+able|unable)|won(?:'|’)t|will\s+not|do\s+not\s+feel)"
    r"|I(?:'|’)m\s+(?:sorry|unable|not\s+able)|as\s+an\s+AI|unable\s+to\s+(?:answer|determine|provide|help|assist)"
    r"|cannot\s+(?:answer|determine|provide|help|assist)|not\s+enough\s+information)",
    re.IGNORECASE,
)


def strip_markdown(text: str) -> str:
    return _MARKDOWN.sub("", text)


def non_empty_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _nothing(text: str) -> Parsed:
    if not text or not text.strip():
        return Parsed(None, EMPTY)
    if _REFUSAL.search(text):
        return Parsed(None, REFUSAL)
    return Parsed(None, UNPARSEABLE)


# --- MCQ -----------------------------------------------------------------------------------------
_MCQ_START = re.compile(r"^(?:answer\s*[:\-]?\s*)?[\(\[]?([A-D])(?:\)|\]|\.(?=\s|$)|:(?=\s|$))", re.IGNORECASE)
_MCQ_ALONE = re.compile(r"^[\(\[]?([A-Da-d])[\)\]\.:]?$")
_MCQ_TRAILING = re.compile(r"(?:^|[^A-Za-z0-9])([A-D])[\s\)\]\.!:]*$")


def parse_mcq_letter(text: str) -> Parsed:
    """The letter A-D of the last non-empty line (official rule)."""
    lines = non_empty_lines(strip_markdown(text or ""))
    if not lines:
        return _nothing(text)
    last = lines[-1]
    for pattern in (_MCQ_ALONE, _MCQ_START, _MCQ_TRAILING):
        m = pattern.search(last)
        if m:
            return Parsed(m.group(1).upper())
    return _nothing(text)


# --- RCM -----------------------------------------------------------------------------------------
_CWE = re.compile(r"(?<![A-Za-z0-9])CWE-(\d+)(?!\d)", re.IGNORECASE)


def normalise_cwe(value: str) -> str | None:
    m = _CWE.search(value or "")
    return f"CWE-{int(m.group(1))}" if m else None


def parse_cwe_id(text: str) -> Parsed:
    """The last ``CWE-<n>`` in the output (official rule), as ``CWE-<n>`` without leading zeros."""
    found = _CWE.findall(text or "")
    if not found:
        return _nothing(text)
    return Parsed(f"CWE-{int(found[-1])}")


# --- VSP -----------------------------------------------------------------------------------------
BASE_METRICS = {
    "AV": "NALP",
    "AC": "LH",
    "PR": "NLH",
    "UI": "NR",
    "S": "UC",
    "C": "NLH",
    "I": "NLH",
    "A": "NLH",
}
_VECTOR = re.compile(
    r"(?:CVSS:3\.[01]\s*/\s*)?AV\s*:\s*[A-Z](?:\s*/\s*[A-Z]{1,2}\s*:\s*[A-Z])+",
    re.IGNORECASE,
)


def normalise_vector(candidate: str) -> str | None:
    """``CVSS:3.1/AV:N/...`` in the standard order when ``candidate`` holds all eight base metrics."""
    body = re.sub(r"\s+", "", candidate).upper()
    body = re.sub(r"^CVSS:3\.[01]/", "", body)
    values: dict[str, str] = {}
    for part in body.split("/"):
        if ":" not in part:
            return None
        key, value = part.split(":", 1)
        if key in BASE_METRICS:
            if value not in BASE_METRICS[key] or len(value) != 1 or key in values:
                return None
            values[key] = value
    if set(values) != set(BASE_METRICS):
        return None
    return "CVSS:3.1/" + "/".join(f"{k}:{values[k]}" for k in BASE_METRICS)


def parse_cvss_vector(text: str) -> Parsed:
    """The last complete CVSS v3 base vector in the output (official rule)."""
    clean = strip_markdown(text or "")
    for m in reversed(list(_VECTOR.finditer(clean))):
        vector = normalise_vector(m.group(0))
        if vector:
            return Parsed(vector)
    return _nothing(text)


# --- ATE -----------------------------------------------------------------------------------------
_TECHNIQUE = re.compile(r"(?<![A-Za-z0-9])T(\d{4})(?:\.\d{3})?(?!\d)", re.IGNORECASE)


def technique_parents(text: str) -> list[str]:
    """Parent technique ids in order of first mention (``T1059.001`` -> ``T1059``)."""
    seen: dict[str, None] = {}
    for m in _TECHNIQUE.finditer(text or ""):
        seen.setdefault(f"T{m.group(1)}", None)
    return list(seen)


def parse_technique_ids(text: str) -> Parsed:
    """Parent ids on the last non-empty line (the prompt asks for them there), else every id in the output."""
    lines = non_empty_lines(text or "")
    ids = technique_parents(lines[-1]) if lines else []
    if not ids:
        ids = technique_parents(text or "")
    if not ids:
        return _nothing(text)
    return Parsed(tuple(ids))


# --- registry ------------------------------------------------------------------------------------
PARSERS: dict[str, Callable[[str], Parsed]] = {
    "mcq_letter": parse_mcq_letter,
    "cwe_id": parse_cwe_id,
    "cvss_vector": parse_cvss_vector,
    "technique_ids": parse_technique_ids,
}


def get_parser(name: str) -> Callable[[str], Parsed]:
    """A parser by its spec name; ``threat_actor`` builds the ATT&CK actor matcher on first use."""
    if name == "threat_actor":
        from secfm.evals.taa import parse_threat_actor

        return parse_threat_actor
    if name not in PARSERS:
        raise SecfmError(f"unknown parser '{name}' (parsers: {', '.join([*PARSERS, 'threat_actor'])})")
    return PARSERS[name]

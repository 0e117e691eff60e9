"""What a chat turn is about, found by the project's extractors (no model involved).

* ids: ``secfm.knowledge.ids.find_ids`` (ATT&CK, CWE, CVE), each checked by ``validate_id``;
* indicators: ``secfm.text.iocs.extract_iocs``;
* ATT&CK objects named in the text (``NamedEntities``): technique and tactic names matched as
  word sets within a short window (``credential dumping`` names T1003 OS Credential Dumping),
  groups, software and campaigns by name or alias;
* pasted material: a configuration (``detect_kind``), alerts or log lines (JSON, JSONL, key=value
  or syslog lines, a command line a triage signature fires on), a vulnerability description, a
  longer report;
* intents: what is, how to detect, what mitigates, which groups, which techniques, which ATT&CK
  technique a CVE maps to, its weakness (CWE), its severity (CVSS);
* follow-ups: a turn with no entity of its own ("how do I detect it?") keeps the conversation's.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from secfm.errors import SecfmError
from secfm.knowledge import load_attack
from secfm.knowledge.ids import find_ids, validate_id
from secfm.text.iocs import extract_iocs
from secfm.workflows.chat_schemas import Conversation, TurnTopic
from secfm.workflows.untrusted import find_injection

#: ids kinds the chat can look up (validate_id kinds)
ATTACK_KINDS = ("technique", "subtechnique", "tactic", "mitigation", "group", "software", "campaign")

_QUESTION_START = re.compile(
    r"^\s*(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|does|do|did|can|could|should|would|will|"
    r"explain|describe|tell|show|list|give|summari[sz]e|name|any|and|so|ok|okay|please|help)\b", re.I)
_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(p, re.I)) for name, p in (
    ("detect", r"\b(?:detect\w*|hunt\w*|spot|monitor\w*|alert\s+on|log\s+sources?|telemetry|sigma|find\s+evidence|"
               r"look\s+for|identify|notice|catch)\b"),
    ("mitigate", r"\b(?:mitigat\w*|prevent\w*|protect\w*|defen[sd]\w*\s+against|harden\w*|block\w*|stop\w*|"
                 r"remediat\w*|counter\w*|reduce\s+the\s+risk)\b"),
    ("groups", r"\b(?:which|what)\s+(?:threat\s+)?(?:groups?|actors?|apts?|adversar\w+)\b|\bwho\s+uses?\b|"
               r"\bgroups?\s+(?:use|using)\b"),
    ("techniques", r"\b(?:which|what)\s+(?:att&ck\s+|attack\s+)?techniques?\s+(?:does|do|did|is|are)\b|"
                   r"\btechniques?\s+(?:used\s+by|of)\b|\bwhat\s+does\s+\S+\s+use\b"),
    ("map", r"\bmap(?:s|ped|ping)?\s+to\b|\b(?:which|what)\s+(?:att&ck\s+|attack\s+|mitre\s+)?techniques?\b|"
            r"\bexploit\w*\b.*\btechnique\b|\btechnique\b.*\bexploit\w*\b"),
    ("cwe", r"\b(?:cwe|weakness\w*|root\s+cause|flaw\s+type|type\s+of\s+(?:bug|flaw|vulnerability))\b"),
    ("cvss", r"\b(?:cvss|severity|how\s+(?:bad|severe|critical|serious)|score)\b"),
))
_FOLLOW_UP = re.compile(r"\b(?:it|its|it's|this|that|these|those|they|them|their|the\s+same|the\s+technique|"
                        r"the\s+cve|the\s+vulnerability|the\s+group|the\s+alert)\b|^\s*(?:and|what\s+about|how\s+about|also)\b",
                        re.I)
_WHAT_IS = re.compile(r"^\s*(?:what\s+(?:is|are|was|were)\s+(?!the\s+(?:cvss|score|severity|weakness|cwe))|who\s+(?:is|are)\b|"
                      r"tell\s+me\s+about|explain|describe|what\s+does\s+\S+\s+(?:mean|cover|do)\b)", re.I)
_CARRY_INTENT = re.compile(r"^\s*(?:and|what\s+about|how\s+about|same\s+for)\b", re.I)
_VULN_TEXT = re.compile(
    r"\b(?:allows?\s+(?:remote|local|unauthenticated|authenticated)?\s*(?:attackers?|users?)|vulnerabilit(?:y|ies)\s+in|"
    r"buffer\s+overflow|use[-\s]after[-\s]free|via\s+(?:a\s+)?crafted|(?:sql|command|code)\s+injection\s+vulnerability|"
    r"cross[-\s]site\s+scripting\s+\(xss\)|improper\s+(?:input\s+)?validation)\b", re.I)
_LOG_LINE = re.compile(
    r"^(?:\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}|[A-Z][a-z]{2}\s+\d{1,2}\s+\d{2}:\d{2}:\d{2}|<\d+>)|"
    r"\b(?:EventID|EventCode|event_id|CommandLine|Image|ParentImage|src_ip|dst_ip|user(?:name)?)\s*[=:]", re.M)
_KV = re.compile(r"\b[\w.]+=(?:\"[^\"]*\"|\S+)")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9&'/-]*")
#: words that carry no meaning in a technique name match
_STOP = frozenset("a an and the of or for to via with from in on by into over at as is its it os".split())
#: acronyms of technique names that mostly mean something else in a question (TLS: Transport Layer Security)
_AMBIGUOUS_ACRONYMS = frozenset({"TLS", "GUI"})
#: one-word technique names too common to stand for the technique when they appear in a question
_GENERIC_NAMES = frozenset(
    "server domains malware tool exploits credentials software hardware firmware vulnerabilities databases trap "
    "compression proxy botnet serverless impersonation dll dns ssh vnc at cron lua javascript python steganography "
    "screensaver defacement keychain confluence sharepoint cdns whois add-ins".split())


def stem(word: str) -> str:
    """A light English stem: ``dumping``/``dumps``/``dumped`` -> ``dump``, ``credentials`` -> ``credential``."""
    w = word.casefold().strip("'")
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            break
    return w


def words(text: str) -> list[str]:
    return [m.group(0) for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class _Name:
    id: str
    kind: str
    tokens: tuple[str, ...]  # stems, stop words dropped
    phrase: str  # the name as written
    case_sensitive: bool
    domain: str = "enterprise"
    shared_with: frozenset[str] = frozenset()  # other ATT&CK domains with an object of the same name


_DOMAIN_HINTS = (("mobile", re.compile(r"\b(?:mobile|android|ios|iphone|ipad|smartphones?|phones?|apk)\b", re.I)),
                 ("ics", re.compile(r"\b(?:ics|scada|plcs?|hmis?|industrial|operational\s+technology|ot\s+network|"
                                    r"modbus|dnp3|iec\s*61850|safety\s+instrumented)\b", re.I)))


def domain_hint(text: str) -> str:
    """The ATT&CK domain a turn is about: mobile or ICS when it says so, else enterprise."""
    for domain, rx in _DOMAIN_HINTS:
        if rx.search(text):
            return domain
    return "enterprise"


class NamedEntities:
    """ATT&CK objects named in free text (see the module docstring)."""

    def __init__(self, kb=None):
        self.kb = kb or load_attack()
        self._names = _name_index(self.kb.version)

    def find(self, text: str, limit: int = 4) -> list[str]:
        """Ids named in ``text``: longest (most specific) names first, a technique's parent dropped
        when the sub-technique is named, at most ``limit``."""
        toks = words(text)
        stems = [stem(t) for t in toks]
        positions: dict[str, list[int]] = {}
        for i, s in enumerate(stems):
            positions.setdefault(s, []).append(i)
        hits: list[tuple[int, str]] = []
        domain = domain_hint(text)
        for name in self._names:
            if not all(t in positions for t in name.tokens):
                continue
            if name.shared_with and name.domain != domain and (domain in name.shared_with or name.domain != "enterprise"):
                continue  # "Lateral Movement" is Enterprise's unless the turn is about mobile or ICS
            if name.kind in ("group", "software", "campaign") or len(name.tokens) == 1:
                if not _phrase_in(name.phrase, text, name.case_sensitive):
                    continue
            elif not _within_window([positions[t] for t in name.tokens], len(name.tokens) + 2):
                continue
            hits.append((len(name.tokens) * 10 + len(name.phrase), name.id))
        hits.sort(key=lambda h: (-h[0], h[1]))
        found: list[str] = []
        for _, tid in hits:
            if tid not in found:
                found.append(tid)
        subs = {t.split(".")[0] for t in found if "." in t}
        found = [t for t in found if t not in subs]
        return found[:limit]


def _phrase_in(phrase: str, text: str, case_sensitive: bool) -> bool:
    flags = 0 if case_sensitive else re.I
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, flags) is not None


def _within_window(lists: list[list[int]], width: int) -> bool:
    """Whether one position from each list fits in a window of ``width`` words."""
    for start in lists[0]:
        if all(any(abs(p - start) < width for p in ps) for ps in lists[1:]):
            return True
    return False


@functools.lru_cache(maxsize=4)
def _name_index(version: str) -> tuple[_Name, ...]:
    from collections import Counter

    kb = load_attack()
    out: list[_Name] = []
    pre = {"reconnaissance", "resource-development"}
    techniques = kb.techniques()
    shared = Counter((t.domain, t.name.casefold()) for t in techniques)
    acronyms: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in techniques:
        toks = tuple(stem(w) for w in words(t.name) if w.casefold() not in _STOP)
        if not toks or shared[(t.domain, t.name.casefold())] > 1:
            continue
        if len(toks) == 1:
            if t.name.casefold() in _GENERIC_NAMES or len(t.name) < 4 or pre & set(t.tactics):
                continue
            out.append(_Name(t.id, "technique", toks, t.name, False, t.domain))
            continue
        if pre & set(t.tactics) and len(toks) < 3:
            continue
        out.append(_Name(t.id, "technique", toks, t.name, False, t.domain))
        initials = "".join(w[0] for w in words(t.name)).upper()
        if len(initials) >= 3 and f"({initials})" in t.description and initials not in _AMBIGUOUS_ACRONYMS:
            # ATT&CK itself writes "Remote Desktop Protocol (RDP)"
            acronyms[(t.domain, initials)].append(t.id)
    for (domain, acronym), ids in acronyms.items():  # RDP: Remote Desktop Protocol, WMI: Windows Management Instrumentation
        if len(ids) == 1:
            out.append(_Name(ids[0], "technique", (acronym.casefold(),), acronym, True, domain))
    for tac in kb.tactics():
        toks = tuple(stem(w) for w in words(tac.name) if w.casefold() not in _STOP)
        out.append(_Name(tac.id, "tactic", toks, tac.name, len(toks) == 1, tac.domain))
    sources = [(g, "group") for g in kb.groups_by_id.values()] + [(s, "software") for s in kb.software_by_id.values()] \
        + [(c, "campaign") for c in kb.campaigns_by_id.values()]
    alias_count = Counter(a.casefold() for obj, _ in sources for a in {obj.name, *obj.aliases})
    for obj, kind in sources:
        if getattr(obj, "revoked", False) or getattr(obj, "deprecated", False):
            continue
        for alias in {obj.name, *obj.aliases}:
            if len(alias) < 4 or alias_count[alias.casefold()] > 1:
                continue
            distinctive = bool(re.search(r"\d|.[A-Z]", alias)) or len(alias) >= 7
            toks = tuple(stem(w) for w in words(alias)) or (alias.casefold(),)
            out.append(_Name(obj.id, kind, toks, alias, not distinctive, obj.domains[0] if obj.domains else "enterprise"))
    domains_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for n in out:
        if n.kind in ("technique", "tactic"):
            domains_of[(n.kind, n.phrase.casefold())].add(n.domain)
    return tuple(
        _Name(n.id, n.kind, n.tokens, n.phrase, n.case_sensitive, n.domain,
              frozenset(domains_of.get((n.kind, n.phrase.casefold()), set()) - {n.domain}))
        for n in out)


# ---------------------------------------------------------------------------------------------
# pasted material
# ---------------------------------------------------------------------------------------------
def is_question(text: str) -> bool:
    t = text.strip()
    return t.endswith("?") or bool(_QUESTION_START.match(t))


def paste_kind(text: str) -> tuple[str, str | None]:
    """("alert" | "config" | "report" | "vulnerability" | "none", config kind)."""
    t = text.strip()
    lines = [ln for ln in t.splitlines() if ln.strip()]
    question = is_question(t) and len(lines) <= 2
    if t[:1] in "{[":
        try:
            value = json.loads(t)
        except ValueError:
            value = None
            if all(ln.lstrip().startswith("{") for ln in lines):
                return "alert", None  # JSONL
        if value is not None:
            kind = _config_kind(t)
            if kind in ("aws-iam", "terraform"):
                return "config", kind
            return "alert", None
    if len(lines) >= 2:
        kind = _config_kind(t)
        if kind is not None:
            return "config", kind
    if not question and (_LOG_LINE.search(t) or len(_KV.findall(t)) >= 3):
        return "alert", None
    if not question and _VULN_TEXT.search(t):
        return "vulnerability", None
    if not question and len(t) >= 280 and t.count(". ") >= 2:
        return "report", None
    return "none", None


def _config_kind(text: str) -> str | None:
    from secfm.workflows.config_rules import detect_kind

    try:
        return detect_kind(text)[0]
    except SecfmError:
        return None


# ---------------------------------------------------------------------------------------------
# the turn
# ---------------------------------------------------------------------------------------------
def intents_of(text: str) -> list[str]:
    found = [name for name, rx in _INTENTS if rx.search(text)]
    if "techniques" in found and "map" in found:
        # "which technique does exploiting it map to" asks for a mapping, "which techniques does APT29 use" a list
        found.remove("techniques" if re.search(r"\bmap|\bexploit", text, re.I) else "map")
    if not found or _WHAT_IS.search(text):
        found.insert(0, "what")
    return found


_COMMAND = re.compile(r"^\s*(?:[A-Za-z]:\\|\.{0,2}/|%\w+%\\)?[\w.\\/-]+(?:\.exe)?\s+\S")


def command_event(text: str, platform: str | None = None) -> dict:
    """A pasted command line as the process-creation event triage reads (``CommandLine``, and the
    operating system when the command implies one)."""
    event = {"CommandLine": text.strip()}
    if platform:
        event["os"] = platform.lower()
    return event


def alert_form(text: str) -> str:
    """How triage's rules fire on ``text``: ``lines`` (log lines as they are), ``command`` (a
    command line read as a process-creation event: ``vssadmin delete shadows /all /quiet``), or ""."""
    from secfm.workflows.chat_tools import platform_of
    from secfm.workflows.triage import triage_alerts

    forms = [("lines", text)]
    if "\n" not in text.strip() and _COMMAND.match(text):
        forms.append(("command", [command_event(text, platform_of(text))]))
    for name, value in forms:
        try:
            result = triage_alerts(value, use_model=False, technique_source=None, store=False)
        except SecfmError:
            continue
        if any(a.signatures for a in result.alerts):
            return name
    return ""


#: where an instruction's sentence ends: a full stop (not the one in ``T1059.001`` or ``evil.example``), a line end
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
#: in a structured record (JSON, key="value" logs) the unit is the field's value: up to an unescaped quote or a line end
_VALUE_END = re.compile(r'(?<!\\)"|\n')


def without_instructions(text: str, structured: bool = False) -> str:
    """``text`` with every sentence that holds instruction-like text (``find_injection``) blanked
    out, offsets kept. ``structured``: the unit is a quoted field value (up to an unescaped quote)
    or a line, as in ``key="value"`` logs."""
    spans = find_injection(text)
    if not spans:
        return text
    ends = _VALUE_END if structured else _SENTENCE_END
    chars = list(text)
    for span in spans:
        start = 0
        for m in ends.finditer(text, 0, span.start):
            start = m.end()
        found = ends.search(text, span.end)
        end = found.end() if found else len(text)
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _json_values(value) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _json_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_values(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _paste_reading(text: str, paste: str) -> str:
    """What the chat reads a paste for (ids, names, intents): a JSON or JSONL record's values
    (not its keys), each value that holds instruction-like text left out, however the JSON
    escaped it; other pastes without their instructions' sentences (an alert's log line without
    the quoted field value that holds them)."""
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            records = [json.loads(stripped)]
        except ValueError:
            try:
                records = [json.loads(ln) for ln in stripped.splitlines() if ln.strip()]
            except ValueError:
                records = None
        if records is not None:
            return "\n".join(v for v in _json_values(records) if not find_injection(v))
    return without_instructions(text, structured=paste == "alert")


#: a question written before a paste ("is this bad? {...}", "How do I detect this?\n<log line>") or after it
_LEADING_QUESTION = re.compile(r"\A\s*([^\n{}\[\]]{2,300}?\?)\s+(?=\S)")
_TRAILING_QUESTION = re.compile(r"\n[ \t]*([^\n{}\[\]]{2,300}\?)\s*\Z")


def read_paste(text: str) -> tuple[str, str | None, str]:
    """(paste kind, config kind, triage form) of ``text``: :func:`paste_kind`, and a short
    non-question text triage's rules fire on (a log line, a command line) read as an alert."""
    paste, config_kind = paste_kind(text)
    form = "lines" if paste == "alert" else ""
    if paste == "none" and not is_question(text) and len(text) <= 4000:
        form = alert_form(text)
        paste = "alert" if form else paste
    return paste, config_kind, form


def split_question(text: str) -> tuple[int, int] | None:
    """Where the paste stands when the analyst wrote a question before or after it ("is this bad?
    {alert JSON}", "<log line>\nIs this malicious?"): [start, end) offsets of the pasted part, or
    None when the turn is not a question around a paste."""
    lead = _LEADING_QUESTION.match(text)
    if lead and is_question(lead.group(1)):
        return lead.end(), len(text.rstrip())
    trail = _TRAILING_QUESTION.search(text)
    if trail and is_question(trail.group(1)) and text[:trail.start()].strip():
        start = len(text) - len(text.lstrip())
        return start, trail.start()
    return None


def _asked(text: str) -> str:
    """The questions written around a paste (``How do I detect this?``): what a paste's intents are
    read from, never from its data (an alert's ``severity`` field asks nothing of the chat)."""
    return " ".join(s for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip() and is_question(s))


def analyse_turn(text: str, conversation: Conversation | None = None, names: NamedEntities | None = None) -> TurnTopic:
    """The topic of one user turn (ids, names, IOCs, pasted material, intents, entities)."""
    iocs: dict[str, list[str]] = {}
    for ioc in extract_iocs(text):  # indicators are data, wherever in the paste they stand
        if ioc.kind in ("cve", "cwe", "attack"):
            continue
        values = iocs.setdefault(ioc.kind, [])
        if ioc.value not in values:
            values.append(ioc.value)
    span = None
    paste, config_kind, form = read_paste(text)
    if paste == "none" or (paste == "alert" and form == "lines" and is_question(text)):
        # a question written around a paste: the paste goes to its tool, the question is what is asked
        where = split_question(text)
        if where is not None:
            inner = read_paste(text[where[0]:where[1]])
            if inner[0] != "none":
                (paste, config_kind, form), span = inner, where
    # what the chat looks up and what it is asked come from the analyst's words and the pasted data,
    # never from instructions inside a paste ("... set the severity to info" asks nothing of the chat)
    if span is not None:
        read = "\n".join((text[:span[0]], _paste_reading(text[span[0]:span[1]], paste), text[span[1]:]))
    else:
        read = _paste_reading(text, paste) if paste != "none" else text
    ids = find_ids(read)
    named = (names or NamedEntities()).find(read) if paste in ("none", "vulnerability") or len(text) < 2000 else []
    named = [n for n in named if n not in ids]
    question = is_question(text)
    intents = intents_of(read if paste == "none" else _asked(read))
    entities = [i for i in ids if validate_id(i).known or i.startswith("CVE-")] + named
    follow_up = False
    related: list[str] = []
    if conversation is not None:
        if not entities and not [i for i in ids if not validate_id(i).known] and paste == "none" and not iocs \
                and conversation.entities and (_FOLLOW_UP.search(text) or len(words(text)) <= 6):
            entities = list(conversation.entities)
            related = list(conversation.related)
            follow_up = True
        if intents == ["what"] and conversation.intents and _CARRY_INTENT.match(text):
            intents = list(conversation.intents)  # "and T1486?" asks the last question again
    return TurnTopic(ids=ids, named=named, iocs=iocs, paste=paste, paste_form=form, paste_span=span, config_kind=config_kind,
                     intents=intents, question=question, follow_up=follow_up, entities=entities, related=related)


__all__ = ["ATTACK_KINDS", "NamedEntities", "analyse_turn", "domain_hint", "intents_of", "is_question", "paste_kind", "read_paste", "split_question", "stem",
           "without_instructions", "words"]

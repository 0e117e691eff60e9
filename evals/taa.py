"""CTI-TAA: threat-actor names, alias and relation tables derived from ATT&CK, and the scorer.

Tables (built from ``secfm.knowledge.attack.load_attack()``, never typed by hand):

- alias edges: a group's name and each of its aliases (ATT&CK's "associated groups"); a
  revoked group's names and the names of the group that replaced it; a campaign's name and
  its aliases;
- relation edges: a campaign and the groups it is attributed to; a group and every other
  group its ATT&CK description names.

Scoring follows the official notebook: ``C`` (correct) when the predicted name reaches the
true one through alias edges, ``P`` (plausible) when it reaches it through alias and relation
edges, ``I`` otherwise. Names are compared casefolded with everything but letters and digits
removed (``APT 29`` = ``apt29``).

The parser takes the first known actor name in the output. Names are matched as whole words;
one-word names without digits (``Turla``, ``Play``, ``Silence``) only with their ATT&CK casing
or in capitals, so that ordinary words do not count as actors. Gold labels that ATT&CK does not
know are added to the vocabulary, so that naming them exactly still counts.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from secfm.evals.parsers import OK, Parsed, _nothing


def norm(name: str) -> str:
    """Comparison key of an actor name: casefolded letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", (name or "").casefold())


@dataclass
class ActorTables:
    alias: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    related: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    display: dict[str, str] = field(default_factory=dict)  # key -> a display name
    group_of: dict[str, str] = field(default_factory=dict)  # key -> ATT&CK group/campaign id
    source: str = ""

    def add_name(self, name: str, owner: str | None = None) -> str:
        key = norm(name)
        if key:
            self.display.setdefault(key, name.strip())
            if owner:
                self.group_of.setdefault(key, owner)
        return key

    def link_alias(self, a: str, b: str) -> None:
        ka, kb = norm(a), norm(b)
        if ka and kb and ka != kb:
            self.alias[ka].add(kb)
            self.alias[kb].add(ka)

    def link_related(self, a: str, b: str) -> None:
        ka, kb = norm(a), norm(b)
        if ka and kb and ka != kb:
            self.related[ka].add(kb)
            self.related[kb].add(ka)

    def names(self) -> list[str]:
        return sorted(self.display.values())

    def counts(self) -> dict[str, int]:
        return {
            "names": len(self.display),
            "alias_edges": sum(len(v) for v in self.alias.values()) // 2,
            "relation_edges": sum(len(v) for v in self.related.values()) // 2,
        }


# ---------------------------------------------------------------------------------------------
# building the tables
# ---------------------------------------------------------------------------------------------
def tables_from_attack(kb) -> ActorTables:
    """Alias and relation tables from an ``AttackKB`` (``secfm.knowledge.attack``)."""
    t = ActorTables(source=f"MITRE ATT&CK {kb.version} groups, aliases and campaigns")
    groups = list(kb.groups_by_id.values())
    for g in groups:
        t.add_name(g.name, g.id)
        for alias in (*g.aliases, *g.associated_groups):
            t.add_name(alias, g.id)
            t.link_alias(g.name, alias)
    for g in groups:
        replacement = kb.groups_by_id.get(g.replaced_by) if g.replaced_by else None
        if replacement is not None:
            t.link_alias(g.name, replacement.name)
    for c in kb.campaigns_by_id.values():
        t.add_name(c.name, c.id)
        for alias in c.aliases:
            t.add_name(alias, c.id)
            t.link_alias(c.name, alias)
        for gid in c.group_ids:
            if gid in kb.groups_by_id:
                t.link_related(c.name, kb.groups_by_id[gid].name)
    matcher = ActorMatcher([n for g in groups for n in (g.name, *g.aliases)])
    for g in groups:
        for other in matcher.find_all(g.description):
            t.link_related(g.name, other)
    return t


@lru_cache(maxsize=1)
def attack_tables() -> ActorTables:
    """The tables from the offline ATT&CK knowledge base (one switch point for the source)."""
    from secfm.knowledge.attack import load_attack

    return tables_from_attack(load_attack())


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
def _reach(start: str, goal: str, graphs: Iterable[dict[str, set[str]]]) -> bool:
    graphs = list(graphs)
    seen, queue = {start}, deque([start])
    while queue:
        current = queue.popleft()
        for graph in graphs:
            for nxt in graph.get(current, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
    return False


def connection(gold: str, predicted: str | None, tables: ActorTables | None = None) -> str:
    """``C`` alias of the true actor, ``P`` related to it, ``I`` neither (official semantics)."""
    if not predicted:
        return "I"
    tables = tables or attack_tables()
    g, p = norm(gold), norm(predicted)
    if not g or not p:
        return "I"
    if g == p or _reach(g, p, [tables.alias]):
        return "C"
    if _reach(g, p, [tables.alias, tables.related]):
        return "P"
    return "I"


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
def _pattern(name: str) -> str:
    """Regex for a name: words joined by any spaces or hyphens, letters-digits joined optionally."""
    parts = [re.escape(w) for w in re.split(r"[\s\-_]+", name.strip()) if w]
    body = r"[\s\-_]+".join(parts)
    body = re.sub(r"(?<=[A-Za-z])(?=\d)", r"[\\s\\-]?", body)
    return body


class ActorMatcher:
    """Finds known actor names in free text (whole words, longest first)."""

    def __init__(self, names: Iterable[str]):
        loose, strict = set(), set()
        for name in {n.strip() for n in names if n and norm(n)}:
            one_word = not re.search(r"[\s\-_.]", name)
            if one_word and not re.search(r"\d", name):
                strict.add(name)
                strict.add(name.upper())
            else:
                loose.add(name)
        self._regexes = []
        for group, flags in ((loose, re.IGNORECASE), (strict, 0)):
            if group:
                alternation = "|".join(_pattern(n) for n in sorted(group, key=len, reverse=True))
                self._regexes.append(re.compile(rf"(?<![A-Za-z0-9])(?:{alternation})(?![A-Za-z0-9])", flags))

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, matched text) of every mention, in order, overlapping ones resolved longest-first."""
        spans = []
        for regex in self._regexes:
            spans.extend((m.start(), m.end(), m.group(0)) for m in regex.finditer(text or ""))
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        chosen, end = [], -1
        for s in spans:
            if s[0] >= end:
                chosen.append(s)
                end = s[1]
        return chosen

    def find_all(self, text: str) -> list[str]:
        return [s[2] for s in self.find(text)]

    def first(self, text: str) -> str | None:
        found = self.find(text)
        return found[0][2] if found else None


class ActorParser:
    """Parser for CTI-TAA outputs: the first actor name the output mentions, as its display name."""

    def __init__(self, tables: ActorTables | None = None, extra_names: Iterable[str] = ()):
        self.tables = tables or attack_tables()
        self.extra = {norm(n): n.strip() for n in extra_names if norm(n)}
        self.matcher = ActorMatcher([*self.tables.display.values(), *self.extra.values()])

    def __call__(self, text: str) -> Parsed:
        found = self.matcher.first(text or "")
        if found is None:
            return _nothing(text)
        key = norm(found)
        return Parsed(self.tables.display.get(key) or self.extra.get(key) or found, OK)


def parse_threat_actor(text: str) -> Parsed:
    """The first ATT&CK actor name in ``text`` (no extra gold names)."""
    return _default_parser()(text)


@lru_cache(maxsize=1)
def _default_parser() -> ActorParser:
    return ActorParser()

"""The CWE catalog (weaknesses, their relations and CVE observed examples) from ``cwe2``'s XML.

``cwe2`` ships the full MITRE catalog, ``database_v49/cwec_v4.14.xml``. It is parsed once with
ElementTree (namespace-aware) into frozen records; ``load_cwe`` keeps the result in a pickle
under ``cache_dir('knowledge')`` keyed by the XML's size and mtime.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from secfm.errors import SecfmError
from secfm.settings import cache_dir

_NS = {"c": "http://cwe.mitre.org/cwe-7"}
_XHTML_BLOCKS = {"p", "li", "div", "ul", "ol", "br", "tr", "table", "pre"}
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")
_CWE_MENTION = re.compile(r"CWE-(\d+)")
_CACHE_FORMAT = 1  # bump when the records below change shape


@dataclass(frozen=True)
class Consequence:
    scopes: tuple[str, ...]
    impacts: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class ObservedExample:
    reference: str  # a CVE id, in a few entries another reference ("[REF-1374]", "BUGTRAQ:…")
    description: str
    link: str


@dataclass(frozen=True)
class Weakness:
    id: int
    name: str
    description: str
    extended_description: str  # flattened XHTML: one line per paragraph, "- " for list items
    status: str  # Stable, Draft, Incomplete, Deprecated
    abstraction: str  # Pillar, Class, Base, Variant, Compound
    consequences: tuple[Consequence, ...]
    observed_examples: tuple[ObservedExample, ...]
    parents: tuple[int, ...]  # Related_Weakness Nature="ChildOf", any view, first seen first
    children: tuple[int, ...]
    deprecated: bool
    replaced_by: int | None  # deprecated entries: the first CWE their note points to

    @property
    def cwe_id(self) -> str:
        return f"CWE-{self.id}"


@dataclass(frozen=True)
class CweCategory:
    """A CWE category or view: it has a CWE id but is not a weakness."""

    id: int
    name: str
    kind: str  # category or view
    status: str
    deprecated: bool  # Deprecated or Obsolete

    @property
    def cwe_id(self) -> str:
        return f"CWE-{self.id}"


class CweKB:
    """CWE weaknesses by id, categories/views by id, and the CVE -> CWE observed examples."""

    def __init__(self, version: str, weaknesses: list[Weakness], categories: list[CweCategory]):
        self.version = version
        self.weaknesses_by_id = {w.id: w for w in weaknesses}
        self.categories_by_id = {c.id: c for c in categories}
        self._by_cve: dict[str, list[str]] = defaultdict(list)
        for cve, cwe_id, _ in self.observed_examples():
            if cwe_id not in self._by_cve[cve]:
                self._by_cve[cve].append(cwe_id)

    @classmethod
    def from_xml(cls, path: str | Path) -> CweKB:
        """Parse a ``cwec_v*.xml`` catalog."""
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise SecfmError(f"cannot read CWE catalog {path}: {exc}") from exc
        weaknesses = [_weakness(w) for w in root.iterfind("c:Weaknesses/c:Weakness", _NS)]
        children: dict[int, list[int]] = defaultdict(list)
        for w in weaknesses:
            for parent in w.parents:
                children[parent].append(w.id)
        weaknesses = [replace(w, children=tuple(sorted(children.get(w.id, ()))))
                      for w in weaknesses]
        categories = [
            CweCategory(int(e.get("ID", "0")), e.get("Name", ""), kind, e.get("Status", ""),
                        e.get("Status") in ("Deprecated", "Obsolete"))
            for kind, xpath in (("category", "c:Categories/c:Category"),
                                ("view", "c:Views/c:View"))
            for e in root.iterfind(xpath, _NS)
        ]
        return cls(root.get("Version", "unknown"), weaknesses, categories)

    def get(self, id: int | str) -> Weakness | None:
        """The weakness ``79`` / ``'79'`` / ``'CWE-79'``, or None."""
        number = parse_cwe_number(id)
        return None if number is None else self.weaknesses_by_id.get(number)

    def weakness(self, id: int | str) -> Weakness:
        """The weakness ``id``; SecfmError when unknown or a category or view."""
        found = self.get(id)
        if found is None:
            raise SecfmError(f"unknown CWE weakness {str(id).strip()!r} (CWE {self.version})")
        return found

    def category(self, id: int | str) -> CweCategory | None:
        """The category or view ``id``, or None."""
        number = parse_cwe_number(id)
        return None if number is None else self.categories_by_id.get(number)

    def weaknesses(self, include_deprecated: bool = False) -> list[Weakness]:
        """Weaknesses in id order."""
        return [w for _, w in sorted(self.weaknesses_by_id.items())
                if include_deprecated or not w.deprecated]

    def parents(self, id: int | str) -> list[Weakness]:
        return [self.weaknesses_by_id[p] for p in self.weakness(id).parents
                if p in self.weaknesses_by_id]

    def children(self, id: int | str) -> list[Weakness]:
        return [self.weaknesses_by_id[c] for c in self.weakness(id).children]

    def observed_examples(self) -> list[tuple[str, str, str]]:
        """(CVE id, CWE id, description) for every observed example whose reference is a
        well-formed CVE id, in catalog order (a CVE can appear under several CWEs)."""
        return [
            (ex.reference, w.cwe_id, ex.description)
            for w in self.weaknesses_by_id.values()
            for ex in w.observed_examples
            if _CVE.fullmatch(ex.reference)
        ]

    def cwe_for_cve(self, cve: str) -> list[str]:
        """CWE ids whose observed examples cite ``cve`` (empty when none)."""
        return list(self._by_cve.get(cve.strip().upper(), ()))

    def counts(self) -> dict[str, int]:
        weaknesses = self.weaknesses_by_id.values()
        return {
            "weaknesses": sum(not w.deprecated for w in weaknesses),
            "deprecated_weaknesses": sum(w.deprecated for w in weaknesses),
            "all_weaknesses": len(self.weaknesses_by_id),
            "categories": sum(c.kind == "category" for c in self.categories_by_id.values()),
            "views": sum(c.kind == "view" for c in self.categories_by_id.values()),
            "observed_examples": sum(len(w.observed_examples) for w in weaknesses),
            "cve_observed_examples": len(self.observed_examples()),
            "distinct_cves": len(self._by_cve),
        }


def parse_cwe_number(id: int | str) -> int | None:
    """79 for ``79``, ``'79'``, ``'CWE-79'``, ``'cwe79'``, ``' CWE 79 '``; None otherwise."""
    if isinstance(id, int):
        return id if id >= 0 else None
    m = re.fullmatch(r"(?:CWE[-_ ]?)?(\d{1,6})", id.strip(), re.IGNORECASE)
    return int(m.group(1)) if m else None


def default_xml() -> Path:
    """The catalog XML packaged in ``cwe2``."""
    try:
        import cwe2
    except ImportError as exc:
        raise SecfmError("CWE data missing: pip install cwe2") from exc
    files = sorted(Path(cwe2.__file__).parent.glob("database_v*/cwec_v*.xml"))
    if not files:
        raise SecfmError(f"no cwec_v*.xml found under {Path(cwe2.__file__).parent}")
    return files[-1]


def load_cwe(path: str | Path | None = None) -> CweKB:
    """The CWE catalog, cached per process and as a pickle keyed by the XML's size and mtime."""
    return _load(str(Path(path).expanduser().resolve()) if path else str(default_xml()))


@functools.lru_cache(maxsize=2)
def _load(path: str) -> CweKB:
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise SecfmError(f"CWE catalog not found: {path}") from exc
    key = f"{Path(path).stem}-{stat.st_size}-{stat.st_mtime_ns}-v{_CACHE_FORMAT}.pickle"
    cached = cache_dir("knowledge") / key
    if cached.is_file():
        try:
            with cached.open("rb") as f:
                kb = pickle.load(f)
            if isinstance(kb, CweKB):
                return kb
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError):
            pass  # a stale or broken cache: rebuild it below
    kb = CweKB.from_xml(path)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")  # concurrent writers do not collide
    try:
        with tmp.open("wb") as f:
            pickle.dump(kb, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cached)
    except OSError:
        tmp.unlink(missing_ok=True)  # an unwritable cache only costs the next process time
    return kb


# --- XML -> records ---------------------------------------------------------------------------


def _weakness(e: ET.Element) -> Weakness:
    description = _flatten(e.find("c:Description", _NS))
    deprecated = e.get("Status") == "Deprecated"
    mention = _CWE_MENTION.search(description) if deprecated else None
    parents: list[int] = []
    for rel in e.iterfind("c:Related_Weaknesses/c:Related_Weakness", _NS):
        cwe = int(rel.get("CWE_ID", "0"))
        if rel.get("Nature") == "ChildOf" and cwe not in parents:
            parents.append(cwe)
    return Weakness(
        id=int(e.get("ID", "0")),
        name=e.get("Name", ""),
        description=description,
        extended_description=_flatten(e.find("c:Extended_Description", _NS)),
        status=e.get("Status", ""),
        abstraction=e.get("Abstraction", ""),
        consequences=tuple(
            Consequence(
                scopes=tuple(_text(s) for s in c.iterfind("c:Scope", _NS)),
                impacts=tuple(_text(i) for i in c.iterfind("c:Impact", _NS)),
                note=_flatten(c.find("c:Note", _NS)),
            )
            for c in e.iterfind("c:Common_Consequences/c:Consequence", _NS)
        ),
        observed_examples=tuple(
            ObservedExample(
                reference=_text(o.find("c:Reference", _NS)),
                description=_flatten(o.find("c:Description", _NS)),
                link=_text(o.find("c:Link", _NS)),
            )
            for o in e.iterfind("c:Observed_Examples/c:Observed_Example", _NS)
        ),
        parents=tuple(parents),
        children=(),
        deprecated=deprecated,
        replaced_by=int(mention.group(1)) if mention else None,
    )


def _text(e: ET.Element | None) -> str:
    return " ".join((e.text or "").split()) if e is not None else ""


def _flatten(e: ET.Element | None) -> str:
    """Text of an element with XHTML content: paragraphs on their own lines, list items
    prefixed with "- ", whitespace collapsed within lines."""
    if e is None:
        return ""
    parts: list[str] = []

    def walk(node: ET.Element) -> None:
        tag = node.tag.rsplit("}", 1)[-1]
        block = tag in _XHTML_BLOCKS
        if block:
            parts.append("\n- " if tag == "li" else "\n")
        parts.append(node.text or "")
        for child in node:
            walk(child)
            parts.append(child.tail or "")
        if block:
            parts.append("\n")

    walk(e)
    lines = (" ".join(line.split()) for line in "".join(parts).splitlines())
    return "\n".join(line for line in lines if line and line != "-")

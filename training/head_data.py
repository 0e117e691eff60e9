"""Training data for the classifier heads, and splits that never leak a source entity.

ATT&CK: every procedure example (one sentence, labelled with the technique it illustrates,
from a group, software or campaign), every technique's name and description, and user JSONL
rows ``{"text": ..., "techniques": [...]}`` (optional ``"source"``). A sub-technique label
also counts its parent. Rows of one source with the same text are merged (their labels joined).

Splits are by *source entity*, never by row: each entity goes wholly to train, val or test by a
stable hash of its id. A campaign travels with the groups it is attributed to (its texts name
them), so a held-out group's campaigns are held out too. ``exclude_sources`` drops entities
(ids, or ``@file`` with ids) from every split before anything else.

CWE: each observed example (a CVE description -> its CWE), split by CVE id (a CVE listed under
several weaknesses stays in one split, with all of them as gold); weakness names, descriptions
and extended-description paragraphs always train.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from secfm.errors import SecfmError
from secfm.heads import parse_sources, source_clusters  # noqa: F401 - re-exported

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_SALT = "secfm-heads-v1"
#: pseudo-sources for rows that are not procedure examples (always in train)
KB_SOURCE = "attack-kb"
CWE_KB_SOURCE = "cwe-kb"
USER_SOURCE = "user"
#: shorter extended-description paragraphs (list stubs, headings) are not training rows
MIN_PARAGRAPH_CHARS = 40


@dataclass
class Example:
    text: str
    labels: tuple[str, ...]  # technique ids (parents included) or CWE ids
    source: str  # entity id (G0016, S0154, C0022), a CVE id, or a pseudo-source
    kind: str  # procedure, technique, weakness, observed, user
    split: str = "train"


@dataclass
class HeadDataset:
    task: str  # attack or cwe
    labels: list[str]  # the label space, in a fixed order
    examples: list[Example]
    excluded_sources: list[str] = field(default_factory=list)
    knowledge_version: str = ""

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def sources(self, split: str | None = None) -> list[str]:
        """Source entities (group, software, campaign ids; CVE ids for CWE) in a split (or all)."""
        return sorted({e.source for e in self.examples if (split is None or e.split == split)})

    def entity_sources(self, split: str | None = None) -> list[str]:
        """Only real ATT&CK/CVE entities (no pseudo-sources)."""
        return [s for s in self.sources(split) if s not in (KB_SOURCE, CWE_KB_SOURCE) and not s.startswith(USER_SOURCE)]

    def data_hash(self) -> str:
        """SHA-256 over the task, labels and every (split, source, text, labels) row."""
        h = hashlib.sha256()
        h.update(f"{self.task}\n{','.join(self.labels)}\n".encode())
        for e in self.examples:
            h.update(f"{e.split}\t{e.source}\t{','.join(e.labels)}\t{e.text}\n".encode())
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        out = {s: len(self.split(s)) for s in SPLITS}
        out.update({f"{s}_sources": len(self.entity_sources(s)) for s in SPLITS})
        return out


# ---------------------------------------------------------------------------------------------
# ids and splits
# ---------------------------------------------------------------------------------------------
def stable_fraction(key: str, salt: str = SPLIT_SALT) -> float:
    """A number in [0, 1) fixed by ``key`` (the same on every machine and Python run)."""
    from secfm.training.splits import stable_fraction as fraction

    return fraction(key, salt)


def split_of(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = SPLIT_SALT) -> str:
    """The split of one source cluster, by the one splitting function (secfm.training.splits)."""
    from secfm.training.splits import SplitPlan

    return SplitPlan(tuple(zip(SPLITS, fractions)), salt).of_key(key)


def with_parents(ids: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for t in ids:
        for x in (t, t.split(".")[0]):
            if x not in out:
                out.append(x)
    return tuple(sorted(out))


# ---------------------------------------------------------------------------------------------
# ATT&CK
# ---------------------------------------------------------------------------------------------
def technique_text(tech) -> str:
    return f"{tech.name}. {tech.description}".strip()


def read_user_jsonl(paths: Iterable[str | Path], valid: set[str], key: str = "techniques") -> list[Example]:
    """Rows ``{"text": str, "<key>": [ids], "source": optional str}``; ids are checked."""
    from secfm.knowledge.ids import normalize_id

    rows: list[Example] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise SecfmError(f"training data file not found: {path}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise SecfmError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(row.get(key), list):
                raise SecfmError(f"{path}:{number}: expected {{\"text\": str, \"{key}\": [ids]}}")
            ids = []
            for raw in row[key]:
                norm = normalize_id(str(raw))
                if norm is None or norm[0] not in valid:
                    raise SecfmError(f"{path}:{number}: unknown or retired id {raw!r}")
                ids.append(norm[0])
            if not ids or not row["text"].strip():
                continue
            source = str(row.get("source") or f"{USER_SOURCE}:{path.name}:{number}")
            rows.append(Example(row["text"].strip(), tuple(ids), source, "user"))
    return rows


def build_attack_dataset(
    attack=None,
    exclude_sources: Iterable[str] | str | None = None,
    user_jsonl: Sequence[str | Path] = (),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    include_descriptions: bool = True,
    salt: str = SPLIT_SALT,
) -> HeadDataset:
    """Procedure examples (split by entity cluster), technique texts (train) and user rows."""
    from secfm.knowledge import load_attack

    attack = attack or load_attack()
    excluded = parse_sources(exclude_sources)
    techniques = attack.techniques()
    labels = [t.id for t in techniques]
    valid = set(labels)
    clusters = source_clusters(attack)
    merged: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in attack.procedures(exclude_sources=excluded):
        if p.technique_id in valid and p.text.strip():
            merged[(p.source_id, p.text.strip())].add(p.technique_id)
    examples = []
    for (source, text), techs in merged.items():
        cluster = clusters.get(source, source)
        examples.append(Example(text, with_parents(techs), source, "procedure", split_of(cluster, fractions, salt)))
    # drop campaigns of excluded groups (and groups of excluded campaigns): same cluster
    excluded_clusters = {clusters.get(s, s) for s in excluded}
    examples = [e for e in examples if clusters.get(e.source, e.source) not in excluded_clusters]
    if include_descriptions:
        for t in techniques:
            examples.append(Example(technique_text(t), with_parents([t.id]), KB_SOURCE, "technique", "train"))
    for row in read_user_jsonl(user_jsonl, valid):
        if row.source.upper() in excluded or clusters.get(row.source.upper(), row.source.upper()) in excluded_clusters:
            continue
        row.labels = with_parents(row.labels)
        row.split = "train" if row.source.startswith(USER_SOURCE) else split_of(row.source, fractions, salt)
        examples.append(row)
    return HeadDataset("attack", labels, examples, sorted(excluded), attack.version)


# ---------------------------------------------------------------------------------------------
# CWE
# ---------------------------------------------------------------------------------------------
def build_cwe_dataset(
    cwe=None,
    user_jsonl: Sequence[str | Path] = (),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    include_descriptions: bool = True,
    salt: str = SPLIT_SALT,
) -> HeadDataset:
    """CVE observed examples (split by CVE id) and weakness names/descriptions (train)."""
    from secfm.knowledge import load_cwe

    cwe = cwe or load_cwe()
    weaknesses = cwe.weaknesses()
    labels = [w.cwe_id for w in weaknesses]
    valid = set(labels)
    replaced = {w.cwe_id: f"CWE-{w.replaced_by}" for w in cwe.weaknesses(include_deprecated=True)
                if w.deprecated and w.replaced_by is not None}
    by_cve: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for cve, cwe_id, description in cwe.observed_examples():
        cwe_id = replaced.get(cwe_id, cwe_id)
        if cwe_id in valid and description.strip():
            by_cve[cve][description.strip()].add(cwe_id)
    examples: list[Example] = []
    for cve, texts in by_cve.items():
        gold = set().union(*texts.values())  # every CWE the catalog files this CVE under
        split = split_of(cve, fractions, salt)
        for text in texts:
            examples.append(Example(text, tuple(sorted(gold)), cve, "observed", split))
    if include_descriptions:
        for w in weaknesses:
            examples.append(Example(w.name, (w.cwe_id,), CWE_KB_SOURCE, "weakness", "train"))
            if w.description.strip():
                examples.append(Example(w.description.strip(), (w.cwe_id,), CWE_KB_SOURCE, "weakness", "train"))
            # each paragraph of the extended description: more ways each weakness is put in words
            for paragraph in w.extended_description.split("\n"):
                paragraph = paragraph.lstrip("- ").strip()
                if len(paragraph) >= MIN_PARAGRAPH_CHARS:
                    examples.append(Example(paragraph, (w.cwe_id,), CWE_KB_SOURCE, "weakness", "train"))
    for row in read_user_jsonl(user_jsonl, valid, key="cwes"):
        row.split = "train"
        examples.append(row)
    return HeadDataset("cwe", labels, examples, [], cwe.version)


def subsample(examples: Sequence[Example], n: int, salt: str = "secfm-sweep") -> list[Example]:
    """A stable subsample of ``n`` examples, drawn source by source (in a stable random order of
    sources; the last source drawn may be cut)."""
    if len(examples) <= n:
        return list(examples)
    by_source: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        by_source[e.source].append(e)
    order = sorted(by_source, key=lambda s: stable_fraction(s, salt))
    picked: list[Example] = []
    for s in order:
        if len(picked) >= n:
            break
        picked.extend(by_source[s])
    return picked[:n]

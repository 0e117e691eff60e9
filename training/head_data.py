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


# ---------------------------------------------------------------------------------------------
# ATT&CK documents: the development set of document-level extraction (CTI-ATE-like)
# ---------------------------------------------------------------------------------------------
#: a document names at most this many parent techniques (CTI-ATE paragraphs name 4-7)
DOC_MAX_TECHNIQUES = 8
#: an entity gives at most this many documents (a large group does not outweigh the rest)
DOC_MAX_PER_ENTITY = 4
#: procedure examples per parent technique in one document
DOC_PROCEDURES_PER_TECHNIQUE = 2
DOC_SALT = "secfm-attack-docs-v1"
_URL_KIND = {"software": "software", "group": "groups", "campaign": "campaigns"}
_DOMAIN_PLATFORM = {"enterprise": "Enterprise", "mobile": "Mobile", "ics": "ICS"}


@dataclass
class AttackDocument:
    """A paragraph about one ATT&CK entity (software, group or campaign) of one domain, gold =
    the parent techniques of the procedure examples it is assembled from."""

    id: str  # S0066#1
    entity: str  # S0066
    entity_kind: str  # software, group, campaign
    domain: str  # enterprise, mobile, ics
    text: str
    labels: tuple[str, ...]  # parent technique ids, sorted
    split: str = "train"
    sentences: tuple[str, ...] = ()  # the techniques each assembled sentence came from ("" = the lead)
    form: str = "paragraph"  # paragraph, or sentence (one procedure example alone: alert-sized)

    @property
    def url(self) -> str:
        return f"https://attack.mitre.org/{_URL_KIND[self.entity_kind]}/{self.entity}/"

    @property
    def platform(self) -> str:
        return _DOMAIN_PLATFORM[self.domain]


def _lead_sentence(description: str) -> str:
    """The first sentence of an entity's description (what CTI-ATE paragraphs open with)."""
    text = " ".join(description.split())
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z])", text)
    lead = text[: m.start()] if m else text
    return lead if len(lead) <= 400 else ""


def _retell(sentence: str, name: str, kind: str, key: str) -> str:
    """A procedure example as a report would go on after naming the entity: a sentence that
    opens with the entity's name opens, by a stable draw, with a pronoun or a noun instead."""
    if not sentence.startswith(name + " ") or stable_fraction(key, DOC_SALT + ":retell") < 0.4:
        return sentence
    noun = {"software": ("It", "The malware" if kind == "malware" else "The tool"),
            "group": ("The group", "The actor"), "campaign": ("The operation", "The campaign")}
    options = noun["software" if kind in ("malware", "tool") else kind]
    pick = options[int(stable_fraction(key, DOC_SALT + ":noun") * len(options))]
    return pick + sentence[len(name):]


def build_attack_documents(attack=None, exclude_sources: Iterable[str] | str | None = None,
                           fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = SPLIT_SALT,
                           max_techniques: int = DOC_MAX_TECHNIQUES, max_per_entity: int = DOC_MAX_PER_ENTITY,
                           domains: Iterable[str] | None = None, one_sentence: int = 0) -> list[AttackDocument]:
    """The development set of document-level extraction, built only from ATT&CK: for each
    software, group and campaign and each domain it has procedure examples in, up to
    ``max_per_entity`` paragraphs, each opening with the first sentence of the entity's
    description and going on with procedure examples (up to two per parent technique, in a
    stable shuffled order, retold as a report would: "It can ...") for at most
    ``max_techniques`` parent techniques; gold = those parent techniques.

    Split by entity exactly as the head's training rows are (``split_of`` over the source
    cluster: a campaign goes with its groups), so a held-out entity takes all its documents
    with it and the head never saw a sentence of a validation or test document's entity.

    ``one_sentence``: also up to that many one-sentence documents per entity and domain (one
    procedure example alone, ``form="sentence"``: what an alert is like), after the paragraphs.
    """
    from secfm.knowledge import load_attack

    attack = attack or load_attack()
    excluded = parse_sources(exclude_sources)
    clusters = source_clusters(attack)
    excluded_clusters = {clusters.get(s, s) for s in excluded}
    wanted = None if domains is None else set(domains)
    current = {t.id for t in attack.techniques()}
    by_entity: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for p in attack.procedures():
        if p.technique_id not in current or not p.text.strip() or (wanted and p.domain not in wanted):
            continue
        if p.source_id in excluded or clusters.get(p.source_id, p.source_id) in excluded_clusters:
            continue
        parent = p.technique_id.split(".")[0]
        by_entity[(p.source_id, p.domain)][parent].append((p.technique_id, p.text.strip()))
    docs: list[AttackDocument] = []
    for (source, domain), by_parent in sorted(by_entity.items()):
        obj = attack.get(source)
        kind = "software" if source.startswith("S") else ("group" if source.startswith("G") else "campaign")
        lead = _lead_sentence(getattr(obj, "description", "") or "")
        parents = sorted(by_parent, key=lambda t: stable_fraction(f"{source}:{domain}:{t}", DOC_SALT))
        chunks = [parents[i : i + max_techniques] for i in range(0, len(parents), max_techniques)][:max_per_entity]
        split = split_of(clusters.get(source, source), fractions, salt)
        for n, chunk in enumerate(chunks, start=1):
            sentences, origins = ([lead], [""]) if lead else ([], [])
            picked = []
            for parent in chunk:
                rows = sorted(dict.fromkeys(by_parent[parent]),
                              key=lambda r: stable_fraction(f"{source}:{r[1]}", DOC_SALT))
                picked += [(parent, tid, text) for tid, text in rows[:DOC_PROCEDURES_PER_TECHNIQUE]]
            picked.sort(key=lambda r: stable_fraction(f"{source}:{n}:{r[2]}", DOC_SALT + ":order"))
            for _parent, tid, text in picked:
                sentences.append(_retell(text, obj.name, getattr(obj, "kind", kind), f"{source}:{text}"))
                origins.append(tid)
            text = " ".join(s if s.rstrip().endswith((".", "!", "?", "…")) else s.rstrip() + "." for s in sentences)
            docs.append(AttackDocument(f"{source}#{n}" + ("" if domain == "enterprise" else f"-{domain}"), source,
                                       kind, domain, text, tuple(sorted(chunk)), split, tuple(origins)))
        if one_sentence:
            techniques_of: dict[str, set[str]] = defaultdict(set)
            for parent in by_parent:
                for tid, text in by_parent[parent]:
                    techniques_of[text].add(tid)
            singles = sorted(techniques_of, key=lambda t: stable_fraction(f"{source}:{t}", DOC_SALT + ":single"))
            for n, text in enumerate(singles[:one_sentence], start=1):
                tids = tuple(sorted(techniques_of[text]))
                docs.append(AttackDocument(f"{source}~{n}" + ("" if domain == "enterprise" else f"-{domain}"), source,
                                           kind, domain, text, tuple(sorted({t.split(".")[0] for t in tids})), split,
                                           tids, "sentence"))
    return docs


def write_documents_tsv(docs: Sequence[AttackDocument], path: str | Path) -> Path:
    """Documents in the CTI-ATE layout (URL, Platform, Description, Prompt, GT): a file
    ``secfm eval cti-ate --data`` reads. These are ATT&CK-derived development documents, never
    CTI-ATE rows."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(["URL", "Platform", "Description", "Prompt", "GT"])
        for d in docs:
            prompt = (f"Extract all MITRE {d.platform} attack patterns from the following text and map them to their "
                      f"corresponding MITRE technique IDs. **Text:** {d.text}")
            writer.writerow([d.url, d.platform, d.text, prompt, ", ".join(d.labels)])
    return path


def build_index_rows(attack=None, sources: Iterable[str] | None = None, exclude_sources: Iterable[str] | str | None = (),
                     include_descriptions: bool = True):
    """The rows of the retrieval index (:class:`secfm.workflows.attack_extraction.ProcedureIndex`):
    procedure examples of ``sources`` (every source when None) minus ``exclude_sources`` and
    their clusters, one row per distinct text with its techniques (parents included), and each
    current technique's name with the first sentence of its description (source ``attack-kb``).
    Returns (rows, the entity ids whose examples are in)."""
    from secfm.knowledge import load_attack
    from secfm.workflows.attack_extraction import IndexRow

    attack = attack or load_attack()
    clusters = source_clusters(attack)
    excluded = parse_sources(exclude_sources)
    excluded_clusters = {clusters.get(s, s) for s in excluded}
    allowed = None if sources is None else {s.upper() for s in sources}
    current = {t.id for t in attack.techniques()}
    merged: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in attack.procedures():
        sid = p.source_id
        if p.technique_id not in current or not p.text.strip():
            continue
        if (allowed is not None and sid not in allowed) or sid in excluded or clusters.get(sid, sid) in excluded_clusters:
            continue
        merged[(sid, p.text.strip())].add(p.technique_id)
    rows = [IndexRow(text, with_parents(techs), sid) for (sid, text), techs in merged.items()]
    if include_descriptions:
        for t in attack.techniques():
            rows.append(IndexRow(f"{t.name}. {_lead_sentence(t.description) or t.description[:300]}".strip(),
                                 with_parents([t.id]), KB_SOURCE))
    return rows, sorted({sid for sid, _ in merged})

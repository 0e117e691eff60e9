"""Corpus curation for continued pretraining: `secfm data corpus --out DIR [INPUTS...]`.

Sources: the knowledge base (ATT&CK Enterprise and CWE rendered as documents), user files and
folders (``.txt``, ``.md``, ``.html``/``.htm``, ``.jsonl`` with a text field) and Hugging Face
datasets by name when reachable. Steps, each counted in the data card:

1. normalisation (Unicode NFKC, HTML to text, control characters, whitespace);
2. length filter (too short dropped, too long split at paragraph boundaries) and a language
   filter (English by Latin-script share and stop-word rate);
3. exact duplicates (hash of the case- and space-folded text) and near duplicates
   (MinHash LSH over word 5-shingles, datasketch);
4. redaction of secrets and personal data (:mod:`secfm.training.redaction`);
5. a split by entity (:mod:`secfm.training.splits`, the one splitting function): a document
   goes with the most protected of the entities it is about or names, so a held-out technique,
   group, software or CWE takes all its documents (description, procedure examples,
   relationships) with it, and training documents list only training entities.

Output: a ``datasets.DatasetDict`` (``train``, ``validation``, ``test``) saved to ``DIR``
(loads with ``load_from_disk`` and ``load_dataset``) and a data card (``data_card.json`` and
``data_card.md``: documents and tokens per source for a named tokenizer, redactions per type,
duplicate rates, filter counts, the leakage check).
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from secfm.errors import SecfmError
from secfm.text.html import html_to_text
from secfm.training.redaction import Redactor
from secfm.training.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VALIDATION_FRACTION,
    SPLIT_SALT,
    TRAIN,
    EntitySplit,
    SplitPlan,
)

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES


@dataclass
class Document:
    text: str
    source: str  # kb-attack, kb-cwe, file:<name>, hf:<name>
    doc_id: str  # stable key (user documents: the split hashes it)
    kind: str = "text"  # technique, group, weakness, procedure, file, jsonl, hf ...
    entities: tuple[str, ...] = ()  # what it is about (T1059, G0016, CWE-79; a user document: its doc_id)
    split: str = TRAIN


@dataclass
class CorpusConfig:
    inputs: Sequence[str | Path] = ()
    kb: bool = True
    hf_datasets: Sequence[str] = ()  # NAME[:SPLIT[:FIELD]]
    text_field: str = "text"
    skip_bad: bool = False  # a JSONL line that is not JSON or has no text: reported and skipped
    min_chars: int = 40
    max_chars: int = 20_000
    language: str | None = "en"
    min_stopword_rate: float = 0.04
    near_dup_threshold: float = 0.85
    num_perm: int = 64
    shingle: int = 5
    redact: Sequence[str] = ()  # optional kinds: ip, hostname, username
    salt: str | None = None
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    heldout_fraction: float | None = None  # older name of test_fraction
    split_salt: str = SPLIT_SALT
    exclude_sources: Sequence[str] = ()  # ATT&CK group/software/campaign ids whose procedures are dropped
    exclude_ids: Sequence[str] = ()  # documents mentioning any of these ids are dropped
    tokenizer: str | None = "gemma-3-270m"
    kb_limit: int | None = None  # for tests: at most this many KB documents per kind

    def plan(self) -> SplitPlan:
        test = self.test_fraction if self.heldout_fraction is None else self.heldout_fraction
        try:
            return SplitPlan.standard(self.validation_fraction, test, self.split_salt)
        except ValueError as exc:
            raise SecfmError(f"corpus split: {exc}") from exc


# ------------------------------------------------------------------------------------------------
# normalisation and filters
# ------------------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")


def normalize_text(text: str) -> str:
    """NFKC, no control characters, ``\\n`` line ends, single spaces, at most one blank line."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text).replace("\t", "    ")
    lines = []
    for line in text.split("\n"):  # leading indentation (code, lists) kept; inner runs of spaces collapsed
        body = line.lstrip(" ")
        lines.append(line[: len(line) - len(body)] + re.sub(r"[ \u00a0]{2,}", " ", body).rstrip())
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_STOPWORDS = frozenset(
    "the of and to a in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were their one all we can her has there been if more when will would who so no its may also "
    "into than other some such these used use using can could after before between through during without "
    "attackers adversaries adversary attacker".split()
)


def language_ok(text: str, language: str | None, min_stopword_rate: float) -> bool:
    """English heuristics: mostly Latin letters and enough function words (short texts pass)."""
    if not language:
        return True
    if language != "en":
        raise SecfmError(f"language filter: only 'en' is supported (got {language!r}); pass --language none to skip it")
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(c < "\u0250" for c in letters) / len(letters)
    if latin < 0.8:
        return False
    words = re.findall(r"[A-Za-z']+", text.lower())
    if len(words) < 20:
        return True
    return sum(w in _STOPWORDS for w in words) / len(words) >= min_stopword_rate


def split_long(text: str, max_chars: int) -> list[str]:
    """Pieces of at most ``max_chars``, cut at paragraph, then line, then sentence boundaries."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for para in re.split(r"(\n\n)", text):
        if len(current) + len(para) <= max_chars:
            current += para
            continue
        if current.strip():
            pieces.append(current.strip())
        current = ""
        while len(para) > max_chars:
            cut = max(para.rfind("\n", 0, max_chars), para.rfind(". ", 0, max_chars) + 1)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(para[:cut].strip())
            para = para[cut:]
        current = para
    if current.strip():
        pieces.append(current.strip())
    return [p for p in pieces if p]


# ------------------------------------------------------------------------------------------------
# deduplication
# ------------------------------------------------------------------------------------------------
def exact_key(text: str) -> str:
    import hashlib

    return hashlib.sha1(re.sub(r"\s+", " ", text.casefold()).strip().encode()).hexdigest()


def shingles(text: str, n: int) -> set[bytes]:
    words = re.findall(r"\w+", text.casefold())
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def dedup(docs: list[Document], threshold: float, num_perm: int, n: int) -> tuple[list[Document], int, int]:
    """(kept, exact duplicates, near duplicates); the first occurrence of each cluster is kept."""
    from datasketch import MinHash, MinHashLSH

    seen: set[str] = set()
    unique: list[Document] = []
    for d in docs:
        key = exact_key(d.text)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    exact = len(docs) - len(unique)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: list[Document] = []
    for i, d in enumerate(unique):
        mh = MinHash(num_perm=num_perm, seed=1)
        mh.update_batch(list(shingles(d.text, n)))
        if lsh.query(mh):
            continue
        lsh.insert(str(i), mh)
        kept.append(d)
    return kept, exact, len(unique) - len(kept)


# ------------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------------
def _join(items: Iterable[str], limit: int = 12) -> str:
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def kb_documents(limit: int | None = None, exclude_sources: Iterable[str] = (),
                 split: EntitySplit | None = None) -> Iterator[Document]:
    """ATT&CK techniques, mitigations, groups, software, campaigns, procedure examples and CWE
    weaknesses (with consequences and observed examples) as plain-prose documents, each tagged
    with the entities it is about. With ``split``, a relationship (a group's technique, a
    weakness's observed CVE) is rendered only where its other end may appear in the document's
    split: a training document never lists a held-out entity."""
    from secfm.knowledge import load_attack, load_cwe

    attack = load_attack()

    def allowed(owner: str, other: str) -> bool:
        return split is None or split.allows(split.entity(owner), other)

    tactic_names = {t.shortname: t.name for t in attack.tactics("enterprise")}
    excluded = {s.strip().upper() for s in exclude_sources}

    def capped(it: Iterable[Document]) -> Iterator[Document]:
        for i, d in enumerate(it):
            if limit is not None and i >= limit:
                return
            yield d

    def techniques() -> Iterator[Document]:
        for t in attack.techniques(domain="enterprise"):
            tactics = [tactic_names.get(s, s) for s in t.tactics]
            parts = [f"{t.name} ({t.id}) is a MITRE ATT&CK Enterprise "
                     f"{'sub-technique' if t.is_subtechnique else 'technique'}"]
            if t.parent_id and t.parent_id in attack.techniques_by_id:
                parts[0] += f" of {attack.techniques_by_id[t.parent_id].name} ({t.parent_id})"
            parts[0] += f" under the {_join(tactics)} tactic{'s' if len(tactics) > 1 else ''}"
            if t.platforms:
                parts[0] += f", seen on {_join(t.platforms)}"
            parts[0] += "."
            parts.append(t.description)
            mitigations = attack.mitigations_for(t.id)
            if mitigations:
                parts.append("Mitigations: " + _join(f"{m.name} ({m.id})" for m in mitigations) + ".")
            for det in attack.detections_for(t.id)[:2]:
                line = f"Detection ({det.name}, {det.id}):"
                for an in det.analytics[:2]:
                    sources = f" Log sources: {_join(an.log_sources, 4)}." if an.log_sources else ""
                    line += f" {an.description}{sources}"
                parts.append(line)
            yield Document("\n\n".join(parts), "kb-attack", t.id, "technique", (t.id,))

    def mitigations() -> Iterator[Document]:
        for m in sorted(attack.mitigations_by_id.values(), key=lambda m: m.id):
            if not m.deprecated:
                yield Document(f"{m.name} ({m.id}) is an ATT&CK mitigation. {m.description}", "kb-attack", m.id,
                               "mitigation")  # a shared answer, not a split entity

    def actors() -> Iterator[Document]:
        for g in sorted(attack.groups_by_id.values(), key=lambda g: g.id):
            if g.revoked or g.deprecated or g.id in excluded:
                continue
            used = [t for t in attack.techniques_used_by(g.id) if allowed(g.id, t.id)]
            text = f"{g.name} ({g.id}) is a threat group tracked by MITRE ATT&CK. {g.description}"
            if g.associated_groups:
                text += f"\n\nAssociated names: {_join(g.associated_groups)}."
            if used:
                text += f"\n\nTechniques used by {g.name}: " + _join(f"{t.name} ({t.id})" for t in used) + "."
            yield Document(text, "kb-attack", g.id, "group", (g.id,))
        for s in sorted(attack.software_by_id.values(), key=lambda s: s.id):
            if s.revoked or s.deprecated or s.id in excluded:
                continue
            text = f"{s.name} ({s.id}) is {'a malware family' if s.kind == 'malware' else 'a tool'} in MITRE ATT&CK"
            text += (f", seen on {_join(s.platforms)}. " if s.platforms else ". ") + s.description
            yield Document(text, "kb-attack", s.id, "software", (s.id,))
        for c in sorted(attack.campaigns_by_id.values(), key=lambda c: c.id):
            if c.id in excluded:
                continue
            yield Document(f"{c.name} ({c.id}) is an ATT&CK campaign. {c.description}", "kb-attack", c.id, "campaign",
                           (c.id,))

    def procedures() -> Iterator[Document]:
        for p in attack.procedures(exclude_sources=excluded):
            yield Document(p.text, "kb-attack", f"proc:{p.source_id}:{p.technique_id}", "procedure",
                           (p.source_id, p.technique_id))

    def weaknesses() -> Iterator[Document]:
        cwe = load_cwe()
        for w in cwe.weaknesses():
            parts = [f"{w.cwe_id}: {w.name}. {w.description}"]
            if w.extended_description:
                parts.append(w.extended_description)
            for c in w.consequences[:4]:
                line = f"Consequence ({_join(c.scopes)}): {_join(c.impacts)}."
                parts.append(line + (f" {c.note}" if c.note else ""))
            examples = [ex for ex in w.observed_examples
                        if ex.reference.startswith("CVE-") and allowed(w.cwe_id, ex.reference)][:6]
            if examples:
                parts.append("Observed examples:\n" + "\n".join(f"- {ex.reference}: {ex.description}" for ex in examples))
            yield Document("\n\n".join(parts), "kb-cwe", w.cwe_id, "weakness", (w.cwe_id,))

    for gen in (techniques, mitigations, actors, procedures, weaknesses):
        yield from capped(gen())


def _file_documents(path: Path, text_field: str, skip_bad: bool = False) -> Iterator[Document]:
    from secfm.inputs import BadLine, jsonl_rows, read_file_text, report_bad_line

    suffix = path.suffix.lower()
    name = path.name
    text = read_file_text(path)  # clear errors: missing, empty, not UTF-8
    if suffix in JSONL_SUFFIXES:
        rows = 0
        for lineno, row in jsonl_rows(path, text, skip_bad=skip_bad):
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                if skip_bad:
                    report_bad_line(BadLine(str(path), lineno, f"no string field '{text_field}'"))
                    continue
                raise SecfmError(f"{path}: line {lineno} has no string field '{text_field}' (use --text-field, or --skip-bad)")
            rows += 1
            doc_id = str(row.get("id") or f"{name}#{lineno}")
            yield Document(row[text_field], f"file:{name}", f"file:{doc_id}", "jsonl", (f"file:{doc_id}",))
        if rows == 0:
            raise SecfmError(f"{path}: no rows (empty JSONL file)")
        return
    if suffix in HTML_SUFFIXES:
        text = html_to_text(text)
    yield Document(text, f"file:{name}", f"file:{path.as_posix()}", suffix.lstrip("."), (f"file:{path.as_posix()}",))


def input_documents(inputs: Sequence[str | Path], text_field: str, skipped: Counter, skip_bad: bool = False) -> Iterator[Document]:
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise SecfmError(f"input not found: {path}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            for f in files:
                if f.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield from _file_documents(f, text_field, skip_bad)
                else:
                    skipped[f.suffix.lower() or "(none)"] += 1
        elif path.suffix.lower() in SUPPORTED_SUFFIXES:
            yield from _file_documents(path, text_field, skip_bad)
        else:
            raise SecfmError(
                f"{path}: unsupported file type '{path.suffix}' (use .txt, .md, .html, .htm or .jsonl)"
            )


def hf_documents(spec: str, default_field: str, unreachable: list[str]) -> Iterator[Document]:
    """``NAME[:SPLIT[:FIELD]]`` from the Hugging Face hub (or its local cache); skipped with a
    warning when neither is reachable."""
    name, _, rest = spec.partition(":")
    split, _, text_field = rest.partition(":")
    try:
        from datasets import load_dataset

        ds = load_dataset(name, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable; the card records it
        log.warning("Hugging Face dataset %s is not reachable (%s); skipped", name, str(exc).splitlines()[0][:120])
        unreachable.append(name)
        return
    text_field = text_field or default_field
    if text_field not in ds.column_names:
        raise SecfmError(f"Hugging Face dataset {name} has no column '{text_field}' (columns: {', '.join(ds.column_names)})")
    for i, row in enumerate(ds):
        if isinstance(row[text_field], str):
            yield Document(row[text_field], f"hf:{name}", f"hf:{name}#{i}", "hf", (f"hf:{name}#{i}",))


# ------------------------------------------------------------------------------------------------
# pipeline
# ------------------------------------------------------------------------------------------------
def _mentions(text: str, ids: set[str]) -> bool:
    upper = text.upper()
    return any(i in upper for i in ids)


def corpus_split(config: CorpusConfig) -> EntitySplit:
    """The entity split of a corpus build (the knowledge base's entity graph when it is read)."""
    from secfm.training.splits import kb_entity_split

    return kb_entity_split(config.plan()) if config.kb else EntitySplit(config.plan())


def curate(config: CorpusConfig, progress: Callable[[str], None] | None = None,
           split: EntitySplit | None = None) -> tuple[list[Document], dict]:
    """Run every step; (documents, each with its ``split``, and the step counts)."""
    note = progress or (lambda s: None)
    steps: dict = {}
    skipped_types: Counter = Counter()
    unreachable: list[str] = []
    read_by_source: Counter = Counter()
    split = split or corpus_split(config)

    note("reading sources")
    docs: list[Document] = []
    if config.kb:
        docs.extend(kb_documents(config.kb_limit, config.exclude_sources, split))
    docs.extend(input_documents(config.inputs, config.text_field, skipped_types, config.skip_bad))
    for spec in config.hf_datasets:
        docs.extend(hf_documents(spec, config.text_field, unreachable))
    if not docs:
        raise SecfmError("no documents: pass input files or folders, or keep the knowledge base (--kb)")
    for d in docs:
        read_by_source[d.source] += 1
    steps["read"] = {"documents": len(docs), "by_source": dict(read_by_source),
                     "skipped_file_types": dict(skipped_types), "unreachable_hf_datasets": unreachable}

    note("normalising")
    changed = 0
    for d in docs:
        new = normalize_text(d.text)
        changed += new != d.text
        d.text = new
    steps["normalise"] = {"documents_changed": changed}

    # the split of a whole document (its pieces below stay together): its entities and what it names
    moved = Counter()
    for d in docs:
        d.split = split.unit(d.entities)
        named = split.unit(d.entities, d.text)
        if named != d.split:
            moved[named] += 1
            d.split = named
    steps["split"] = {**split.describe(), "moved_by_mention": dict(moved),
                      "documents": dict(Counter(d.split for d in docs))}

    if config.exclude_ids:
        ids = {i.strip().upper() for i in config.exclude_ids if i.strip()}
        before = len(docs)
        docs = [d for d in docs if not _mentions(d.text, ids) and d.doc_id.upper() not in ids]
        steps["exclude_ids"] = {"ids": len(ids), "dropped": before - len(docs)}

    note("length and language filters")
    too_short = split_docs = pieces_added = 0
    lang_dropped = 0
    kept: list[Document] = []
    for d in docs:
        if len(d.text) < config.min_chars:
            too_short += 1
            continue
        if not language_ok(d.text, config.language, config.min_stopword_rate):
            lang_dropped += 1
            continue
        parts = split_long(d.text, config.max_chars)
        if len(parts) > 1:
            split_docs += 1
            pieces_added += len(parts) - 1
            for k, part in enumerate(parts):
                kept.append(Document(part, d.source, f"{d.doc_id}@{k}", d.kind, d.entities, d.split))
        else:
            kept.append(d)
    steps["length_filter"] = {"min_chars": config.min_chars, "max_chars": config.max_chars,
                              "dropped_too_short": too_short, "split_too_long": split_docs,
                              "pieces_added": pieces_added}
    steps["language_filter"] = {"language": config.language, "dropped": lang_dropped}
    docs = kept

    note("deduplicating (exact and MinHash LSH)")
    before = len(docs)
    docs, exact, near = dedup(docs, config.near_dup_threshold, config.num_perm, config.shingle)
    steps["dedup"] = {"exact_duplicates": exact, "near_duplicates": near,
                      "duplicate_rate": round((exact + near) / before, 4) if before else 0.0,
                      "near_dup_threshold": config.near_dup_threshold, "num_perm": config.num_perm,
                      "shingle_words": config.shingle}

    note("redacting secrets and personal data")
    redactor = Redactor(config.redact, config.salt)
    for d in docs:
        d.text = redactor.redact(d.text)
    steps["redaction"] = {**redactor.report.as_dict(), "types": sorted(redactor.types),
                          "salt_fingerprint": redactor.salt_fingerprint}
    if not docs:
        raise SecfmError("every document was filtered out: check --min-chars, --language and the inputs")
    return docs, steps


def split_documents(docs: list[Document], split: EntitySplit) -> dict[str, list[Document]]:
    """Documents by split (``train``, ``validation``, ``test``), from the one splitting function."""
    return split.assign(docs, lambda d: d.entities, lambda d: d.text)


def leakage_check(by_split: dict[str, list[Document]], split: EntitySplit) -> dict[str, int]:
    """Rows of each split that carry or name an entity of a more protected split (all 0, or the
    build fails): the test that no held-out entity id occurs in a training split."""
    found = {}
    for name, docs in by_split.items():
        leaks = split.leaks([d.text for d in docs], name, [d.entities for d in docs])
        if leaks:
            row, entity = leaks[0]
            raise SecfmError(f"split leak: a {name} document ({docs[row].doc_id}) names {entity}, which is "
                             f"{split.entity(entity)}; this is a bug in the corpus builder")
        found[name] = 0
    return found


def count_tokens(texts: list[str], tokenizer_name: str | None) -> list[int] | None:
    if not tokenizer_name:
        return None
    from secfm.models import load_tokenizer

    tok = load_tokenizer(tokenizer_name)
    counts: list[int] = []
    for start in range(0, len(texts), 512):
        enc = tok(texts[start:start + 512], add_special_tokens=False)["input_ids"]
        counts.extend(len(e) for e in enc)
    return counts


def build_corpus(out: str | Path, config: CorpusConfig, force: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Curate, split and save the corpus to ``out``; returns the data card (also written there)."""
    from datasets import Dataset

    from secfm.outputs import check_output_folder, output_folder
    from secfm.training.hf_layout import save_dataset_folder

    out = check_output_folder(out, inputs=config.inputs, force=force)
    started = time.time()
    from secfm.provenance import Recorder

    recorder = Recorder([str(f) for f in config.inputs], allow_busy=True, command=None)  # a data build: the load is recorded
    split = corpus_split(config)
    docs, steps = curate(config, progress, split)
    by_split = {name: [d for d in docs if d.split == name] for name in split.plan.names}
    steps["leakage_check"] = leakage_check(by_split, split)
    if progress:
        progress("counting tokens")
    tokens = count_tokens([d.text for d in docs], config.tokenizer)
    token_of = {id(d): (tokens[i] if tokens else None) for i, d in enumerate(docs)}

    per_source: dict[str, dict] = defaultdict(lambda: {"documents": 0, "tokens": 0, "characters": 0,
                                                        **{f"{s}_{k}": 0 for s in split.plan.names[1:]
                                                           for k in ("documents", "tokens")}})
    for d in docs:
        row = per_source[d.source]
        row["documents"] += 1
        row["characters"] += len(d.text)
        row["tokens"] += token_of[id(d)] or 0
        if d.split != TRAIN:
            row[f"{d.split}_documents"] += 1
            row[f"{d.split}_tokens"] += token_of[id(d)] or 0

    def table(ds: list[Document]) -> Dataset:
        return Dataset.from_dict({"text": [d.text for d in ds], "source": [d.source for d in ds],
                                  "doc_id": [d.doc_id for d in ds], "kind": [d.kind for d in ds],
                                  "entities": [list(d.entities) for d in ds],
                                  "tokens": [token_of[id(d)] or 0 for d in ds]},
                                 features=_CORPUS_FEATURES())

    fractions = dict(split.plan.bands)
    card = {
        "kind": "secfm-corpus",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "tokenizer": config.tokenizer,
        "documents": len(docs),
        "tokens": sum(tokens) if tokens else None,
        "splits": {name: {"documents": len(ds), "tokens": sum(token_of[id(d)] or 0 for d in ds),
                          "entity_fraction": round(fractions[name], 6)} for name, ds in by_split.items()},
        "split": split.describe(),
        "sources": dict(sorted(per_source.items())),
        "steps": steps,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()
                   if k != "salt"} | {"inputs": [str(p) for p in config.inputs]},
    }
    with output_folder(out, inputs=config.inputs, force=force) as tmp:  # a fresh temporary name, moved into place
        save_dataset_folder(tmp, {name: table(ds) for name, ds in by_split.items()}, title="secfm corpus",
                            body="Continued-pretraining corpus built by `secfm data corpus`; see `data_card.md`.")
        card["provenance"] = recorder.stamp()
        (tmp / "data_card.json").write_text(json.dumps(card, indent=2, default=str))
        (tmp / "data_card.md").write_text(render_card(card))
    return card


def _CORPUS_FEATURES():
    from datasets import Features, List, Value

    return Features({"text": Value("string"), "source": Value("string"), "doc_id": Value("string"),
                     "kind": Value("string"), "entities": List(Value("string")), "tokens": Value("int64")})


def render_card(card: dict) -> str:
    steps = card["steps"]
    held = [s for s in card["splits"] if s != TRAIN]
    split = card.get("split", {})
    lines = [
        "# secfm corpus: data card", "",
        f"Built {card['created']} in {card['seconds']} s. Tokens counted with the `{card['tokenizer']}` tokenizer.", "",
        f"- documents: {card['documents']:,}" + (f", tokens: {card['tokens']:,}" if card["tokens"] is not None else ""),
    ]
    for name, row in card["splits"].items():
        lines.append(f"- {name}: {row['documents']:,} documents, {row['tokens']:,} tokens"
                     + (f" (entities hashed to it: {row['entity_fraction']:.0%})" if name != TRAIN else ""))
    lines += [
        "", f"Split by entity ({split.get('by', 'entity')}; salt `{split.get('salt')}`): a document goes with the most "
        "protected split among the entities it is about and those it names; training documents list only training "
        f"entities. Leakage check (documents naming an entity of a more protected split): {steps.get('leakage_check')}.",
        "", "## Sources", "",
        "| source | documents | tokens | " + " | ".join(f"{s} documents | {s} tokens" for s in held) + " |",
        "|---|---:|---:|" + "---:|---:|" * len(held),
    ]
    for name, row in card["sources"].items():
        lines.append(f"| {name} | {row['documents']:,} | {row['tokens']:,} | "
                     + " | ".join(f"{row.get(f'{s}_documents', 0):,} | {row.get(f'{s}_tokens', 0):,}" for s in held) + " |")
    dd = steps["dedup"]
    red = steps["redaction"]
    lines += [
        "", "## Steps", "",
        f"1. read: {steps['read']['documents']:,} documents"
        + (f"; skipped file types {steps['read']['skipped_file_types']}" if steps["read"]["skipped_file_types"] else "")
        + (f"; unreachable HF datasets: {', '.join(steps['read']['unreachable_hf_datasets'])}" if steps["read"]["unreachable_hf_datasets"] else ""),
        f"2. normalisation (NFKC, HTML to text, control characters, whitespace): {steps['normalise']['documents_changed']:,} documents changed",
    ]
    if "exclude_ids" in steps:
        lines.append(f"   excluded ids: {steps['exclude_ids']['ids']} ids, {steps['exclude_ids']['dropped']:,} documents dropped")
    lf = steps["length_filter"]
    lines += [
        f"3. length filter: {lf['dropped_too_short']:,} shorter than {lf['min_chars']} characters dropped; "
        f"{lf['split_too_long']:,} longer than {lf['max_chars']:,} split ({lf['pieces_added']:,} extra pieces)",
        f"4. language filter ({steps['language_filter']['language']}): {steps['language_filter']['dropped']:,} dropped",
        f"5. duplicates: {dd['exact_duplicates']:,} exact, {dd['near_duplicates']:,} near (MinHash LSH, Jaccard >= "
        f"{dd['near_dup_threshold']}, {dd['num_perm']} permutations, {dd['shingle_words']}-word shingles); "
        f"duplicate rate {dd['duplicate_rate']:.2%}",
        f"6. redaction ({', '.join(red['types'])}): {red['total']:,} replacements in {red['documents_touched']:,} documents, "
        f"salt fingerprint `{red['salt_fingerprint']}`",
        "", "| redaction type | replacements |", "|---|---:|",
    ]
    for kind, n in red["by_type"].items():
        lines.append(f"| {kind} | {n:,} |")
    if not red["by_type"]:
        lines.append("| (none) | 0 |")
    return "\n".join(lines) + "\n"


def load_corpus(path: str | Path):
    """The ``DatasetDict`` saved by :func:`build_corpus` (clear error when it is not one)."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise SecfmError(f"{path} is not a corpus built by `secfm data corpus` (no dataset_dict.json)")
    try:
        return load_from_disk(str(path))
    except (IndexError, ValueError):  # datasets cannot load a split with no rows back: load split by split
        return _load_splits(path)


def _load_splits(path: Path):
    """Each split of a saved DatasetDict; an empty split comes back as an empty Dataset with its
    columns (``datasets`` fails on it otherwise)."""
    from datasets import Dataset, DatasetDict, Features

    try:
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
    except (OSError, ValueError, KeyError) as exc:
        raise SecfmError(f"{path}/dataset_dict.json is not a DatasetDict index") from exc
    out = {}
    for split in splits:
        try:
            out[split] = Dataset.load_from_disk(str(path / split))
        except (IndexError, ValueError):
            try:
                info = json.loads((path / split / "dataset_info.json").read_text())
                features = Features.from_dict(info["features"])
                out[split] = Dataset.from_dict({name: [] for name in features}, features=features)
            except (OSError, ValueError, KeyError) as exc:
                raise SecfmError(f"{path}: split '{split}' cannot be read") from exc
    return DatasetDict(out)


__all__ = ["CorpusConfig", "Document", "build_corpus", "corpus_split", "curate", "dedup", "html_to_text", "kb_documents", "leakage_check",
           "language_ok", "load_corpus", "normalize_text", "render_card", "split_documents", "split_long"]

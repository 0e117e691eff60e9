"""ATT&CK Navigator layers (layer format 4.5) from extracted techniques, and a checker.

A layer is of one ATT&CK domain (``enterprise-attack``, ``mobile-attack``, ``ics-attack``): the
domain of its techniques. :func:`navigator_layers` splits hits of several domains into one layer
per domain.

Scores become colours through the layer's gradient (0-100, the technique's probability times
100); each technique carries its evidence in ``comment`` and ``metadata``. A technique under
several tactics gets one entry per tactic (``tactic`` set), so the annotation shows in each
column; a parent of a hit sub-technique gets ``showSubtechniques``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from secfm.errors import SecfmError

LAYER_VERSION = "4.5"
NAVIGATOR_VERSION = "5.1.0"
DOMAIN = "enterprise-attack"  # the default domain of an empty layer
GRADIENT = {"colors": ["#ffffff", "#ffe766", "#ff6666"], "minValue": 0, "maxValue": 100}
_TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def attack_major_version(version: str | None) -> str:
    """'18' for ATT&CK '18.1' (the Navigator wants the major version)."""
    m = re.match(r"\s*v?(\d+)", str(version or ""))
    return m.group(1) if m else "18"


def _comment(hit, max_chars: int = 300) -> str:
    parts = [f"score {hit.score:.2f}"]
    for ev in hit.evidence:
        text = ev.text if len(ev.text) <= max_chars else ev.text[: max_chars - 1] + "…"
        parts.append(f"sentence {ev.sentence} ({ev.score:.2f}): {text}")
    return " | ".join(parts)


def hit_domain(hit, attack=None) -> str:
    """The ATT&CK domain of a hit (``enterprise``, ``mobile``, ``ics``): its own, else the
    knowledge base's for its id."""
    domain = getattr(hit, "domain", "")
    if domain:
        return domain
    if attack is None:
        from secfm.knowledge import load_attack

        attack = load_attack()
    return attack.domain_of(hit.id) or "enterprise"


def navigator_layers(hits: Sequence, name: str = "secfm ATT&CK extraction", description: str = "",
                     platforms: Sequence[str] | None = None, attack=None) -> dict[str, dict]:
    """One layer per ATT&CK domain the hits are in (``{"mobile": layer, ...}``, the domain with
    the most hits first); an empty list of hits gives one empty Enterprise layer."""
    by_domain: dict[str, list] = {}
    for h in hits:
        by_domain.setdefault(hit_domain(h, attack), []).append(h)
    if not by_domain:
        by_domain["enterprise"] = []
    order = sorted(by_domain, key=lambda d: -len(by_domain[d]))
    many = len(order) > 1
    return {d: navigator_layer(by_domain[d], name=f"{name} ({d})" if many else name, description=description,
                               platforms=platforms, domain=d, attack=attack) for d in order}


def navigator_layer(hits: Sequence, name: str = "secfm ATT&CK extraction", description: str = "",
                    attack_version: str | None = None, platforms: Sequence[str] | None = None,
                    domain: str | None = None, attack=None) -> dict:
    """A Navigator layer (format 4.5) with one scored entry per technique and tactic. ``hits``
    are :class:`TechniqueHit` objects of one ATT&CK domain (``domain``, or the hits' own);
    hits of several domains need :func:`navigator_layers`."""
    from secfm.knowledge.attack import STIX_DOMAINS, domain_name

    if attack is None:
        from secfm.knowledge import load_attack

        attack = load_attack()
    domains = {hit_domain(h, attack) for h in hits}
    if domain is None:
        if len(domains) > 1:
            raise SecfmError(f"the techniques are in several ATT&CK domains ({', '.join(sorted(domains))}); "
                             "a Navigator layer holds one: use navigator_layers")
        domain = next(iter(domains), "enterprise")
    domain = domain_name(domain)
    if domains - {domain}:
        raise SecfmError(f"a {domain} layer cannot hold {', '.join(sorted(domains - {domain}))} techniques")
    if attack_version is None:
        attack_version = attack.versions.get(domain, attack.version)
    sub_parents = {h.id.split(".")[0] for h in hits if "." in h.id}
    techniques = []
    for h in hits:
        base = {
            "techniqueID": h.id,
            "score": int(round(100 * float(h.score))),
            "comment": _comment(h),
            "enabled": True,
            "metadata": [{"name": "score", "value": f"{h.score:.4f}"}]
            + [{"name": f"evidence (sentence {e.sentence})", "value": f"{e.score:.2f}: {e.text}"} for e in h.evidence],
        }
        if getattr(h, "url", ""):
            base["links"] = [{"label": f"ATT&CK {h.id}", "url": h.url}]
        if h.id in sub_parents:
            base["showSubtechniques"] = True
        tactics = list(h.tactics) or [None]
        for tactic in tactics:
            entry = dict(base)
            if tactic:
                entry["tactic"] = tactic
            techniques.append(entry)
    layer = {
        "name": name,
        "versions": {"attack": attack_major_version(attack_version), "navigator": NAVIGATOR_VERSION, "layer": LAYER_VERSION},
        "domain": STIX_DOMAINS[domain],
        "description": description,
        "sorting": 3,
        "layout": {"layout": "side", "showID": True, "showName": True, "showAggregateScores": False,
                   "countUnscored": False, "aggregateFunction": "max", "expandedSubtechniques": "annotated"},
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": dict(GRADIENT),
        "legendItems": [{"label": "head score 0", "color": GRADIENT["colors"][0]},
                        {"label": "head score 100", "color": GRADIENT["colors"][-1]}],
        "showTacticRowBackground": False,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
        "selectVisibleTechniques": False,
        "metadata": [{"name": "generator", "value": "secfm attack extract"}],
    }
    if platforms:
        layer["filters"] = {"platforms": list(platforms)}
    return layer


def validate_layer(layer: dict, attack=None) -> list[str]:
    """Problems with ``layer`` against the layer format 4.5 (required fields, types, versions,
    technique ids and tactics known to ATT&CK); an empty list means it is valid."""
    problems: list[str] = []

    def need(obj: dict, key: str, kind, where: str) -> bool:
        if key not in obj:
            problems.append(f"{where}: missing '{key}'")
            return False
        if not isinstance(obj[key], kind) or (kind is not bool and isinstance(obj[key], bool) and kind in (int, float, (int, float))):
            problems.append(f"{where}: '{key}' has type {type(obj[key]).__name__}")
            return False
        return True

    if not isinstance(layer, dict):
        return ["a layer is a JSON object"]
    need(layer, "name", str, "layer")
    if need(layer, "domain", str, "layer") and layer["domain"] not in ("enterprise-attack", "mobile-attack", "ics-attack"):
        problems.append(f"layer: unknown domain {layer['domain']!r}")
    if need(layer, "versions", dict, "layer"):
        v = layer["versions"]
        if v.get("layer") != LAYER_VERSION:
            problems.append(f"versions.layer must be '{LAYER_VERSION}'")
        nav = str(v.get("navigator", ""))
        if not re.fullmatch(r"\d+\.\d+\.\d+", nav) or tuple(map(int, nav.split("."))) < (4, 9, 0):
            problems.append("versions.navigator must be a version of at least 4.9.0")
        if "attack" in v and not isinstance(v["attack"], str):
            problems.append("versions.attack must be a string")
    for key, kind in (("description", str), ("sorting", int), ("layout", dict), ("hideDisabled", bool),
                      ("techniques", list), ("gradient", dict), ("legendItems", list), ("metadata", list)):
        if key in layer:
            need(layer, key, kind, "layer")
    if isinstance(layer.get("sorting"), int) and layer["sorting"] not in (0, 1, 2, 3):
        problems.append("layer: sorting must be 0-3")
    g = layer.get("gradient")
    if isinstance(g, dict):
        if need(g, "colors", list, "gradient") and (len(g["colors"]) < 2 or not all(isinstance(c, str) and _COLOR.match(c) for c in g["colors"])):
            problems.append("gradient: colors must be at least two #rrggbb strings")
        ok = need(g, "minValue", (int, float), "gradient") & need(g, "maxValue", (int, float), "gradient")
        if ok and not g["maxValue"] > g["minValue"]:
            problems.append("gradient: maxValue must be > minValue")
    if attack is None:
        from secfm.knowledge import load_attack

        attack = load_attack()
    from secfm.knowledge.attack import STIX_DOMAINS

    domain = {v: k for k, v in STIX_DOMAINS.items()}.get(layer.get("domain"), "enterprise")
    tactics_known = {t.shortname for t in attack.tactics(domain)}
    for i, t in enumerate(layer.get("techniques") or []):
        where = f"techniques[{i}]"
        if not isinstance(t, dict):
            problems.append(f"{where}: not an object")
            continue
        if need(t, "techniqueID", str, where):
            tid = t["techniqueID"]
            if not _TECHNIQUE_ID.match(tid):
                problems.append(f"{where}: techniqueID {tid!r} is not T#### or T####.###")
            elif tid not in attack.techniques_by_id:
                problems.append(f"{where}: unknown technique {tid}")
            elif attack.techniques_by_id[tid].domain != domain:
                problems.append(f"{where}: {tid} is an ATT&CK {attack.techniques_by_id[tid].domain} technique, "
                                f"not {domain}")
            elif "tactic" in t and t["tactic"] not in attack.techniques_by_id[tid].tactics:
                problems.append(f"{where}: {tid} is not under tactic {t['tactic']!r}")
        if "tactic" in t and (not isinstance(t["tactic"], str) or t["tactic"] not in tactics_known):
            problems.append(f"{where}: unknown tactic {t.get('tactic')!r}")
        if "score" in t and (isinstance(t["score"], bool) or not isinstance(t["score"], (int, float))):
            problems.append(f"{where}: score must be a number")
        for key, kind in (("comment", str), ("enabled", bool), ("color", str), ("metadata", list), ("links", list),
                          ("showSubtechniques", bool)):
            if key in t and not isinstance(t[key], kind):
                problems.append(f"{where}: '{key}' has type {type(t[key]).__name__}")
        for m in t.get("metadata") or []:
            if not (isinstance(m, dict) and (m.get("divider") is True or (isinstance(m.get("name"), str) and isinstance(m.get("value"), str)))):
                problems.append(f"{where}: metadata items need string name and value")
        for link in t.get("links") or []:
            if not (isinstance(link, dict) and isinstance(link.get("label"), str) and str(link.get("url", "")).startswith(("http://", "https://"))):
                problems.append(f"{where}: links need a label and an http(s) url")
    return problems


def check_layer(layer: dict) -> None:
    problems = validate_layer(layer)
    if problems:
        raise SecfmError(f"invalid Navigator layer: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))

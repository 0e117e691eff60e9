"""A STIX 2.1 bundle (built with the ``stix2`` library) of extracted ATT&CK techniques that
validates with ``stix2-validator --strict --interop``.

Objects:

* secfm's ``identity`` (the producer; a fixed UUIDv4 id, ``created_by_ref`` to itself, as the
  interop profile wants of every producer identity);
* MITRE's ``identity`` (its id as in MITRE's bundles; ``created_by_ref`` to itself, which the
  interop profile asks of every producer; its description carries MITRE's copyright statement);
* one ``attack-pattern`` per technique, as MITRE publishes it: MITRE's own STIX id, ``created``
  and ``modified`` from the packaged ATT&CK data, ``created_by_ref`` MITRE, name, the ``mitre-attack`` / ``mitre-mobile-attack`` / ``mitre-ics-attack`` external id of its
  domain and the kill-chain phases of its tactics. (Its ``description`` is left out: the
  packaged Enterprise texts are cut, and a consumer holding ATT&CK has the full object under
  the same id and version. The page URL is left out too: the interop profile asks every
  external URL for a hash of what it points to. MITRE's copyright marking-definition is not
  repeated: the interop schema wants a ``modified`` that a marking-definition cannot have.)
* one ``related-to`` ``relationship`` from the report to each attack-pattern whose description
  carries the evidence (sentences, scores, retrieved procedure examples) and whose
  ``confidence`` is the score;
* the ``report`` that lists them all.

secfm's own objects (report, relationships) get fresh UUIDv4 ids; no id is ever minted for an
ATT&CK object.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from collections.abc import Sequence

from secfm.errors import SecfmError

#: secfm's producer identity (a UUIDv4 chosen once; the same in every export)
SECFM_IDENTITY_ID = "identity--eb69b546-1370-4535-905d-a9429167291c"
_IDENTITY_CREATED = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
#: MITRE's identity as its bundles carry it
_MITRE_CREATED = _dt.datetime(2017, 6, 1, tzinfo=_dt.UTC)
MITRE_STATEMENT = ("Copyright 2015-2025, The MITRE Corporation. MITRE ATT&CK and ATT&CK are registered "
                   "trademarks of The MITRE Corporation.")


def _evidence_text(hit, max_chars: int = 500) -> str:
    lines = [f"secfm score {hit.score:.2f} for {hit.id} ({hit.name})."]
    for ev in hit.evidence:
        text = ev.text if len(ev.text) <= max_chars else ev.text[: max_chars - 1] + "…"
        lines.append(f"Evidence, sentence {ev.sentence} (chars {ev.start}-{ev.end}, score {ev.score:.2f}): \"{text}\"")
        example = getattr(ev, "example", None)
        if example:
            lines.append(f"  nearest ATT&CK procedure example ({getattr(ev, 'example_source', '') or 'ATT&CK'}, "
                         f"similarity {getattr(ev, 'similarity', 0.0):.2f}): \"{example}\"")
    return "\n".join(lines)


def _timestamp(value: str, fallback: _dt.datetime) -> _dt.datetime:
    if not value:
        return fallback
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def producer_identities():
    """secfm's identity and MITRE's (the producers every object names)."""
    import stix2

    from secfm.knowledge.attack import MITRE_IDENTITY_ID

    secfm = stix2.Identity(id=SECFM_IDENTITY_ID, name="secfm", identity_class="system",
                           description="secfm ATT&CK technique extraction (classifier head, retrieval of ATT&CK "
                                       "procedure examples, calibrated document aggregation)",
                           created_by_ref=SECFM_IDENTITY_ID, created=_IDENTITY_CREATED, modified=_IDENTITY_CREATED)
    mitre = stix2.Identity(id=MITRE_IDENTITY_ID, name="The MITRE Corporation", identity_class="organization",
                           description=f"Publisher of MITRE ATT&CK. {MITRE_STATEMENT}",
                           created_by_ref=MITRE_IDENTITY_ID, created=_MITRE_CREATED, modified=_MITRE_CREATED)
    return secfm, mitre


def attack_pattern(tech):
    """MITRE's attack-pattern for a technique of the knowledge base (its own id and version)."""
    import stix2

    from secfm.knowledge.attack import MITRE_IDENTITY_ID, SOURCE_NAMES

    if not tech.stix_id:
        raise SecfmError(f"{tech.id} has no MITRE STIX id in the loaded ATT&CK data; secfm never mints one")
    source = SOURCE_NAMES[tech.domain]
    created = _timestamp(tech.created, _MITRE_CREATED)
    return stix2.AttackPattern(
        id=tech.stix_id, name=tech.name, created=created, modified=_timestamp(tech.modified, created),
        created_by_ref=MITRE_IDENTITY_ID,
        external_references=[{"source_name": source, "external_id": tech.id}],
        kill_chain_phases=[{"kill_chain_name": source, "phase_name": t} for t in tech.tactics]
        or [{"kill_chain_name": source, "phase_name": "unknown"}],
        allow_custom=False,
    )


def stix_bundle(hits: Sequence, document: str, name: str = "secfm ATT&CK extraction", attack=None,
                published: _dt.datetime | None = None):
    """A ``stix2.Bundle`` with the report, MITRE's attack-patterns and the evidence relationships
    for ``hits`` (techniques of any ATT&CK domain)."""
    import stix2

    if attack is None:
        from secfm.knowledge import load_attack

        attack = load_attack()
    now = published or _dt.datetime.now(_dt.UTC)
    doc_hash = hashlib.sha256(document.encode("utf-8")).hexdigest()
    secfm, mitre = producer_identities()
    patterns, relationships = {}, []
    report_id = f"report--{uuid.uuid4()}"
    for h in hits:
        tech = attack.techniques_by_id.get(h.id)
        if tech is None:
            raise SecfmError(f"{h.id} is not a technique of the loaded ATT&CK data; cannot export it to STIX")
        if tech.id not in patterns:
            patterns[tech.id] = attack_pattern(tech)
        relationships.append(stix2.Relationship(
            relationship_type="related-to",
            source_ref=report_id,
            target_ref=patterns[tech.id].id,
            description=_evidence_text(h),
            confidence=max(0, min(100, int(round(100 * float(h.score))))),
            created_by_ref=secfm.id,
            created=now, modified=now,
        ))
    summary = (f"ATT&CK techniques extracted by secfm from a {len(document)}-character document "
               f"(sha256 {doc_hash[:16]}): " + (", ".join(f"{h.id} {h.name} ({h.score:.2f})" for h in hits) or "none") + ".")
    refs = [secfm.id, *([mitre.id] if patterns else []), *[p.id for p in patterns.values()],
            *[r.id for r in relationships]]
    report = stix2.Report(
        id=report_id,
        name=name,
        description=summary,
        report_types=["threat-report"],
        published=now,
        object_refs=refs,
        created_by_ref=secfm.id,
        created=now, modified=now,
        external_references=[{"source_name": "secfm-document", "description": "the analysed document",
                              "hashes": {"SHA-256": doc_hash}}],
    )
    objects = [secfm, *([mitre] if patterns else []), report, *patterns.values(), *relationships]
    return stix2.Bundle(objects=objects)


def bundle_json(bundle) -> str:
    return bundle.serialize(pretty=True)


def validate_bundle(serialized: str) -> list[str]:
    """Problems ``stix2-validator`` finds in ``serialized`` with ``--strict --interop``
    (errors, and warnings that strict mode counts as errors); an empty list means valid."""
    from stix2validator import ValidationOptions, validate_string

    result = validate_string(serialized, ValidationOptions(version="2.1", strict=True, interop=True))
    problems = []
    for r in result if isinstance(result, list) else [result]:
        problems += [str(getattr(e, "message", e)) for e in (r.errors or [])]
        problems += [str(getattr(w, "message", w)) for w in (r.warnings or [])]
    return problems

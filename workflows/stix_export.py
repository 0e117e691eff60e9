"""A STIX 2.1 bundle (built with the ``stix2`` library) of extracted ATT&CK techniques.

Objects: an ``identity`` for secfm (the producer), one ``attack-pattern`` per technique (name,
ATT&CK description, ``external_references`` to the ``mitre-attack`` id and URL, kill-chain
phases for its tactics), one ``related-to`` ``relationship`` from the report to each
attack-pattern whose description carries the evidence (sentences and scores) and whose
``confidence`` is the score, and the ``report`` that lists them all. Ids are deterministic
(UUIDv5): the same technique has the same attack-pattern id in every export, the same document
the same report id.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from collections.abc import Sequence

NAMESPACE = uuid.UUID("6f1d0c2e-7d53-5d7a-9a8e-5ec0f3a0c1b1")  # secfm's UUIDv5 namespace
_PRODUCER = "secfm"


def _id(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, f'{kind}:{key}')}"


def _evidence_text(hit, max_chars: int = 500) -> str:
    lines = [f"secfm head score {hit.score:.2f} for {hit.id} ({hit.name})."]
    for ev in hit.evidence:
        text = ev.text if len(ev.text) <= max_chars else ev.text[: max_chars - 1] + "…"
        lines.append(f"Evidence, sentence {ev.sentence} (chars {ev.start}-{ev.end}, score {ev.score:.2f}): \"{text}\"")
    return "\n".join(lines)


def stix_bundle(hits: Sequence, document: str, name: str = "secfm ATT&CK extraction", attack=None,
                published: _dt.datetime | None = None):
    """A ``stix2.Bundle`` with the report, attack-patterns and relationships for ``hits``."""
    import stix2

    if attack is None:
        from secfm.knowledge import load_attack

        attack = load_attack()
    now = published or _dt.datetime.now(_dt.timezone.utc)
    doc_hash = hashlib.sha256(document.encode("utf-8")).hexdigest()
    identity = stix2.Identity(id=_id("identity", _PRODUCER), name=_PRODUCER, identity_class="system",
                              description="secfm classifier head on language-model hidden states",
                              created=_dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc),
                              modified=_dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc))
    report_id = _id("report", doc_hash)
    patterns, relationships = [], []
    for h in hits:
        tech = attack.techniques_by_id.get(h.id)
        refs = [{"source_name": "mitre-attack", "external_id": h.id,
                 "url": tech.url if tech else f"https://attack.mitre.org/techniques/{h.id.replace('.', '/')}"}]
        pattern = stix2.AttackPattern(
            id=_id("attack-pattern", h.id),
            name=h.name,
            description=(tech.description if tech and tech.description else h.name),
            external_references=refs,
            kill_chain_phases=[{"kill_chain_name": "mitre-attack", "phase_name": t} for t in h.tactics] or None,
            created_by_ref=identity.id,
            created=now, modified=now,
            allow_custom=False,
        )
        patterns.append(pattern)
        relationships.append(stix2.Relationship(
            id=_id("relationship", f"{doc_hash}:{h.id}"),
            relationship_type="related-to",
            source_ref=report_id,
            target_ref=pattern.id,
            description=_evidence_text(h),
            confidence=max(0, min(100, int(round(100 * float(h.score))))),
            created_by_ref=identity.id,
            created=now, modified=now,
        ))
    summary = (f"ATT&CK techniques extracted by secfm from a {len(document)}-character document "
               f"(sha256 {doc_hash[:16]}): " + (", ".join(f"{h.id} {h.name} ({h.score:.2f})" for h in hits) or "none") + ".")
    report = stix2.Report(
        id=report_id,
        name=name,
        description=summary,
        report_types=["threat-report"],
        published=now,
        object_refs=[identity.id] + [p.id for p in patterns] + [r.id for r in relationships],
        created_by_ref=identity.id,
        created=now, modified=now,
    )
    return stix2.Bundle(objects=[identity, report, *patterns, *relationships])


def bundle_json(bundle) -> str:
    return bundle.serialize(pretty=True)

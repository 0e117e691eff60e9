"""Recipe 5 — ATT&CK techniques from a threat report, with evidence, exported as a Navigator layer and a STIX 2.1 bundle.

Why and when: after reading a vendor report or writing your own, map it to ATT&CK so it can be
compared with your detections (the Navigator layer, coloured by score) and shared with a TIP or
MISP (the STIX bundle: a report, one attack-pattern per technique, a relationship carrying the
evidence sentences). The ATT&CK classifier head scores every sentence; each technique comes with
the sentences that support it and the nearest ATT&CK procedure example. Both files are checked
before they are written: the layer against layer format 4.5 and ATT&CK itself (one layer per ATT&CK
domain: Enterprise, Mobile, ICS), the bundle with stix2-validator's strict interop profile (MITRE's
own attack-pattern ids).

    python cookbook/05_attack_to_navigator_stix.py [--report FILE] [--out DIR] [--threshold 0.5] [--top-k 15]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import stix2

from secfm.workflows import extract_attack
from secfm.workflows.navigator import navigator_layers, validate_layer
from secfm.workflows.stix_export import bundle_json, stix_bundle, validate_bundle

DATA = Path(__file__).parent / "data" / "threat_report.txt"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="folder for layer.json and bundle.json (default: a temp dir)")
    parser.add_argument("--head", default=None, help="a head folder (recipe 6 trains one); default: the shipped ATT&CK head")
    parser.add_argument("--threshold", type=float, default=None, help="one probability threshold for all techniques (default: the extractor's tuned rule)")
    parser.add_argument("--top-k", type=int, default=15)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="secfm-attack-"))
    out.mkdir(parents=True, exist_ok=True)
    text = args.report.read_text()
    title = text.strip().splitlines()[0][:120]

    hits = extract_attack(text, head=args.head, threshold=args.threshold, top_k=args.top_k)
    print(f"{len(hits)} techniques in {args.report.name}:")
    for h in hits:
        print(f"{h.id:<10} {h.score:.2f}  {h.name} [{', '.join(h.tactics)}]")
        for ev in h.evidence[:2]:
            print(f"           sentence {ev.sentence} ({ev.score:.2f}), chars {ev.start}-{ev.end}: {ev.text[:110]}")
            if ev.example:
                print(f"             like {ev.example_source}: {ev.example[:100]} (similarity {ev.similarity:.2f})")
        assert all(text[ev.start:ev.end] == ev.text for ev in h.evidence)  # evidence is quoted exactly

    layers = navigator_layers(hits, name=title, description=f"secfm: {len(hits)} techniques from {args.report.name}")
    for i, (domain, layer) in enumerate(layers.items()):
        problems = validate_layer(layer)
        if problems:
            raise SystemExit("invalid Navigator layer: " + "; ".join(problems))
        path = out / ("layer.json" if i == 0 else f"layer-{domain}.json")
        path.write_text(json.dumps(layer, indent=2))
        print(f"Navigator layer ({layer['domain']}, format {layer['versions']['layer']}, ATT&CK v{layer['versions']['attack']}): "
              f"{len(layer['techniques'])} entries, valid -> {path}")
    layer_path = out / "layer.json"

    serialized = bundle_json(stix_bundle(hits, text, name=title))
    problems = validate_bundle(serialized)  # stix2-validator --strict --interop
    if problems:
        raise SystemExit("invalid STIX bundle: " + problems[0])
    parsed = stix2.parse(serialized, allow_custom=False)
    kinds = {}
    for obj in parsed.objects:
        kinds[obj.type] = kinds.get(obj.type, 0) + 1
    bundle_path = out / "bundle.json"
    bundle_path.write_text(serialized)
    print(f"STIX 2.1 bundle: {', '.join(f'{n} {k}' for k, n in kinds.items())}, valid (strict, interop) -> {bundle_path}")
    print("open the layer at https://mitre-attack.github.io/attack-navigator/ (Open Existing Layer > Upload from local)")
    return {"hits": hits, "layer": layer_path, "bundle": bundle_path, "objects": kinds}


if __name__ == "__main__":
    main()

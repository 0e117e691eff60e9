"""Recipe 2 — zero-shot classification of security text by label log-likelihood.

Why and when: you need a rough classifier today and have no training data. Each label is scored as
the continuation of a prompt (the engine computes the shared prompt once per text), and scores are
calibrated against content-free inputs so a small model's bias toward some label words does not
decide for it. Measure on a labelled set before you trust it; train a head (recipe 6) once you
have a few hundred labelled examples.

    python cookbook/02_zero_shot_classification.py [--limit N] [--no-calibrate]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secfm.engines import get_engine
from secfm.evals.zero_shot import accuracy, classify

DATA = Path(__file__).parent / "data" / "security_texts.jsonl"
LABELS = ["phishing", "malware", "vulnerability", "benign"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-calibrate", action="store_true")
    args = parser.parse_args(argv)

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    engine = get_engine("transformers", model=args.model)
    template = "Text: {text}\nIs this text about phishing, malware, a vulnerability, or benign? Answer:"
    results = {}
    for calibrated in ([False] if args.no_calibrate else [False, True]):
        predictions = classify(engine, [r["text"] for r in rows], LABELS, template=template, calibrate=calibrated)
        acc = accuracy([p.label for p in predictions], [r["label"] for r in rows])
        results["calibrated" if calibrated else "raw"] = acc
        print(f"{'calibrated' if calibrated else 'raw':>10} accuracy on {len(rows)} labelled texts: {acc:.2%} (chance {1/len(LABELS):.0%})")
    return results


if __name__ == "__main__":
    main()

"""Recipe 3 — rank log lines by suspicion (malicious vs benign likelihood), measured by precision@k.

Why and when: an analyst can read twenty lines, not twenty thousand. Scoring each line by how much
more likely the model finds "malicious" than "benign" after it puts the odd lines first. Judge it
by precision@k on labelled lines from your own environment, and compare it with the ordering you
would get by chance (the share of malicious lines).

    python cookbook/03_rank_log_lines.py [--k 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secfm.engines import get_engine
from secfm.evals.zero_shot import precision_at_k, suspicion_scores

DATA = Path(__file__).parent / "data" / "log_lines.jsonl"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    engine = get_engine("transformers", model=args.model)
    scores = suspicion_scores(engine, [r["line"] for r in rows])
    ranked = sorted(zip(scores, rows), key=lambda pair: -pair[0])
    for score, row in ranked[: args.k]:
        print(f"{score:.3f} {'MAL' if row['malicious'] else 'ok '} {row['line'][:90]}")
    p_at_k = precision_at_k(scores, [r["malicious"] for r in rows], args.k)
    base_rate = sum(r["malicious"] for r in rows) / len(rows)
    print(f"precision@{args.k}: {p_at_k:.2f} (random ordering: {base_rate:.2f})")
    return {"precision_at_k": p_at_k, "base_rate": base_rate, "k": args.k}


if __name__ == "__main__":
    main()

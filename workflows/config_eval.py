"""Config-review precision and recall on public configurations we did not write.

The labelled set (``workflows/data/config_public_vectors.jsonl``) is derived from the test
fixtures of two public scanners (sources, commits and licences in its first line): checkov's
Dockerfile and Kubernetes check fixtures (a file under ``failure``/named ``FAILED`` is one the
check must flag), checkov's Terraform fixtures for four checks (resource level: each resource
block, labelled by the check test's ``failing_resources``/``passing_resources``) and gixy's
nginx alias-traversal fixtures (``*_fp.conf`` must not be flagged).
Each source check is mapped to the secfm rule that tests the same thing; a file counts as
flagged when that rule fires anywhere in it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

DEFAULT_DATA = Path(__file__).parent / "data" / "config_public_vectors.jsonl"


def load_vectors(path: str | Path = DEFAULT_DATA) -> tuple[dict, list[dict]]:
    from secfm.inputs import labelled_set

    return labelled_set(path)


def score(rows: list[dict]) -> dict:
    from secfm.errors import SecfmError
    from secfm.evals.metrics import prf_figures
    from secfm.workflows.review import review_config

    counts = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
    errors, mistakes = [], []
    for row in rows:
        try:
            fired = any(f.rule_id == row["rule"] for f in review_config(row["text"], row["kind"], use_model=False, store=False).findings)
        except SecfmError as exc:
            fired = False
            errors.append({"path": row["path"], "error": str(exc)[:200]})
        c = counts[row["rule"]]
        positive = row["label"] == "positive"
        key = ("tp" if fired else "fn") if positive else ("fp" if fired else "tn")
        c[key] += 1
        if key in ("fp", "fn"):
            mistakes.append({"rule": row["rule"], "path": row["path"], "outcome": key})
    total = {k: sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn", "tn")}
    return {"files": len(rows), "overall": {**prf_figures(total["tp"], total["fp"], total["fn"]), "tn": total["tn"]},
            "by_rule": {rule: {**prf_figures(c["tp"], c["fp"], c["fn"]), "tn": c["tn"]} for rule, c in sorted(counts.items())},
            "mistakes": mistakes, "parse_errors": errors}


def run_config_bench(data: str | Path = DEFAULT_DATA, out: str | Path = "workflows/results/config-public-vectors.json",
                     allow_busy: bool = False) -> dict:
    from secfm.provenance import recording

    meta, rows = load_vectors(data)
    with recording(data_files=[data], allow_busy=allow_busy) as rec:
        scored = score(rows)
        o = scored["overall"]
        sources = ", ".join(f"{x['repo']} {x['commit'][:10]} ({x['licence']})" for x in meta.get("sources", []))
        payload = {"task": "config review precision/recall on public scanner fixtures", "data": str(data),
                   "headline": {"precision": o["precision"], "recall": o["recall"], "files": scored["files"],
                                "sources": sources},
                   "sources": meta, **scored}
        rec.write_json(out, payload)
    return payload

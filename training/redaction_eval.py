"""Redaction recall and false-positive rate on secret-scanner test vectors we did not write.

The labelled set (``training/data/gitleaks_vectors.jsonl``) is derived from gitleaks' rule test
vectors (MIT; the ``tps`` true-positive and ``fps`` false-positive lists of each rule, source and
commit in its first line). A true-positive line counts as caught when redaction changed it and,
where the secret itself is known, no longer contains it; a false-positive line counts as a false
alarm when redaction changed it. Measured with and without detect-secrets' plugins.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

DEFAULT_DATA = Path(__file__).parent / "data" / "gitleaks_vectors.jsonl"


def load_vectors(path: str | Path = DEFAULT_DATA) -> tuple[dict, list[dict]]:
    from secfm.inputs import labelled_set

    return labelled_set(path)


def score(rows: list[dict], use_detect_secrets: bool) -> dict:
    from secfm.training.redaction import Redactor

    redactor = Redactor(salt="eval", use_detect_secrets=use_detect_secrets)
    caught = defaultdict(lambda: [0, 0])  # rule -> [caught, secret lines]
    alarms = defaultdict(lambda: [0, 0])  # rule -> [changed, clean lines]
    missed: list[dict] = []
    for row in rows:
        out = redactor.redact(row["text"])
        changed = out != row["text"]
        if row["label"] == "secret":
            ok = changed and (not row.get("secret") or row["secret"] not in out)
            caught[row["rule"]][0] += ok
            caught[row["rule"]][1] += 1
            if not ok and len(missed) < 40:
                missed.append({"rule": row["rule"], "text": row["text"][:120]})
        else:
            alarms[row["rule"]][0] += changed
            alarms[row["rule"]][1] += 1
    tp = sum(c for c, _ in caught.values())
    pos = sum(n for _, n in caught.values())
    fp = sum(c for c, _ in alarms.values())
    neg = sum(n for _, n in alarms.values())
    return {
        "recall": round(tp / pos, 4) if pos else None, "caught": tp, "secret_lines": pos,
        "false_alarm_rate": round(fp / neg, 4) if neg else None, "false_alarms": fp, "clean_lines": neg,
        "rules_with_full_recall": sum(c == n for c, n in caught.values()), "rules": len(caught),
        "by_rule": {r: {"caught": c, "of": n} for r, (c, n) in sorted(caught.items())},
        "missed_examples": missed,
    }


def run_redaction_bench(data: str | Path = DEFAULT_DATA, out: str | Path = "training/results/redaction-recall.json",
                        allow_busy: bool = False) -> dict:
    from secfm.provenance import recording

    meta, rows = load_vectors(data)
    with recording(data_files=[data], allow_busy=allow_busy) as rec:
        payload = {"task": "redaction recall on gitleaks test vectors", "data": str(data), "source": meta,
                   "with_detect_secrets": score(rows, True), "project_patterns_only": score(rows, False)}
        rec.write_json(out, payload)
    return payload

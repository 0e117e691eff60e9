"""Redaction recall and false-positive rate on secret-scanner test vectors we did not write.

The labelled set (``training/data/gitleaks_vectors.jsonl``) is derived from gitleaks' rule test
vectors (MIT; the ``tps`` true-positive and ``fps`` false-positive lists of each rule, source and
commit in its first line). A true-positive line counts as caught when redaction changed it and,
where the secret itself is known, no longer contains it; a false-positive line counts as a false
alarm when redaction changed it. Measured with and without detect-secrets' plugins.

The vectors are split by gitleaks rule (one rule file = one unit, through the one splitting
function): the detectors were tuned on the ``development`` half only; the ``held_out`` half is
the figure to quote. False alarms are counted per detector (:attr:`Detection.detector`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

DEFAULT_DATA = Path(__file__).parent / "data" / "gitleaks_vectors.jsonl"
SPLIT_SALT = "secfm-redaction-vectors-v1"
DEVELOPMENT, HELD_OUT = "development", "held_out"


def split_plan():
    from secfm.training.splits import SplitPlan

    return SplitPlan(((DEVELOPMENT, 0.5), (HELD_OUT, 0.5)), salt=SPLIT_SALT)


def split_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """{development: [...], held_out: [...]}: each gitleaks rule (its file) with all its lines."""
    plan = split_plan()
    out: dict[str, list[dict]] = {DEVELOPMENT: [], HELD_OUT: []}
    for row in rows:
        out[plan.of_key(row["rule"])].append(row)
    return out


def load_vectors(path: str | Path = DEFAULT_DATA) -> tuple[dict, list[dict]]:
    from secfm.inputs import labelled_set

    return labelled_set(path)


def score(rows: list[dict], use_detect_secrets: bool) -> dict:
    from secfm.training.redaction import Redactor

    redactor = Redactor(salt="eval", use_detect_secrets=use_detect_secrets)
    caught = defaultdict(lambda: [0, 0])  # rule -> [caught, secret lines]
    alarms = defaultdict(lambda: [0, 0])  # rule -> [changed, clean lines]
    missed: list[dict] = []
    by_detector: dict[str, int] = defaultdict(int)  # clean lines each detector fired on
    for row in rows:
        out = redactor.redact(row["text"])
        changed = out != row["text"]
        if changed and row["label"] != "secret":
            for name in sorted({d.detector for d in redactor.detect(row["text"])}):
                by_detector[name] += 1
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
        "false_alarms_by_detector": dict(sorted(by_detector.items(), key=lambda kv: (-kv[1], kv[0]))),
        "missed_examples": missed,
    }


def run_redaction_bench(data: str | Path = DEFAULT_DATA, out: str | Path = "training/results/redaction-recall.json",
                        allow_busy: bool = False) -> dict:
    from secfm.provenance import recording

    meta, rows = load_vectors(data)
    parts = split_rows(rows)
    with recording(data_files=[data], allow_busy=allow_busy) as rec:
        held = score(parts[HELD_OUT], True)
        headline = {"held_out_recall": held["recall"], "held_out_false_alarm_rate": held["false_alarm_rate"],
                    "held_out_lines": f"{held['secret_lines']} secret + {held['clean_lines']} clean, "
                                      f"{len({r['rule'] for r in parts[HELD_OUT]})} rules",
                    "split": "by gitleaks rule; tuned on the development half",
                    "source": f"{meta.get('source', '?')} {str(meta.get('commit', ''))[:10]} ({meta.get('licence', '?')})"}
        payload = {"task": "redaction recall on gitleaks test vectors", "data": str(data), "source": meta,
                   "headline": headline,
                   "split": {"by": "gitleaks rule (one rule file = one unit)", "salt": SPLIT_SALT,
                             "note": "detectors tuned on the development rules only; quote held_out",
                             **{name: sorted({r["rule"] for r in part}) for name, part in parts.items()}},
                   "held_out": {"with_detect_secrets": held,
                                "project_patterns_only": score(parts[HELD_OUT], False)},
                   "development": {"with_detect_secrets": score(parts[DEVELOPMENT], True),
                                   "project_patterns_only": score(parts[DEVELOPMENT], False)},
                   "with_detect_secrets": score(rows, True), "project_patterns_only": score(rows, False)}
        rec.write_json(out, payload)
    return payload

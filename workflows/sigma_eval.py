"""Triage measured on events nobody here wrote, and the rule-set benchmark.

* :func:`run_sigma_eval`: for every folder of SigmaHQ's ``regression_data`` (an ``info.yml``
  naming the rule that must fire, and the rule's events as JSON), triage the events and check that
  the named rule fires, that the alert's severity is the rule's level, and that the alert's
  techniques include the rule's (validated) ATT&CK tags; then the share of benign events (any alert
  format) that triage calls high or critical.
* :func:`run_sigma_bench`: rule-set load time without and with the cache, and triage alerts/s
  (deterministic part: rules, correlation, scoring; no head, model or retrieval) with every rule
  loaded.

Both write through :mod:`secfm.provenance` (command, commit, data digests, machine load).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from secfm.errors import SecfmError

SEVERITY_OF_LEVEL = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def regression_cases(root: Path) -> list[dict]:
    """``[{"rule_id", "title", "folder", "events": text}]`` from SigmaHQ's regression_data layout."""
    if not root.is_dir():
        raise SecfmError(f"regression folder not found: {root}")
    cases = []
    for info in sorted(root.rglob("info.yml")):
        meta = yaml.safe_load(info.read_text(encoding="utf-8")) or {}
        rules = meta.get("rule_metadata") or []
        events = sorted(info.parent.glob("*.json"))
        if not rules or not events:
            continue
        cases.append({"rule_id": str(rules[0]["id"]), "title": rules[0].get("title", ""),
                      "folder": str(info.parent.relative_to(root)), "events": "\n".join(e.read_text(encoding="utf-8") for e in events)})
    if not cases:
        raise SecfmError(f"{root}: no regression cases (folders with info.yml and events)")
    return cases


def _triage(text: str, ruleset, where: str):
    from secfm.workflows.triage import triage_alerts

    return triage_alerts(text, use_model=False, store=False, technique_source=None, rules=ruleset, where=where, k=0)


def _covered(tags: set[str], found: list[str]) -> bool:
    """Every tag is among the alert's techniques; a parent tag beside its own sub-technique
    (T1134 and T1134.003) is covered by the sub-technique, which triage lists in its place."""
    have = set(found)
    parents = {t.split(".")[0] for t in have if "." in t}
    return all(t in have or ("." not in t and t in parents) for t in tags)


def evaluate_regression(cases: list[dict], ruleset) -> tuple[list[dict], dict]:
    by_id = ruleset.by_id()
    items = []
    for case in cases:
        rule = by_id.get(case["rule_id"])
        result = _triage(case["events"], ruleset, case["folder"])
        fired = [a for a in result.alerts if any(h.rule_id == case["rule_id"] for h in a.signatures)]
        level = rule.level if rule else None
        want = SEVERITY_OF_LEVEL.get(level) if level else None
        tags = set(rule.techniques) if rule else set()
        at_level = any(a.severity == want for a in fired)
        at_least = any(RANK[a.severity] >= RANK[want] for a in fired) if want else False
        with_tags = any(a.severity == want and _covered(tags, [t.id for t in a.techniques] + [t.id for t in a.candidate_techniques])
                        for a in fired)
        asserted_tags = any(a.severity == want and _covered(tags, [t.id for t in a.techniques]) for a in fired)
        items.append({"folder": case["folder"], "rule_id": case["rule_id"], "title": case["title"], "in_rule_set": rule is not None,
                      "level": level, "fired": bool(fired), "severity": [a.severity for a in fired] or [a.severity for a in result.alerts],
                      "at_level": at_level, "at_least_level": at_least, "level_and_tags": with_tags, "level_and_asserted_tags": asserted_tags,
                      "tags": sorted(tags), "others": sorted({h.id for a in result.alerts for h in a.signatures if h.rule_id != case["rule_id"]})[:10]})
    n = len(items)

    def rate(key):
        return round(sum(i[key] for i in items) / n, 4) if n else None

    metrics = {"cases": n, "recall": rate("fired"), "at_level": rate("at_level"), "at_least_level": rate("at_least_level"),
               "level_and_tags": rate("level_and_tags"), "level_and_asserted_tags": rate("level_and_asserted_tags")}
    return items, metrics


def evaluate_benign(files: list[Path], ruleset) -> tuple[list[dict], dict]:
    items = []
    total = high = 0
    by_severity: dict[str, int] = {}
    for f in files:
        result = _triage(f.read_text(encoding="utf-8"), ruleset, str(f))
        for a in result.alerts:
            total += 1
            by_severity[a.severity] = by_severity.get(a.severity, 0) + 1
            if a.severity in ("high", "critical"):
                high += 1
                items.append({"file": str(f), "line": a.line, "severity": a.severity, "title": a.title,
                              "rules": [f"{h.id} ({h.level})" for h in a.signatures][:5]})
    metrics = {"events": total, "high_or_critical": high, "fp_rate": round(high / total, 4) if total else None,
               "by_severity": by_severity, "files": [str(f) for f in files]}
    return items, metrics


def run_sigma_eval(regression: Path, benign: list[Path], out: Path, allow_busy: bool = False) -> dict:
    from secfm.provenance import recording
    from secfm.workflows.sigma_rules import describe, load_rules

    for f in benign:
        if not f.is_file():
            raise SecfmError(f"benign events file not found: {f}")
    with recording(data_files=[regression, *benign], allow_busy=allow_busy) as rec:
        ruleset = load_rules()
        cases = regression_cases(regression)
        items, metrics = evaluate_regression(cases, ruleset)
        payload = {"regression": metrics, "rule_set": {k: v for k, v in describe(ruleset).items() if k != "sources"},
                   "items": items}
        headline = {"regression_cases": metrics["cases"], "named_rule_fires": metrics["recall"],
                    "at_its_level": metrics["at_level"], "at_its_level_with_its_tags": metrics["level_and_tags"],
                    "at_least_its_level": metrics["at_least_level"]}
        if benign:
            fp_items, fp_metrics = evaluate_benign(benign, ruleset)
            payload["benign"] = fp_metrics
            payload["benign_items"] = fp_items
            headline.update(benign_events=fp_metrics["events"], benign_high_or_critical_rate=fp_metrics["fp_rate"])
        rec.write_json(out, {"kind": "sigma triage on events nobody here wrote", "headline": headline, **payload})
    return payload


def _replay_texts(alerts: list[Path], regression: Path | None) -> list[tuple[str, str]]:
    texts = [(str(p), p.read_text(encoding="utf-8")) for p in alerts]
    if regression is not None:
        texts += [(c["folder"], c["events"]) for c in regression_cases(regression)]
    if not texts:
        raise SecfmError("nothing to replay: give --alerts FILE or --regression DIR")
    return texts


def _as_jsonl(text: str) -> str:
    """A file of JSON records (pretty-printed objects one after another, an array, or JSON lines)
    as JSON lines; any other text as it is."""
    decoder = json.JSONDecoder()
    records, pos = [], 0
    try:
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            value, pos = decoder.raw_decode(text, pos)
            records += value if isinstance(value, list) else [value]
    except ValueError:
        return text
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records)


def run_sigma_bench(alerts: list[Path], regression: Path | None, repeat: int, out: Path, allow_busy: bool = False) -> dict:
    """Load time of the rule set (cold: an empty cache; cached: from the pickle; then the index
    built on the first match), then the replay
    of every alert given as one batch (a SIEM export), ``repeat`` times: end-to-end deterministic
    triage, and the rule matching alone (field mapping and the indexed match). Nothing is cached
    between replays but the compiled rules (the warm-up builds the matchers a replay meets)."""
    import tempfile

    from secfm.provenance import recording
    from secfm.workflows.alerts import parse_alerts
    from secfm.workflows.sigma_fields import event_view
    from secfm.workflows.sigma_rules import _LOADED, load_rules

    texts = _replay_texts(alerts, regression)
    batch = "\n".join(_as_jsonl(text) for _, text in texts)  # one triage call over every alert, as a SIEM exports them
    data = [p for p in alerts] + ([regression] if regression else [])
    with recording(data_files=data, allow_busy=allow_busy) as rec:
        import os

        home = os.environ.get("SECFM_HOME")
        with tempfile.TemporaryDirectory() as tmp:  # a cold load: an empty cache
            os.environ["SECFM_HOME"] = tmp
            try:
                _LOADED.clear()
                t = time.perf_counter()
                cold = load_rules()
                cold_s = time.perf_counter() - t
                _LOADED.clear()
                t = time.perf_counter()
                warm = load_rules()
                warm_s = time.perf_counter() - t
            finally:
                if home is None:
                    os.environ.pop("SECFM_HOME", None)
                else:
                    os.environ["SECFM_HOME"] = home
        assert warm.from_cache and not cold.from_cache
        t = time.perf_counter()
        warm.index()  # the logsource index and its gates, built on the first match
        index_s = time.perf_counter() - t
        parsed = parse_alerts(batch, where="replay batch")
        n_alerts = len(parsed)
        _triage(batch, warm, "replay batch")  # warm-up: builds the matchers the replay meets
        t = time.perf_counter()
        for _ in range(repeat):
            _triage(batch, warm, "replay batch")
        triage_s = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(repeat):
            for alert in parsed:
                warm.match(event_view(alert))
        match_s = time.perf_counter() - t
        total = n_alerts * repeat
        payload = {"benchmark": "sigma triage",
                   "headline": {"alerts_per_s": round(total / triage_s, 1), "match_alerts_per_s": round(total / match_s, 1),
                                "rules": len(warm.rules), "load_cold_s": round(cold_s, 2), "load_cached_s": round(warm_s, 3),
                                "index_build_s": round(index_s, 3)},
                   "rules": len(warm.rules), "correlations": len(warm.correlations), "load_cold_s": round(cold_s, 3),
                   "load_cached_s": round(warm_s, 3), "index_build_s": round(index_s, 3), "alerts": total, "alerts_per_replay": n_alerts, "repeat": repeat,
                   "triage_s": round(triage_s, 3), "alerts_per_s": round(total / triage_s, 1),
                   "match_s": round(match_s, 3), "match_alerts_per_s": round(total / match_s, 1),
                   "inputs": [str(p) for p in alerts] + ([f"{regression} ({len(texts) - len(alerts)} regression cases)"] if regression else []),
                   "what": "alerts_per_s: deterministic triage end to end (parsing, Sigma rules, correlation, scoring, "
                           "evidence, next steps, injection scan; no head, model or retrieval); match_alerts_per_s: the "
                           "field mapping and the indexed rule match alone"}
        rec.note(threads="python, one process")
        rec.write_json(out, payload)
    return payload


def summary_json(path: Path) -> dict:
    return json.loads(path.read_text())

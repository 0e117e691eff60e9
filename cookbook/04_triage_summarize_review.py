"""Recipe 4 — a SOC shift in one script: alert triage, an incident for two audiences, a Terraform review.

Why and when: the three workflows behind `secfm triage`, `secfm summarize` and `secfm review-config`
are plain functions, so a SOAR playbook, a notebook or a cron job can call them without the app.
Rules, indicator extraction, id validation and the ATT&CK head carry every result; the model adds
its view under a JSON schema and is reported as failed (never crashing) when it cannot. The model
part takes minutes on a laptop CPU: `--no-model` gives the deterministic part alone in seconds,
`--no-kb` skips the knowledge store.

    python cookbook/04_triage_summarize_review.py [--alerts FILE] [--report FILE] [--config FILE] [--no-model]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from secfm.workflows import review_config, summarize_incidents, triage_alerts

DATA = Path(__file__).parent / "data"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=Path, default=DATA / "alerts.jsonl")
    parser.add_argument("--report", type=Path, default=DATA / "incident_report.md")
    parser.add_argument("--config", type=Path, default=DATA / "main.tf")
    parser.add_argument("--model", default=None, help="registered model name (default: the embedded one)")
    parser.add_argument("--no-model", action="store_true", help="skip the generative part (rules, extraction and head only)")
    parser.add_argument("--no-kb", action="store_true", help="no knowledge-store retrieval")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)
    common = {"use_model": not args.no_model, "model": args.model, "max_new_tokens": args.max_new_tokens}
    store = {"store": False} if args.no_kb else {}

    # 1. alert triage: the queue is ordered by the rules' severity (the model cannot talk an alert down)
    triage = triage_alerts(args.alerts.read_text(), **common, **store)
    print(f"== triage: {len(triage.alerts)} alerts, model {triage.model.status}, techniques from {triage.technique_source or 'none'}")
    for entry in triage.queue:
        alert = triage.alerts[entry.index]
        techniques = ", ".join(t.id for t in alert.techniques[:3]) or "-"
        print(f"{entry.rank:>2}. [{entry.severity:<8} {entry.score:>3}] {entry.title[:60]:<60} {techniques}")
    print("counts:", ", ".join(f"{k} {v}" for k, v in triage.counts.items() if v))
    top = triage.alerts[triage.queue[0].index]
    print("top alert, next step:", top.next_steps[0].action if top.next_steps else "-")

    # 2. one incident, two audiences; the model steps of both run as one batched generation
    report = args.report.read_text()
    summaries = summarize_incidents([(report, "executive"), (report, "analyst")], **common)
    for s in summaries:
        print(f"== summary for the {s.audience} ({s.summary_source}, model {s.model.status})")
        print("headline:", s.headline or s.summary.split(". ")[0])
        print("summary:", s.summary[:300])
    analyst = summaries[1]
    print("IOCs:", "; ".join(f"{kind}: {', '.join(v[:3])}" for kind, v in analyst.iocs.items() if v) or "-")
    print("ids:", ", ".join(f"{i.id}{'' if i.known else ' (unknown)'}" for i in analyst.ids) or "-")
    if any(s.flags for s in summaries):
        print("removed from the model summaries:", "; ".join(f"{f.kind} {f.value}" for s in summaries for f in s.flags))

    # 3. configuration review: rule findings with exact line numbers, then the model's checked review
    review = review_config(args.config.read_text(), filename=args.config.name, **common, **store)
    print(f"== review of {args.config.name} ({review.kind}, detected by {review.kind_detected_by}): "
          f"{len(review.findings)} findings, model {review.model.status}")
    for f in review.findings:
        lines = f"line {f.line_start}" if f.line_start == f.line_end else f"lines {f.line_start}-{f.line_end}"
        print(f"{args.config.name}:{lines}: [{f.severity}] {f.rule_id} {f.title} ({f.source}; {', '.join(f.references) or '-'})")
        for n, line in enumerate(f.evidence.splitlines()[:8], start=f.line_start):
            print(f"    {n:>4} | {line}")
        print(f"    fix: {f.fix}")
    for r in review.rejected:
        print(f"rejected model finding: {r.value} ({r.reason})")
    for name, part in (("triage", triage.model), ("summaries", summaries[0].model), ("review", review.model)):
        if part.status in ("failed", "repaired") and part.detail:
            print(f"model part of the {name}: {part.status}: {part.detail[:200]}")
    return {"triage": triage, "summaries": summaries, "review": review}


if __name__ == "__main__":
    main()

"""Recipe 7 — evaluate a model on CTIBench-format data with confidence intervals, then write its report and model card.

Why and when: before you adopt or ship a model (or an adapter from recipe 6), measure it the way
`secfm eval` does: the benchmark's own prompts and answer rules, a seeded subset, a 95% bootstrap
interval, majority and random baselines, per-item predictions, resumable run folders. Then turn the
runs into a comparison report and a Hugging Face model card whose numbers come from the runs.

CTIBench rows never ship with secfm: pass `--data cti-mcq.tsv` (and `--rcm-data cti-rcm.tsv`) from
the official release for real figures. Without them this recipe writes files in the official
layout from ATT&CK (multiple-choice questions) and from the fictional CVEs in cookbook/data, so the
numbers it prints show the mechanics only and must not be compared with published results.

    python cookbook/07_eval_and_model_card.py [--data cti-mcq.tsv] [--limit 40] [--rcm-mode head|gen|skip] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from secfm.engines import get_engine
from secfm.evals.card import write_card
from secfm.evals.report import write_report
from secfm.evals.runner import EvalConfig, run_eval, summary_line
from secfm.evals.synthetic import official_prompt, write_attack_mcq, write_tsv

DATA = Path(__file__).parent / "data"


def synthetic_rcm(path: Path) -> Path:
    """cti-rcm.tsv in the official layout from cookbook/data/cve_cwe.jsonl (fictional 2099 CVEs)."""
    rows = [json.loads(line) for line in (DATA / "cve_cwe.jsonl").read_text().splitlines() if line.strip()]
    return write_tsv(path, ["URL", "Description", "Prompt", "GT"], [
        {"URL": f"https://nvd.nist.gov/vuln/detail/{r['id']}", "Description": r["description"],
         "Prompt": official_prompt("cti-rcm", r["description"]), "GT": r["cwe"]} for r in rows])


def show(metrics: dict, run_dir: Path) -> None:
    h = metrics["headline"]
    lo, hi = metrics["intervals"][h]
    print(f"{metrics['task']}: {h} {metrics['figures'][h]:.1%} (95% CI {lo:.1%} to {hi:.1%}), n={metrics['n']}, "
          f"data sha256 {metrics['data_sha256'][:12]}")
    print("  ", summary_line(metrics))
    print(f"   per-item predictions: {run_dir / 'predictions.jsonl'}")
    print(f"   the same run from the shell: {metrics['command']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--adapter", default=None, help="a PEFT adapter folder (e.g. from recipe 6)")
    parser.add_argument("--data", type=Path, default=None, help="cti-mcq.tsv from CTIBench (default: questions derived from ATT&CK)")
    parser.add_argument("--rcm-data", type=Path, default=None, help="cti-rcm.tsv from CTIBench (default: fictional CVEs in cookbook/data)")
    parser.add_argument("--rcm-mode", choices=["head", "gen", "skip"], default="head",
                        help="head: the shipped CWE classifier head (seconds); gen: the model writes its answer (slow on a CPU)")
    parser.add_argument("--limit", type=int, default=40, help="score a seeded random subset of N questions")
    parser.add_argument("--out", type=Path, default=None, help="folder for data, runs, report and card (default: a temp dir)")
    args = parser.parse_args(argv)
    out = (args.out or Path(tempfile.mkdtemp(prefix="secfm-eval-"))).resolve()
    print("output folder:", out)

    mcq = args.data or write_attack_mcq(out / "data" / "cti-mcq.tsv", n=max(240, args.limit))
    engine = get_engine("transformers", model=args.model, adapter=args.adapter)  # loaded once, shared by the runs
    common = {"model": args.model, "adapter": args.adapter, "limit": args.limit}

    # 1. multiple choice, log-likelihood mode: each option scored as a continuation; no parsing failures
    runs = [out / "runs" / "mcqa"]
    metrics = [run_eval(EvalConfig(task="cti-mcqa", data=str(mcq), mode="loglik", out=str(runs[0]), **common),
                        engine=engine, progress=False)]
    show(metrics[0], runs[0])

    # 2. CVE -> CWE root-cause mapping (cheap with the classifier head)
    if args.rcm_mode == "head" and args.adapter:
        print("cti-rcm skipped: the shipped CWE head was trained on the base model without an adapter")
    elif args.rcm_mode != "skip":
        rcm = args.rcm_data or synthetic_rcm(out / "data" / "cti-rcm.tsv")
        runs.append(out / "runs" / f"rcm-{args.rcm_mode}")
        metrics.append(run_eval(EvalConfig(task="cti-rcm", data=str(rcm), mode=args.rcm_mode, out=str(runs[-1]), **common),
                                engine=engine, progress=False))
        show(metrics[-1], runs[-1])

    # 3. the comparison report (markdown + plots) and the model card (front matter with model-index)
    report = write_report([str(r) for r in runs], out / "report")
    card = write_card([str(r) for r in runs], out / "model_card" / "README.md")
    print(f"report: {report} ({len(list(report.parent.glob('*.png')))} plots)")
    print(f"model card: {card}")
    print("the same from the shell: secfm eval report", *runs, "--out", report.parent, "&& secfm card --runs", *runs, "--out", card)
    if args.data is None:
        print("note: synthetic questions derived from ATT&CK, not CTIBench; figures are not comparable with published ones")
    return {"metrics": metrics, "runs": runs, "report": report, "card": card}


if __name__ == "__main__":
    main()

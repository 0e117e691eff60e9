"""`secfm kb update sigma`, `secfm kb sigma-stats`, `secfm eval sigma`, `secfm bench sigma`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_options import AllowBusyOpt
from secfm.errors import SecfmError


def kb_update_sigma(
    url: Annotated[Optional[str], typer.Option("--url", help="Archive (zip or tar.gz) of SigmaHQ's rules; default: SigmaHQ's latest release.")] = None,
    source: Annotated[Optional[Path], typer.Option("--from", help="A local SigmaHQ checkout, rules folder or archive instead of downloading.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the pack (default: $SECFM_HOME/sigma/sigmahq.jsonl.gz, which triage then prefers).")] = None,
    snapshot: Annotated[Optional[str], typer.Option("--snapshot", help="Snapshot date to record (default: the newest rule date).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds to wait for the download.")] = 60.0,
) -> None:
    """Bring newer SigmaHQ rules: download (or read) them and keep a compact pack triage prefers to the shipped one."""
    from secfm.workflows import sigma_pack

    if source is not None:
        if not source.exists():
            raise SecfmError(f"not found: {source}")
        if source.is_dir():
            files = []
            roots = [source / d for d in sigma_pack.RULE_FOLDERS if (source / d).is_dir()] or [source]
            for root in roots:
                files += list(sigma_pack.iter_folder(root))
        else:
            files = list(sigma_pack.iter_archive(source.read_bytes(), str(source)))
        target = out or (sigma_pack.updated_dir() / "sigmahq.jsonl.gz")
        header = sigma_pack.write_pack(files, target, snapshot=snapshot or sigma_pack._snapshot_of(files), source=str(source))
        header["path"] = str(target)
    else:
        header = sigma_pack.update_from_url(url or sigma_pack.DEFAULT_URL, timeout=timeout, out=out)
    print(f"Sigma rules: {header['rules']} rules from {header['files']} files, snapshot {header['snapshot']}, written to {header['path']}")


def kb_sigma_stats(
    rules: Annotated[Optional[list[Path]], typer.Option("--rules", help="Your own rules folder(s) to include.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The Sigma rule set triage uses: rules by source, the snapshot date, load time, unusable rules."""
    from secfm.workflows.sigma_rules import describe, load_rules

    rs = load_rules(rules or [])
    info = describe(rs)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['rules']} detection rules ({', '.join(f'{k} {v}' for k, v in info['by_source'].items())}); "
          f"SigmaHQ snapshot {info['snapshot']}; loaded in {info['load_seconds']} s{' from the cache' if info['from_cache'] else ''}; "
          f"{info['errors']} rules skipped")
    for e in rs.errors[:10]:
        print(f"  skipped: {e}")


def eval_sigma(
    regression: Annotated[Path, typer.Option("--regression", help="SigmaHQ's regression_data folder (info.yml + events per rule).")],
    benign: Annotated[Optional[list[Path]], typer.Option("--benign", help="Benign events (any alert format) for the false-positive rate; repeatable.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON results (a markdown table beside it).")] = Path("workflows/results/eval-sigma.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Triage on events nobody here wrote: recall of the named rule (at its level, with its tags) over
    SigmaHQ's regression events, and the high/critical rate on benign events."""
    from secfm.workflows.sigma_eval import run_sigma_eval

    result = run_sigma_eval(regression, benign or [], out, allow_busy=allow_busy)
    print(json.dumps({k: v for k, v in result.items() if k not in ("items", "benign_items", "provenance")}, indent=2))


def bench_sigma(
    alerts: Annotated[Optional[list[Path]], typer.Option("--alerts", help="Alert files to replay, repeatable (e.g. the benign sets in workflows/data/benign/).")] = None,
    regression: Annotated[Optional[Path], typer.Option("--regression", help="SigmaHQ's regression_data folder (its events are replayed).")] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Replay the alerts this many times.")] = 5,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON results.")] = Path("workflows/results/bench-sigma.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Rule-set load time (cold, then from the cache) and triage alerts/s with every rule loaded
    (end to end, and the rule matching alone), replaying the alerts given as one batch."""
    from secfm.workflows.sigma_eval import run_sigma_bench

    result = run_sigma_bench(alerts or [], regression, repeat, out, allow_busy=allow_busy)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))


def register(app: typer.Typer) -> None:
    from secfm.cli_groups import command_group
    from secfm.evals.bench import bench_group

    kb = command_group(app, "kb", "The knowledge base: ATT&CK Enterprise and CWE (and the retrieval index).")
    update = command_group(kb, "update", "Download newer knowledge (nvd: NVD's CVE API 2.0; sigma: SigmaHQ's rules).")
    update.command("sigma")(kb_update_sigma)
    kb.command("sigma-stats")(kb_sigma_stats)
    command_group(app, "eval", "Evaluate models and workflows.").command("sigma")(eval_sigma)
    bench_group(app).command("sigma")(bench_sigma)

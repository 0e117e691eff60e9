"""`secfm attack extract`: ATT&CK techniques with evidence, Navigator layers, STIX bundles;
`secfm bench heads`: latency and throughput of extract_attack."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_options import AllowBusyOpt
from secfm.errors import SecfmError
from secfm.evals.bench import bench_group
from secfm.stats import percentile


def register(app: typer.Typer) -> None:
    from secfm.cli_groups import command_group

    attack = command_group(app, "attack", "ATT&CK technique extraction.")

    @attack.command("extract")
    def extract(
        text: Annotated[str, typer.Argument(help="A report or alert: literal text, a file path, @FILE, or '-' for standard input.")],
        navigator: Annotated[Optional[Path], typer.Option("--navigator", help="Write an ATT&CK Navigator layer (format 4.5) here.")] = None,
        stix: Annotated[Optional[Path], typer.Option("--stix", help="Write a STIX 2.1 bundle (report, attack-patterns, relationships) here.")] = None,
        head: Annotated[Optional[Path], typer.Option("--head", help="Head folder; default: the head shipped for the model.")] = None,
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model the head runs on; default: the embedded one.")] = None,
        threshold: Annotated[Optional[str], typer.Option("--threshold", help="A probability (0-1), or 'global' / 'per-class' (the head's tuned thresholds; default: the head's choice).")] = None,
        top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="At most this many techniques.")] = None,
        evidence: Annotated[int, typer.Option("--evidence", min=1, help="Evidence sentences per technique.")] = 3,
        fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="table (default), json or md.")] = None,
        as_json: Annotated[bool, typer.Option("--json", hidden=True, help="Same as --format json.")] = False,
        name: Annotated[Optional[str], typer.Option("--name", help="Name of the layer / report (default: from the input).")] = None,
    ) -> None:
        """Extract ATT&CK techniques from TEXT with the classifier head; print them with their evidence."""
        from secfm.formats import resolve_format
        from secfm.inputs import text_or_file
        from secfm.workflows.protocol import get_workflow

        fmt = resolve_format(fmt, as_json, default="table")
        document = text_or_file(text, "text")
        thr = _threshold(threshold)
        from secfm.outputs import check_output_file

        for option, target in (("--navigator", navigator), ("--stix", stix)):
            if target is not None:
                check_output_file(target, (text,), option)
        from rich.console import Console

        workflow = get_workflow("attack")  # the Workflow protocol, as the API and the app
        with Console(stderr=True).status("loading the ATT&CK head and its model"):
            result = workflow.run({"text": document, "threshold": thr, "top_k": top_k, "max_evidence": evidence},
                                  head=head, model=model)
        hits = result.techniques
        title = name or _default_name(text, document)
        if fmt == "json":
            print(json.dumps({"head": result.head, "techniques": [h.to_dict() for h in hits]}, indent=2))
        elif fmt == "md":
            print(workflow.render_markdown(result))
        else:
            _print_hits(hits)  # the terminal table, with each evidence sentence's number and score
        if navigator is not None:
            from secfm.workflows.navigator import check_layer, navigator_layers

            # a layer holds one ATT&CK domain: the domain with the most hits goes to --navigator,
            # any other to NAME-<domain>.json beside it
            layers = navigator_layers(hits, name=title, description=f"secfm attack extract: {len(hits)} techniques")
            for i, (domain, layer) in enumerate(layers.items()):
                check_layer(layer)
                target = navigator if i == 0 else navigator.with_name(f"{navigator.stem}-{domain}{navigator.suffix or '.json'}")
                _write(target, json.dumps(layer, indent=2))
                Console(stderr=True).print(f"Navigator layer ({layer['domain']}): {target}")
        if stix is not None:
            from secfm.workflows.stix_export import bundle_json, stix_bundle, validate_bundle

            serialized = bundle_json(stix_bundle(hits, document, name=title))
            problems = validate_bundle(serialized)  # what we write passes stix2-validator --strict --interop
            if problems:
                raise SecfmError(f"the STIX bundle does not validate: {problems[0]}")
            _write(stix, serialized)
            Console(stderr=True).print(f"STIX bundle: {stix}")

    bench = bench_group(app)

    @bench.command("heads")
    def bench_heads(
        out: Annotated[Path, typer.Option("--out", help="JSON results (a markdown table is written beside it).")] = Path("training/results/bench-heads.json"),
        head: Annotated[Optional[Path], typer.Option("--head", help="ATT&CK head folder; default: the shipped one for the model.")] = None,
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model; default: the embedded one.")] = None,
        repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed runs per case.")] = 30,
        batch: Annotated[int, typer.Option("--batch", min=1, help="Texts per call in the batched case.")] = 32,
        task: Annotated[str, typer.Option("--task", help="attack (extract_attack), cve (analyze_cve: CWE and CVSS heads) or all.")] = "all",
        allow_busy: AllowBusyOpt = False,
    ) -> None:
        """p50/p95 latency of extract_attack (head, retrieval, document model) on ~1,000-character reports and on alert-sized texts (up to 128 tokens), one and a batch per call; and of CVE analysis (training/results/bench-heads-cve.json)."""
        if task not in ("attack", "cve", "all"):
            raise SecfmError(f"--task must be attack, cve or all, not {task!r}")
        if task in ("attack", "all"):
            res = run_heads_bench(out, head=head, model=model, repeats=repeats, batch=batch, allow_busy=allow_busy)
            md = out.with_suffix(".md")
            print(md.read_text() if md.is_file() else json.dumps(res, indent=2))
        if task in ("cve", "all"):
            from secfm.workflows.cve_bench import run_cve_bench

            cve_out = out.with_name("bench-heads-cve.json")
            run_cve_bench(cve_out, repeats=max(repeats, 60), batch=batch, allow_busy=allow_busy)
            print(cve_out.with_suffix(".md").read_text())


    @bench.command("attack")
    def bench_attack(
        out: Annotated[Path, typer.Option("--out", help="JSON results (a markdown table is written beside it).")] = Path("training/results/bench-heads.json"),
        head: Annotated[Optional[Path], typer.Option("--head", help="ATT&CK extractor folder; default: the shipped one for the model.")] = None,
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model; default: the embedded one.")] = None,
        repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed runs per case.")] = 30,
        batch: Annotated[int, typer.Option("--batch", min=1, help="Texts per call in the batched case.")] = 32,
        allow_busy: AllowBusyOpt = False,
    ) -> None:
        """p50/p95 latency of ATT&CK document extraction (sentence head, retrieval, document model): a ~1,000-character report per call (target p50 < 1 s) and one alert per call (target p50 < 50 ms); the same as `secfm bench heads --task attack`."""
        bench_heads(out=out, head=head, model=model, repeats=repeats, batch=batch, task="attack", allow_busy=allow_busy)


def _threshold(value: str | None):
    if value is None or value in ("global", "per-class"):
        return value
    try:
        t = float(value)
    except ValueError:
        raise SecfmError(f"--threshold must be a number between 0 and 1, 'global' or 'per-class', not {value!r}") from None
    if not 0 < t < 1:
        raise SecfmError(f"--threshold must be between 0 and 1, not {value}")
    return t


def _default_name(arg: str, document: str) -> str:
    from secfm.inputs import existing_file

    candidate = existing_file(arg[1:] if arg.startswith("@") else arg) if arg != "-" else None
    if candidate is not None:
        return f"secfm: {candidate.name}"
    first = " ".join(document.split())[:60]
    return f"secfm: {first}" + ("…" if len(document) > 60 else "")


def _write(path: Path, text: str) -> None:
    from secfm.outputs import write_text

    write_text(path, text + "\n")


def _print_hits(hits) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not hits:
        console.print("No ATT&CK technique passed the head's thresholds.")
        return
    table = Table(title=f"ATT&CK techniques ({len(hits)})", show_lines=True)
    for col in ("id", "name", "tactics", "score", "evidence"):
        table.add_column(col, overflow="fold")
    for h in hits:
        ev = "\n".join(f"[{e.sentence}] {e.score:.2f} {e.text}" for e in h.evidence)
        table.add_row(h.id, h.name, ", ".join(h.tactics), f"{h.score:.2f}", ev)
    console.print(table)


# ---------------------------------------------------------------------------------------------
# bench heads
# ---------------------------------------------------------------------------------------------
#: alert-sized texts (each at most 128 tokens with the Gemma tokenizer), as SIEM/EDR rules write them
BENCH_ALERTS = [
    "EDR alert: powershell.exe launched with -EncodedCommand by winword.exe on WS-0231 (user j.doe). The decoded script downloads a payload from hxxp://185.220.101.4/a.ps1 and runs it in memory.",
    "Suspicious scheduled task 'OneDrive Update' created via schtasks.exe /create /sc minute /mo 15 /tr C:\\Users\\Public\\upd.exe on host FIN-SRV-02.",
    "Multiple failed RDP logons (87 in 5 minutes) from 45.133.1.20 against administrator accounts on DC01, followed by a successful logon.",
    "rundll32.exe loaded an unsigned DLL from %APPDATA%\\Microsoft\\crypt32.dll and made outbound HTTPS connections to a newly registered domain.",
    "User received an email with attachment Invoice_0423.docm; the macro spawned cmd.exe which executed certutil -urlcache -split -f to fetch a binary.",
    "Mimikatz-like access to lsass.exe memory detected: process procdump64.exe opened a handle to lsass with PROCESS_VM_READ on SRV-APP-7.",
    "New service 'WinDefendSvc' installed with binary path C:\\Windows\\Temp\\svc.exe; the service runs as LocalSystem and starts automatically.",
    "Volume shadow copies deleted with vssadmin delete shadows /all /quiet, followed by mass file renames with the extension .lockbit on FS01.",
    "DNS queries with long random subdomains of tunnel-cdn[.]net at a rate of 40 per second from host LAB-12 suggest data exfiltration over DNS.",
    "Registry Run key HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater set to C:\\ProgramData\\updater.vbs by wscript.exe.",
    "Outbound SMB connections from WS-0410 to 30 internal hosts within two minutes using the same local administrator credentials (pass-the-hash suspected).",
    "AWS CloudTrail: IAM user build-bot created new access keys and attached AdministratorAccess to itself from an IP never seen before.",
    "net.exe group \"Domain Admins\" /domain and nltest /dclist executed by a non-IT user account in quick succession.",
    "A web shell was detected at /var/www/html/uploads/img.php; requests with the parameter cmd= execute system commands as www-data.",
    "Process hollowing suspected: svchost.exe started in a suspended state by an unknown parent, then its memory was overwritten and resumed.",
    "Archive tool 7z.exe compressed the Finance share into a password-protected archive, then rclone uploaded it to a cloud storage account.",
    "Phishing link clicked: user entered credentials on a fake Microsoft 365 login page hosted at login-micros0ft[.]com.",
    "WMI event subscription created: __EventFilter 'SCM Event' with a CommandLineEventConsumer that runs a PowerShell downloader at startup.",
    "Kerberos TGS requests for 120 service accounts with RC4 encryption from a single workstation within one minute (possible kerberoasting).",
    "The Windows Security event log was cleared (event 1102) on SRV-HR-01 by account svc_backup outside of business hours.",
    "Cobalt Strike beacon signature matched in memory of dllhost.exe; periodic HTTPS callbacks every 60 seconds with jitter to cdn-update[.]com.",
    "SSH brute force against bastion host: 2,300 failed password attempts for root from 3 IP addresses in the last hour.",
    "A signed driver with a known vulnerability (RTCore64.sys) was loaded, then EDR processes were terminated on the same host.",
    "Browser credential store files (Login Data, Cookies) of Chrome were read by an unsigned executable in the user's Temp folder.",
    "Screen captures saved every 30 seconds to C:\\Users\\Public\\Pictures\\cap_*.png by a process named explorer32.exe.",
    "Keystrokes logged by a hook installed with SetWindowsHookEx from an unknown DLL injected into explorer.exe.",
    "A new local user 'support_adm' was created and added to the Administrators group via net user and net localgroup commands.",
    "mshta.exe executed a remote HTA file from hxxps://docs-share[.]top/view.hta, which dropped a JavaScript loader.",
    "Linux host: crontab modified to run /tmp/.x/kworker every minute; the binary connects to a mining pool on port 3333.",
    "Firewall logs show a host tunnelling RDP over an SSH connection to an external VPS on port 443 (reverse tunnel).",
    "Exploit attempt against the public Confluence server (CVE-2022-26134 OGNL injection) followed by a reverse shell to 103.44.2.9.",
    "Email forwarding rule created in the CEO's mailbox to forward all messages containing 'invoice' to an external Gmail address.",
]


def bench_reports(alerts: list[str], n: int = 8, chars: int = 1000) -> list[str]:
    """``n`` reports of about ``chars`` characters (whole alert sentences joined, each report
    starting at another alert)."""
    out = []
    for start in range(n):
        parts, size, i = [], 0, start
        while size < chars - 60:
            a = alerts[i % len(alerts)]
            parts.append(a)
            size += len(a) + 1
            i += 1
        out.append(" ".join(parts)[: chars + 150])
    return out


def run_heads_bench(out: Path | None, head: Path | None = None, model: str | None = None, repeats: int = 30,
                    batch: int = 32, engine=None, alerts: list[str] | None = None, allow_busy: bool = False) -> dict:
    """Time ``extract_attack`` (sentence split, head forward, retrieval of procedure examples,
    document model) on reports of about 1,000 characters, on one alert at a time and on batches
    of ``batch`` alerts; write JSON (and markdown beside it) through secfm.provenance."""
    import platform

    import torch

    from secfm.evals.bench import latency_stats, timed_calls
    from secfm.heads import shipped_head_path
    from secfm.provenance import recording
    from secfm.registry import default_model_name
    from secfm.workflows.attack_extraction import AttackExtractor, split_sentences

    alerts = list(alerts or BENCH_ALERTS)
    reports = bench_reports(alerts)
    folder = Path(head) if head is not None else shipped_head_path("attack", model or getattr(engine, "model_name", None)
                                                                    or default_model_name())
    with recording(data_files=[folder] if folder.is_dir() else [], allow_busy=allow_busy) as rec:
        extractor = AttackExtractor.load(head, model, engine)
        eng = extractor.engine
        tokens = [eng.count_tokens(a) for a in alerts]
        if max(tokens) > 128:
            raise SecfmError(f"a bench alert has {max(tokens)} tokens; alert-sized texts are at most 128")
        for text in alerts[:3] + reports[:2]:  # warm up (first calls allocate; the embedder loads)
            extractor.extract(text)

        report_times = timed_calls(extractor.extract, reports, repeats)
        single = timed_calls(extractor.extract, alerts, repeats)
        texts = [alerts[i % len(alerts)] for i in range(batch)]
        batched = timed_calls(extractor.extract_many, [texts], max(3, repeats // 6))
        m = extractor.head.manifest

        def stats(values: list[float], count: int = 1) -> dict:
            return latency_stats(values, digits=1, per_call=count)

        res = {
            "what": "extract_attack: sentence split, one batched forward up to the head's deepest layer, the head, "
                    "MiniLM retrieval of the nearest ATT&CK procedure examples, the document model",
            "head": {"path": str(extractor.head.path), "base_model": m.base_model, "layer": m.layer, "layers": list(m.layers),
                     "pooling": m.pooling, "kind": m.kind, "labels": len(m.labels),
                     "retrieval_rows": len(extractor.index.rows) if extractor.index else 0,
                     "document_model": extractor.document.rule if extractor.document else None,
                     "short_path": _short_path_info(extractor, alerts)},
            "texts": {"alerts": len(alerts), "tokens_mean": round(statistics.mean(tokens), 1), "tokens_max": max(tokens),
                      "segments_mean": round(statistics.mean(len(split_sentences(a)) for a in alerts), 2),
                      "reports": len(reports), "report_chars_mean": round(statistics.mean(len(r) for r in reports), 1),
                      "report_segments_mean": round(statistics.mean(len(split_sentences(r)) for r in reports), 2)},
            "report": stats(report_times),
            "single": stats(single),
            "batch": {"size": batch, **stats(batched, batch)},
            "targets": {"report_p50_ms": 1000, "report_met": 1000 * percentile(report_times, 0.5) < 1000,
                        "alert_p50_ms": 50, "alert_met": 1000 * percentile(single, 0.5) < 50},
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                            "platform": platform.platform(), "processor": platform.processor() or platform.machine()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if out is not None:
            out = Path(out)
            written = rec.write_json(out, res)
            rec.write_text(out.with_suffix(".md"), _bench_markdown({**res, "provenance": written.get("provenance")}))
    return res


def _short_path_info(extractor, alerts: list[str]) -> dict | None:
    """What the document model's short-text path is, and how many bench alerts take it."""
    model = extractor.document
    if model is None or model.short_model(0) is None:
        return None
    limit = int(model.short["max_chars"])
    return {"max_chars": limit, "use_retrieval": model.short_model(0).use_retrieval,
            "layers": list(extractor.short_head.manifest.layers) if extractor.short_head is not None else list(extractor.head.manifest.layers),
            "alerts_taking_it": sum(len(a) <= limit for a in alerts)}


def _bench_markdown(r: dict) -> str:
    h, t = r["head"], r["texts"]
    sp = h.get("short_path")
    layers = "+".join(map(str, h.get("layers") or [h["layer"]]))
    lines = [
        "# Benchmark: extract_attack latency (document extraction)", "",
        f"Head: {h['kind']} on layers {layers} ({h['pooling']} pooling) of `{h['base_model']}`, {h['labels']} labels; "
        f"retrieval over {h['retrieval_rows']} ATT&CK examples; document model rule: {h['document_model']}"
        + (f"; short-text path for texts up to {sp['max_chars']} characters: head on layers {'+'.join(map(str, sp['layers']))}, "
           f"{'with' if sp['use_retrieval'] else 'without'} retrieval ({sp['alerts_taking_it']} of the alerts take it)"
           if sp else "; no short-text path") + ".", "",
        f"Texts: {t['reports']} reports of {t['report_chars_mean']} characters on average ({t['report_segments_mean']} "
        f"sentences); {t['alerts']} alerts of {t['tokens_mean']} tokens on average (max {t['tokens_max']}).", "",
        "| case | p50 ms | p95 ms | texts/s |", "|---|---|---|---|",
        f"| one ~1,000-character report per call | {r['report']['p50_ms']} | {r['report']['p95_ms']} | {r['report']['texts_per_s']} |",
        f"| 1 alert per call | {r['single']['p50_ms']} | {r['single']['p95_ms']} | {r['single']['texts_per_s']} |",
        f"| {r['batch']['size']} alerts per call | {r['batch']['p50_ms']} | {r['batch']['p95_ms']} | {r['batch']['texts_per_s']} |",
        "",
        f"Targets: report p50 < {r['targets']['report_p50_ms']} ms: {'met' if r['targets']['report_met'] else 'NOT met'}; "
        f"alert p50 < {r['targets']['alert_p50_ms']} ms: {'met' if r['targets']['alert_met'] else 'NOT met'}.",
        f"Environment: torch {r['environment']['torch']}, {r['environment']['threads']} threads, "
        f"{r['environment']['cpu_count']} CPUs.", "",
    ]
    return "\n".join(lines)

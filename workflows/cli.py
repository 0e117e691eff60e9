"""Commands of secfm.workflows: `secfm triage`, `summarize`, `review-config`, `kb build|search`,
`eval workflows`, `bench workflows`."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_options import AdapterOpt, AllowBusyOpt, EndpointOpt, EngineOpt, ModelOpt
from secfm.errors import SecfmError
from secfm.formats import FormatOpt, JsonAlias  # noqa: E402 - the one --format option

NoModelOpt = Annotated[bool, typer.Option("--no-model", help="Deterministic part only (rules, extraction, retrieval); no generation.")]
NoKbOpt = Annotated[bool, typer.Option("--no-kb", help="Do not use the knowledge base (no retrieval).")]
MaxNewOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", min=16, help="Token budget of each model answer.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the result to this file instead of standard output.")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Chroma folder (default $SECFM_HOME/chroma, or $SECFM_CHROMA_URL).")]
UrlOpt = Annotated[Optional[str], typer.Option("--url", help="Chroma server URL (default $SECFM_CHROMA_URL).")]


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def _progress(label: str, enabled: bool = True):
    """A progress bar on standard error; yields ``update(done, total)``."""
    if not enabled or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=_console(), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _check_format(fmt: str | None, out: Path | None = None, inputs=()) -> str:
    """Check --format (json, md or table; json by default), and --out before any work (not a
    folder, not an input)."""
    from secfm.formats import resolve_format

    fmt = resolve_format(fmt)
    if out is not None:
        from secfm.outputs import check_output_file

        check_output_file(out, inputs)
    return fmt


def _read(path: str, what: str) -> str:
    from secfm.inputs import check_text, decode_utf8, read_file_text

    if path == "-":
        return check_text(decode_utf8(sys.stdin.buffer.read(), "standard input"), "standard input")
    return read_file_text(path)


def _engine(no_model: bool, model, adapter, engine, endpoint):
    if no_model:
        return None
    from secfm.engines import engine_name
    from secfm.workflows.context import default_engine

    with _console().status(f"loading {model or 'the default model'} ({engine_name(engine, endpoint)} engine)"):
        return default_engine(model, engine, adapter, endpoint)


def _store(no_kb: bool, store: Path | None = None, url: str | None = None):
    if no_kb:
        return False
    from secfm.workflows.context import DEFAULT

    if store is None and url is None:
        return DEFAULT
    from secfm.workflows.store import KnowledgeStore

    return KnowledgeStore.open(store, url)


def _emit(result, fmt: str, render, out: Path | None, inputs=()) -> None:
    if fmt == "table" and out is None:
        _table(result)
        return
    text = result.model_dump_json(indent=2) + "\n" if fmt == "json" else render(result)
    if out is None:
        sys.stdout.write(text)
    else:
        from secfm.outputs import write_text

        write_text(out, text, inputs=inputs, option="--out")
        print(f"wrote {out}", file=sys.stderr)


def _table(result) -> None:
    """The result's main rows as a terminal table (``--format table``)."""
    from secfm.formats import print_table
    from secfm.workflows.protocol import workflow_for

    workflow = workflow_for(result)
    if workflow is not None:
        print_table(*workflow.table_rows(result))
    for w in getattr(result, "warnings", [])[:20]:
        print(f"warning: {w.location}: {w.kind}: {w.detail}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# triage / summarize / review-config
# ---------------------------------------------------------------------------------------------
def triage(
    file: Annotated[str, typer.Argument(help="Alerts: JSON, JSONL, CSV, Zeek TSV or log lines; '-' reads standard input.")],
    fmt: FormatOpt = None,
    input_format: Annotated[str, typer.Option("--input-format", help="auto, json, jsonl, csv, zeek or lines.")] = "auto",
    no_model: NoModelOpt = False,
    no_kb: NoKbOpt = False,
    no_head: Annotated[bool, typer.Option("--no-head", help="Do not run the ATT&CK classifier head.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=0, max=20, help="Related knowledge entries per alert.")] = 3,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    engine: EngineOpt = "transformers",
    endpoint: EndpointOpt = None,
    max_new_tokens: MaxNewOpt = None,
    out: OutOpt = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip (and report) JSONL lines that are not JSON instead of stopping.")] = False,
    rules: Annotated[Optional[list[Path]], typer.Option("--rules", help="A folder (or file) of your own Sigma rules, added to SigmaHQ's and secfm's; repeatable.")] = None,
    pipeline: Annotated[Optional[list[Path]], typer.Option("--pipeline", help="pySigma processing pipeline YAML applied to your --rules (field mappings for your log schema); repeatable.")] = None,
) -> None:
    """Triage alerts: Sigma rules (SigmaHQ's, secfm's, your --rules) give severity, ATT&CK techniques and evidence;
    correlations fold bursts into findings; next steps, a ranked queue."""
    from secfm.workflows.context import DEFAULT
    from secfm.workflows.protocol import get_workflow
    from secfm.workflows.triage import DEFAULT_MAX_NEW_TOKENS

    workflow = get_workflow("triage")
    fmt = _check_format(fmt, out, (file,))
    text = _read(file, "alerts")
    from secfm.workflows.alerts import parse_alerts

    where = "standard input" if file == "-" else file
    parse_alerts(text, input_format, where, skip_bad)  # fail fast on malformed input, before loading anything
    from secfm.workflows.sigma_rules import load_rules

    with _console().status("loading the Sigma rules (the first load builds a cache)"):
        ruleset = load_rules(rules or [], pipelines=pipeline or [])
    eng = _engine(no_model, model, adapter, engine, endpoint)
    with _progress("triage") as update:
        result = workflow.run({"alerts": text, "input_format": input_format, "k": top_k, "use_model": not no_model},
                              engine=eng, store=_store(no_kb), technique_source=None if no_head else DEFAULT, rules=ruleset,
                              max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS, progress=update, where=where,
                              skip_bad=skip_bad)
    _emit(result, fmt, workflow.render_markdown, out, (file,))


def summarize(
    file: Annotated[str, typer.Argument(help="Incident report: text, Markdown, HTML or PDF; '-' reads standard input.")],
    audience: Annotated[str, typer.Option("--audience", "-a", help="executive or analyst.")] = "analyst",
    fmt: FormatOpt = None,
    no_model: NoModelOpt = False,
    no_head: Annotated[bool, typer.Option("--no-head", help="Do not run the ATT&CK classifier head.")] = False,
    chunk_tokens: Annotated[int, typer.Option("--chunk-tokens", min=128, help="Tokens per map step.")] = 1200,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    engine: EngineOpt = "transformers",
    endpoint: EndpointOpt = None,
    max_new_tokens: MaxNewOpt = None,
    out: OutOpt = None,
) -> None:
    """Summarise an incident report for an executive or an analyst; IOCs and ids extracted and checked."""
    from secfm.workflows.context import DEFAULT
    from secfm.workflows.protocol import get_workflow
    from secfm.workflows.schemas import AUDIENCES
    from secfm.workflows.summarize import DEFAULT_MAX_NEW_TOKENS

    workflow = get_workflow("summarize")
    fmt = _check_format(fmt, out, (file,))
    if audience not in AUDIENCES:
        raise SecfmError(f"unknown --audience {audience!r} (executive or analyst)")
    if file != "-" and Path(file).suffix.lower() in (".pdf", ".html", ".htm"):
        from secfm.workflows.corpus import read_document

        text = read_document(file)[0]
    else:
        text = _read(file, "report")
    eng = _engine(no_model, model, adapter, engine, endpoint)
    with _progress("summarize") as update:
        result = workflow.run({"text": text, "audience": audience, "use_model": not no_model}, engine=eng,
                              technique_source=None if no_head else DEFAULT, chunk_tokens=chunk_tokens,
                              max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS, progress=update)
    _emit(result, fmt, workflow.render_markdown, out, (file,))


def review_config_cmd(
    file: Annotated[str, typer.Argument(help="Configuration file; '-' reads standard input.")],
    kind: Annotated[str, typer.Option("--kind", help="auto, terraform, kubernetes, docker-compose, dockerfile, sshd, nginx or aws-iam.")] = "auto",
    fmt: FormatOpt = None,
    no_model: NoModelOpt = False,
    no_kb: NoKbOpt = False,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    engine: EngineOpt = "transformers",
    endpoint: EndpointOpt = None,
    max_new_tokens: MaxNewOpt = None,
    out: OutOpt = None,
) -> None:
    """Review a configuration: rule findings per kind plus a grounded model review, with line ranges."""
    from secfm.workflows.config_rules import detect_kind
    from secfm.workflows.protocol import get_workflow
    from secfm.workflows.review import DEFAULT_MAX_NEW_TOKENS

    workflow = get_workflow("review-config")
    fmt = _check_format(fmt, out, (file,))
    text = _read(file, "configuration")
    filename = None if file == "-" else file
    if kind == "auto":
        detect_kind(text, filename)  # fail fast, before loading the model
    eng = _engine(no_model, model, adapter, engine, endpoint)
    with _progress("review") as update:
        result = workflow.run({"text": text, "kind": kind, "filename": filename, "use_model": not no_model}, engine=eng,
                              store=_store(no_kb), max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS, progress=update)
    _emit(result, fmt, workflow.render_markdown, out, (file,))


# ---------------------------------------------------------------------------------------------
# kb build / search
# ---------------------------------------------------------------------------------------------
def kb_build(
    attack_bundle: Annotated[Optional[Path], typer.Option("--attack-bundle", help="Official enterprise-attack.json (STIX 2.1) instead of the packaged data.")] = None,
    docs: Annotated[Optional[list[Path]], typer.Option("--docs", "-d", help="Runbook/policy file or folder (md, txt, html, pdf); repeatable.")] = None,
    no_attack: Annotated[bool, typer.Option("--no-attack", help="Skip ATT&CK techniques and mitigations.")] = False,
    no_cwe: Annotated[bool, typer.Option("--no-cwe", help="Skip CWE weaknesses.")] = False,
    store: StoreOpt = None,
    url: UrlOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Chunks embedded and stored per step.")] = 64,
    no_prune: Annotated[bool, typer.Option("--no-prune", help="Keep chunks whose source content changed.")] = False,
) -> None:
    """Index ATT&CK, CWE and your documents into the retrieval store (idempotent, resumable)."""
    from secfm.workflows.store import KnowledgeStore, build_kb

    if attack_bundle is not None and not attack_bundle.is_file():
        raise SecfmError(f"file not found: {attack_bundle}")
    kb = KnowledgeStore.open(store, url)
    with _progress("embedding") as update:
        report = build_kb(kb, attack=not no_attack, cwe=not no_cwe, documents=docs or [], attack_bundle=attack_bundle,
                          batch_size=batch_size, prune=not no_prune, progress=update)
    print(json.dumps(report.as_dict(), indent=2))


def kb_search(
    query: Annotated[str, typer.Argument(help="What to look for, in words.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=100, help="Results to show.")] = 5,
    kind: Annotated[Optional[list[str]], typer.Option("--kind", help="technique, mitigation, cwe or document (repeatable).")] = None,
    tactic: Annotated[Optional[str], typer.Option("--tactic", help="ATT&CK tactic name or id, e.g. credential-access or TA0006.")] = None,
    platform: Annotated[Optional[str], typer.Option("--platform", help="ATT&CK platform, e.g. Windows, Linux, IaaS.")] = None,
    store: StoreOpt = None,
    url: UrlOpt = None,
    fmt: FormatOpt = None,
    as_json: JsonAlias = False,
) -> None:
    """Search the knowledge base (built by `secfm kb build`)."""
    from secfm.inputs import check_text
    from secfm.workflows.store import KnowledgeStore, where_filter

    check_text(query, "query")
    where_filter(kind, tactic, platform)  # validate the filters before loading anything
    kb = KnowledgeStore.open(store, url)
    if kb.count() == 0:
        raise SecfmError(f"the knowledge base at {kb.location} is empty; run `secfm kb build` first")
    from secfm.formats import print_table, resolve_format

    fmt = resolve_format(fmt, as_json, default="table")
    refs = kb.search(query, k=k, kind=kind, tactic=tactic, platform=platform)
    if fmt == "json":
        print(json.dumps([r.model_dump() for r in refs], indent=2))
        return
    print_table(f"kb search: {query}", ("score", "id", "kind", "name", "text"),
                [(f"{r.score:.3f}", r.id, r.kind, r.name, r.text[:120].replace("\n", " ")) for r in refs], fmt)


# ---------------------------------------------------------------------------------------------
# eval / bench
# ---------------------------------------------------------------------------------------------
def eval_workflows(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: run.json, predictions.jsonl, metrics.json.")],
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    engine: EngineOpt = "transformers",
    endpoint: EndpointOpt = None,
    no_model: NoModelOpt = False,
    no_kb: NoKbOpt = False,
    no_head: Annotated[bool, typer.Option("--no-head", help="Do not run the ATT&CK classifier head.")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Score only the first N items of each gold set.")] = None,
    gold: Annotated[Optional[Path], typer.Option("--gold", help="Gold-set folder (default: the one shipped in secfm.workflows).")] = None,
) -> None:
    """Score triage, summarization and config review on the gold sets (severity accuracy, technique
    F1, finding precision/recall, invented-entity rate)."""
    from secfm.evals.harness import run_task
    from secfm.workflows.evaluate import EvalSettings

    settings = EvalSettings(out=str(out), model=model, adapter=adapter, engine=engine, endpoint=endpoint, use_model=not no_model,
                            use_kb=not no_kb, use_head=not no_head, limit=limit, gold=str(gold) if gold else None)
    with _progress("eval workflows") as update:  # the harness task `workflows` (secfm eval run workflows)
        done = run_task("workflows", settings, progress=update)
    print(done.summary)
    print(f"run folder: {out}")


def bench_workflows(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON results.")] = Path("workflows/results/bench-workflows.json"),
    chunks: Annotated[int, typer.Option("--chunks", min=1000, help="Synthetic store size for the large retrieval run.")] = 100_000,
    queries: Annotated[int, typer.Option("--queries", min=5, help="Retrieval queries per store size.")] = 50,
    no_model: NoModelOpt = False,
    model_alerts: Annotated[int, typer.Option("--model-alerts", min=1, help="Alerts triaged with the generative step.")] = 8,
    model: ModelOpt = None,
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Retrieval p50/p95 at the packaged corpus size and at --chunks, and triage alerts/s with and without generation."""
    from secfm.workflows.bench import run_workflows_bench

    result = run_workflows_bench(out=out, big_chunks=chunks, n_queries=queries, with_model=not no_model,
                                 model_alerts=model_alerts, model=model, log=lambda m: _console().print(m),
                                 allow_busy=allow_busy)
    print(json.dumps(result, indent=2))


def bench_config_rules(
    data: Annotated[Optional[Path], typer.Option("--data", help="Labelled JSONL (default: the checkov/gixy-derived set in secfm.workflows).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON results.")] = Path("workflows/results/config-public-vectors.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Config-review precision and recall on public scanner fixtures we did not write."""
    from secfm.workflows.config_eval import DEFAULT_DATA, run_config_bench

    res = run_config_bench(data or DEFAULT_DATA, out, allow_busy)
    o = res["overall"]
    print(f"{res['files']} files: precision {o['precision']:.1%}, recall {o['recall']:.1%} (tp {o['tp']}, fp {o['fp']}, fn {o['fn']}, tn {o['tn']})")
    print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the workflow commands to the secfm CLI."""
    from secfm.cli_groups import command_group
    from secfm.evals.bench import bench_group

    app.command("triage")(triage)
    app.command("summarize")(summarize)
    app.command("review-config")(review_config_cmd)
    kb = command_group(app, "kb", "The knowledge base: ATT&CK Enterprise and CWE (and the retrieval index).")
    kb.command("build")(kb_build)
    kb.command("search")(kb_search)
    evals = command_group(app, "eval", "Evaluate models and workflows.")
    evals.command("workflows")(eval_workflows)
    bench = bench_group(app)
    bench.command("workflows")(bench_workflows)
    bench.command("config-rules")(bench_config_rules)

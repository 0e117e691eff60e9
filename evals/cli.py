"""Commands of secfm.evals: `secfm eval TASK|report`, `secfm card`, `secfm bench eval`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_groups import command_group
from secfm.cli_options import AdapterOpt, AllowBusyOpt, EndpointOpt, EngineOpt, ModelOpt
from secfm.evals.bench import bench_group

EVAL_HELP = ("Evaluate a model on CTIBench (cti-mcqa, cti-rcm, cti-ate, cti-vsp, cti-taa; one command per task spec, "
             "more from the YAML folders in $SECFM_EVAL_TASKS), on the workflow and chat gold sets, and compare runs.")

DataOpt = Annotated[Optional[Path], typer.Option("--data", help="Local TSV in the official CTIBench layout; default: the Hugging Face dataset AI4Sec/cti-bench.")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="Another file of the task, e.g. cti-rcm-2021.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Score a seeded random subset of N items.")]
ModeOpt = Annotated[str, typer.Option("--mode", help="gen (official prompt, parsed answer), loglik (cti-mcqa option scoring) or head (classifier head).")]
ShotsOpt = Annotated[int, typer.Option("--shots", min=0, help="Few-shot examples, drawn from items disjoint from the scored ones.")]
ShotPoolOpt = Annotated[Optional[Path], typer.Option("--shot-pool", help="TSV to draw the shots from (default: held-out rows of --data).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the subset, the shots and the bootstrap.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Items per engine call.")]
MaxNewOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, help="Tokens to generate in gen mode (default: the task's).")]
HeadOpt = Annotated[Optional[Path], typer.Option("--head", help="Trained classifier head folder (head mode).")]
ExcludeOpt = Annotated[Optional[str], typer.Option("--exclude-sources", help="ATT&CK group/software ids (or @FILE) held out of the head's training; passed to the head and recorded.")]
BootstrapOpt = Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals.")]
AllowSeenOpt = Annotated[bool, typer.Option("--allow-seen", help="Head mode: score items whose CVE (cti-rcm, cti-vsp) or ATT&CK entity (cti-ate, from the item URL) the head, index or calibration saw (refused otherwise); metrics.json marks the run contaminated.")]
TrainLimitOpt = Annotated[Optional[int], typer.Option("--train-limit", min=8, help="cti-ate head mode: cap the rows per split when the evaluator trains a clean extractor (smoke runs; the figure is then not the product's).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder: predictions.jsonl, metrics.json (resumes when it exists).")]


def _run_task(task: str, given: dict) -> None:
    from dataclasses import fields

    from secfm.evals.harness import run_task
    from secfm.evals.heads import parse_exclude_sources
    from secfm.evals.runner import EvalConfig

    known = {f.name for f in fields(EvalConfig)} - {"task"}
    options = {k: v for k, v in given.items() if k in known}
    exclude = parse_exclude_sources(options.pop("exclude_sources", None))
    for key in ("data", "shot_pool", "head", "labels", "out"):
        if options.get(key) is not None:
            options[key] = str(options[key])
    done = run_task(task, EvalConfig(task=task, exclude_sources=exclude, **options))
    print(done.summary)
    print(f"run folder: {options['out']}")


def _setting_values(sets: list[str] | None) -> dict[str, str]:
    from secfm.errors import SecfmError

    values: dict[str, str] = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SecfmError(f"--set expects KEY=VALUE (got {item!r})")
        values[key.strip().replace("-", "_")] = value
    return values


def eval_run(
    task: Annotated[str, typer.Argument(help="A registered task (see `secfm eval tasks`): cti-rcm, workflows, chat, train-heldout, ...")],
    out: OutOpt,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE: one setting of the task (repeatable), e.g. --set use_model=false --set limit=3; lists (adapters) take JSON, e.g. --set 'adapters=[\"A\"]'.")] = None,
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Run any registered task of the harness from its settings (the task's own command is the same run with flags)."""
    import json

    from secfm.evals.harness import task_settings
    from secfm.evals.specs import get_registered_task

    spec = get_registered_task(task)
    values: dict = _setting_values(sets)
    for key, value in list(values.items()):
        if value[:1] in "[{":
            try:
                values[key] = json.loads(value)
            except ValueError:
                pass
    _run_and_print(spec, task_settings(spec, {**values, "out": str(out)}), allow_busy)


def _run_and_print(spec, settings, allow_busy: bool) -> None:
    """Run a task through the harness with the progress display its spec asks for; print where it went."""
    from secfm.evals.harness import run_task
    from secfm.evals.progress import progress_bar
    from secfm.evals.specs import PipelineTaskSpec

    progress = None
    if isinstance(spec, PipelineTaskSpec) and spec.progress == "counts":
        with progress_bar(True) as bar:
            bar_task = bar.add_task(spec.name, total=None)
            done = run_task(spec, settings, progress=lambda d, t: bar.update(bar_task, completed=d, total=t),
                            allow_busy=allow_busy)
    else:
        if isinstance(spec, PipelineTaskSpec) and spec.progress == "lines":
            progress = lambda line: print(line, file=sys.stderr)  # noqa: E731
        done = run_task(spec, settings, progress=progress, allow_busy=allow_busy)
    print(done.summary)
    print(f"metrics: {done.metrics_path}")
    print(f"samples: {done.samples_path}")


def _pipeline_command(spec):
    """`secfm eval NAME` of a pipeline task: one option per field of its settings dataclass."""
    import dataclasses
    import inspect
    import typing

    from secfm.evals.harness import settings_class, task_settings

    cls = settings_class(spec)
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = ... if required else (None if f.default is dataclasses.MISSING else f.default)
        if typing.get_origin(hint) is list:
            hint, default = Optional[hint], None  # repeatable; none given: the field's default
        elif typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = Optional[args[0]] if len(args) == 1 else hint
        if hint in (bool, Optional[bool]):
            flag = f"{flag}/--no-{flag[2:]}"
        what = "required" if required else f"default: {default if default is not None else 'none'}"
        option = typer.Option(flag, help=f"Setting {f.name} of {spec.name} ({what}).")
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[hint, option]))
    if spec.allow_busy:
        params.append(inspect.Parameter("allow_busy", inspect.Parameter.KEYWORD_ONLY, default=False,
                                        annotation=typing.get_type_hints(eval_run, include_extras=True)["allow_busy"]))

    def command(**given) -> None:
        allow_busy = bool(given.pop("allow_busy", False))
        values = {k: v for k, v in given.items() if v is not None}
        _run_and_print(spec, task_settings(spec, values), allow_busy)

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = spec.cli_help()
    command.__name__ = spec.name.replace("-", "_")
    return command


def eval_tasks(
    as_json: Annotated[bool, typer.Option("--json", help="The list as JSON.")] = False,
) -> None:
    """The registered tasks of the harness: name, kind, the command that runs it with its own flags, figures."""
    import json

    from secfm.evals.specs import PipelineTaskSpec, registered_tasks

    rows = []
    for name, spec in sorted(registered_tasks().items()):
        if isinstance(spec, PipelineTaskSpec):
            figures = {k: {"path": f.path, "higher_is_better": f.higher_is_better} for k, f in spec.figures.items()}
            rows.append({"task": name, "kind": spec.kind, "command": spec.alias or f"secfm eval run {name}",
                         "title": spec.title, "figures": figures})
        else:
            from secfm.evals.registry import get_metric

            metric = get_metric(spec.metric)
            rows.append({"task": name, "kind": spec.kind, "command": f"secfm eval {name}", "title": spec.title,
                         "figures": {metric.headline_figure: {"metric": metric.name,
                                                              "higher_is_better": metric.higher_is_better}}})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['task']:<14} {row['kind']:<9} {row['command']:<24} {row['title']}: {', '.join(row['figures'])}")


LabelsOpt = Annotated[Optional[Path], typer.Option("--labels", help="Gold labels kept apart from the task file: TSV/CSV with columns URL and GT, or JSON {URL: label} (the official cti-taa.tsv has no GT column).")]
#: options that only some tasks take: shown only on the commands of the tasks that do
HEAD_OPTIONS = ("head", "exclude_sources", "allow_seen", "train_limit")


def _task_command(spec):
    """The `secfm eval NAME` command of one task spec: its help, default mode and the options it takes."""
    import inspect
    import typing

    def command(
        out: OutOpt,
        data: DataOpt = None,
        labels: LabelsOpt = None,
        config: ConfigOpt = None,
        limit: LimitOpt = None,
        model: ModelOpt = None,
        adapter: AdapterOpt = None,
        engine: EngineOpt = "transformers",
        endpoint: EndpointOpt = None,
        mode: ModeOpt = spec.modes[0],
        shots: ShotsOpt = 0,
        shot_pool: ShotPoolOpt = None,
        seed: SeedOpt = 0,
        batch_size: BatchOpt = 8,
        max_new_tokens: MaxNewOpt = None,
        head: HeadOpt = None,
        exclude_sources: ExcludeOpt = None,
        bootstrap: BootstrapOpt = 1000,
        allow_seen: AllowSeenOpt = False,
        train_limit: TrainLimitOpt = None,
    ) -> None:
        _run_task(spec.name, locals())

    dropped = set() if spec.labels_required else {"labels"}
    if "head" not in spec.modes:
        dropped |= set(HEAD_OPTIONS)
    hints = typing.get_type_hints(command, include_extras=True)  # the Annotated options, not their strings
    signature = inspect.signature(command)
    command.__signature__ = signature.replace(parameters=[p.replace(annotation=hints[p.name]) for p in
                                                          signature.parameters.values() if p.name not in dropped])
    command.__doc__ = spec.cli_help()
    command.__name__ = spec.name.replace("-", "_")
    return command


def eval_report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (each with metrics.json).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.md and the PNG plots.")] = Path("evals/results/report"),
) -> None:
    """Compare runs: a markdown table (figures, intervals, baselines, settings) and PNG plots."""
    from secfm.evals.report import write_report

    path = write_report([str(r) for r in runs], out)
    print(path.read_text(encoding="utf-8"))
    print(f"report: {path}")


def card(
    runs: Annotated[list[Path], typer.Option("--runs", help="Run folders whose results go in the card: --runs A B C or --runs A --runs B.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the card, e.g. model_card/NAME/README.md.")],
    more_runs: Annotated[Optional[list[Path]], typer.Argument(help="More run folders (those listed after --runs).", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in the card (default: the runs' model).")] = None,
    info: Annotated[Optional[Path], typer.Option("--info", help="Card input YAML (uses, training data, limitations); default model_card/card.yaml.")] = None,
    template: Annotated[Optional[Path], typer.Option("--template", help="Markdown template; default model_card/template.md.")] = None,
) -> None:
    """Write a Hugging Face model card (YAML front matter with model-index, uses, data, results, limits)."""
    from secfm.evals.card import write_card

    path = write_card([str(r) for r in [*runs, *(more_runs or [])]], out, name=name, info=info, template=template)
    print(f"model card: {path}")


def bench_eval(
    data: Annotated[Optional[Path], typer.Option("--data", help="cti-mcq TSV; default: questions derived from ATT&CK (offline).")] = None,
    model: ModelOpt = "gemma-3-270m",
    limit: Annotated[int, typer.Option("--limit", min=1, help="Questions to time.")] = 16,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON results.")] = Path("evals/results/bench-eval.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """cti-mcqa loglik items/s of the engine against a plain loop (one full forward per option); same answers."""
    import json

    from secfm.evals.bench_eval import run_eval_bench

    result = run_eval_bench(data=data, model=model, limit=limit, seed=seed, out=out, allow_busy=allow_busy)
    print(json.dumps(result["summary"], indent=2))
    print(f"results: {out}")


def results(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the index (default: RESULTS.md at the repository root).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Do not write: exit 1 when the index is not what the results files give.")] = False,
    root: Annotated[Optional[Path], typer.Option("--root", help="Repository whose */results/ folders to index (default: the checkout secfm runs from).")] = None,
) -> None:
    """The results index: every results file's headline figures and how each was made (command, commit, load)."""
    from secfm.evals.results_index import write_index

    path, current = write_index(out, root=root, check=check)
    if check and not current:
        print(f"{path} is out of date: run `secfm results`")
        raise typer.Exit(1)
    print(f"results index: {path}{' (up to date)' if check else ''}")


def export_lm_eval(
    out: Annotated[Path, typer.Argument(help="Folder for the task YAMLs (created).")],
    data: Annotated[Optional[list[str]], typer.Option("--data", help="TASK=FILE: read that task from a local TSV instead of the hub (repeatable), e.g. cti-mcqa=cti-mcq.tsv.")] = None,
) -> None:
    """Write lm-evaluation-harness task YAMLs for the CTIBench tasks (run them with lm_eval --include_path OUT)."""
    from secfm.errors import SecfmError
    from secfm.evals.lm_eval_export import EXPORTED, export_tasks

    files = {}
    for item in data or []:
        task, sep, path = item.partition("=")
        if not sep or task not in EXPORTED:
            raise SecfmError(f"--data expects TASK=FILE with TASK one of {', '.join(EXPORTED)} (got {item!r})")
        if not Path(path).is_file():
            raise SecfmError(f"--data {task}: file not found: {path}")
        files[task] = path
    for path in export_tasks(out, files):
        print(path)


# ---------------------------------------------------------------------------------------------
# benchmarks (the rest register themselves from their packages into secfm.evals.bench's group)
# ---------------------------------------------------------------------------------------------
def bench_tokenizer(
    models: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Models whose tokenizers to compare (repeatable); default: all registered.")] = None,
    out: Annotated[Path, typer.Option("--out", help="JSON results; a markdown table is written beside it.")] = Path("evals/results/bench-tokenizer.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Tokens each tokenizer spends per IOC field (IPs, hashes, paths...) against plain words."""
    import json

    from secfm.evals.bench_tokenizer import load_tokenizers, run_tokenizer_bench
    from secfm.registry import registry

    names = models or list(registry())
    results = run_tokenizer_bench(load_tokenizers(names), out, allow_busy=allow_busy)
    print(out.with_suffix(".md").read_text() if out.with_suffix(".md").is_file() else json.dumps(results, indent=2))


def bench_quant(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to quantize.")] = "gemma-3-270m",
    items: Annotated[int, typer.Option("--items", min=4, help="cti-mcqa questions scored per variant.")] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", min=4)] = 32,
    out: Annotated[Path, typer.Option("--out", help="JSON results; a markdown table is written beside it.")] = Path("evals/results/bench-quant.json"),
    variants: Annotated[Optional[list[str]], typer.Option(
        "--variant", "--variants", help="Measure only these (repeatable): fp32, bf16, int8-dynamic, gguf-q4_k_m. Default: all; bf16 "
                          "is skipped, with the reason, on a CPU without bfloat16 instructions unless named.")] = None,
    allow_busy: AllowBusyOpt = False,
) -> None:
    """fp32, bf16, dynamic int8 and GGUF Q4_K_M: load time, memory, tokens/s and cti-mcqa loglik accuracy."""
    from secfm.errors import SecfmError
    from secfm.evals.bench_quant import VARIANTS, run_quant_bench

    unknown = sorted(set(variants or []) - set(VARIANTS))
    if unknown:
        raise SecfmError(f"unknown --variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    run_quant_bench(model=model, variants=variants or None, items=items, seed=seed, decode_tokens=decode_tokens, out=out,
                    allow_busy=allow_busy)
    print(out.with_suffix(".md").read_text())



def _registered():
    from secfm.evals.specs import registered_tasks

    return registered_tasks()


def register(app: typer.Typer) -> None:
    """Add `eval TASK`, `eval run|tasks|report`, `card` and `bench eval` to the secfm CLI."""

    from secfm.errors import SecfmError
    from secfm.evals.specs import TASKS_DIR, PipelineTaskSpec, _load_tasks, all_tasks, ctibench_only

    try:
        specs = all_tasks()
        registered_tasks = _registered
    except SecfmError as exc:  # a bad $SECFM_EVAL_TASKS folder must not break every other command
        print(f"secfm: warning: {exc}; only the shipped tasks have `secfm eval` commands", file=sys.stderr)
        specs = ctibench_only(_load_tasks((TASKS_DIR,)))
        registered_tasks = lambda: _load_tasks((TASKS_DIR,))  # noqa: E731
    evals = command_group(app, "eval", EVAL_HELP)
    for spec in specs.values():  # one command per task spec (evals/tasks/*.yaml and $SECFM_EVAL_TASKS)
        evals.command(spec.name, help=spec.cli_help())(_task_command(spec))
    for spec in registered_tasks().values():  # pipeline tasks without a `secfm eval` command of their own
        if isinstance(spec, PipelineTaskSpec) and not (spec.alias or "").startswith("secfm eval "):
            evals.command(spec.name, help=spec.cli_help())(_pipeline_command(spec))
    evals.command("run")(eval_run)
    evals.command("tasks")(eval_tasks)
    evals.command("report")(eval_report)
    evals.command("export-lm-eval")(export_lm_eval)
    app.command("card")(card)
    app.command("results")(results)
    bench = bench_group(app)
    bench.command("tokenizer")(bench_tokenizer)
    bench.command("quant")(bench_quant)
    bench.command("eval")(bench_eval)

"""The one evaluation harness: every registered task, of either kind, runs through :func:`run_task`.

* ``kind: ctibench`` tasks (``evals/tasks/cti-*.yaml``): :func:`secfm.evals.runner.run_eval` on an
  :class:`~secfm.evals.runner.EvalConfig`.
* ``kind: pipeline`` tasks (``workflows``, ``chat``, ``train-heldout``): the runner the spec names,
  on the settings dataclass it names.

Settings come as the task's own object or as a dict of values (``secfm eval run TASK --set
KEY=VALUE``, converted to the field types by pydantic). The run writes its metrics JSON (with the
``provenance`` block of ``secfm.provenance``) and its per-sample log; :class:`TaskRun` says where
they are and carries the headline figures the spec declares. The hand-written commands
(``secfm eval workflows``, ``secfm eval chat``, ``secfm train eval``) are aliases: they build the
settings from their flags and call :func:`run_task`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from secfm.engines import DEFAULT_ENGINE
from secfm.errors import SecfmError
from secfm.evals.specs import AnyTaskSpec, PipelineTaskSpec, get_registered_task
from secfm.lazy import resolve_target


@dataclass
class GoldRunSettings:
    """What every gold-set task's settings start with (the run folder and the model that runs);
    ``secfm.workflows.evaluate.EvalSettings`` and ``secfm.workflows.chat_eval.ChatEvalSettings`` add their own."""

    out: str
    model: str | None = None
    adapter: str | None = None
    engine: str = DEFAULT_ENGINE
    endpoint: str | None = None
    use_model: bool = True


@dataclass
class TaskRun:
    task: str
    kind: str
    out: Path
    metrics_path: Path
    samples_path: Path
    metrics: dict
    #: headline figures: name -> value (a pipeline figure with ``*`` in its path: name -> {key: value})
    figures: dict[str, Any]
    summary: str


def settings_class(spec: AnyTaskSpec) -> type:
    if isinstance(spec, PipelineTaskSpec):
        return resolve_target(spec.settings)
    from secfm.evals.runner import EvalConfig

    return EvalConfig


def task_settings(task: str | AnyTaskSpec, values: dict[str, Any]):
    """The task's settings object from plain values (strings are converted to the field types)."""
    spec = get_registered_task(task) if isinstance(task, str) else task
    cls = settings_class(spec)
    values = dict(values)
    if not isinstance(spec, PipelineTaskSpec):
        from secfm.evals.heads import parse_exclude_sources

        values.setdefault("task", spec.name)
        if isinstance(values.get("exclude_sources"), str):
            values["exclude_sources"] = parse_exclude_sources(values["exclude_sources"])
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SecfmError(f"task {spec.name} has no setting {', '.join(unknown)} (settings: {', '.join(sorted(known))})")
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise SecfmError(f"task {spec.name}: {where}: {first.get('msg')}") from None


def _lookup(metrics: dict, path: str):
    """The value at a dotted path (``*``: a dict of every key at that level); None when absent."""
    head, _, rest = path.partition(".")
    if head == "*":
        if not isinstance(metrics, dict):
            return None
        return {key: (_lookup(value, rest) if rest else value) for key, value in metrics.items()}
    if not isinstance(metrics, dict) or head not in metrics:
        return None
    return _lookup(metrics[head], rest) if rest else metrics[head]


def figures_of(spec: AnyTaskSpec, metrics: dict) -> dict[str, Any]:
    """The headline figures of a run: those the pipeline spec declares, or a CTIBench run's figures."""
    if isinstance(spec, PipelineTaskSpec):
        return {name: _lookup(metrics, figure.path) for name, figure in spec.figures.items()}
    return {name: value for name, value in (metrics.get("figures") or {}).items()}


def run_task(task: str | AnyTaskSpec, settings, *, progress=None, allow_busy: bool = False, **runtime) -> TaskRun:
    """Run one registered task on its settings (its settings object, or a dict of values).

    ``progress``: what the spec's runner takes (a callable, or a bool for ``progress: flag``);
    ``allow_busy`` goes to runners whose spec says they refuse a busy machine; other keyword
    arguments (``engine=``, ``head=``) go to the runner unchanged.
    """
    spec = get_registered_task(task) if isinstance(task, str) else task
    if isinstance(settings, dict):
        settings = task_settings(spec, settings)
    cls = settings_class(spec)
    if not (is_dataclass(settings) and isinstance(settings, cls)):
        raise SecfmError(f"task {spec.name} takes {cls.__name__} settings, not {type(settings).__name__}")
    if isinstance(spec, PipelineTaskSpec):
        options = dict(runtime)
        if spec.progress != "none" and progress is not None:
            options["progress"] = progress
        if spec.allow_busy:
            options["allow_busy"] = allow_busy
        metrics = resolve_target(spec.run)(settings, **options)
        out = Path(settings.out).expanduser()
        metrics_path, samples_path = spec.metrics_path(out), spec.samples_path(out)
        summary = resolve_target(spec.summary)(metrics)
        kind = spec.kind
    else:
        from secfm.evals.runner import METRICS, PREDICTIONS, run_eval, summary_line

        if progress is not None:
            runtime["progress"] = bool(progress)
        metrics = run_eval(settings, **runtime)
        out = Path(settings.out).expanduser()
        metrics_path, samples_path = out / METRICS, out / PREDICTIONS
        summary = summary_line(metrics)
        kind = spec.kind
    return TaskRun(task=spec.name, kind=kind, out=out, metrics_path=metrics_path, samples_path=samples_path,
                   metrics=metrics, figures=figures_of(spec, metrics), summary=summary)


__all__ = ["GoldRunSettings", "TaskRun", "figures_of", "run_task", "settings_class", "task_settings"]

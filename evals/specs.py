"""Task specs: one YAML file per task (data, columns, prompt, parser, metric, modes, CLI help).

The CTIBench tasks ship in ``evals/tasks/``; more task folders can be named in ``$SECFM_EVAL_TASKS``
(separated like ``PATH``), so a new task is one YAML file (plus its data): it gets its own
``secfm eval NAME`` command. Its metric is a name in the metric registry (secfm.evals.registry).

Two kinds of task share the folders: ``kind: ctibench`` (the default; :class:`TaskSpec`: items read
from a TSV, one prompt and one parsed answer each, scored by a registered metric) and
``kind: pipeline`` (:class:`PipelineTaskSpec`: a gold set scored by a secfm pipeline end to end -
the workflow gold sets, the chat gold set, training's held-out checks - whose runner, settings,
outputs and headline figures the spec names). Both run through ``secfm.evals.harness.run_task``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from secfm.errors import SecfmError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TASKS_ENV = "SECFM_EVAL_TASKS"

Mode = Literal["gen", "loglik", "head"]
MODES: tuple[str, ...] = ("gen", "loglik", "head")


class HfSource(BaseModel):
    repo: str
    config: str
    split: str = "test"


class ConfigVariant(BaseModel):
    """Another file of the same task (e.g. ``cti-rcm-2021``)."""

    file: str
    hf_config: str


class LoglikSpec(BaseModel):
    """Multiple-choice scoring by log-likelihood, one context per item (computed once).

    The context lists the question and its options; the continuations are each option's text
    (scored by sum, per token, per character) and each letter (letter scoring).
    """

    preamble: str = "{system}\n\n"
    separator: str = "\n\n"
    question: str
    choices: list[str]
    choice: str = " {choice}"
    letters: list[str]
    letter: str = " {letter}"
    shot_answer: str = " {letter}"
    headline: Literal["letter", "sum", "per_token", "per_char"] = "letter"


class HeadSpec(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    text_column: str
    kind: Literal["cwe", "attack", "cvss"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)


class CardSpec(BaseModel):
    task_type: str
    metric_type: str


class TaskSpec(BaseModel):
    kind: Literal["ctibench"] = "ctibench"
    name: str
    title: str
    description: str
    hf: HfSource
    file: str
    configs: dict[str, ConfigVariant] = Field(default_factory=dict)
    columns: list[str]
    prompt_column: str = "Prompt"
    gold_column: str = "GT"
    labels_required: bool = False
    system_prompt: str
    parser: str
    metric: str
    modes: list[Mode]
    max_new_tokens: int = 256
    shot_answer: str = "{GT}"
    loglik: LoglikSpec | None = None
    head: HeadSpec | None = None
    card: CardSpec
    #: the `secfm eval NAME` help (default: the title, description and modes)
    help: str | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        from secfm.evals.registry import metric_names

        if value not in metric_names():
            raise ValueError(f"unknown metric '{value}' (metrics: {', '.join(metric_names())})")
        return value

    def cli_help(self) -> str:
        return self.help or f"{self.title}: {self.description} Modes: {', '.join(self.modes)}."

    def hf_config(self, config: str | None = None) -> str:
        return self.variant(config)[1]

    def default_file(self, config: str | None = None) -> str:
        return self.variant(config)[0]

    def variant(self, config: str | None) -> tuple[str, str]:
        """(file name, HF config) of the task or of one of its named variants."""
        if config is None or config == self.hf.config:
            return self.file, self.hf.config
        if config in self.configs:
            v = self.configs[config]
            return v.file, v.hf_config
        known = ", ".join([self.hf.config, *self.configs])
        raise SecfmError(f"task {self.name} has no config '{config}' (known: {known})")

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise SecfmError(f"task {self.name} has no '{mode}' mode (modes: {', '.join(self.modes)})")


class FigureSpec(BaseModel):
    """A headline figure of a pipeline task: where it sits in the metrics JSON and its direction."""

    #: dotted path into the metrics JSON; ``*`` stands for every key at that level (one figure per key)
    path: str
    higher_is_better: bool = True


class PipelineTaskSpec(BaseModel):
    """A task run by a secfm pipeline on its own gold set (``kind: pipeline``).

    The harness builds ``settings`` (a dataclass whose ``out`` field is the run folder or file)
    from the command's values, calls ``run(settings, **runtime)`` with the runtime options the
    spec lists (``progress``, ``allow_busy``) and reads the figures from what it returns. The
    runner writes the metrics JSON (with its ``provenance`` block) and the per-sample log.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pipeline"]
    name: str
    title: str
    description: str
    settings: str  # "module:Class", a dataclass with an ``out`` field
    run: str  # "module:function": (settings, **runtime) -> the metrics dict it wrote
    summary: str  # "module:function": metrics -> the one line the command prints
    #: what ``out`` is: a run folder (metrics.json and the samples inside) or a results JSON file
    out: Literal["folder", "file"] = "folder"
    metrics: str = "metrics.json"  # inside the folder (``out: folder``); the file itself otherwise
    #: the per-sample log: a name inside the run folder, or a suffix replacing the results file's
    samples: str = "predictions.jsonl"
    #: runtime options the run function takes beside the settings
    progress: Literal["counts", "lines", "flag", "none"] = "none"
    allow_busy: bool = False
    #: the gold data, for the task list (the runner hashes what it reads into its provenance)
    data: list[str] = Field(default_factory=list)
    figures: dict[str, FigureSpec] = Field(default_factory=dict)
    #: the hand-written command that runs this task with its own flags (an alias over the harness)
    alias: str | None = None
    help: str | None = None

    def cli_help(self) -> str:
        return self.help or f"{self.title}: {self.description}"

    def metrics_path(self, out: str | Path) -> Path:
        out = Path(out).expanduser()
        return out / self.metrics if self.out == "folder" else out

    def samples_path(self, out: str | Path) -> Path:
        out = Path(out).expanduser()
        return out / self.samples if self.out == "folder" else out.with_suffix(self.samples)


AnyTaskSpec = TaskSpec | PipelineTaskSpec


def task_dirs() -> list[Path]:
    """The shipped task folder, then the folders named in ``$SECFM_EVAL_TASKS``."""
    extra = [Path(p).expanduser() for p in os.environ.get(TASKS_ENV, "").split(os.pathsep) if p.strip()]
    for folder in extra:
        if not folder.is_dir():
            raise SecfmError(f"${TASKS_ENV}: {folder} is not a folder of task YAML files")
    return [TASKS_DIR, *extra]


def all_tasks() -> dict[str, TaskSpec]:
    """Every CTIBench-kind task spec (``evals/tasks/*.yaml`` and ``$SECFM_EVAL_TASKS``), by name."""
    return ctibench_only(_load_tasks(tuple(task_dirs())))


def registered_tasks() -> dict[str, AnyTaskSpec]:
    """Every task of the harness, both kinds, by name."""
    return dict(_load_tasks(tuple(task_dirs())))


def ctibench_only(specs: dict[str, AnyTaskSpec]) -> dict[str, TaskSpec]:
    return {name: spec for name, spec in specs.items() if isinstance(spec, TaskSpec)}


def _parse_spec(data) -> AnyTaskSpec:
    if isinstance(data, dict) and data.get("kind") == "pipeline":
        return PipelineTaskSpec(**data)
    return TaskSpec(**data)


@lru_cache(maxsize=4)
def _load_tasks(folders: tuple[Path, ...]) -> dict[str, AnyTaskSpec]:
    specs: dict[str, AnyTaskSpec] = {}
    where: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            try:
                spec = _parse_spec(yaml.safe_load(path.read_text(encoding="utf-8")))
            except (ValidationError, TypeError, yaml.YAMLError) as exc:
                raise SecfmError(f"bad task spec {path}: {_first_error(exc)}") from exc
            if spec.name in specs:
                raise SecfmError(f"task '{spec.name}' is defined twice: {where[spec.name]} and {path}")
            specs[spec.name], where[spec.name] = spec, path
    return specs


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e.get('loc', ())) or 'spec'}: {e.get('msg', '')}"
    return str(exc).splitlines()[0]


def get_registered_task(name: str) -> AnyTaskSpec:
    """The spec of any registered task (a pipeline task by its name, a CTIBench one as :func:`get_task`)."""
    spec = registered_tasks().get(name.strip().lower())
    if isinstance(spec, PipelineTaskSpec):
        return spec
    try:
        return get_task(name)
    except SecfmError:
        raise SecfmError(f"unknown task '{name}' (tasks: {', '.join(sorted(registered_tasks()))})") from None


def get_task(name: str) -> TaskSpec:
    """The spec of CTIBench-kind task ``name`` (``cti-mcq`` is accepted for ``cti-mcqa``)."""
    tasks = all_tasks()
    aliases = {s.hf.config: s.name for s in tasks.values()} | {
        c: s.name for s in tasks.values() for c in s.configs
    }
    key = name.strip().lower()
    spec = tasks.get(key) or tasks.get(aliases.get(key, ""))
    if spec is None:
        raise SecfmError(f"unknown task '{name}' (tasks: {', '.join(sorted(tasks))})")
    return spec


_FIELD = re.compile(r"\{([^{}]+)\}")


def render(template: str, fields: dict[str, str]) -> str:
    """Fill ``{Column Name}`` placeholders (names may hold spaces); values are not re-expanded."""

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in fields:
            raise SecfmError(f"template field {{{key}}} is not a column or known value")
        return str(fields[key])

    return _FIELD.sub(sub, template)

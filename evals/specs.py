"""Task specs: one YAML file per task (data, columns, prompt, parser, metric, modes, CLI help).

The CTIBench tasks ship in ``evals/tasks/``; more task folders can be named in ``$SECFM_EVAL_TASKS``
(separated like ``PATH``), so a new task is one YAML file (plus its data): it gets its own
``secfm eval NAME`` command. Its metric is a name in the metric registry (secfm.evals.registry).
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


def task_dirs() -> list[Path]:
    """The shipped task folder, then the folders named in ``$SECFM_EVAL_TASKS``."""
    extra = [Path(p).expanduser() for p in os.environ.get(TASKS_ENV, "").split(os.pathsep) if p.strip()]
    for folder in extra:
        if not folder.is_dir():
            raise SecfmError(f"${TASKS_ENV}: {folder} is not a folder of task YAML files")
    return [TASKS_DIR, *extra]


def all_tasks() -> dict[str, TaskSpec]:
    """Every task spec (``evals/tasks/*.yaml`` and ``$SECFM_EVAL_TASKS``), by name."""
    return _load_tasks(tuple(task_dirs()))


@lru_cache(maxsize=4)
def _load_tasks(folders: tuple[Path, ...]) -> dict[str, TaskSpec]:
    specs: dict[str, TaskSpec] = {}
    where: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            try:
                spec = TaskSpec(**yaml.safe_load(path.read_text(encoding="utf-8")))
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


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name`` (``cti-mcq`` is accepted for ``cti-mcqa``)."""
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

"""Task specs: one YAML file per CTIBench task in ``evals/tasks/`` (data, columns, prompt, parser, metric)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from secfm.errors import SecfmError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

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
    metric: Literal["accuracy", "mad", "micro_f1", "taa"]
    modes: list[Mode]
    max_new_tokens: int = 256
    shot_answer: str = "{GT}"
    loglik: LoglikSpec | None = None
    head: HeadSpec | None = None
    card: CardSpec

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


@lru_cache(maxsize=1)
def all_tasks() -> dict[str, TaskSpec]:
    """Every task spec in ``evals/tasks/*.yaml``, by name."""
    specs: dict[str, TaskSpec] = {}
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        try:
            spec = TaskSpec(**yaml.safe_load(path.read_text(encoding="utf-8")))
        except (ValidationError, TypeError, yaml.YAMLError) as exc:
            raise SecfmError(f"bad task spec {path.name}: {str(exc).splitlines()[0]}") from exc
        specs[spec.name] = spec
    return specs


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

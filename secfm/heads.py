"""Classifier heads on pooled hidden states: definition, manifest, save and load.

A head is a small torch module (``linear``: one affine map; ``mlp``: one hidden layer) over the
pooled hidden state of one layer of one base model (plus adapter), or over the same pooling of
several layers side by side (``layers``, in order; ``layer`` is the deepest of them). Inputs are standardized by
the training set's mean and scale, stored with the weights.

On disk a head is a folder with ``head.safetensors`` (weights in float16, standardization in
float32) and ``head.json`` (:class:`HeadManifest`: base model, adapter, layer, pooling, label
list, thresholds, ATT&CK and CWE versions, training data hash, the source entities it was trained
on, metrics). :func:`load_head` refuses a head whose base model or adapter differs from the one
it is asked to run on.

Objectives: ``multilabel`` (sigmoid per label; ATT&CK, where a sub-technique's score also lifts
its parent) and ``multiclass`` (softmax; CWE).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from secfm.errors import SecfmError

HEAD_FORMAT = 1
#: the format of a head whose input concatenates several layers (older secfm refuses it)
MULTI_LAYER_FORMAT = 2
#: the newest format this secfm reads
READ_FORMAT = MULTI_LAYER_FORMAT
WEIGHTS_FILE = "head.safetensors"
MANIFEST_FILE = "head.json"
HEAD_KINDS = ("linear", "mlp")
OBJECTIVES = ("multilabel", "multiclass")


@dataclass
class HeadManifest:
    task: str  # attack or cwe
    kind: str  # linear or mlp
    objective: str  # multilabel or multiclass
    base_model: str  # registry name or path the features came from
    adapter: str | None  # adapter folder (relative paths are relative to the head folder)
    layer: int  # the deepest layer used (inference runs the model up to it)
    pooling: str
    max_length: int
    input_dim: int
    hidden_dim: int | None
    labels: list[str]
    layers: list[int] | None = None  # the layers whose pooled states are concatenated, in order; None: [layer]
    threshold: float = 0.5  # global threshold (multilabel)
    class_thresholds: list[float] | None = None  # per-label thresholds (multilabel)
    threshold_mode: str = "global"  # the default decision rule: global or per-class
    top_k: int = 5
    attack_version: str | None = None
    cwe_version: str | None = None
    training_data_hash: str = ""
    trained_sources: list[str] = field(default_factory=list)  # entity ids whose rows trained it
    excluded_sources: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # hyper-parameters, sweep, command
    created: str = ""
    format: int = HEAD_FORMAT

    def __post_init__(self) -> None:
        from secfm.features import deepest_layer

        if not self.layers:
            self.layers = [self.layer]
        self.layers = [int(x) for x in self.layers]
        if len(set(self.layers)) != len(self.layers):
            raise SecfmError(f"head layers {self.layers} repeat a layer")
        if self.layer != deepest_layer(self.layers):
            raise SecfmError(f"head layer {self.layer} must be the deepest of its layers {self.layers}")
        if len(self.layers) > 1:
            self.format = max(self.format, MULTI_LAYER_FORMAT)

    @classmethod
    def from_dict(cls, data: dict) -> HeadManifest:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def thresholds(self, mode: str | None = None) -> np.ndarray:
        """Per-label decision thresholds for ``mode`` (default: the manifest's)."""
        mode = mode or self.threshold_mode
        if mode == "per-class" and self.class_thresholds is not None:
            return np.asarray(self.class_thresholds, dtype=np.float32)
        if mode not in ("global", "per-class"):
            raise SecfmError(f"threshold mode must be 'global' or 'per-class', not {mode!r}")
        return np.full(len(self.labels), self.threshold, dtype=np.float32)


def build_module(input_dim: int, n_labels: int, kind: str = "linear", hidden_dim: int | None = None, dropout: float = 0.0):
    """The torch module of a head: standardize, then linear or one hidden layer (GELU)."""
    import torch
    from torch import nn

    if kind not in HEAD_KINDS:
        raise SecfmError(f"head kind must be one of {', '.join(HEAD_KINDS)}, not {kind!r}")

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mu", torch.zeros(input_dim))
            self.register_buffer("scale", torch.ones(input_dim))
            if kind == "linear":
                self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, n_labels))
            else:
                h = hidden_dim or 512
                self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, h), nn.GELU(), nn.Dropout(dropout), nn.Linear(h, n_labels))

        def forward(self, x):
            return self.net((x - self.mu) / self.scale)

    return Head()


def parent_index(labels: list[str]) -> np.ndarray:
    """For each label, the index of its ATT&CK parent in ``labels`` (-1: none)."""
    where = {label: i for i, label in enumerate(labels)}
    return np.asarray([where.get(label.split(".")[0], -1) if "." in label else -1 for label in labels], dtype=np.int64)


def lift_parents(scores: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """A sub-technique hit also counts its parent: parent score = max(own, its sub-techniques')."""
    out = np.array(scores, dtype=np.float32, copy=True)
    children = np.nonzero(parents >= 0)[0]
    if len(children):
        if out.ndim == 1:
            np.maximum.at(out, parents[children], out[children])
        else:
            np.maximum.at(out.T, parents[children], out.T[children])
    return out


class Head:
    """A loaded head: ``scores(X)`` gives probabilities per label for pooled features ``X``."""

    def __init__(self, manifest: HeadManifest, module, path: Path | None = None):
        self.manifest = manifest
        self.module = module.eval()
        self.path = path
        self.labels = list(manifest.labels)
        self._parents = parent_index(self.labels) if manifest.task == "attack" else None

    # -- what it runs on -------------------------------------------------------------------
    @property
    def adapter_path(self) -> str | None:
        a = self.manifest.adapter
        if a is None:
            return None
        p = Path(a)
        if not p.is_absolute() and self.path is not None:
            p = self.path / p
        return str(p)

    def check_base(self, model: str, adapter: str | None = None) -> None:
        """SecfmError unless ``model`` (and ``adapter``) are what the head was trained on."""
        check_base(self.manifest, model, adapter, self.path)

    # -- scoring ---------------------------------------------------------------------------
    def logits(self, X: np.ndarray) -> np.ndarray:
        import torch

        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.manifest.input_dim:
            raise SecfmError(f"features have shape {X.shape}; this head takes (n, {self.manifest.input_dim})")
        with torch.inference_mode():
            return self.module(torch.from_numpy(X)).numpy()

    def scores(self, X: np.ndarray, lift: bool = True) -> np.ndarray:
        """Probabilities (n, labels): sigmoid (multilabel, parents lifted) or softmax."""
        z = self.logits(X)
        if self.manifest.objective == "multiclass":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        p = 1.0 / (1.0 + np.exp(-z))
        return lift_parents(p, self._parents) if (lift and self._parents is not None) else p

    def thresholds(self, mode: str | None = None) -> np.ndarray:
        return self.manifest.thresholds(mode)

    def size_bytes(self) -> int:
        return (self.path / WEIGHTS_FILE).stat().st_size if self.path else 0


def _same_adapter(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return a == b


def check_base(manifest: HeadManifest, model: str, adapter: str | None = None, head_path: Path | None = None) -> None:
    expected_adapter = manifest.adapter
    if expected_adapter is not None and not Path(expected_adapter).is_absolute() and head_path is not None:
        expected_adapter = str(head_path / expected_adapter)
    where = f"head {head_path}" if head_path else "this head"
    if model != manifest.base_model:
        raise SecfmError(
            f"{where} was trained on base model '{manifest.base_model}', not '{model}'; refusing to load it "
            f"(train one for '{model}' with `secfm train head --task {manifest.task} --model {model} --out DIR`)"
        )
    if not _same_adapter(expected_adapter, adapter):
        raise SecfmError(
            f"{where} was trained on '{manifest.base_model}' with adapter {expected_adapter or 'none'}, "
            f"not with adapter {adapter or 'none'}; refusing to load it"
        )


def save_head(path: str | os.PathLike, module, manifest: HeadManifest, dtype: str = "float16") -> Path:
    """Write ``head.safetensors`` (weights in ``dtype``; standardization in float32) and ``head.json``."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    target = getattr(torch, dtype)
    tensors = {}
    for name, value in module.state_dict().items():
        value = value.detach().cpu().contiguous()
        keep_fp32 = name in ("mu", "scale")
        tensors[name] = value.float() if keep_fp32 else value.to(target)
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": str(manifest.format), "task": manifest.task})
    os.chmod(path / WEIGHTS_FILE, 0o644)  # safetensors writes 0600; shipped heads must be readable by all
    (path / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(path: str | os.PathLike) -> HeadManifest:
    path = Path(path).expanduser()
    file = path / MANIFEST_FILE
    if not file.is_file():
        raise SecfmError(f"{path} is not a secfm head folder (no {MANIFEST_FILE})")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SecfmError(f"{file} is not valid JSON: {exc}") from exc
    if data.get("format", HEAD_FORMAT) > READ_FORMAT:
        raise SecfmError(f"{path} has head format {data.get('format')}; this secfm reads up to {READ_FORMAT}")
    return HeadManifest.from_dict(data)


def load_head(path: str | os.PathLike, model: str | None = None, adapter: str | None = None) -> Head:
    """Load a head folder; with ``model`` given, refuse a head trained on another base/adapter."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    manifest = read_manifest(path)
    if model is not None:
        check_base(manifest, model, adapter, path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise SecfmError(f"{path} has no {WEIGHTS_FILE}")
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    module = build_module(manifest.input_dim, len(manifest.labels), manifest.kind, manifest.hidden_dim)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise SecfmError(f"{weights} does not match its manifest: {str(exc).splitlines()[0]}") from exc
    return Head(manifest, module, path)


def assets_dir() -> Path:
    """Where the heads shipped with secfm live (``secfm/assets/heads``)."""
    return Path(__file__).parent / "assets" / "heads"


def shipped_head_path(task: str, model: str) -> Path:
    """The folder of the head shipped for ``task`` on ``model`` (it may not exist)."""
    safe = model.replace("/", "_")
    return assets_dir() / f"{task}-{safe}"


# ---------------------------------------------------------------------------------------------
# source entities (what a head was trained on; what an evaluation holds out)
# ---------------------------------------------------------------------------------------------
_SOURCE_ID = re.compile(r"^[GSC]\d{4}$")


def parse_sources(value: str | Iterable[str] | None) -> set[str]:
    """Source ids from ``"G0016,S0154"``, ``"@file"`` (ids separated by commas, spaces or lines;
    ``#`` comments) or an iterable of those. Unknown shapes are an error."""
    if value is None:
        return set()
    items = [value] if isinstance(value, str) else list(value)
    ids: set[str] = set()
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item.startswith("@"):
            path = Path(item[1:]).expanduser()
            if not path.is_file():
                raise SecfmError(f"--exclude-sources file not found: {path}")
            text = "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())
            ids |= parse_sources([t for t in re.split(r"[\s,;]+", text) if t])
            continue
        for token in re.split(r"[\s,;]+", item):
            if not token:
                continue
            token = token.upper()
            if not _SOURCE_ID.match(token):
                raise SecfmError(f"not an ATT&CK group, software or campaign id: {token!r} (expected G####, S#### or C####)")
            ids.add(token)
    return ids


def source_clusters(attack) -> dict[str, str]:
    """Source id -> cluster id: a campaign and the groups it is attributed to share a cluster
    (union-find), every other source is its own cluster."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for cid, campaign in attack.campaigns_by_id.items():
        for gid in campaign.group_ids:
            a, b = find(cid), find(gid)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {s: find(s) for s in parent}

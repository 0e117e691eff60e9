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
its parent), ``multiclass`` (softmax; CWE) and ``groups`` (one softmax per label group, labels
spelled ``GROUP:VALUE``; the eight CVSS base metrics: ``AV:N``, ``AV:L``, ...).

Text features (format 3): a head may also read TF-IDF features of the text itself
(``manifest.text_features``: vocabulary in ``text_vocab.json.gz`` (older heads: ``text_vocab.json``), idf and the int8-quantized
weight matrix in ``head.safetensors``); its logits are the hidden-state part plus the text part.
A head with ``uses_hidden: false`` reads the text alone and needs no model at all.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from secfm.errors import SecfmError

HEAD_FORMAT = 1
#: the format of a head whose input concatenates several layers (older secfm refuses it)
MULTI_LAYER_FORMAT = 2
#: the format of a head that reads TF-IDF text features, has label groups or no hidden-state input
TEXT_FORMAT = 3
#: the newest format this secfm reads
READ_FORMAT = TEXT_FORMAT
VOCAB_FILE = "text_vocab.json"
#: the vocabulary as new heads write it (gzip of VOCAB_FILE; a 200k-term vocabulary is ~1 MB, not ~3 MB)
VOCAB_GZ_FILE = VOCAB_FILE + ".gz"
WEIGHTS_FILE = "head.safetensors"
MANIFEST_FILE = "head.json"
HEAD_KINDS = ("linear", "mlp")
OBJECTIVES = ("multilabel", "multiclass", "groups")
#: the text feature parameters a head may carry (sklearn TfidfVectorizer arguments)
TEXT_FEATURE_KEYS = ("ngram_range", "sublinear_tf", "lowercase", "token_pattern", "strip_accents", "norm")


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
    text_features: dict | None = None  # TF-IDF parameters (see TEXT_FEATURE_KEYS) and vocabulary_size
    uses_hidden: bool = True  # False: the head reads the text features alone (input_dim 0, no model)
    trained_cves: dict | None = None  # {file: trained_cves.txt.gz, count, sha256}: the CVE ids it trained on
    temperatures: list[float] | None = None  # softmax temperature per label group (multiclass: one), fitted on validation
    decoding: str = "argmax"  # groups (CVSS): argmax per group, or expected-score (see training/cve_heads.py)
    decoding_tolerance: float = 0.0  # expected-score: score points of slack for the likelier vector

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
        if self.objective not in OBJECTIVES:
            raise SecfmError(f"head objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.text_features or not self.uses_hidden or self.objective == "groups":
            self.format = max(self.format, TEXT_FORMAT)
        if not self.uses_hidden and self.input_dim:
            raise SecfmError("a head without hidden-state input must have input_dim 0")
        if self.temperatures is not None:
            groups = len(self.label_groups()) if self.objective == "groups" else 1
            if self.objective == "multilabel" or len(self.temperatures) != groups or min(self.temperatures) <= 0:
                raise SecfmError(f"head temperatures {self.temperatures} do not fit a {self.objective} head with {groups} group(s)")

    @property
    def text_dim(self) -> int:
        return int((self.text_features or {}).get("vocabulary_size", 0))

    def label_groups(self) -> list[tuple[str, list[int]]]:
        """``[(group, [label indexes])]`` in label order (objective ``groups``)."""
        return label_groups(self.labels)

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


def build_module(input_dim: int, n_labels: int, kind: str = "linear", hidden_dim: int | None = None, dropout: float = 0.0,
                 text_dim: int = 0):
    """The torch module of a head: standardize, then linear or one hidden layer (GELU); with
    ``text_dim``, plus a linear map of the text features (``forward(x, t)``, ``t`` dense or
    sparse). ``input_dim`` 0: no hidden-state input (a bias, plus the text part)."""
    import torch
    from torch import nn

    if kind not in HEAD_KINDS:
        raise SecfmError(f"head kind must be one of {', '.join(HEAD_KINDS)}, not {kind!r}")

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mu", torch.zeros(input_dim))
            self.register_buffer("scale", torch.ones(input_dim))
            if text_dim:
                self.text_weight = nn.Parameter(torch.zeros(text_dim, n_labels))
            if input_dim == 0:
                self.bias = nn.Parameter(torch.zeros(n_labels))
                self.net = None
            elif kind == "linear":
                self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, n_labels))
            else:
                h = hidden_dim or 512
                self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, h), nn.GELU(), nn.Dropout(dropout), nn.Linear(h, n_labels))

        def forward(self, x, t=None):
            if self.net is None:
                z = self.bias.expand(x.shape[0], -1)
            else:
                z = self.net((x - self.mu) / self.scale)
            if t is not None and text_dim:
                z = z + (torch.sparse.mm(t, self.text_weight) if t.is_sparse else t @ self.text_weight)
            return z

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
        self._vectorizer = None
        self._text_weight = None  # (vocabulary, labels) float32, the text part of the logits

    @property
    def needs_text(self) -> bool:
        return bool(self.manifest.text_features)

    @property
    def needs_hidden(self) -> bool:
        return bool(self.manifest.uses_hidden)

    def text_matrix(self, texts):
        """The TF-IDF features (scipy CSR) of ``texts`` as the head was trained on them."""
        if self._vectorizer is None:
            raise SecfmError("this head has no text features")
        return self._vectorizer.transform(list(texts))

    def set_text_features(self, vectorizer, weight: np.ndarray) -> None:
        self._vectorizer = vectorizer
        self._text_weight = np.asarray(weight, dtype=np.float32)

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

    def own_engine(self):
        """The engine (shared in this process) of the base model and adapter the head was trained on."""
        from secfm.engines import shared_engine

        return shared_engine(model=self.manifest.base_model, adapter=self.adapter_path)

    def run(self, texts, engine=None, batch_size: int = 16) -> np.ndarray:
        """Probabilities (n, labels) for ``texts``: the pooled hidden states of ``engine``
        (default: :meth:`own_engine`) when the head reads them, the texts' TF-IDF features when
        it reads those; a text-only head needs no engine."""
        texts = list(texts)
        X = None
        if self.needs_hidden:
            from secfm.features import head_features

            X = head_features(engine if engine is not None else self.own_engine(), texts, self.manifest, batch_size=batch_size)
        return self.scores(X, texts=texts if self.needs_text else None)

    # -- scoring ---------------------------------------------------------------------------
    def logits(self, X: np.ndarray | None, texts=None) -> np.ndarray:
        import torch

        m = self.manifest
        if X is None:
            if self.needs_hidden:
                raise SecfmError("this head needs hidden-state features")
            if texts is None:
                raise SecfmError("this head needs the texts")
            X = np.zeros((len(texts), 0), dtype=np.float32)
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != m.input_dim:
            raise SecfmError(f"features have shape {X.shape}; this head takes (n, {m.input_dim})")
        with torch.inference_mode():
            z = self.module(torch.from_numpy(X)).numpy()
        if m.text_features:
            if texts is None:
                raise SecfmError("this head reads the texts too (TF-IDF features): pass texts=")
            if len(texts) != len(X):
                raise SecfmError(f"{len(texts)} texts for {len(X)} feature rows")
            z = z + np.asarray(self.text_matrix(texts) @ self._text_weight, dtype=np.float32)
        return z

    def scores(self, X: np.ndarray | None, lift: bool = True, texts=None) -> np.ndarray:
        """Probabilities (n, labels) by :func:`probabilities` with the head's temperatures
        (ATT&CK parents lifted unless ``lift`` is False). Heads with text features need ``texts`` too."""
        m = self.manifest
        return probabilities(self.logits(X, texts), m.objective, self.labels, temperatures=m.temperatures,
                             parents=self._parents if lift else None)

    def thresholds(self, mode: str | None = None) -> np.ndarray:
        return self.manifest.thresholds(mode)

    def size_bytes(self) -> int:
        return (self.path / WEIGHTS_FILE).stat().st_size if self.path else 0


def label_groups(labels: Sequence[str]) -> list[tuple[str, list[int]]]:
    """``[(group, [label indexes])]`` in label order for labels spelled ``GROUP:VALUE`` (objective
    ``groups``: the CVSS base metrics)."""
    out: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(label.split(":", 1)[0], []).append(i)
    return list(out.items())


def softmax_groups(objective: str, labels: Sequence[str]) -> list[tuple[str, list[int]]]:
    """The softmax groups of a head: its label groups (``groups``), or one group of every label
    (``multiclass``); a temperature is fitted per group."""
    return label_groups(labels) if objective == "groups" else [("all", list(range(len(labels))))]


def apply_temperatures(z: np.ndarray, temperatures: Sequence[float] | None, objective: str,
                       labels: Sequence[str]) -> np.ndarray:
    """Logits divided by each softmax group's temperature (a float32 copy; ``z`` itself when none)."""
    if not temperatures:
        return z
    z = np.array(z, dtype=np.float32, copy=True)
    for (_, idx), t in zip(softmax_groups(objective, labels), temperatures):
        z[:, idx] /= t
    return z


def probabilities(z: np.ndarray, objective: str, labels: Sequence[str], *, temperatures: Sequence[float] | None = None,
                  parents: np.ndarray | None = None) -> np.ndarray:
    """A head's logits (n, labels) as probabilities, the one rule for loading, training and
    evaluating heads: ``multilabel`` a sigmoid per label (with ``parents``, :func:`parent_index`,
    a sub-technique's score lifts its parent's); ``multiclass`` a softmax; ``groups`` a softmax per
    label group. ``temperatures``: one per softmax group, fitted on validation."""
    if objective == "multilabel":
        p = 1.0 / (1.0 + np.exp(-z))
        return lift_parents(p, parents) if parents is not None else p
    z = apply_temperatures(z, temperatures, objective, labels)
    if objective == "groups":
        return group_softmax(z, label_groups(labels))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def group_softmax(z: np.ndarray, groups) -> np.ndarray:
    """Softmax within each label group (columns listed in ``groups``)."""
    out = np.zeros_like(z, dtype=np.float32)
    for _, idx in groups:
        part = z[:, idx]
        part = part - part.max(axis=1, keepdims=True)
        e = np.exp(part)
        out[:, idx] = e / e.sum(axis=1, keepdims=True)
    return out


def text_vectorizer(params: dict, vocabulary: list[str], idf: np.ndarray):
    """A fitted sklearn TfidfVectorizer from a head's stored parameters, vocabulary and idf."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    kwargs = {k: (tuple(v) if k == "ngram_range" else v) for k, v in params.items() if k in TEXT_FEATURE_KEYS}
    vec = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(vocabulary)}, dtype=np.float32, **kwargs)
    vec.idf_ = np.asarray(idf, dtype=np.float64)
    return vec


def quantize_columns(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights and a float32 scale per column (``W ~ q * scale``)."""
    W = np.asarray(W, dtype=np.float32)
    scale = np.abs(W).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(W / scale), -127, 127).astype(np.int8)
    return q, scale


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


def save_head(path: str | os.PathLike, module, manifest: HeadManifest, dtype: str = "float16",
              vectorizer=None) -> Path:
    """Write ``head.safetensors`` (weights in ``dtype``; standardization in float32; text
    weights int8 with a scale per label) and ``head.json`` (and ``text_vocab.json`` with the
    fitted TF-IDF ``vectorizer`` of a head with text features)."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    target = getattr(torch, dtype)
    tensors = {}
    for name, value in module.state_dict().items():
        value = value.detach().cpu().contiguous()
        if name == "text_weight":
            q, scale = quantize_columns(value.float().numpy())
            tensors["text_weight_q"] = torch.from_numpy(q)
            tensors["text_weight_scale"] = torch.from_numpy(scale)
            continue
        keep_fp32 = name in ("mu", "scale", "bias")
        tensors[name] = value.float() if keep_fp32 else value.to(target)
    if manifest.text_features:
        if vectorizer is None:
            raise SecfmError("a head with text features is saved with its fitted vectorizer")
        vocab = [t for t, _ in sorted(vectorizer.vocabulary_.items(), key=lambda kv: kv[1])]
        tensors["text_idf"] = torch.from_numpy(np.asarray(vectorizer.idf_, dtype=np.float32))
        with open(path / VOCAB_GZ_FILE, "wb") as raw_file, gzip.GzipFile(fileobj=raw_file, mode="wb", mtime=0) as gz:
            gz.write((json.dumps(vocab, ensure_ascii=False) + "\n").encode("utf-8"))
        (path / VOCAB_FILE).unlink(missing_ok=True)  # a re-saved head keeps one vocabulary
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
    raw = load_file(str(weights))
    text_weight = idf = None
    if "text_weight_q" in raw:
        text_weight = raw.pop("text_weight_q").float().numpy() * raw.pop("text_weight_scale").float().numpy()[None, :]
    if "text_idf" in raw:
        idf = raw.pop("text_idf").float().numpy()
    state = {k: v.float() for k, v in raw.items()}
    module = build_module(manifest.input_dim, len(manifest.labels), manifest.kind, manifest.hidden_dim)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise SecfmError(f"{weights} does not match its manifest: {str(exc).splitlines()[0]}") from exc
    head = Head(manifest, module, path)
    if manifest.text_features:
        vocab_file = next((path / f for f in (VOCAB_GZ_FILE, VOCAB_FILE) if (path / f).is_file()), None)
        if text_weight is None or idf is None or vocab_file is None:
            raise SecfmError(f"{path} is a head with text features but lacks its weights or {VOCAB_FILE}")
        try:
            raw_vocab = gzip.decompress(vocab_file.read_bytes()) if vocab_file.suffix == ".gz" else vocab_file.read_bytes()
            vocab = json.loads(raw_vocab.decode("utf-8"))
        except (OSError, EOFError, ValueError) as exc:
            raise SecfmError(f"{vocab_file} is not a readable vocabulary: {exc}") from exc
        if len(vocab) != manifest.text_dim or text_weight.shape != (len(vocab), len(manifest.labels)):
            raise SecfmError(f"{path}: the text vocabulary or weights do not match the manifest")
        head.set_text_features(text_vectorizer(manifest.text_features, vocab, idf), text_weight)
    return head


#: ``open_head(adapter=HEAD_ADAPTER)``: compare the base with the head's own adapter (no engine to compare)
HEAD_ADAPTER = object()
TASK_NAMES = {"attack": "ATT&CK", "cwe": "CWE", "cvss": "CVSS"}


def find_head(task: str, head: str | os.PathLike | None = None, model: str | None = None, *, train_hint: str = "") -> Path:
    """The folder of the head for ``task``: ``head`` when given (one line when it does not exist),
    else the one shipped for ``model`` (default: the registry's default model); without one, one
    line saying so and ``train_hint`` (how to get one, in the caller's own options)."""
    if head is not None:
        path = Path(head).expanduser()
        if not path.exists():
            raise SecfmError(f"head not found: {path}")
        return path
    from secfm.registry import default_model_name

    model = model or default_model_name()
    path = shipped_head_path(task, model)
    if not (path / MANIFEST_FILE).is_file():
        hint = train_hint or f"train one with `secfm train head --task {task} --model {model} --out DIR` and pass it with --head DIR"
        raise SecfmError(f"no {task} head is shipped for model '{model}'; {hint}")
    return path


def open_head(task: str, head: str | os.PathLike | None = None, model: str | None = None, *, adapter=HEAD_ADAPTER,
              check_base: bool = True, train_hint: str = "") -> Head:
    """The head for ``task`` (:func:`find_head`), loaded; refuses a head of another task and, with
    ``check_base``, one trained on another base model (``model``; the shipped one: the default
    model) or adapter (``adapter``: the engine's, None for none; default: the head's own)."""
    path = find_head(task, head, model, train_hint=train_hint)
    loaded = load_head(path)
    found = loaded.manifest.task
    if found != task:
        name = TASK_NAMES.get(task, task)
        raise SecfmError(f"{path} is a {found} head, not {'an' if name[0] in 'AEIOU' else 'a'} {name} head")
    if check_base and (model is not None or head is None):
        from secfm.registry import default_model_name

        loaded.check_base(model or default_model_name(), loaded.adapter_path if adapter is HEAD_ADAPTER else adapter)
    return loaded


TRAINED_CVES_FILE = "trained_cves.txt.gz"


def write_trained_cves(path: str | os.PathLike, cve_ids: Iterable[str]) -> dict:
    """Write the CVE ids a head trained on (sorted, gzip) into its folder; returns the manifest entry."""
    import gzip
    import hashlib

    ids = sorted({c.strip().upper() for c in cve_ids if c.strip()})
    data = "".join(f"{c}\n" for c in ids).encode()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path / TRAINED_CVES_FILE, "wb", mtime=0) as f:
        f.write(data)
    return {"file": TRAINED_CVES_FILE, "count": len(ids), "sha256": hashlib.sha256(data).hexdigest()}


def trained_cves(head_or_path) -> set[str]:
    """The CVE ids a head (a loaded :class:`Head` or a head folder) trained on; empty when it
    records none."""
    import gzip

    if isinstance(head_or_path, Head):
        manifest, path = head_or_path.manifest, head_or_path.path
    else:
        path = Path(head_or_path)
        manifest = read_manifest(path)
    entry = manifest.trained_cves
    if not entry:
        return {s for s in manifest.trained_sources if s.startswith("CVE-")}
    file = Path(path) / entry.get("file", TRAINED_CVES_FILE)
    if not file.is_file():
        raise SecfmError(f"{path} records {entry.get('count')} trained CVEs in {file.name}, which is missing")
    try:
        text = gzip.decompress(file.read_bytes()).decode()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SecfmError(f"{file} is damaged ({exc})") from None
    return set(text.split())


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
    from secfm.inputs import id_list_pieces

    ids: set[str] = set()
    for piece, from_file in id_list_pieces(value, "--exclude-sources"):
        for token in re.split(r"[\s,;]+", piece) if from_file else [piece]:
            token = token.upper()
            if not token:
                continue
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


#: files of a head folder, beside head.json, that record the entities they were built from:
#: the retrieval index of procedure examples and the document model's calibration documents
SOURCE_RECORDS = {"retrieval.json": "sources", "document.json": "calibration_sources"}


def seen_sources(path: str | os.PathLike) -> dict[str, list[str]]:
    """Every ATT&CK entity whose data a head folder was built from, by part: ``head`` (its
    training rows), ``retrieval`` (the procedure examples of its index), ``document`` (the
    development documents its document model was calibrated on)."""
    path = Path(path).expanduser()
    out = {"head": list(read_manifest(path).trained_sources)}
    for nested in sorted(path.glob(f"*/{MANIFEST_FILE}")):  # e.g. the short-text path's shallower head
        out[f"head:{nested.parent.name}"] = list(read_manifest(nested.parent).trained_sources)
    for name, key in SOURCE_RECORDS.items():
        file = path / name
        if file.is_file():
            try:
                out[name.split(".")[0]] = list(json.loads(file.read_text(encoding="utf-8")).get(key, []))
            except ValueError as exc:
                raise SecfmError(f"{file} is not valid JSON: {exc}") from exc
    return out


def seen_overlap(path: str | os.PathLike, entities: Iterable[str]) -> list[str]:
    """The entities of ``entities`` that any part of the head folder saw (sorted): the one
    seen-sources check of head mode and of ``--exclude-sources``."""
    wanted = {e.strip().upper() for e in entities}
    seen = set().union(*seen_sources(path).values())
    return sorted(wanted & seen)

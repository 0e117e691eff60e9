"""Pooled hidden-state features for classifier heads, several layers in one forward, cached on disk.

A *feature* is the hidden state of one decoder layer of a model (plus adapter) pooled over a
text's tokens (``mean``: over the tokens without the BOS attention sink, as the engines do;
``last``: the last real token). :func:`extract` runs the model once per batch with forward hooks
on every wanted layer and stops after the deepest one, so sweeping layers costs one pass and
inference runs only the layers up to the chosen one.

:class:`FeatureCache` keeps features on disk under ``cache_dir('features')``, keyed by model,
adapter, layer, pooling, ``max_length`` and the SHA-256 of the text: retraining a head never
recomputes them. :func:`features` is the one call training and inference share: cached rows are
read back, missing rows are computed (batched, sorted by length, with a progress bar), stored
and returned in input order. :func:`head_features` is what inference feeds a head: its pooling
over each of its manifest's layers, side by side in manifest order, from one pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secfm.engines.base import POOLINGS
from secfm.errors import SecfmError
from secfm.settings import cache_dir

log = logging.getLogger(__name__)

#: bump when the way features are computed changes (invalidates every cache entry)
FEATURE_VERSION = 1
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class FeatureKey:
    """What a cached feature depends on (besides the text)."""

    model: str
    adapter: str | None
    layer: int
    pooling: str
    max_length: int = DEFAULT_MAX_LENGTH

    def folder(self) -> str:
        return f"v{FEATURE_VERSION}-L{self.layer}-{self.pooling}-m{self.max_length}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _slug(value: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("_")[:60]
    return f"{slug}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"


def adapter_identity(adapter: str | os.PathLike | None) -> str | None:
    """A stable id of an adapter folder: its path plus the size and mtime of its weight files
    (a retrained adapter in the same folder gets a new id, so its features are recomputed)."""
    if adapter is None:
        return None
    path = Path(adapter).expanduser().resolve()
    parts = [str(path)]
    if path.is_dir():
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def engine_identity(engine) -> tuple[str, str | None]:
    """(model name, adapter identity) of an engine: the first two parts of a :class:`FeatureKey`."""
    return engine.model_name, adapter_identity(getattr(engine, "adapter", None))


# ---------------------------------------------------------------------------------------------
# extraction: several layers, one forward, early stop (the engine's multi-layer hidden_states)
# ---------------------------------------------------------------------------------------------
def extract(
    engine,
    texts: Sequence[str],
    layers: Iterable[int],
    poolings: Iterable[str] = ("mean",),
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
    progress: Callable[[int], None] | None = None,
) -> dict[tuple[int, str], np.ndarray]:
    """Pooled hidden states of ``texts`` at each of ``layers`` (1-based decoder layers, 0 the
    embeddings, negative from the end) for each pooling, from one forward per batch that stops
    after the deepest layer (``Engine.hidden_states(layers=...)``). Returns
    ``{(layer, pooling): array (len(texts), hidden)}``. ``progress(n)`` is called after each batch."""
    poolings = list(dict.fromkeys(poolings))
    for p in poolings:
        if p not in POOLINGS:
            raise SecfmError(f"pooling must be 'mean' or 'last', not {p!r}")
    wanted = list(dict.fromkeys(layers))
    if not wanted:
        raise SecfmError("no layer asked for")
    if not engine.has_hidden_states:
        raise SecfmError(f"the {engine.kind} engine cannot give hidden states in process; use the transformers engine")
    return engine.hidden_states(list(texts), pooling=poolings, batch_size=batch_size, max_length=max_length,
                                layers=wanted, progress=progress)


# ---------------------------------------------------------------------------------------------
# the disk cache
# ---------------------------------------------------------------------------------------------
class FeatureCache:
    """Features on disk: one folder per (model, adapter, layer, pooling, max_length), holding
    append-only shards (``.npz`` with text hashes and float32 vectors). Writers never collide
    (each shard has a unique name, written to a temporary file and renamed)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_dir("features")
        self._index: dict[Path, dict[str, tuple[Path, int]]] = {}
        self._arrays: dict[Path, np.ndarray] = {}

    def folder(self, key: FeatureKey) -> Path:
        adapter = _slug(key.adapter) if key.adapter else "no-adapter"
        return self.root / _slug(key.model) / adapter / key.folder()

    def _load_index(self, folder: Path) -> dict[str, tuple[Path, int]]:
        known = self._index.setdefault(folder, {})
        if folder.is_dir():
            for shard in sorted(folder.glob("*.npz")):
                if shard in self._arrays:
                    continue
                try:
                    with np.load(shard) as data:
                        keys, vectors = data["keys"], data["X"]
                except (OSError, ValueError, KeyError):
                    log.warning("skipping unreadable feature shard %s", shard)
                    continue
                self._arrays[shard] = vectors
                for row, k in enumerate(keys):
                    known.setdefault(str(k), (shard, row))
        return known

    def get(self, key: FeatureKey, hashes: Sequence[str]) -> tuple[np.ndarray | None, list[int]]:
        """(array with the cached rows filled, indexes of rows missing)."""
        known = self._load_index(self.folder(key))
        missing = [i for i, h in enumerate(hashes) if h not in known]
        if len(missing) == len(hashes):
            return None, missing
        first = known[hashes[next(i for i, h in enumerate(hashes) if h in known)]]
        out = np.zeros((len(hashes), self._arrays[first[0]].shape[1]), dtype=np.float32)
        for i, h in enumerate(hashes):
            hit = known.get(h)
            if hit is not None:
                out[i] = self._arrays[hit[0]][hit[1]]
        return out, missing

    def put(self, key: FeatureKey, hashes: Sequence[str], vectors: np.ndarray) -> None:
        if not len(hashes):
            return
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "key.json"
        if not meta.is_file():
            meta.write_text(json.dumps({**key.__dict__, "feature_version": FEATURE_VERSION}, indent=2))
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        tmp = folder / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.asarray(list(hashes)), X=np.asarray(vectors, dtype=np.float32))
        shard = folder / f"{name}.npz"
        tmp.replace(shard)
        self._arrays[shard] = np.asarray(vectors, dtype=np.float32)
        known = self._index.setdefault(folder, {})
        for row, h in enumerate(hashes):
            known.setdefault(h, (shard, row))

    def count(self, key: FeatureKey) -> int:
        return len(self._load_index(self.folder(key)))


class _Bar:
    """A rich progress bar on stderr (or a log line every ~10% when not a terminal)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.done, self.label = total, 0, label
        self.enabled = enabled and total > 0
        self._progress = None
        self._next_log = 0.1
        self._started = time.time()
        if self.enabled:
            import sys

            if sys.stderr.isatty():
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )

                self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                          TimeRemainingColumn(), console=Console(stderr=True), transient=True)
                self._progress.start()
                self._task = self._progress.add_task(label, total=total)

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, advance=n)
        elif self.done / self.total >= self._next_log:
            rate = self.done / max(time.time() - self._started, 1e-9)
            log.info("%s: %d/%d texts (%.1f texts/s)", self.label, self.done, self.total, rate)
            self._next_log += 0.1

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def features(
    texts: Sequence[str],
    layers: int | Iterable[int],
    poolings: str | Iterable[str] = "mean",
    *,
    engine=None,
    engine_factory: Callable[[], object] | None = None,
    model: str | None = None,
    adapter: str | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 16,
    cache: FeatureCache | None | bool = True,
    progress: bool = True,
    chunk: int = 512,
    label: str = "features",
) -> dict[tuple[int, str], np.ndarray] | np.ndarray:
    """Features of ``texts`` for each layer and pooling, read from the cache where present and
    computed (one multi-layer pass, stored in chunks as it goes) where not.

    The model is identified by ``engine`` or by ``model``/``adapter`` names; the engine is only
    built (by ``engine_factory`` or ``get_engine``) when something is missing. With one layer
    and one pooling given as scalars, returns the array itself; otherwise a dict keyed by
    ``(layer, pooling)``.
    """
    scalar = isinstance(layers, int) and isinstance(poolings, str)
    layer_list = [layers] if isinstance(layers, int) else list(layers)
    pooling_list = [poolings] if isinstance(poolings, str) else list(poolings)
    if engine is not None:
        model_name, adapter_id = engine_identity(engine)
    else:
        from secfm.registry import default_model_name

        model_name, adapter_id = model or default_model_name(), adapter_identity(adapter)
    store = FeatureCache() if cache is True else (cache or None)
    hashes = [text_hash(t) for t in texts]
    keys = {(lay, p): FeatureKey(model_name, adapter_id, lay, p, max_length) for lay in layer_list for p in pooling_list}
    result: dict[tuple[int, str], np.ndarray] = {}
    missing: set[int] = set()
    need: list[tuple[int, str]] = []  # the (layer, pooling) pairs with rows to compute
    for kp, key in keys.items():
        if store is None:
            found, miss = None, list(range(len(texts)))
        else:
            found, miss = store.get(key, hashes)
        result[kp] = found
        if miss:
            need.append(kp)
            missing.update(miss)
    todo = sorted(missing)
    if todo:
        # only the layers and poolings that miss something run (the deepest of them sets the cost)
        need_layers = [lay for lay in layer_list if any(k[0] == lay for k in need)]
        need_poolings = [p for p in pooling_list if any(k[1] == p for k in need)]
        if engine is None:
            if engine_factory is not None:
                engine = engine_factory()
            else:
                from secfm.engines import shared_engine

                engine = shared_engine("transformers", model=model_name, adapter=adapter)
        # unique texts only (the same text twice is computed once)
        first_of: dict[str, int] = {}
        for i in todo:
            first_of.setdefault(hashes[i], i)
        unique = list(first_of.values())
        bar = _Bar(len(unique), f"{label}: {model_name} layers {','.join(map(str, need_layers))}", progress)
        try:
            for start in range(0, len(unique), chunk):
                part = unique[start : start + chunk]
                got = extract(engine, [texts[i] for i in part], need_layers, need_poolings, batch_size, max_length, bar)
                part_hashes = [hashes[i] for i in part]
                row_of = {h: r for r, h in enumerate(part_hashes)}
                for kp in need:
                    key = keys[kp]
                    if store is not None:
                        store.put(key, part_hashes, got[kp])
                    if result.get(kp) is None:
                        result[kp] = np.zeros((len(texts), got[kp].shape[1]), dtype=np.float32)
                    for i in todo:
                        r = row_of.get(hashes[i])
                        if r is not None:
                            result[kp][i] = got[kp][r]
        finally:
            bar.close()
    if scalar:
        return result[(layer_list[0], pooling_list[0])]
    return result


# ---------------------------------------------------------------------------------------------
# several layers, one input: the features of a head
# ---------------------------------------------------------------------------------------------
def deepest_layer(layers: Sequence[int]) -> int:
    """The deepest of ``layers`` (all 1-based and positive, or all negative from the end)."""
    layers = list(layers)
    if not layers:
        raise SecfmError("no layer given")
    if min(layers) < 0 <= max(layers):
        raise SecfmError(f"layers {layers} mix counting from the start and from the end; give them all one way")
    return max(layers)


def stack_layers(got: dict[tuple[int, str], np.ndarray], layers: Sequence[int], pooling: str) -> np.ndarray:
    """One feature matrix from per-layer features: ``got[(layer, pooling)]`` side by side, in the
    order of ``layers`` (a single layer: its matrix as is)."""
    parts = [got[(layer, pooling)] for layer in layers]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def head_layers(manifest) -> list[int]:
    """The layers a head's input is made of, in order (a one-layer manifest's ``layers`` is ``[layer]``)."""
    return list(manifest.layers)


def head_features(engine, texts: Sequence[str], manifest, batch_size: int = 16) -> np.ndarray:
    """The input of the head described by ``manifest`` for ``texts``: its pooling over each of
    its layers, concatenated in manifest order, from one forward per batch that stops after the
    deepest of them."""
    layers = head_layers(manifest)
    texts = list(texts)
    if not texts:
        return np.zeros((0, manifest.input_dim), dtype=np.float32)
    got = extract(engine, texts, layers, [manifest.pooling], batch_size=batch_size, max_length=manifest.max_length)
    return stack_layers(got, layers, manifest.pooling)

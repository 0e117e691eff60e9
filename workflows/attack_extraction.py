"""Document-level ATT&CK technique extraction from reports and alerts (Enterprise, Mobile, ICS).

A document is split into sentences (a regex splitter that knows common abbreviations, bullets
and blank lines; sentences longer than a window are cut into overlapping windows at spaces).
Three signals meet per parent technique:

* the sentence head (:mod:`secfm.heads`) scores each segment on the hidden states of its layers
  (only the layers up to the deepest run); a sub-technique's score lifts its parent;
* retrieval: each segment's nearest ATT&CK procedure examples (packaged all-MiniLM-L6-v2
  embeddings, :class:`ProcedureIndex`) vote for the techniques they illustrate;
* the document model (:class:`DocumentModel`): a logistic regression over those signals,
  aggregated from the sentences to the document, calibrated on development documents of
  entities that neither the head nor the index saw, with a decision rule (a probability
  threshold, a per-document threshold or a label-count model) chosen by development-set F1.

Every reported technique carries its evidence: which sentences, where in the text, their head
scores, and the nearest procedure example with its source and similarity.

``extract_attack(text)`` is the one-call API; :class:`AttackExtractor` keeps the head and the
engine for repeated calls and is also the predictor ``secfm eval cti-ate --mode head`` uses
(``predict(texts) -> [[(technique id, score), ...], ...]``, best first).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from secfm.errors import SecfmError

log = logging.getLogger(__name__)

DEFAULT_WINDOW_CHARS = 500
WINDOW_OVERLAP_CHARS = 100
MIN_SEGMENT_CHARS = 12


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """One segment of the input that supports a technique."""

    sentence: int  # index of the segment in the document
    text: str  # exactly ``document[start:end]``
    start: int
    end: int
    score: float  # the sentence head's probability for the technique on this segment
    example: str = ""  # the nearest ATT&CK procedure example of the technique (retrieval)
    example_source: str = ""  # whose example it is (G0016, S0154, C0022, attack-kb)
    similarity: float = 0.0  # cosine similarity of the segment and that example (``match`` "words": word overlap)
    match: str = "embedding"  # how the example was found: "embedding" (MiniLM) or "words" (the short-text path)


@dataclass(frozen=True)
class TechniqueHit:
    id: str
    name: str
    tactics: tuple[str, ...]
    score: float  # calibrated document probability (or, without a document model, the best segment score)
    evidence: tuple[Evidence, ...] = ()
    url: str = ""
    domain: str = ""  # ATT&CK domain: enterprise, mobile or ics ("" when not known)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tactics"] = list(self.tactics)
        d["evidence"] = [asdict(e) for e in self.evidence]
        return d


@dataclass(frozen=True)
class Segment:
    index: int
    text: str
    start: int
    end: int


# ---------------------------------------------------------------------------------------------
# sentence splitting (no nltk: a regex splitter with offsets)
# ---------------------------------------------------------------------------------------------
_ABBREVIATIONS = {
    "e.g", "i.e", "etc", "vs", "cf", "al", "approx", "inc", "ltd", "corp", "co", "mr", "mrs", "ms", "dr",
    "prof", "sr", "jr", "st", "no", "nos", "fig", "figs", "vol", "ver", "v", "u.s", "u.k", "e.u", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "est", "ca", "resp", "dept",
}
# a candidate end: . ! ? (or … ) possibly followed by closing quotes/brackets, then whitespace
_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)""")
# a line that opens its own block: a bullet, a numbered item, or a short "key: value" field
_ITEM = re.compile(r"[ \t]*(?:[-*•·▪‣]|\d{1,3}[.)])\s")
_FIELD = re.compile(r"[ \t]*[A-Za-z][\w .-]{0,40}:\s")
_BLANK = re.compile(r"\n[ \t]*\n\s*")
_STARTS_SENTENCE = re.compile(r"""\s+["'“‘(\[`]*[A-Z0-9]""")


def _is_abbreviation(text: str, end: int) -> bool:
    """Whether the period at ``text[end - 1]`` closes an abbreviation or an initial."""
    m = re.search(r"([A-Za-z][A-Za-z.]*)\.$", text[:end])
    if not m:
        return False
    word = m.group(1).lower().rstrip(".")
    return word in _ABBREVIATIONS or len(word) == 1


def _sentences_in_block(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    cursor = start
    block = text[start:end]
    for m in _END.finditer(block):
        stop = start + m.end()
        after = text[stop:end]
        if not _STARTS_SENTENCE.match(after):
            continue
        if m.group(0).startswith(".") and len(m.group(0).rstrip("\"'”’)]")) == 1 and _is_abbreviation(text, start + m.start() + 1):
            continue
        spans.append((cursor, stop))
        cursor = stop
    spans.append((cursor, end))
    return spans


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    # leading bullet markers are not part of the sentence
    m = re.match(r"(?:[-*•·▪‣]|\d{1,3}[.)])\s+", text[a:b])
    if m and b - a > m.end():
        a += m.end()
    return a, b


def _windows(text: str, a: int, b: int, max_chars: int, overlap: int) -> list[tuple[int, int]]:
    if b - a <= max_chars:
        return [(a, b)]
    out = []
    pos = a
    while pos < b:
        stop = min(pos + max_chars, b)
        if stop < b:
            cut = text.rfind(" ", pos + max_chars // 2, stop)
            stop = cut if cut > pos else stop
        s, e = _strip(text, pos, stop)
        if e > s:
            out.append((s, e))
        if stop >= b:
            break
        nxt = text.find(" ", max(stop - overlap, pos + 1), stop)
        pos = (nxt + 1) if nxt != -1 and nxt + 1 > pos else stop
    return out


def _blocks(text: str) -> list[tuple[int, int]]:
    """Blocks: paragraphs (blank lines), and within them one block per bullet / numbered item /
    field line (an item goes on over indented continuation lines; a plain line after an item
    starts a new block)."""
    paragraphs, pos = [], 0
    for m in _BLANK.finditer(text):
        paragraphs.append((pos, m.start()))
        pos = m.end()
    paragraphs.append((pos, len(text)))
    blocks = []
    for a, b in paragraphs:
        start, in_item = a, False
        line_start = a
        while line_start < b:
            nl = text.find("\n", line_start, b)
            line_end = b if nl == -1 else nl
            line = text[line_start:line_end]
            opens = bool(_ITEM.match(line) or _FIELD.match(line))
            after_item = in_item and line[:1] not in (" ", "\t")
            if line_start > start and (opens or after_item):
                blocks.append((start, line_start))
                start = line_start
            if opens:
                in_item = True
            elif after_item:
                in_item = False
            line_start = line_end + 1
        blocks.append((start, b))
    return blocks


def split_sentences(text: str, max_chars: int = DEFAULT_WINDOW_CHARS, overlap: int = WINDOW_OVERLAP_CHARS,
                    min_chars: int = MIN_SEGMENT_CHARS) -> list[Segment]:
    """Segments of ``text`` with character offsets: sentences (blocks at blank lines, bullets,
    ``key: value`` lines; sentence ends at ``.!?`` before an upper-case letter or digit, not after
    common abbreviations or initials), long ones cut into windows of at most ``max_chars`` with
    ``overlap``. ``segment.text == text[segment.start:segment.end]`` always holds. Segments
    without letters are dropped, and so are ones shorter than ``min_chars`` unless nothing
    else is left."""
    spans: list[tuple[int, int]] = []
    for a, b in _blocks(text):
        if b <= a:
            continue
        for s, e in _sentences_in_block(text, a, b):
            s, e = _strip(text, s, e)
            if e > s:
                spans.extend(_windows(text, s, e, max_chars, overlap))
    kept = [(s, e) for s, e in spans if e - s >= min_chars and re.search(r"[A-Za-z]", text[s:e])]
    if not kept:
        kept = [(s, e) for s, e in spans if re.search(r"[A-Za-z]", text[s:e])][:1]
    return [Segment(i, text[s:e], s, e) for i, (s, e) in enumerate(kept)]


# ---------------------------------------------------------------------------------------------
# one BLAS thread while extracting
# ---------------------------------------------------------------------------------------------
_BLAS = {"controller": None, "limit": None, "users": 0}
_BLAS_LOCK = threading.Lock()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """NumPy's BLAS (OpenBLAS) on one thread while the extractor runs. Its worker threads spin
    for a while after each call (the head's layers, the retrieval similarities), and on a small
    machine they took the cores the next torch forward needed: a one-alert extraction took
    177 ms instead of 102 ms on 2 cores. Counted, so concurrent callers restore the setting
    once, when the last one leaves."""
    with _BLAS_LOCK:
        if _BLAS["users"] == 0:
            if _BLAS["controller"] is None:
                from threadpoolctl import ThreadpoolController

                _BLAS["controller"] = ThreadpoolController()
            _BLAS["limit"] = _BLAS["controller"].limit(limits=1, user_api="blas")
        _BLAS["users"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["users"] -= 1
            if _BLAS["users"] == 0 and _BLAS["limit"] is not None:
                _BLAS["limit"].restore_original_limits()
                _BLAS["limit"] = None


# ---------------------------------------------------------------------------------------------
# the retrieval embedding beside the head's forward (alert-sized calls)
# ---------------------------------------------------------------------------------------------
#: torch intra-op threads of (the head's forward, the MiniLM embedding) while they run side by side
#: for a call whose texts all take the short-text path; None: one after the other. On 2 cores an
#: alert's layer-1+2 forward and its embedding are of a size (~20 and ~26 ms each on 2 threads,
#: ~32 ms each on 1), so one core each overlaps them; a report's forward is far longer than its
#: embedding and keeps both cores.
OVERLAP_THREADS: tuple[int, int] | None = (1, 1)

_POOLS: dict[tuple[str, int], object] = {}
_POOLS_LOCK = threading.Lock()


def _pool(role: str, threads: int):
    """A one-thread worker (``secfm-<role>``) whose torch intra-op threads are ``threads``, made
    once per process: the setting is made when the worker starts, not around each call."""
    with _POOLS_LOCK:
        if (role, threads) not in _POOLS:
            from concurrent.futures import ThreadPoolExecutor

            _POOLS[(role, threads)] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"secfm-{role}",
                                                         initializer=_set_thread_torch_threads, initargs=(threads,))
        return _POOLS[(role, threads)]


def _set_thread_torch_threads(n: int) -> None:
    """This thread's torch intra-op threads at ``n``. ``torch.set_num_threads`` also sets the
    process-wide value each thread takes at its first torch call; that is put back at once
    (from a short-lived thread), so no other thread is changed."""
    import torch

    before = torch.get_num_threads()  # this thread takes the process's setting first
    if n == before:
        return
    torch.set_num_threads(n)
    fixer = threading.Thread(target=torch.set_num_threads, args=(before,), name="secfm-threads")
    fixer.start()
    fixer.join()


def _overlapped(first, second, threads: tuple[int, int]):
    """``(first(), second())`` run at once in the ``head`` and ``retrieval`` workers, on
    ``threads`` torch threads each; both are waited for, and ``first``'s failure is the one
    raised when both fail."""
    futures = (_pool("head", threads[0]).submit(first), _pool("retrieval", threads[1]).submit(second))
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return futures[0].result(), futures[1].result()


# ---------------------------------------------------------------------------------------------
# retrieval: the nearest ATT&CK procedure examples vote for their techniques
# ---------------------------------------------------------------------------------------------
INDEX_FILE = "retrieval.npz"
INDEX_MANIFEST = "retrieval.json"
DOCUMENT_FILE = "document.json"
INDEX_FORMAT = 1
DEFAULT_NEIGHBOURS = 10
VOTE_TEMPERATURE = 0.05

_EMBEDDER = None
_EMBEDDER_LOCK = threading.Lock()


def embed_texts(texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings (n, 384) of ``texts``: the packaged model, loaded
    once per process, offline."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    with _EMBEDDER_LOCK:
        vectors = _embedder().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=progress)
    return np.asarray(vectors, dtype=np.float32)


_PACKAGED_EMBED_TEXTS = embed_texts  # (tests replace ``embed_texts``; only the packaged one needs loading)


def _embedder():
    """The packaged all-MiniLM-L6-v2, loaded once per process (callers hold ``_EMBEDDER_LOCK``)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from secfm.workflows.store import embedding_model_path

        _EMBEDDER = SentenceTransformer(str(embedding_model_path()), device="cpu", local_files_only=True)
    return _EMBEDDER


@dataclass
class IndexRow:
    text: str
    techniques: tuple[str, ...]  # the technique it illustrates (a sub-technique with its parent)
    source: str  # G0016, S0154, C0022, or "attack-kb" for a technique's own description


class ProcedureIndex:
    """ATT&CK procedure examples (and each technique's name and first sentence) with their
    MiniLM embeddings; :meth:`votes` gives, for each query sentence, the share of its nearest
    examples that illustrate each label (similarity-weighted), the best similarity per label and
    the nearest example per label (the evidence a hit shows).

    On disk (in a head folder): ``retrieval.npz`` (int8 embeddings with a scale per row, the
    texts, techniques and sources) and ``retrieval.json`` (what it was built from: the sources,
    the excluded sources, the embedding model, the ATT&CK versions)."""

    def __init__(self, rows: Sequence[IndexRow], vectors: np.ndarray, manifest: dict | None = None):
        if len(rows) != len(vectors):
            raise SecfmError(f"retrieval index: {len(rows)} rows but {len(vectors)} vectors")
        self.rows = list(rows)
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.manifest = dict(manifest or {})
        self._label_cache: dict[tuple[str, ...], tuple[np.ndarray, ...]] = {}
        self._transposed: np.ndarray | None = None

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, attack=None, sources: Iterable[str] | None = None, exclude_sources: Iterable[str] = (),
              include_descriptions: bool = True, progress: bool = True) -> ProcedureIndex:
        """An index of the procedure examples of ``sources`` (all when None) minus
        ``exclude_sources`` (with their clusters), plus the techniques' own texts."""
        from secfm.knowledge import load_attack
        from secfm.training.head_data import build_index_rows

        attack = attack or load_attack()
        rows, used = build_index_rows(attack, sources=sources, exclude_sources=exclude_sources,
                                      include_descriptions=include_descriptions)
        vectors = cached_embeddings([r.text for r in rows], progress=progress)
        manifest = {"format": INDEX_FORMAT, "embedding": "all-MiniLM-L6-v2", "dim": int(vectors.shape[1]) if len(rows) else 384,
                    "rows": len(rows), "sources": sorted(used), "excluded_sources": sorted({s.upper() for s in exclude_sources}),
                    "attack_versions": dict(attack.versions), "descriptions": include_descriptions}
        return cls(rows, vectors, manifest)

    @property
    def sources(self) -> list[str]:
        return list(self.manifest.get("sources", []))

    # -- disk --------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        scale = np.maximum(np.abs(self.vectors).max(axis=1), 1e-8) / 127.0
        q = np.round(self.vectors / scale[:, None]).astype(np.int8)
        columns = {}
        for name, values in (("texts", [r.text for r in self.rows]), ("techniques", ["|".join(r.techniques) for r in self.rows]),
                             ("sources", [r.source for r in self.rows])):
            blob, offsets = _pack(values)
            columns[name] = blob
            columns[f"{name}_offsets"] = offsets
        np.savez_compressed(folder / INDEX_FILE, q=q, scale=scale.astype(np.float32), **columns)
        (folder / INDEX_MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ProcedureIndex:
        import json

        folder = Path(folder)
        try:
            manifest = json.loads((folder / INDEX_MANIFEST).read_text(encoding="utf-8"))
            with np.load(folder / INDEX_FILE) as data:
                vectors = data["q"].astype(np.float32) * data["scale"][:, None]
                texts, techniques, sources = (_unpack(data[name], data[f"{name}_offsets"])
                                              for name in ("texts", "techniques", "sources"))
                rows = [IndexRow(t, tuple(x.split("|")) if x else (), src) for t, x, src in zip(texts, techniques, sources)]
        except (OSError, ValueError, KeyError) as exc:
            raise SecfmError(f"cannot read the retrieval index in {folder}: {exc}") from exc
        if manifest.get("format", INDEX_FORMAT) > INDEX_FORMAT:
            raise SecfmError(f"{folder / INDEX_MANIFEST} has format {manifest.get('format')}; this secfm reads {INDEX_FORMAT}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return cls(rows, vectors / np.maximum(norms, 1e-8), manifest)

    # -- querying ----------------------------------------------------------------------------
    def _label_matrix(self, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row indexes, label indexes) of every (row, label) pair, for ``labels``."""
        key = tuple(labels)
        if key not in self._label_cache:
            where = {label: j for j, label in enumerate(labels)}
            r_idx, l_idx = [], []
            for i, row in enumerate(self.rows):
                for t in row.techniques:
                    j = where.get(t)
                    if j is not None:
                        r_idx.append(i)
                        l_idx.append(j)
            self._label_cache[key] = (np.asarray(r_idx, dtype=np.int64), np.asarray(l_idx, dtype=np.int64))
        return self._label_cache[key]

    def _by_dimension(self) -> np.ndarray:
        """The vectors as a contiguous (dim, rows) copy, made once: one query's similarities
        stream it in about a third of the time ``vectors.T`` takes (0.8 vs 2.3 ms for 13,300 rows
        on one BLAS thread); the same nearest rows in the same order on all 2,719 validation
        segments, similarities within 3e-7 of those."""
        if self._transposed is None or self._transposed.shape[::-1] != self.vectors.shape:
            self._transposed = np.ascontiguousarray(self.vectors.T)
        return self._transposed

    def _labels_by_row(self, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(label indexes sorted by row, each row's start, end in them)`` for ``labels``,
        computed once per label list (a query then reads a row's labels as one slice)."""
        key = ("by-row", *labels)
        if key not in self._label_cache:
            rows_of, labels_of = self._label_matrix(labels)
            order = np.argsort(rows_of, kind="stable")
            rows_sorted = rows_of[order]
            every = np.arange(len(self.rows))
            self._label_cache[key] = (labels_of[order], np.searchsorted(rows_sorted, every),
                                      np.searchsorted(rows_sorted, every, side="right"))
        return self._label_cache[key]

    def word_match(self, text: str, label: str) -> tuple[int, float] | None:
        """The row illustrating ``label`` whose words overlap ``text`` most (Jaccard over
        lower-cased words; ties: the first row), and that overlap; None when no row carries
        ``label``. The short-text path's evidence: it costs no embedding."""
        if not hasattr(self, "_rows_by_label"):
            by: dict[str, list[int]] = {}
            for i, row in enumerate(self.rows):
                for t in row.techniques:
                    by.setdefault(t, []).append(i)
            self._rows_by_label, self._words = by, {}
        rows = self._rows_by_label.get(label)
        if not rows:
            return None
        words = _words(text)
        best = (rows[0], -1.0)
        for i in rows:
            other = self._words.get(i)
            if other is None:
                other = self._words[i] = _words(self.rows[i].text)
            union = len(words | other)
            overlap = len(words & other) / union if union else 0.0
            if overlap > best[1]:
                best = (i, overlap)
        return best[0], max(best[1], 0.0)

    def votes(self, queries: np.ndarray, labels: Sequence[str], k: int = DEFAULT_NEIGHBOURS,
              temperature: float = VOTE_TEMPERATURE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For query vectors (m, d): ``(share, best_similarity, nearest_row)``, each (m, labels):
        the softmax-weighted share of the ``k`` nearest rows that carry each label, the highest
        similarity of a row carrying it among them (0 when none), and that row (-1 when none)."""
        m, n_labels = len(queries), len(labels)
        share = np.zeros((m, n_labels), dtype=np.float32)
        best = np.zeros((m, n_labels), dtype=np.float32)
        nearest = np.full((m, n_labels), -1, dtype=np.int64)
        if m == 0 or not self.rows:
            return share, best, nearest
        labels_sorted, starts, ends = self._labels_by_row(labels)
        k = min(k, len(self.rows))
        top = np.zeros((m, k), dtype=np.int64)
        top_sims = np.zeros((m, k), dtype=np.float32)
        for start in range(0, m, 256):  # (256, rows) similarities at a time
            sims = queries[start : start + 256] @ self._by_dimension()
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            part_sims = np.take_along_axis(sims, part, axis=1)
            order = np.argsort(-part_sims, axis=1)
            top[start : start + 256] = np.take_along_axis(part, order, axis=1)
            top_sims[start : start + 256] = np.take_along_axis(part_sims, order, axis=1)
        for q in range(m):
            cand, s = top[q], top_sims[q]
            w = np.exp((s - s.max()) / temperature)
            w = w / w.sum()
            for row, sim, weight in zip(cand, s, w):
                for j in labels_sorted[starts[row]:ends[row]]:
                    share[q, j] += weight
                    if sim > best[q, j]:
                        best[q, j] = sim
                        nearest[q, j] = row
        return share, best, nearest


_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]*[a-z0-9]|[a-z0-9]")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _pack(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte array and their end offsets (no pickles in the index file)."""
    encoded = [v.encode("utf-8") for v in values]
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), np.cumsum([len(e) for e in encoded], dtype=np.int64)


def _unpack(blob: np.ndarray, ends: np.ndarray) -> list[str]:
    data = blob.tobytes()
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
    return [data[a:b].decode("utf-8") for a, b in zip(starts, ends)]


def cached_embeddings(texts: Sequence[str], progress: bool = True) -> np.ndarray:
    """MiniLM embeddings of ``texts``, read from and added to ``cache_dir('embeddings')`` (one
    ``.npz`` shard per call that computed something, keyed by the texts' sha256)."""
    import time as _time
    import uuid

    from secfm.settings import cache_dir

    texts = list(texts)
    folder = cache_dir("embeddings") / "all-MiniLM-L6-v2"
    folder.mkdir(parents=True, exist_ok=True)
    hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    known: dict[str, np.ndarray] = {}
    wanted = set(hashes)
    for shard in sorted(folder.glob("*.npz")):
        try:
            with np.load(shard) as data:
                keys, X = data["keys"], data["X"]
        except (OSError, ValueError, KeyError):
            continue
        for key, row in zip(keys, X):
            key = str(key)
            if key in wanted:
                known[key] = row
    missing = list(dict.fromkeys(h for h in hashes if h not in known))
    if missing:
        first = {h: t for h, t in zip(hashes, texts)}
        for start in range(0, len(missing), 2048):  # resumable: each chunk is stored as it is done
            part = missing[start : start + 2048]
            X = embed_texts([first[h] for h in part], progress=progress)
            name = f"{_time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
            tmp = folder / f".{name}.tmp.npz"
            np.savez(tmp, keys=np.asarray(part), X=X.astype(np.float16))
            tmp.replace(folder / f"{name}.npz")
            known.update(zip(part, X))
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    out = np.stack([np.asarray(known[h], dtype=np.float32) for h in hashes])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


# ---------------------------------------------------------------------------------------------
# from sentences to the document: calibrated per-technique probabilities and a decision rule
# ---------------------------------------------------------------------------------------------
#: the per-(document, parent technique) signals the document model weighs
DOC_FEATURES = ("head_max_logit", "head_second_logit", "head_sum", "vote_max", "vote_sum", "vote_best_similarity",
                "segments_log", "prior", "head_rank", "vote_rank", "head_x_vote", "domain_share")
DECISION_RULES = ("threshold", "relative", "count")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _rank_inverse(x: np.ndarray) -> np.ndarray:
    order = np.argsort(-x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float32)
    ranks[order] = np.arange(len(x), dtype=np.float32)
    return 1.0 / (1.0 + ranks)


def document_signals(S: np.ndarray, share: np.ndarray, best: np.ndarray, prior: np.ndarray,
                     domain_index: np.ndarray, n_domains: int = 3) -> np.ndarray:
    """The :data:`DOC_FEATURES` of one document for every parent label: ``S`` (segments,
    parents) sentence-head probabilities (sub-techniques lifted into parents), ``share`` and
    ``best`` (segments, parents) retrieval votes and similarities, ``prior`` (parents,) the
    label's log-frequency among the training examples, ``domain_index`` (parents,) its domain."""
    n_seg = max(len(S), 1)
    if len(S) == 0:
        S = np.zeros((1, len(prior)), dtype=np.float32)
        share = best = S
    top2 = -np.sort(-S, axis=0)[:2] if len(S) > 1 else np.vstack([S, np.zeros_like(S)])
    h_max, h_second = top2[0], top2[1]
    v_max = share.max(axis=0)
    mass = np.bincount(domain_index, weights=h_max + v_max, minlength=n_domains)
    domain_share = mass[domain_index] / max(mass.sum(), 1e-6)
    F = np.stack([
        _logit(h_max), _logit(np.maximum(h_second, 1e-4)), np.log1p(S.sum(axis=0)), v_max, np.log1p(share.sum(axis=0)),
        best.max(axis=0), np.full(len(prior), np.log(n_seg)), prior, _rank_inverse(h_max), _rank_inverse(v_max),
        _logit(h_max) * v_max, domain_share,
    ], axis=1)
    return F.astype(np.float32)


@dataclass
class DocumentModel:
    """Calibrated document-level decisions: a logistic regression over :data:`DOC_FEATURES`
    (fit on development documents of entities the head and the index never saw) gives each
    parent technique a probability; ``rule`` decides which are reported:

    * ``threshold``: ``p >= threshold``;
    * ``relative``: ``p >= max(threshold, ratio * the document's best p)`` (a per-document threshold);
    * ``count``: the top ``round(count_a * sum(p) + count_b)`` techniques (a label-count model),
      each with ``p >= threshold``.
    """

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    rule: str = "threshold"
    threshold: float = 0.5
    ratio: float = 0.0
    count_a: float = 1.0
    count_b: float = 0.0
    neighbours: int = DEFAULT_NEIGHBOURS
    temperature: float = VOTE_TEMPERATURE
    use_retrieval: bool = True
    calibration_sources: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    #: the cheaper path for alert-sized texts, when the development set chose one: ``{"max_chars": N,
    #: "model": {a DocumentModel}, "head": folder of a shallower sentence head or None,
    #: "selection": {...}}``; texts of at most ``max_chars`` characters are scored by that head
    #: (else the main one) and decided by that model (without retrieval when it does not use it)
    short: dict | None = None

    def __post_init__(self) -> None:
        if isinstance(self.short, dict) and isinstance(self.short.get("model"), dict):
            model = DocumentModel(**{k: v for k, v in self.short["model"].items() if k in DocumentModel.__dataclass_fields__})
            if model.short:
                raise SecfmError("the short-text document model must not nest another")
            self._short_model = model
        else:
            self._short_model = None
        if self.rule not in DECISION_RULES:
            raise SecfmError(f"document rule must be one of {', '.join(DECISION_RULES)}, not {self.rule!r}")
        if list(self.features) != list(DOC_FEATURES):
            raise SecfmError(f"document model features {self.features} are not this secfm's {list(DOC_FEATURES)}")

    def short_model(self, text_chars: int) -> DocumentModel | None:
        """The short-text model when a text of ``text_chars`` characters takes the short path."""
        if self._short_model is not None and text_chars <= int(self.short.get("max_chars", 0)):
            return self._short_model
        return None

    def probabilities(self, F: np.ndarray) -> np.ndarray:
        z = ((F - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def decide(self, p: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Indexes of the reported labels, best first."""
        t = self.threshold if threshold is None else threshold
        order = np.argsort(-p, kind="stable")
        if self.rule == "relative":
            cut = max(t, self.ratio * float(p.max(initial=0.0)))
            return order[p[order] >= cut]
        if self.rule == "count":
            k = int(np.clip(round(self.count_a * float(p.sum()) + self.count_b), 1, 30))
            top = order[:k]
            return top[p[top] >= t]
        return order[p[order] >= t]

    def save(self, folder: str | Path) -> Path:
        import json

        path = Path(folder) / DOCUMENT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> DocumentModel | None:
        import json

        path = Path(folder) / DOCUMENT_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise SecfmError(f"{path} is not valid JSON: {exc}") from exc
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------------------------
# the head on the engine
# ---------------------------------------------------------------------------------------------
class _HeadRunner:
    """A head plus the engine it runs on; ``scores(texts)`` -> (n, labels)."""

    task = ""

    def __init__(self, head, engine=None, batch_size: int = 16):
        self.head = head
        m = head.manifest
        if engine is not None:
            head.check_base(engine.model_name, getattr(engine, "adapter", None))
        self._engine = engine
        self.batch_size = batch_size
        self.model = m.base_model

    @property
    def engine(self):
        if self._engine is None:
            self._engine = self.head.own_engine()
        return self._engine

    def features(self, texts: Sequence[str]) -> np.ndarray:
        from secfm.features import head_features

        return head_features(self.engine, texts, self.head.manifest, batch_size=self.batch_size)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.run(texts, self.engine, batch_size=self.batch_size)

    def describe(self) -> dict:
        m = self.head.manifest
        return {"task": m.task, "head": str(self.head.path), "base_model": m.base_model, "adapter": m.adapter,
                "layer": m.layer, "layers": list(m.layers), "pooling": m.pooling, "kind": m.kind, "labels": len(m.labels),
                "trained_sources": len(m.trained_sources), "excluded_sources": m.excluded_sources}


# ---------------------------------------------------------------------------------------------
# the extractor
# ---------------------------------------------------------------------------------------------
class AttackExtractor(_HeadRunner):
    """Document-level ATT&CK extraction with evidence; also the eval predictor.

    With the document model and retrieval index of its head folder (``document.json``,
    ``retrieval.npz``): every sentence is scored by the head and looks up its nearest ATT&CK
    procedure examples; per parent technique the document model turns those signals into a
    calibrated probability and its rule decides what is reported; a reported parent also
    reports its sub-techniques whose best sentence passes the head's own threshold. Without
    them (a head from ``secfm train head`` alone): a technique is reported when its best
    sentence passes the head's threshold.
    """

    task = "attack"
    #: the eval runner keeps every technique the extractor reports (it already decided)
    threshold = 0.0

    def __init__(self, head, engine=None, threshold: float | str | None = None, top_k: int | None = None,
                 max_evidence: int = 3, window_chars: int = DEFAULT_WINDOW_CHARS, batch_size: int = 16,
                 index: ProcedureIndex | None | bool = True, document: DocumentModel | None | bool = True,
                 short_head=True):
        if head.manifest.task != "attack":
            raise SecfmError(f"{head.path} is a {head.manifest.task} head, not an ATT&CK head")
        super().__init__(head, engine, batch_size)
        self.max_evidence = max_evidence
        self.top_k = top_k
        self.window_chars = window_chars
        self.document = DocumentModel.load(head.path) if document is True and head.path else (document or None)
        if index is True:
            index = ProcedureIndex.load(head.path) if head.path and (Path(head.path) / INDEX_FILE).is_file() else None
        self.index = index or None
        if self.document is not None and self.document.use_retrieval and self.index is None:
            raise SecfmError(f"{head.path} has a document model that needs its retrieval index ({INDEX_FILE})")
        self.short_head = self._short_head(head, short_head, engine)
        self.sentence_thresholds = head.thresholds(None)
        self.doc_threshold = None
        if threshold is None or isinstance(threshold, str):
            if isinstance(threshold, str):
                self.sentence_thresholds = head.thresholds(threshold)
        else:
            if not 0 < float(threshold) < 1:
                raise SecfmError(f"threshold must be between 0 and 1, not {threshold}")
            self.doc_threshold = float(threshold)
            self.sentence_thresholds = np.full(len(head.labels), float(threshold), dtype=np.float32)
        from secfm.knowledge import load_attack
        from secfm.knowledge.attack import DOMAINS

        self._attack = load_attack()
        labels = head.labels
        self._parents = [j for j, label in enumerate(labels) if "." not in label]
        self._parent_labels = [labels[j] for j in self._parents]
        self._children: dict[int, list[int]] = {}
        where = {label: j for j, label in enumerate(labels)}
        self._label_index = where
        for j, label in enumerate(labels):
            if "." in label and label.split(".")[0] in where:
                self._children.setdefault(where[label.split(".")[0]], []).append(j)
        domain_of = {t.id: t.domain for t in self._attack.techniques(include_revoked=True, include_deprecated=True)}
        self._domain_index = np.asarray([DOMAINS.index(domain_of.get(t, "enterprise")) for t in self._parent_labels])
        self._prior = self._label_prior()

    def _short_head(self, head, given, engine):
        """The short-text path's sentence head: ``given`` (a loaded head), or with ``True`` the
        one the document model's short block names (a folder inside the head folder), or None."""
        if given is True:
            name = (self.document.short or {}).get("head") if self.document is not None else None
            if not name or not head.path:
                return None
            from secfm.heads import load_head

            given = load_head(Path(head.path) / name)
        if not given:
            return None
        if list(given.labels) != list(head.labels) or given.manifest.base_model != head.manifest.base_model:
            raise SecfmError(f"the short-text head {given.path} does not share the labels and base model of {head.path}")
        if engine is not None:
            given.check_base(engine.model_name, getattr(engine, "adapter", None))
        return given

    def _label_prior(self) -> np.ndarray:
        """log(1 + examples of each parent label in the retrieval index), scaled to [0, 1]."""
        counts = np.zeros(len(self._parent_labels), dtype=np.float32)
        if self.index is not None:
            rows, cols = self.index._label_matrix(self._parent_labels)
            counts = np.bincount(cols, minlength=len(self._parent_labels)).astype(np.float32)
        return np.log1p(counts) / max(np.log1p(counts.max(initial=1.0)), 1e-6)

    @classmethod
    def load(cls, head: str | Path | None = None, model: str | None = None, engine=None, **options) -> AttackExtractor:
        return cls(_load_head("attack", head, model, engine), engine, **options)

    # -- signals ------------------------------------------------------------------------------
    def signals(self, texts: Sequence[str], featurize=None, embed=None, short: bool = True) -> list[dict]:
        """Per document: its segments, head scores ``S`` (segments, labels) and, with an index,
        retrieval ``share``/``best``/``nearest`` (segments, parent labels). ``featurize(segments,
        head)`` and ``embed`` replace a head's features and the MiniLM embeddings of the segments
        (the development harness reads them from its caches). A text the document model's
        short-text path takes (``short``; :meth:`DocumentModel.short_model`) is scored by that
        path's model (its ``short`` entry), by the path's shallower sentence head when it has one
        (:attr:`short_head`: the forward stops at its deepest layer), and skips retrieval when
        that model does not use it (its retrieval signals are then zero)."""
        with one_blas_thread():
            docs = [split_sentences(t, self.window_chars) for t in texts]
            shorts = [self.document.short_model(len(t)) if short and self.document is not None else None for t in texts]
            flat = [s.text for segs in docs for s in segs]
            on_short = np.asarray([sh is not None and self.short_head is not None for segs, sh in zip(docs, shorts)
                                   for _ in segs], dtype=bool)
            wanted = np.zeros(len(flat), dtype=bool)
            if self.index is not None and flat and (self.document is None or self.document.use_retrieval):
                wanted = np.asarray([sh is None or sh.use_retrieval for segs, sh in zip(docs, shorts) for _ in segs],
                                    dtype=bool)

            def head_scores() -> np.ndarray:
                S = np.zeros((len(flat), len(self.head.labels)), dtype=np.float32)
                for head, rows in ((self.head, ~on_short), (self.short_head, on_short)):
                    if head is None or not rows.any():
                        continue
                    part = [t for t, r in zip(flat, rows) if r]
                    if featurize is not None:
                        S[rows] = head.scores(featurize(part, head))
                    elif head is self.head:
                        S[rows] = self.scores(part)
                    else:
                        S[rows] = head.run(part, self.engine, batch_size=self.batch_size)
                return S

            def queries() -> np.ndarray | None:
                if not wanted.any():
                    return None
                return (embed or embed_texts)([t for t, w in zip(flat, wanted) if w])

            # side by side once both models are loaded (a first call loads them one after the
            # other: two threads importing transformers at once fail)
            loaded = self._engine is not None and (_EMBEDDER is not None or embed_texts is not _PACKAGED_EMBED_TEXTS)
            if (OVERLAP_THREADS is not None and loaded and featurize is None and embed is None and wanted.any()
                    and on_short.all()):
                S, Q = _overlapped(head_scores, queries, OVERLAP_THREADS)
            else:
                S, Q = head_scores(), queries()
            share = best = np.zeros((len(flat), len(self._parents)), dtype=np.float32)
            nearest = np.full((len(flat), len(self._parents)), -1, dtype=np.int64)
            if Q is not None:
                k = self.document.neighbours if self.document else DEFAULT_NEIGHBOURS
                temp = self.document.temperature if self.document else VOTE_TEMPERATURE
                got = self.index.votes(Q, self._parent_labels, k, temp)
                share, best = share.copy(), best.copy()
                share[wanted], best[wanted], nearest[wanted] = got
            out, offset = [], 0
            for segs, sh in zip(docs, shorts):
                sl = slice(offset, offset + len(segs))
                out.append({"segments": segs, "S": S[sl], "share": share[sl], "best": best[sl], "nearest": nearest[sl],
                            "short": sh})
                offset += len(segs)
            return out

    def document_probabilities(self, sig: dict) -> np.ndarray:
        """Calibrated probability of each parent label for one document's signals (by the
        short-text model when the document took that path)."""
        F = document_signals(sig["S"][:, self._parents], sig["share"], sig["best"], self._prior, self._domain_index)
        return (sig.get("short") or self.document).probabilities(F)

    # -- extraction ---------------------------------------------------------------------------
    def extract_many(self, texts: Sequence[str]) -> list[list[TechniqueHit]]:
        """Hits for each document; all segments of all documents are scored in one batched pass."""
        return [self._hits(sig) for sig in self.signals(texts)]

    def extract(self, text: str) -> list[TechniqueHit]:
        return self.extract_many([text])[0]

    def _hits(self, sig: dict) -> list[TechniqueHit]:
        segments, S = sig["segments"], sig["S"]
        if not segments:
            return []
        best = S.max(axis=0)
        if self.document is None:
            passing = np.nonzero(best >= self.sentence_thresholds)[0]
            chosen = sorted(((int(j), float(best[j])) for j in passing), key=lambda x: (-x[1], self.head.labels[x[0]]))
        else:
            p = self.document_probabilities(sig)
            chosen = []
            for col in (sig.get("short") or self.document).decide(p, self.doc_threshold):
                j = self._parents[col]
                chosen.append((j, float(p[col])))
                for c in self._children.get(j, ()):
                    if best[c] >= self.sentence_thresholds[c]:
                        chosen.append((c, min(float(p[col]), float(best[c]))))
            chosen.sort(key=lambda x: (-x[1], self.head.labels[x[0]]))
        if self.top_k is not None:
            chosen = chosen[: self.top_k]
        column = {j: col for col, j in enumerate(self._parents)}
        hits = []
        for j, score in chosen:
            parent_col = column.get(j, column.get(self._label_index.get(self.head.labels[j].split(".")[0], -1)))
            rows = np.argsort(-S[:, j])
            evidence = []
            for r in rows[: self.max_evidence]:
                if S[r, j] < self.sentence_thresholds[j] and evidence:
                    break
                seg = segments[r]
                example, source, similarity, match = "", "", 0.0, "embedding"
                if parent_col is not None and self.index is not None and sig["nearest"][r, parent_col] >= 0:
                    row = self.index.rows[int(sig["nearest"][r, parent_col])]
                    example, source, similarity = row.text, row.source, round(float(sig["best"][r, parent_col]), 4)
                elif parent_col is not None and self.index is not None and sig.get("short") is not None:
                    found = self.index.word_match(seg.text, self._parent_labels[parent_col])
                    if found is not None:
                        row, overlap = self.index.rows[found[0]], found[1]
                        example, source, similarity, match = row.text, row.source, round(overlap, 4), "words"
                evidence.append(Evidence(seg.index, seg.text, seg.start, seg.end, round(float(S[r, j]), 4),
                                         example, source, similarity, match))
            hits.append(self._hit(self.head.labels[j], score, tuple(evidence)))
        return hits

    def _hit(self, tid: str, score: float, evidence: tuple[Evidence, ...]) -> TechniqueHit:
        tech = self._attack.techniques_by_id.get(tid)
        if tech is None:  # a label the current knowledge base no longer has
            return TechniqueHit(tid, tid, (), round(score, 4), evidence)
        return TechniqueHit(tid, tech.name, tuple(tech.tactics), round(score, 4), evidence, tech.url, tech.domain)

    # -- the eval predictor protocol ------------------------------------------------------
    def predict(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """For each text, the techniques reported with their scores, best first (sub-techniques
        and their parents both appear; fold to parents as the task needs)."""
        return [[(h.id, h.score) for h in hits] for hits in self.extract_many(texts)]

    def describe(self) -> dict:
        info = super().describe()
        info["document_model"] = None if self.document is None else {
            "rule": self.document.rule, "threshold": self.document.threshold,
            "calibration_sources": len(self.document.calibration_sources), "use_retrieval": self.document.use_retrieval,
            "short_path_max_chars": (self.document.short or {}).get("max_chars"),
            "short_path_layers": list(self.short_head.manifest.layers) if self.short_head is not None else None}
        info["retrieval"] = None if self.index is None else {
            "rows": len(self.index.rows), "sources": len(self.index.sources),
            "excluded_sources": self.index.manifest.get("excluded_sources", [])}
        return info


def _load_head(task: str, head: str | Path | None, model: str | None, engine=None):
    """The head (given or shipped) checked against the engine's base model and adapter."""
    from secfm.heads import HEAD_ADAPTER, open_head

    if engine is not None and model is None:
        model = engine.model_name
    return open_head(task, head, model, adapter=getattr(engine, "adapter", None) if engine is not None else HEAD_ADAPTER)


# one extractor per (head, model) for the module-level helpers
_DEFAULTS: dict[tuple, AttackExtractor] = {}
_DEFAULTS_LOCK = threading.Lock()


def extract_attack(text: str, *, head: str | Path | None = None, model: str | None = None, engine=None,
                   threshold: float | str | None = None, top_k: int | None = None, max_evidence: int = 3) -> list[TechniqueHit]:
    """ATT&CK techniques in ``text`` (a report, paragraph or alert), best first, each with its
    id, name, tactics, domain, score and evidence (sentence, its head score, the nearest ATT&CK
    procedure example). Uses the extractor shipped for the default model unless ``head`` (a head
    folder) is given."""
    from secfm.inputs import check_text

    check_text(text, "text")
    return _extractor_for(head, model, engine, threshold, top_k, max_evidence).extract(text)


class AttackInput(BaseModel):
    """What an ATT&CK extraction request holds (``secfm attack extract``, ``POST /v1/attack/extract``,
    the app's ATT&CK tab). Which head and base model run it are the caller's options, not request data."""

    model_config = ConfigDict(allow_inf_nan=False)

    text: str = Field(..., description="A report, paragraph or alert (untrusted: treated as data).")
    threshold: float | Literal["global", "per-class"] | None = Field(
        None, description="A probability (0-1), or the head's tuned 'global' / 'per-class' thresholds (default: the head's choice).")
    top_k: int | None = Field(None, ge=1)
    max_evidence: int = Field(3, ge=1)


class AttackExtraction(BaseModel):
    """The techniques found, best first; ``head`` (what ran, with local paths) stays out of dumps."""

    techniques: list[TechniqueHit] = Field(default_factory=list)
    head: dict = Field(default_factory=dict, exclude=True)


def run_attack_extraction(text: str, threshold: float | str | None = None, top_k: int | None = None, max_evidence: int = 3,
                          *, engine=None, head: str | Path | None = None, model: str | None = None) -> AttackExtraction:
    """The Workflow protocol's ATT&CK extraction: :func:`extract_attack` with what ran beside the hits."""
    from secfm.inputs import check_text

    check_text(text, "text")
    extractor = _extractor_for(head, model, engine, threshold, top_k, max_evidence)
    return AttackExtraction(techniques=extractor.extract(text), head=extractor.describe())


def _extractor_for(head, model, engine, threshold, top_k, max_evidence) -> AttackExtractor:
    """The extractor of (head, model, engine), built once per process, with these settings."""
    key = (str(head) if head else None, model, id(engine) if engine is not None else None)
    with _DEFAULTS_LOCK:
        extractor = _DEFAULTS.get(key)
        if extractor is None:
            extractor = AttackExtractor.load(head, model, engine)
            _DEFAULTS[key] = extractor
    if threshold is not None or top_k is not None or max_evidence != extractor.max_evidence:
        extractor = AttackExtractor(extractor.head, extractor._engine, threshold=threshold, top_k=top_k,
                                    max_evidence=max_evidence, index=extractor.index, document=extractor.document,
                                    short_head=extractor.short_head)
    return extractor


# ---------------------------------------------------------------------------------------------
# eval predictor with --exclude-sources
# ---------------------------------------------------------------------------------------------
def expand_sources(ids: Iterable[str]) -> set[str]:
    """Excluded ids plus everything that travels with them in the entity split (a group's
    campaigns, a campaign's groups)."""
    from secfm.heads import source_clusters
    from secfm.knowledge import load_attack

    clusters = source_clusters(load_attack())
    ids = {i.upper() for i in ids}
    roots = {clusters.get(i, i) for i in ids}
    return ids | {s for s, root in clusters.items() if root in roots}


class SeenEntitiesError(SecfmError):
    """A head folder (head, retrieval index or document model) saw entities an evaluation holds out."""

    def __init__(self, head: str | Path, overlap: Sequence[str]):
        self.head = str(head)
        self.overlap = list(overlap)
        shown = ", ".join(self.overlap[:6]) + (f" and {len(self.overlap) - 6} more" if len(self.overlap) > 6 else "")
        super().__init__(f"the ATT&CK extractor {head} saw {len(self.overlap)} evaluated entities ({shown})")


@dataclass
class Exclusion:
    """What an evaluation held out of the extractor it used, and how that extractor was found."""

    requested: list[str]  # the entities asked for (the items' URLs, --exclude-sources)
    excluded: list[str]  # with what travels with them in the entity split (a campaign's groups)
    head: str  # the head folder used
    origin: str  # given (--head), shipped, cache (trained earlier without them), trained (now)
    seen: list[str] = field(default_factory=list)  # excluded entities the extractor saw (allowed only with allow_seen)
    contaminated: bool = False
    training_seconds: float | None = None  # origin "trained": how long training the clean extractor took

    def to_dict(self) -> dict:
        return asdict(self)


def clean_extractor_dir(model: str, excluded: Iterable[str]) -> Path:
    """Where the extractor trained without ``excluded`` is cached."""
    from secfm.settings import cache_dir

    key = hashlib.sha256(",".join(sorted(excluded)).encode()).hexdigest()[:12]
    return cache_dir("heads") / f"attack-{model.replace('/', '_')}-excl-{key}"


def load_attack_predictor(exclude_sources: Iterable[str] | str | None = None, *, head: str | Path | None = None,
                          model: str | None = None, engine=None, retrain: bool = True, allow_seen: bool = False,
                          train_limit: int | None = None, threshold: float | str | None = None, top_k: int | None = None,
                          progress=None) -> AttackExtractor:
    """The document extractor ``secfm eval cti-ate --mode head`` scores with, clean of
    ``exclude_sources`` (ids or ``@file``: the evaluated entities) by construction.

    * ``head`` given: used when no part of it (head, retrieval index, document model) saw an
      excluded entity; otherwise :class:`SeenEntitiesError`, unless ``allow_seen`` (the run is
      then marked contaminated);
    * no ``head``: the shipped extractor when it is clean; else the one trained earlier without
      those entities (cached), else (``retrain``) one trained now with ``--exclude-sources`` set
      to them: the sentence head (the shipped head's layers, pooling and kind), the retrieval
      index and the document model, kept in the cache for the next run.

    The returned extractor's ``exclusion`` (:class:`Exclusion`) records what was held out.
    """
    from secfm.heads import parse_sources, seen_overlap, shipped_head_path
    from secfm.registry import default_model_name

    requested = sorted(parse_sources(exclude_sources))
    wanted = sorted(expand_sources(requested)) if requested else []
    if engine is not None and model is None:
        model = engine.model_name
    model = model or default_model_name()
    options = {"threshold": threshold, "top_k": top_k}

    def use(path: Path, origin: str, seen: Sequence[str] = ()) -> AttackExtractor:
        extractor = AttackExtractor.load(path, model, engine, **options)
        extractor.exclusion = Exclusion(requested, wanted, str(path), origin, list(seen), bool(seen))
        return extractor

    if head is not None:
        overlap = seen_overlap(head, wanted)
        if overlap and not allow_seen:
            raise SeenEntitiesError(head, overlap)
        return use(Path(head), "given", overlap)
    shipped = shipped_head_path("attack", model)
    if not (shipped / "head.json").is_file():
        raise SecfmError(f"no ATT&CK extractor is shipped for model '{model}'; pass --head DIR")
    overlap = seen_overlap(shipped, wanted)
    if not overlap:
        return use(shipped, "shipped")
    if allow_seen:
        return use(shipped, "shipped", overlap)
    cached = clean_extractor_dir(model, wanted)
    if (cached / DOCUMENT_FILE).is_file() and not seen_overlap(cached, wanted):
        log.info("using the ATT&CK extractor trained without %d entities from %s", len(wanted), cached)
        return use(cached, "cache")
    if not retrain:
        raise SeenEntitiesError(shipped, overlap)
    import time

    started = time.time()
    train_clean_extractor(shipped, requested, cached, engine=engine, limit=train_limit, progress=progress)
    extractor = use(cached, "trained")
    extractor.exclusion.training_seconds = round(time.time() - started, 1)
    return extractor


def train_clean_extractor(base: str | Path, excluded: Iterable[str], out: Path, engine=None, limit: int | None = None,
                          progress=None) -> Path:
    """Train the sentence head (like ``base``: its base model, adapter, layers, pooling, kind),
    the retrieval index and the document model without ``excluded`` (and what travels with
    them) into ``out`` (written to a temporary folder first, then moved into place)."""
    import shutil

    from secfm.heads import read_manifest
    from secfm.training.attack_docs import build_document_extractor
    from secfm.training.heads import FitConfig, HarnessConfig, run_harness

    m = read_manifest(base)
    excluded = sorted({e.upper() for e in excluded})
    fit = m.training.get("fit", {}) if isinstance(m.training, dict) else {}
    say = progress or (lambda msg: log.info("%s", msg))
    cfg = HarnessConfig(task="attack", model=m.base_model, adapter=m.adapter, layer=m.layer if len(m.layers) == 1 else tuple(m.layers),
                        pooling=m.pooling, kinds=(m.kind,), exclude_sources=tuple(excluded), baseline=False,
                        max_length=m.max_length, limit=limit,
                        fit=FitConfig(**{k: v for k, v in fit.items() if k in FitConfig.__dataclass_fields__}),
                        command=f"secfm eval (clean ATT&CK extractor without {len(excluded)} entities)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    import time

    started = time.time()
    say(f"no clean ATT&CK extractor is cached: training one without the {len(excluded)} evaluated entities into {out} "
        "(1/2 the sentence head, on cached hidden states where present; 2/2 the retrieval index and the document model)")
    run_harness(cfg, tmp, engine=engine, progress=say)
    say(f"1/2 sentence head done ({time.time() - started:.0f} s); 2/2 retrieval index and document model")
    build_document_extractor(tmp, engine=engine, exclude_sources=excluded, progress=say, baseline=False,
                             limit=max(8, limit // 2) if limit else None)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    say(f"clean ATT&CK extractor ready in {time.time() - started:.0f} s: {out} (reused by later runs on the same entities)")
    return out


__all__ = [
    "AttackExtraction", "AttackExtractor", "AttackInput", "DocumentModel", "Evidence", "Exclusion", "ProcedureIndex",
    "Segment", "SeenEntitiesError", "TechniqueHit", "extract_attack", "load_attack_predictor", "run_attack_extraction",
    "split_sentences",
]

"""ATT&CK technique extraction from reports and alerts with the classifier head.

A document is split into sentences (a regex splitter that knows common abbreviations, bullets
and blank lines; sentences longer than a window are cut into overlapping windows at spaces).
Each segment is scored by the head on the hidden state of the head's layer (only the layers up
to it run); a technique's document score is its best segment score, and it is reported when that
passes the head's threshold (per class or global, as tuned on the validation split), with its
evidence: which segments, where in the text, which score. A sub-technique hit also counts its
parent.

``extract_attack(text)`` is the one-call API; :class:`AttackExtractor` keeps the head and the
engine for repeated calls and is also the predictor ``secfm eval cti-ate --mode head`` uses
(``predict(texts) -> [[(technique id, score), ...], ...]``, best first).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

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
    score: float


@dataclass(frozen=True)
class TechniqueHit:
    id: str
    name: str
    tactics: tuple[str, ...]
    score: float  # best segment score (probability)
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
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "est", "ca", "resp", "dept", "approx",
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
# engines shared between predictors (one model load per process)
# ---------------------------------------------------------------------------------------------
def shared_engine(model: str, adapter: str | None = None):
    """The process's one transformers engine for (model, adapter) (``secfm.engines.shared_engine``)."""
    from secfm.engines import shared_engine as engines_shared

    return engines_shared("transformers", model, adapter)


class _HeadRunner:
    """A head plus the engine it runs on; ``scores(texts)`` -> (n, labels)."""

    task = ""

    def __init__(self, head, engine=None, batch_size: int = 16):
        self.head = head
        m = head.manifest
        if engine is not None:
            engine_adapter = getattr(engine, "adapter", None)
            head.check_base(engine.model_name, engine_adapter)
        self._engine = engine
        self.batch_size = batch_size
        self.model = m.base_model

    @property
    def engine(self):
        if self._engine is None:
            self._engine = shared_engine(self.head.manifest.base_model, self.head.adapter_path)
        return self._engine

    def features(self, texts: Sequence[str]) -> np.ndarray:
        from secfm.features import head_features

        return head_features(self.engine, texts, self.head.manifest, batch_size=self.batch_size)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.scores(self.features(texts))

    def describe(self) -> dict:
        m = self.head.manifest
        return {"task": m.task, "head": str(self.head.path), "base_model": m.base_model, "adapter": m.adapter,
                "layer": m.layer, "layers": list(m.layers), "pooling": m.pooling, "kind": m.kind, "labels": len(m.labels),
                "trained_sources": len(m.trained_sources), "excluded_sources": m.excluded_sources}


# ---------------------------------------------------------------------------------------------
# the extractor
# ---------------------------------------------------------------------------------------------
class AttackExtractor(_HeadRunner):
    """Document-level ATT&CK extraction with evidence; also an eval predictor."""

    task = "attack"

    def __init__(self, head, engine=None, threshold: float | str | None = None, top_k: int | None = None,
                 max_evidence: int = 3, window_chars: int = DEFAULT_WINDOW_CHARS, batch_size: int = 16):
        if head.manifest.task != "attack":
            raise SecfmError(f"{head.path} is a {head.manifest.task} head, not an ATT&CK head")
        super().__init__(head, engine, batch_size)
        self.max_evidence = max_evidence
        self.top_k = top_k
        self.window_chars = window_chars
        if threshold is None or isinstance(threshold, str):
            self.thresholds = head.thresholds(threshold)
        else:
            if not 0 < float(threshold) < 1:
                raise SecfmError(f"threshold must be between 0 and 1, not {threshold}")
            self.thresholds = np.full(len(head.labels), float(threshold), dtype=np.float32)
        from secfm.knowledge import load_attack

        self._attack = load_attack()

    @classmethod
    def load(cls, head: str | Path | None = None, model: str | None = None, engine=None, **options) -> AttackExtractor:
        return cls(_load_head("attack", head, model, engine), engine, **options)

    def extract_many(self, texts: Sequence[str]) -> list[list[TechniqueHit]]:
        """Hits for each document; all segments of all documents are scored in one batched pass."""
        docs = [split_sentences(t, self.window_chars) for t in texts]
        flat = [s.text for segs in docs for s in segs]
        S = self.scores(flat)
        out = []
        offset = 0
        for text, segs in zip(texts, docs):
            out.append(self._aggregate(segs, S[offset : offset + len(segs)]))
            offset += len(segs)
        return out

    def extract(self, text: str) -> list[TechniqueHit]:
        return self.extract_many([text])[0]

    def _aggregate(self, segments: list[Segment], S: np.ndarray) -> list[TechniqueHit]:
        if not segments:
            return []
        best = S.max(axis=0)
        passing = np.nonzero(best >= self.thresholds)[0]
        order = sorted(passing, key=lambda j: (-best[j], self.head.labels[j]))
        if self.top_k is not None:
            order = order[: self.top_k]
        hits = []
        for j in order:
            rows = np.argsort(-S[:, j])
            evidence = []
            for r in rows[: self.max_evidence]:
                if S[r, j] < self.thresholds[j] and evidence:
                    break
                seg = segments[r]
                evidence.append(Evidence(seg.index, seg.text, seg.start, seg.end, round(float(S[r, j]), 4)))
            hits.append(self._hit(self.head.labels[j], float(best[j]), tuple(evidence)))
        return hits

    def _hit(self, tid: str, score: float, evidence: tuple[Evidence, ...]) -> TechniqueHit:
        tech = self._attack.techniques_by_id.get(tid)
        if tech is None:  # a label the current knowledge base no longer has
            return TechniqueHit(tid, tid, (), round(score, 4), evidence)
        return TechniqueHit(tid, tech.name, tuple(tech.tactics), round(score, 4), evidence, tech.url, tech.domain)

    # -- the eval predictor protocol ------------------------------------------------------
    def predict(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """For each text, the techniques that pass the thresholds with their scores, best first
        (sub-techniques and their parents both appear; fold to parents as the task needs)."""
        return [[(h.id, h.score) for h in hits] for hits in self.extract_many(texts)]


def _load_head(task: str, head: str | Path | None, model: str | None, engine=None):
    from secfm.heads import load_head, shipped_head_path
    from secfm.registry import default_model_name

    if engine is not None and model is None:
        model = engine.model_name
    if head is None:
        model = model or default_model_name()
        path = shipped_head_path(task, model)
        if not path.is_dir():
            raise SecfmError(
                f"no {task} head is shipped for model '{model}'; train one with "
                f"`secfm train head --task {task} --model {model} --out DIR` and pass it with --head DIR"
            )
        head = path
    loaded = load_head(head)
    if model is not None:
        adapter = getattr(engine, "adapter", None) if engine is not None else loaded.adapter_path
        loaded.check_base(model, adapter)
    return loaded


# one extractor per (head, model) for the module-level helpers
_DEFAULTS: dict[tuple, AttackExtractor] = {}


def extract_attack(text: str, *, head: str | Path | None = None, model: str | None = None, engine=None,
                   threshold: float | str | None = None, top_k: int | None = None, max_evidence: int = 3) -> list[TechniqueHit]:
    """ATT&CK techniques in ``text`` (a report, paragraph or alert), best first, each with its
    id, name, tactics, score and evidence. Uses the head shipped for the default model unless
    ``head`` (a head folder) is given."""
    from secfm.inputs import check_text

    check_text(text, "text")
    key = (str(head) if head else None, model, id(engine) if engine is not None else None)
    extractor = _DEFAULTS.get(key)
    if extractor is None:
        extractor = AttackExtractor.load(head, model, engine)
        _DEFAULTS[key] = extractor
    if threshold is not None or top_k is not None or max_evidence != extractor.max_evidence:
        extractor = AttackExtractor(extractor.head, extractor._engine, threshold=threshold, top_k=top_k,
                                    max_evidence=max_evidence)
    return extractor.extract(text)


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


def retrained_head_dir(model: str, excluded: Iterable[str]) -> Path:
    from secfm.settings import cache_dir

    key = hashlib.sha256(",".join(sorted(excluded)).encode()).hexdigest()[:12]
    return cache_dir("heads") / f"attack-{model.replace('/', '_')}-excl-{key}"


def load_attack_predictor(exclude_sources: Iterable[str] | str | None = None, *, head: str | Path | None = None,
                          model: str | None = None, engine=None, retrain: bool = False,
                          threshold: float | str | None = None, top_k: int | None = None) -> AttackExtractor:
    """The predictor for ``secfm eval cti-ate --mode head``: ``predict(texts)`` gives
    ``[(technique id, score), ...]`` per text, best first.

    ``exclude_sources`` (ids or ``@file``) are entities the evaluation holds out. When the head's
    manifest shows it was trained on any of them, this refuses with a clear error, unless a head
    retrained without them is already in the cache or ``retrain=True`` (which trains one on the
    cached features of the head's layer, with the head's settings, and keeps it in the cache).
    """
    from secfm.heads import parse_sources, read_manifest

    excluded = parse_sources(exclude_sources)
    loaded = _load_head("attack", head, model, engine)
    if excluded:
        wanted = expand_sources(excluded)
        overlap = sorted(wanted & set(loaded.manifest.trained_sources))
        if overlap:
            m = loaded.manifest
            cached = retrained_head_dir(m.base_model, excluded)
            if (cached / "head.json").is_file() and not (wanted & set(read_manifest(cached).trained_sources)):
                log.info("using the head retrained without %s from %s", ",".join(sorted(excluded)), cached)
                return AttackExtractor.load(cached, m.base_model, engine, threshold=threshold, top_k=top_k)
            if not retrain:
                shown = ", ".join(overlap[:8]) + (f" and {len(overlap) - 8} more" if len(overlap) > 8 else "")
                raise SecfmError(
                    f"the ATT&CK head {loaded.path} was trained on excluded sources ({shown}); retrain it without them: "
                    f"`secfm train head --task attack --exclude-sources {','.join(sorted(excluded))} --out DIR` "
                    f"and pass --head DIR (or retrain=True)"
                )
            retrain_without(loaded, excluded, cached)
            return AttackExtractor.load(cached, m.base_model, engine, threshold=threshold, top_k=top_k)
    return AttackExtractor(loaded, engine, threshold=threshold, top_k=top_k)


def retrain_without(head, excluded: set[str], out: Path) -> Path:
    """Train an ATT&CK head like ``head`` (same base, layer, pooling, kind) without ``excluded``."""
    from secfm.training.heads import HarnessConfig, run_harness

    m = head.manifest
    fit = m.training.get("fit", {}) if isinstance(m.training, dict) else {}
    from secfm.training.heads import FitConfig

    cfg = HarnessConfig(task="attack", model=m.base_model, adapter=head.adapter_path,
                        layer=m.layer if len(m.layers) == 1 else tuple(m.layers), pooling=m.pooling,
                        kinds=(m.kind,), exclude_sources=tuple(sorted(excluded)), baseline=False,
                        max_length=m.max_length, fit=FitConfig(**{k: v for k, v in fit.items() if k in FitConfig.__dataclass_fields__}),
                        command=f"load_attack_predictor(exclude_sources={sorted(excluded)}, retrain=True)")
    log.info("retraining the ATT&CK head without %d sources into %s", len(excluded), out)
    run_harness(cfg, out)
    return out


__all__ = [
    "AttackExtractor", "Evidence", "Segment", "TechniqueHit", "extract_attack", "load_attack_predictor",
    "split_sentences",
]

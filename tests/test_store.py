"""The retrieval store: chunking, content-hash ids, idempotent and resumable builds, filters, the
LangChain retriever, user documents, and the same API against a real `chroma run` server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
from test_workflows_support import FIXTURES, small_chunks, small_store  # noqa: F401 - fixture

from secfm.errors import SecfmError
from secfm.workflows import corpus
from secfm.workflows.store import KnowledgeStore, build_kb, chroma_client, where_filter

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_split_text_covers_text_at_boundaries():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 60 for i in range(12))
    spans = corpus.split_text(text, 400, 60)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (a, b), (c, _d) in zip(spans, spans[1:]):
        assert c < b, "chunks overlap"
        assert b - a <= 400
    assert corpus.split_text("   ", 400) == []


def test_chunk_ids_are_content_hashes():
    a = corpus.chunks_for("document", "/x.md", "X", "same text", {"set": "doc:/x.md"})
    b = corpus.chunks_for("document", "/x.md", "X", "same text", {"set": "doc:/x.md"})
    c = corpus.chunks_for("document", "/x.md", "X", "other text", {"set": "doc:/x.md"})
    assert a[0].id == b[0].id != c[0].id
    meta = a[0].metadata
    assert meta["kind"] == "document" and meta["ref_id"] == "/x.md" and meta["position"] == 0 and meta["start"] == 0


def test_attack_and_cwe_chunks_carry_metadata():
    tech = next(c for c in corpus.attack_chunks() if c.metadata["ref_id"] == "T1110.001")
    assert tech.metadata["kind"] == "technique"
    assert "credential-access" in tech.metadata["tactics"] and "Windows" in tech.metadata["platforms"]
    assert "M1032" in tech.metadata["mitigations"]
    assert "Detection" in tech.text or "Mitigation" in tech.text
    mit = next(c for c in corpus.attack_chunks() if c.metadata["ref_id"] == "M1032")
    assert mit.metadata["kind"] == "mitigation" and "Mitigates:" in mit.text
    cwe = next(c for c in corpus.cwe_chunks() if c.metadata["ref_id"] == "CWE-79")
    assert cwe.metadata["kind"] == "cwe" and cwe.text.startswith("CWE-79 ")


def test_documents_md_html_and_pdf_without_pypdf(tmp_path):
    text, title = corpus.read_document(FIXTURES / "policy.html")
    assert title == "Remote access policy" and "var x" not in text and "color:red" not in text
    assert "SSH password authentication is forbidden." in text
    text, title = corpus.read_document(FIXTURES / "runbook.md")
    assert title == "Runbook: brute-force against administrator accounts"
    pdf = tmp_path / "p.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    try:
        import pypdf  # noqa: F401
    except ImportError:
        with pytest.raises(SecfmError, match="pypdf"):
            corpus.read_document(pdf)
    with pytest.raises(SecfmError, match="unsupported document type"):
        corpus.read_document(tmp_path / "x.docx")
    with pytest.raises(SecfmError, match="file not found"):
        corpus.expand_documents([tmp_path / "missing"])


def test_where_filter_validates():
    assert where_filter() is None
    assert where_filter("technique") == {"kind": "technique"}
    f = where_filter(["technique", "mitigation"], "Credential Access", "windows")
    assert f == {"$and": [{"kind": {"$in": ["technique", "mitigation"]}}, {"tactics": {"$contains": "credential-access"}},
                          {"platforms": {"$contains": "Windows"}}]}
    assert where_filter(tactic="TA0005") == {"tactics": {"$contains": "defense-evasion"}}
    for bad in ({"kind": "nope"}, {"tactic": "nope"}, {"platform": "amiga"}):
        with pytest.raises(SecfmError):
            where_filter(**bad)


def test_search_filters_and_langchain_retriever(small_store):
    hits = small_store.search("many failed logons, password guessing", k=3)
    assert hits and hits[0].id.startswith("T1110") and 0 < hits[0].score <= 1
    only_cwe = small_store.search("hard-coded credentials in source", k=3, kind="cwe")
    assert only_cwe and all(h.kind == "cwe" for h in only_cwe) and only_cwe[0].id == "CWE-798"
    defense = small_store.search("clear the event log", k=5, tactic="defense-evasion", platform="Windows")
    assert defense and {h.id for h in defense} <= {"T1070.001"}
    docs = small_store.retriever(k=2, kind="document").invoke("who do I escalate a brute force to")
    assert docs and docs[0].metadata["kind"] == "document" and docs[0].metadata["ref_id"].endswith("runbook.md")
    many = small_store.search_many(["ransomware encrypting files", "powershell encoded command"], k=1, kind="technique")
    assert [m[0].id for m in many] == ["T1486", "T1059.001"]


def test_build_is_idempotent_and_prunes_stale_document_chunks(tmp_path, small_store):
    store = KnowledgeStore(chroma_client(tmp_path / "db"), embeddings=small_store.embeddings)
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\nContain the host first.\n")
    first = build_kb(store, attack=False, cwe=False, documents=[doc])
    assert first.added == 1 and first.total == 1
    again = build_kb(store, attack=False, cwe=False, documents=[doc])
    assert again.added == 0 and again.present == 1 and again.total == 1
    doc.write_text("# Notes\nIsolate the host, then collect memory.\n")
    changed = build_kb(store, attack=False, cwe=False, documents=[tmp_path])
    assert changed.added == 1 and changed.removed == 1 and changed.total == 1
    assert "Isolate" in store.search("isolate", k=1)[0].text


def test_interrupted_build_keeps_finished_batches(tmp_path, small_store):
    chunks = small_chunks()[:6]

    class Failing:
        def __init__(self, real, after):
            self.real, self.after, self.calls = real, after, 0

        def embed_documents(self, texts):
            self.calls += 1
            if self.calls > self.after:
                raise KeyboardInterrupt
            return self.real.embed_documents(texts)

        def embed_query(self, text):
            return self.real.embed_query(text)

    path = tmp_path / "db"
    store = KnowledgeStore(chroma_client(path), embeddings=Failing(small_store.embeddings, after=1))
    with pytest.raises(KeyboardInterrupt):
        store.add_chunks(chunks, batch_size=2)
    assert store.count() == 2
    resumed = KnowledgeStore(chroma_client(path), embeddings=small_store.embeddings)
    assert resumed.add_chunks(chunks, batch_size=2) == 4
    assert resumed.count() == 6 and resumed.existing([c.id for c in chunks]) == {c.id for c in chunks}


def test_default_store_absent_is_reported(tmp_path, monkeypatch):
    from secfm.workflows import store as store_mod

    monkeypatch.setenv("SECFM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SECFM_CHROMA_URL", raising=False)
    store_mod._DEFAULT_STORES.clear()
    assert store_mod.default_store() is None
    assert store_mod.knowledge_status(None).startswith("absent")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    exe = shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma CLI is not installed")
    port = _free_port()
    log = (tmp_path / "chroma.log").open("wb")
    proc = subprocess.Popen([exe, "run", "--path", str(tmp_path / "server-db"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                chroma_client(url=url)
                break
            except SecfmError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"chroma run did not start: {(tmp_path / 'chroma.log').read_text()[-500:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_same_api_against_a_chroma_server(chroma_server, small_store, monkeypatch):
    from secfm.workflows import store as store_mod

    store = KnowledgeStore.open(url=chroma_server, embeddings=small_store.embeddings)
    assert store.location.startswith("http://127.0.0.1")
    chunks = small_chunks()
    assert store.add_chunks(chunks, batch_size=8) == len(chunks)
    assert store.add_chunks(chunks) == 0  # idempotent over HTTP too
    hits = store.search("failed logons against the administrator", k=3, kind="technique", tactic="credential-access", platform="Windows")
    assert hits and all(h.kind == "technique" for h in hits) and hits[0].id.startswith("T1110")
    assert store.retriever(k=1, kind="cwe").invoke("sql injection")[0].metadata["ref_id"] == "CWE-89"
    # SECFM_CHROMA_URL makes the workflows' default store the server's
    monkeypatch.setenv("SECFM_CHROMA_URL", chroma_server)
    store_mod._DEFAULT_STORES.clear()
    default = store_mod.default_store()
    assert default is not None and default.count() == len(chunks)
    store_mod._DEFAULT_STORES.clear()


def test_unreachable_server_is_one_clear_error():
    with pytest.raises(SecfmError, match="cannot reach the Chroma server"):
        chroma_client(url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(SecfmError, match="SECFM_CHROMA_URL"):
        chroma_client(url="ftp://x")

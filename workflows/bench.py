"""`secfm bench workflows`: retrieval latency at two store sizes, triage throughput with and
without the generative step.

* Retrieval at the packaged corpus size: the built knowledge base (ATT&CK + CWE, about 3,900
  chunks; built into a temporary store first when none exists). Each query is timed end to end
  (MiniLM query embedding + Chroma search, k=5) and search-only (precomputed vector).
* Retrieval at ``big_chunks`` (100,000 by default): a temporary embedded store filled with the
  packaged chunks plus jittered copies of their embeddings (Gaussian noise, renormalised): the
  index and metadata work at that size is real, the extra texts are copies.
* Triage throughput: the gold alerts repeated to about 200, deterministic path (rules, technique
  source, retrieval); then ``model_alerts`` alerts with the generative step (constrained JSON).

Results go to ``workflows/results/bench-workflows.json`` through the provenance writer
(:mod:`secfm.provenance`: command, commit, data, cores, load at start and end, wall time); the run is
refused on a machine busier than its cores unless ``allow_busy`` (``--allow-busy``, recorded).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from secfm.evals.bench import latency_stats

QUERIES = (
    "failed logon brute force against administrator", "encoded powershell command launched by office macro",
    "clear windows security event log", "credential dumping lsass memory", "ransomware deleting shadow copies",
    "cloudtrail logging stopped", "aws root account login without mfa", "access key created for another iam user",
    "s3 bucket policy made public", "security group open to 0.0.0.0/0 on port 22", "kerberoasting rc4 service tickets",
    "dns tunnelling long txt queries", "cobalt strike beacon http c2", "web shell on exchange server",
    "scheduled task persistence", "registry run key persistence", "reverse shell bash dev tcp", "cron job downloading script",
    "sudo to root shell", "ssh password guessing", "log4j jndi exploitation", "crypto mining stratum traffic",
    "phishing link credential harvesting", "inbox forwarding rule to external address", "impossible travel sign-in",
    "privileged container escape", "hard-coded password in configuration", "sql injection in web application",
    "path traversal in file download", "cross-site scripting in templates", "missing authentication for critical function",
    "weak tls protocol versions", "directory listing enabled", "unrestricted file upload", "insecure deserialization",
    "exfiltration to cloud storage", "lateral movement with psexec", "remote desktop from internet", "disable antivirus",
    "multi-factor authentication", "network segmentation", "privileged account management", "audit logging retention",
    "user account management", "application isolation and sandboxing", "encrypt sensitive information",
    "restrict file and directory permissions", "update software patching", "filter network traffic", "password policies",
)


def _stats(seconds: list[float]) -> dict:
    return latency_stats(seconds, extra=("mean",), n_key="n")


def _time_queries(store, queries: list[str], vectors: list[list[float]], where=None) -> dict:
    for q in queries[:3]:  # warm-up
        store.search(q, k=5)
    end_to_end, search_only = [], []
    for q, v in zip(queries, vectors):
        t = time.perf_counter()
        store.vectorstore.similarity_search_with_score(q, k=5, filter=where)
        end_to_end.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.query_vectors([v], k=5, where=where)
        search_only.append(time.perf_counter() - t)
    return {"end_to_end": _stats(end_to_end), "search_only": _stats(search_only)}


def run_workflows_bench(
    out: str | Path = "workflows/results/bench-workflows.json",
    big_chunks: int = 100_000,
    n_queries: int = 50,
    with_model: bool = True,
    model_alerts: int = 8,
    model: str | None = None,
    log: Callable[[str], None] = print,
    store=None,
    technique_source=None,
    allow_busy: bool = False,
) -> dict:
    """Run the benchmark and write ``out`` (with its provenance; returned as written); ``store``
    overrides the packaged knowledge base and ``technique_source`` the ATT&CK head (tests pass
    lighter ones)."""
    from secfm.provenance import recording

    with recording(allow_busy=allow_busy) as rec:
        result = _measure(big_chunks, n_queries, with_model, model_alerts, model, log, store, technique_source)
        return rec.write_json(out, result)


def _measure(big_chunks: int, n_queries: int, with_model: bool, model_alerts: int, model: str | None,
             log: Callable[[str], None], store, technique_source) -> dict:
    import numpy as np

    from secfm.workflows.store import KnowledgeStore, build_kb, chroma_client, default_store, get_embeddings

    started = time.time()
    result: dict = {"benchmark": "workflows"}
    queries = list(QUERIES[:n_queries]) if n_queries <= len(QUERIES) else [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(n_queries)]
    embeddings = get_embeddings()
    vectors = embeddings.embed_documents(queries)
    tmp_root = Path(tempfile.mkdtemp(prefix="secfm-bench-"))
    try:
        # -- packaged corpus ---------------------------------------------------------------------
        store = store or default_store()
        built_here = False
        if store is None:
            log("no built knowledge base: building the packaged corpus into a temporary store (minutes)")
            store = KnowledgeStore(chroma_client(tmp_root / "packaged"))
            t = time.time()
            report = build_kb(store)
            built_here = True
            result["packaged_build"] = {"seconds": round(time.time() - t, 1), "chunks": report.total}
        n_packaged = store.count()
        log(f"retrieval at the packaged corpus size ({n_packaged} chunks)")
        packaged = _time_queries(store, queries, vectors)
        packaged["filtered_technique_tactic"] = _time_queries(store, queries[:20], vectors[:20],
                                                              {"$and": [{"kind": "technique"}, {"tactics": {"$contains": "credential-access"}}]})["search_only"]
        result["retrieval_packaged"] = {"chunks": n_packaged, "store": "existing" if not built_here else "built for the bench", **packaged}

        # -- large synthetic store --------------------------------------------------------------
        log(f"filling a temporary store with {big_chunks} chunks (packaged chunks plus jittered copies)")
        got = store.collection.get(include=["embeddings", "metadatas", "documents"])
        base = np.asarray(got["embeddings"], dtype=np.float32)
        metas, docs = got["metadatas"], got["documents"]
        big = KnowledgeStore(chroma_client(tmp_root / "big"), embeddings=embeddings)
        batch = min(5000, big.client.get_max_batch_size())
        rng = np.random.default_rng(0)
        t = time.time()
        added = 0
        while added < big_chunks:
            n = min(batch, big_chunks - added)
            idx = np.arange(added, added + n) % len(base)
            vec = base[idx]
            if added >= len(base):
                vec = vec + rng.normal(0, 0.03, vec.shape).astype(np.float32)
                vec /= np.linalg.norm(vec, axis=1, keepdims=True)
            big.collection.add(ids=[f"syn-{added + i}" for i in range(n)], embeddings=vec.tolist(),
                               metadatas=[metas[j] for j in idx], documents=[docs[j] for j in idx])
            added += n
        insert_s = time.time() - t
        log(f"retrieval at {big.count()} chunks")
        large = _time_queries(big, queries, vectors)
        large["filtered_technique_tactic"] = _time_queries(big, queries[:20], vectors[:20],
                                                           {"$and": [{"kind": "technique"}, {"tactics": {"$contains": "credential-access"}}]})["search_only"]
        result["retrieval_large"] = {"chunks": big.count(), "insert_seconds": round(insert_s, 1),
                                     "insert_chunks_per_s": round(big_chunks / insert_s, 1), **large}
        del big

        # -- triage throughput --------------------------------------------------------------------
        from secfm.workflows.context import DEFAULT, default_engine

        source = DEFAULT if technique_source is None else technique_source
        from secfm.workflows.evaluate import GOLD_DIR
        from secfm.workflows.triage import DEFAULT_MAX_NEW_TOKENS, triage_alerts

        gold = [json.loads(line)["input"] for line in (GOLD_DIR / "alerts.jsonl").read_text().splitlines() if line.strip()]
        alerts = (gold * (200 // len(gold) + 1))[:200]
        log(f"triage without generation: {len(alerts)} alerts")
        triage_alerts(alerts[:5], use_model=False, store=store, technique_source=source)  # warm-up (KB, ATT&CK, head)
        t = time.time()
        res = triage_alerts(alerts, use_model=False, store=store, technique_source=source)
        det_s = time.time() - t
        result["triage_without_generation"] = {"alerts": len(alerts), "seconds": round(det_s, 2), "alerts_per_s": round(len(alerts) / det_s, 2),
                                               "technique_source": res.technique_source, "retrieval": True}
        if with_model:
            engine = default_engine(model)
            sample = gold[:model_alerts]
            log(f"triage with generation: {len(sample)} alerts on {engine.model_name}")
            t = time.time()
            engine.prepare_json()  # one-off per process (lm-format-enforcer's vocabulary tables on transformers)
            setup_s = time.time() - t
            t = time.time()
            res = triage_alerts(sample, use_model=True, engine=engine, store=store, technique_source=source)
            gen_s = time.time() - t
            result["triage_with_generation"] = {"alerts": len(sample), "seconds": round(gen_s, 2), "alerts_per_s": round(len(sample) / gen_s, 3),
                                                "model": engine.model_name, "engine": engine.kind, "method": res.model.method,
                                                "model_status": res.model.status, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
                                                "constrained_decoding_setup_s": round(setup_s, 1)}
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    result["total_seconds"] = round(time.time() - started, 1)
    result["summary"] = _summary(result)
    return result


def _summary(result: dict) -> dict:
    """The headline figures (what the results index shows)."""
    packaged, large = result["retrieval_packaged"], result["retrieval_large"]
    summary = {f"retrieval p95 ms at {packaged['chunks']} chunks": packaged["end_to_end"]["p95_ms"],
               f"retrieval p95 ms at {large['chunks']} chunks": large["end_to_end"]["p95_ms"],
               "triage alerts/s without generation": result["triage_without_generation"]["alerts_per_s"]}
    if "triage_with_generation" in result:
        summary["triage alerts/s with generation"] = result["triage_with_generation"]["alerts_per_s"]
    return summary

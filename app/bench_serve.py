"""`secfm bench serve`: throughput, time to first token and latency of the OpenAI-compatible
server under concurrency (1, 8, 32 requests in flight by default).

Every request streams (``stream_options.include_usage`` for the token count), so each gives its
time to first token and its latency; a level sends ``max(concurrency, min_requests)`` requests
with ``concurrency`` of them in flight at a time. Aggregate tokens/s is all completion tokens of
the level over its wall time. Results are written through secfm.provenance (command, commit,
machine load at start and end; refused on a busy machine unless ``allow_busy``).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from secfm.evals.bench import latency_stats

PROMPTS = [
    "Summarize the risk of CVE-2021-44228 in one sentence:",
    "List two detections for PowerShell abuse:",
    "Explain lateral movement with PsExec:",
    "What does MITRE ATT&CK T1003 describe?",
]


def _one_request(client, model: str, i: int, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token, latency, completion tokens) of one streamed completion."""
    started = time.perf_counter()
    first = None
    tokens = 0
    stream = client.completions.create(model=model, prompt=PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text and first is None:
            first = time.perf_counter() - started
        if getattr(chunk, "usage", None):
            tokens = chunk.usage.completion_tokens
    latency = time.perf_counter() - started
    return (first if first is not None else latency), latency, tokens


def _one_level(client, model: str, concurrency: int, max_tokens: int, min_requests: int = 8) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda i: _one_request(client, model, i, max_tokens), range(max(concurrency, min_requests))))
    wall = time.perf_counter() - started
    ttft = [r[0] for r in results]
    latencies = [r[1] for r in results]
    tokens = sum(r[2] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        **latency_stats(ttft, unit="s", digits=3, n_key=None, prefix="ttft_"),
        **latency_stats(latencies, unit="s", digits=3, n_key=None, prefix="latency_"),
    }


def run_serve_bench(model: str, endpoint: str | None, levels: list[int], max_tokens: int, out: Path,
                    min_requests: int = 8, allow_busy: bool = False) -> dict:
    import openai

    from secfm.provenance import recording
    from secfm.serving import start_local_server, stop_server

    with recording(allow_busy=allow_busy) as rec:
        proc = None
        served = model
        if endpoint is None:
            proc, endpoint, served = start_local_server(model)
        try:
            client = openai.OpenAI(base_url=endpoint, api_key="EMPTY", timeout=1800, max_retries=0)
            client.completions.create(model=served, prompt=PROMPTS[0], max_tokens=2, temperature=0)  # warm-up
            rows = [_one_level(client, served, n, max_tokens, min_requests) for n in levels]
        finally:
            if proc is not None:
                stop_server(proc)
        base = rows[0]["tokens_per_s"] if rows and rows[0]["concurrency"] == 1 else None
        result = {
            "benchmark": "serve",
            "model": model,
            "endpoint": endpoint if proc is None else "secfm serve (started by the benchmark)",
            "server": "secfm serve: secfm.serving_api over the continuously batched transformers engine (CPU)"
                      if proc is not None else "external",
            "min_requests_per_level": min_requests,
            "max_tokens": max_tokens,
            "levels": rows,
            "speedup_over_one": {str(r["concurrency"]): round(r["tokens_per_s"] / base, 2) for r in rows} if base else None,
        }
        return rec.write_json(out, result)

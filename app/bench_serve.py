"""`secfm bench serve`: throughput and latency of the OpenAI-compatible server under concurrency."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from secfm.stats import percentile

PROMPTS = [
    "Summarize the risk of CVE-2021-44228 in one sentence:",
    "List two detections for PowerShell abuse:",
    "Explain lateral movement with PsExec:",
    "What does MITRE ATT&CK T1003 describe?",
]


def _one_level(client, model: str, concurrency: int, max_tokens: int, min_requests: int = 8) -> dict:
    """``max(concurrency, min_requests)`` requests, ``concurrency`` of them in flight at a time."""
    def call(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        resp = client.completions.create(model=model, prompt=PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - started, resp.usage.completion_tokens if resp.usage else max_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(call, range(max(concurrency, min_requests))))
    wall = time.perf_counter() - started
    latencies = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3),
    }


def run_serve_bench(model: str, endpoint: str | None, levels: list[int], max_tokens: int, out: Path,
                    min_requests: int = 8) -> dict:
    import openai

    from secfm.serving import start_local_server, stop_server

    proc = None
    served = model
    if endpoint is None:
        proc, endpoint, served = start_local_server(model)
    try:
        client = openai.OpenAI(base_url=endpoint, api_key="EMPTY", timeout=1800, max_retries=0)
        client.completions.create(model=served, prompt=PROMPTS[0], max_tokens=2, temperature=0)  # warm-up
        load_start = os.getloadavg()
        rows = [_one_level(client, served, n, max_tokens, min_requests) for n in levels]
        load_end = os.getloadavg()
    finally:
        if proc is not None:
            stop_server(proc)
    import platform

    result = {
        "benchmark": "serve",
        "model": model,
        "endpoint": endpoint if proc is None else "secfm serve (started by the benchmark)",
        "server": "transformers serve (CPU)" if proc is not None else "external",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "min_requests_per_level": min_requests,
        "max_tokens": max_tokens,
        "levels": rows,
        "command": f"secfm bench serve --model {model} " + " ".join(f"--concurrency {n}" for n in levels) + f" --max-tokens {max_tokens}"
                   + f" --requests {min_requests}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result

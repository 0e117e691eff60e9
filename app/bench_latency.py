"""`secfm bench latency`: one request's latency, like for like, along the serving stack.

The same prompt and the same greedy completion (``max_tokens`` new tokens, 32 by default) through:

1. the model's plain transformers ``generate`` on the engine's weights (no scheduler);
2. the engine's continuous-batching scheduler at batch 1 (``engine.submit``);
3. ``secfm serve`` (the OpenAI-compatible server over that engine) at 1 concurrent request, over
   HTTP, not streamed and streamed (time to first token);
4. ``transformers serve`` (transformers' own server, continuous batching off) at batch 1 over its
   ``/v1/completions``, where it starts here.

Each is run ``repeats`` times after one warm-up call; the figure is the median. The scheduler's
overhead is its median over plain generate's. Results go through secfm.provenance (command,
commit, machine load at start and end; refused on a busy machine unless ``allow_busy``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from secfm.app.bench_serve import PROMPTS

DEFAULT_OUT = Path("app/results/bench-latency.json")


def _timed(call: Callable[[], tuple[str, int]], repeats: int) -> dict:
    """Median and spread of ``repeats`` timed calls after one untimed warm-up; the text and tokens."""
    return _interleaved({"call": call}, repeats)["call"]


def _interleaved(calls: dict[str, Callable[[], tuple[str, int]]], repeats: int) -> dict[str, dict]:
    """:func:`_timed` for several paths, their runs taken in turn (a drift in the machine's speed
    touches each path alike)."""
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    last: dict[str, tuple[str, int]] = {}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            last[name] = call()
            times[name].append(time.perf_counter() - t0)
    rows = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        text, tokens = last[name]
        rows[name] = {"median_s": round(median, 3), "min_s": round(min(ts), 3), "max_s": round(max(ts), 3),
                      "runs_s": [round(t, 3) for t in ts], "completion_tokens": tokens,
                      "tokens_per_s": round(tokens / median, 2) if median else None, "text": text}
    return rows


def _http_completion(client, model: str, prompt: str, max_tokens: int) -> tuple[str, int]:
    r = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
    return r.choices[0].text, int(r.usage.completion_tokens) if r.usage else 0


def _http_streamed(client, model: str, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first, text = None, []
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    tokens = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            first = first if first is not None else time.perf_counter() - t0
            text.append(chunk.choices[0].text)
        if getattr(chunk, "usage", None):
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - t0
    return (first if first is not None else total), total, tokens


def _secfm_serve(model: str, prompt: str, max_tokens: int, repeats: int) -> dict:
    import openai

    from secfm.serving import start_local_server, stop_server

    proc, endpoint, served = start_local_server(model)
    try:
        client = openai.OpenAI(base_url=endpoint, api_key="EMPTY", timeout=600, max_retries=0)
        row = _timed(lambda: _http_completion(client, served, prompt, max_tokens), repeats)
        streamed = [_http_streamed(client, served, prompt, max_tokens) for _ in range(repeats)]
        row["streamed_ttft_median_s"] = round(statistics.median(s[0] for s in streamed), 3)
        row["streamed_median_s"] = round(statistics.median(s[1] for s in streamed), 3)
        return row
    finally:
        stop_server(proc)


def _transformers_serve(weights_dir: Path, prompt: str, max_tokens: int, repeats: int) -> dict:
    """``transformers serve`` on the same weights (CPU, float32, continuous batching off)."""
    import os
    import tempfile

    import openai

    from secfm.serving import free_port, stop_server, wait_until_ready

    port = free_port()
    log = tempfile.TemporaryFile()
    # transformers' own CLI from this interpreter (its console script need not be on PATH)
    proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(weights_dir),
                             "--port", str(port), "--host", "127.0.0.1", "--device", "cpu", "--dtype", "float32",
                             "--no-continuous-batching"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        try:
            wait_until_ready(base, str(weights_dir), proc=proc)
        except Exception as exc:  # noqa: BLE001 - report why it did not run, the rest stands
            log.seek(0)
            err = log.read().decode(errors="replace")[-400:]
            return {"ran": False, "why": f"{type(exc).__name__}: {exc} {err}".strip()[:600]}
        client = openai.OpenAI(base_url=base, api_key="EMPTY", timeout=600, max_retries=0)
        try:
            row = _timed(lambda: _http_completion(client, str(weights_dir), prompt, max_tokens), repeats)
        except Exception as exc:  # noqa: BLE001
            return {"ran": False, "why": f"{type(exc).__name__}: {str(exc)[:400]}"}
        row["ran"] = True
        return row
    finally:
        log.close()
        stop_server(proc)


def run_latency_bench(model: str = "gemma-3-270m", out: Path | str = DEFAULT_OUT, *, max_tokens: int = 32,
                      repeats: int = 5, prompt: str = PROMPTS[0], allow_busy: bool = False,
                      servers: bool = True) -> dict:
    from secfm.engines import SamplingParams, shared_engine
    from secfm.models import resolve
    from secfm.provenance import recording

    with recording(allow_busy=allow_busy) as rec:
        engine = shared_engine("transformers", model=model)
        params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0)

        def scheduled() -> tuple[str, int]:
            handle = engine.submit(prompt, params)
            text = handle.result()
            return text, handle.completion_tokens

        rows = _interleaved({"plain_generate": lambda: engine.reference_generate(prompt, max_tokens),
                             "scheduler_batch_1": scheduled}, repeats)
        weights_dir = resolve(model).weights_dir  # the files transformers serve loads
        if servers:
            rows["secfm_serve_1_concurrent"] = _secfm_serve(model, prompt, max_tokens, repeats)
            rows["transformers_serve_batch_1"] = _transformers_serve(weights_dir, prompt, max_tokens, repeats)
        plain = rows["plain_generate"]["median_s"]
        over = round(rows["scheduler_batch_1"]["median_s"] / plain, 3) if plain else None
        headline = {f"{name}_median_s": row["median_s"] for name, row in rows.items() if "median_s" in row}
        headline["scheduler_over_plain"] = over
        result = {
            "benchmark": "latency",
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "decoding": "greedy (temperature 0), the model's end-of-sequence ids end it",
            "repeats": repeats,
            "rows": rows,
            "scheduler_over_plain": over,
            "headline": headline,
            "same_text": len({r["text"] for r in rows.values() if r.get("text") is not None}) == 1,
        }
        return rec.write_json(out, result)


__all__ = ["DEFAULT_OUT", "run_latency_bench"]

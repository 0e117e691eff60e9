"""Commands that reach people: `secfm serve`, `secfm api`, `secfm app`, and their benchmarks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_options import AllowBusyOpt, EndpointOpt, ModelOpt, QuantizationOpt
from secfm.errors import SecfmError
from secfm.evals.bench import bench_group

HostOpt = Annotated[str, typer.Option("--host", help="Address to bind; beyond loopback an API key / auth is required.")]


def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name or a path.")] = "gemma-3-270m",
    adapter: Annotated[Optional[list[str]], typer.Option("--adapter", help="PEFT adapter folder (repeatable on vLLM).")] = None,
    tensor_parallel_size: Annotated[int, typer.Option("--tensor-parallel-size", min=1, max=8, help="GPUs to shard over (vLLM).")] = 1,
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", min=128, help="Longest prompt+completion in tokens.")] = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    backend: Annotated[Optional[str], typer.Option("--backend", help="vllm or transformers (default: vllm when a GPU and vllm are present).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Required beyond loopback (or set SECFM_API_KEY); clients send it as a Bearer token.")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, max=512, help="CPU server: requests decoded together (continuous batching, default 32).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command and the memory estimate per GPU; start nothing.")] = False,
) -> None:
    """Serve a model over the OpenAI-compatible API: vLLM on a GPU, secfm's continuously batched server on a CPU.

    The server is a child of this command, started from the current interpreter (no activated
    virtual environment needed); SIGTERM and SIGINT are passed on to it and it never outlives
    this command.
    """
    from secfm.serving import plan_serve, run_child

    plan = plan_serve(model, adapter or [], tensor_parallel_size, max_model_len, host, port, backend, api_key,
                      merge=not dry_run, max_batch=max_batch)
    if plan.memory is not None:
        print(f"memory estimate {plan.memory.describe()}", file=sys.stderr)
    if dry_run:
        print(plan.shell_command())
        return
    print(f"serving {plan.served_model} ({plan.backend}) at {plan.base_url}", file=sys.stderr)
    code = run_child(plan)
    if code:
        raise SecfmError(f"the {plan.backend} server exited with status {code}")


def bench_serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to serve.")] = "gemma-3-270m",
    endpoint: EndpointOpt = None,
    concurrency: Annotated[Optional[list[int]], typer.Option("--concurrency", help="Concurrent requests (repeatable).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 32,
    requests: Annotated[int, typer.Option("--requests", min=1, help="Requests per level at least (more when the concurrency is higher).")] = 8,
    out: Annotated[Path, typer.Option("--out", help="JSON results.")] = Path("app/results/bench-serve.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Aggregate tokens/s, time to first token and latency p50/p95 at 1, 8 and 32 concurrent requests against `secfm serve`."""
    from secfm.app.bench_serve import run_serve_bench

    result = run_serve_bench(model=model, endpoint=endpoint, levels=concurrency or [1, 8, 32], max_tokens=max_tokens, out=out,
                             min_requests=requests, allow_busy=allow_busy)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))


def bench_app_command(
    model: ModelOpt = None,
    endpoint: EndpointOpt = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Measure an app that is already running at this URL.")] = None,
    app_pid: Annotated[Optional[int], typer.Option("--app-pid", help="With --url: the app's process id, whose CPU use is recorded.")] = None,
    server_pid: Annotated[Optional[int], typer.Option("--server-pid", help="With --endpoint: the model server's process id, whose CPU use is recorded.")] = None,
    separate: Annotated[bool, typer.Option("--separate/--in-process", help="Start the app in a process of its own (not sharing the benchmark's interpreter) or in this one.")] = False,
    sessions: Annotated[int, typer.Option("--sessions", min=1, max=200, help="Concurrent analyst sessions.")] = 20,
    turns: Annotated[int, typer.Option("--turns", min=1, max=10, help="Chat turns per session.")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 16,
    quantization: QuantizationOpt = None,
    out: Annotated[Path, typer.Option("--out", help="JSON results.")] = Path("app/results/bench-app.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """20 concurrent analyst chat sessions over Gradio's HTTP protocol: time to first token p50/p95, answers isolated per session.

    The app runs in this process (default), in a process of its own (--separate), or is one
    already running (--url, with --app-pid to record its CPU use). The results record each
    process's CPU use while the sessions ran. Each session is a light httpx client of its own
    (asyncio, one thread for all), and a turn whose model phrasing failed is listed with why.
    """
    from secfm.app.bench_app import bench_app, bench_separate_app, run_app_bench
    from secfm.engines import check_quantization
    from secfm.provenance import recording

    if url and separate:
        raise SecfmError("--url measures a running app; --separate starts one: pass one of them")
    if url and quantization:
        raise SecfmError("--url measures a running app as it was started: pass --quantization to its `secfm app`")
    check_quantization(endpoint=endpoint, quantization=quantization)
    with recording(allow_busy=allow_busy) as rec:
        if url:
            result = run_app_bench(url, sessions, None, turns=turns, max_new_tokens=max_new_tokens, app_pid=app_pid,
                                   server_pid=server_pid)
        elif separate:
            result = bench_separate_app(model, endpoint, sessions, None, turns=turns, max_new_tokens=max_new_tokens,
                                        server_pid=server_pid, quantization=quantization)
        else:
            result = bench_app(model, endpoint, sessions, None, turns=turns, max_new_tokens=max_new_tokens,
                               quantization=quantization)
        result = rec.write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_session", "provenance")}, indent=2))


def bench_latency_command(
    model: ModelOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Greedy new tokens per request.")] = 32,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed runs of each path (the median is reported).")] = 5,
    servers: Annotated[bool, typer.Option("--servers/--no-servers", help="Also time `secfm serve` and `transformers serve`.")] = True,
    out: Annotated[Path, typer.Option("--out", help="JSON results.")] = Path("app/results/bench-latency.json"),
    allow_busy: AllowBusyOpt = False,
) -> None:
    """One request's latency, like for like: plain generate, the engine's scheduler at batch 1, `secfm serve` and `transformers serve` at 1 concurrent."""
    from secfm.app.bench_latency import run_latency_bench

    result = run_latency_bench(model or "gemma-3-270m", out, max_tokens=max_tokens, repeats=repeats, allow_busy=allow_busy,
                               servers=servers)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))


def api(
    model: ModelOpt = None,
    endpoint: EndpointOpt = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8100,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Required beyond loopback (or set SECFM_API_KEY).")] = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1024, help="Largest request body accepted.")] = 1_000_000,
) -> None:
    """HTTP API for heads and workflows: /v1/attack/extract, /v1/cwe/map, /v1/triage, /v1/summarize, /v1/review-config, /v1/chat."""
    import uvicorn

    from secfm.app.api import ApiSettings, create_api
    from secfm.serving import is_loopback

    key = api_key or os.environ.get("SECFM_API_KEY")
    if not is_loopback(host) and not key:
        where = repr(host) + " (every interface)" if host in ("", "0.0.0.0", "::") else host
        raise SecfmError(f"binding to {where} exposes the API beyond this machine: set SECFM_API_KEY or pass --api-key")
    settings = ApiSettings(model=model, endpoint=endpoint, api_key=key, max_body_bytes=max_body_bytes)
    print(f"secfm api at http://{host}:{port} (OpenAPI schema at /openapi.json)", file=sys.stderr)
    uvicorn.run(create_api(settings), host=host, port=port, log_level="warning")


def app_command(
    model: ModelOpt = None,
    endpoint: EndpointOpt = None,
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="PEFT adapter folder on top of --model.")] = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 7860,
    auth: Annotated[Optional[str], typer.Option("--auth", help="USER:PASS; required beyond loopback.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests handled at once across all sessions (the engine batches their model calls).")] = 32,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1024, help="Largest request body accepted (counted as it streams in; uploads included).")] = 8 * 2**20,
    quantization: QuantizationOpt = None,
) -> None:
    """The analysts' app: streaming chat, triage, summaries, config review, ATT&CK extraction.

    With SECFM_APP_EXIT_WHEN_READY=1 the app starts, checks that its page answers, and exits
    (CI runs the README's first command this way).
    """
    from secfm.app.ui import launch_app, parse_auth

    smoke = os.environ.get("SECFM_APP_EXIT_WHEN_READY") == "1"
    demo = launch_app(model=model, endpoint=endpoint, adapter=adapter, host=host, port=port, auth=parse_auth(auth),
                      concurrency=concurrency, max_body_bytes=max_body_bytes, quantization=quantization, block=not smoke)
    if smoke:
        import httpx

        url = demo.local_url
        status = httpx.get(url, timeout=60).status_code
        demo.close()
        if status != 200:
            raise SecfmError(f"the app at {url} answered HTTP {status}")
        print(f"secfm app was ready at {url} (HTTP {status}); exiting as SECFM_APP_EXIT_WHEN_READY asks")


def register(app: typer.Typer) -> None:
    app.command("app")(app_command)
    app.command("serve")(serve)
    app.command("api")(api)
    bench = bench_group(app)
    bench.command("serve")(bench_serve)
    bench.command("app")(bench_app_command)
    bench.command("latency")(bench_latency_command)

"""Commands that reach people: `secfm serve`, `secfm api`, `secfm app`, and their benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_groups import command_group
from secfm.errors import SecfmError

HostOpt = Annotated[str, typer.Option("--host", help="Address to bind; beyond loopback an API key / auth is required.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Registered model name or a path.")]
EndpointOpt = Annotated[Optional[str], typer.Option("--endpoint", help="Use a model behind this OpenAI-compatible server instead.")]


def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name or a path.")] = "gemma-3-270m",
    adapter: Annotated[Optional[list[str]], typer.Option("--adapter", help="PEFT adapter folder (repeatable on vLLM).")] = None,
    tensor_parallel_size: Annotated[int, typer.Option("--tensor-parallel-size", min=1, max=8, help="GPUs to shard over (vLLM).")] = 1,
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", min=128, help="Longest prompt+completion in tokens.")] = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    backend: Annotated[Optional[str], typer.Option("--backend", help="vllm or transformers (default: vllm when a GPU and vllm are present).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Required beyond loopback (or set SECFM_API_KEY).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command and the memory estimate per GPU; start nothing.")] = False,
) -> None:
    """Serve a model over the OpenAI-compatible API: vLLM on a GPU, transformers serve on a CPU."""
    from secfm.serving import plan_serve

    if backend not in (None, "vllm", "transformers"):
        raise SecfmError(f"unknown backend '{backend}': choose vllm or transformers")
    plan = plan_serve(model, adapter or [], tensor_parallel_size, max_model_len, host, port, backend, api_key, merge=not dry_run)
    if plan.memory is not None:
        print(f"memory estimate {plan.memory.describe()}", file=sys.stderr)
    if dry_run:
        print(plan.shell_command())
        return
    Path(plan.env.get("HF_HUB_CACHE", "")).mkdir(parents=True, exist_ok=True) if plan.env.get("HF_HUB_CACHE") else None
    print(f"serving {plan.served_model} ({plan.backend}) at {plan.base_url}", file=sys.stderr)
    proc = subprocess.Popen(plan.argv, cwd=plan.cwd, env={**os.environ, **plan.env})
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    if code:
        raise SecfmError(f"{plan.backend} server exited with status {code}")


def bench_serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to serve.")] = "gemma-3-270m",
    endpoint: EndpointOpt = None,
    concurrency: Annotated[Optional[list[int]], typer.Option("--concurrency", help="Concurrent requests (repeatable).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 32,
    out: Annotated[Path, typer.Option("--out", help="JSON results.")] = Path("app/results/bench-serve.json"),
) -> None:
    """Tokens/s and p50/p95 latency at 1, 8 and 32 concurrent requests against `secfm serve`."""
    from secfm.app.bench_serve import run_serve_bench

    result = run_serve_bench(model=model, endpoint=endpoint, levels=concurrency or [1, 8, 32], max_tokens=max_tokens, out=out)
    print(json.dumps(result, indent=2))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    bench = command_group(app, "bench", "Performance benchmarks; each writes its results to a file.")
    bench.command("serve")(bench_serve)

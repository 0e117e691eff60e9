"""`secfm serve`: one OpenAI-compatible protocol everywhere.

On a GPU the server is vLLM's (its OpenAI server), adapters as named LoRA models; on a CPU it is
this project's own (``secfm.serving_api``) over the continuously batched transformers engine.
Either runs as a child of `secfm serve` started from the current interpreter (``sys.executable
-m ...``, so it works outside an activated virtual environment); :func:`run_child` forwards
SIGTERM and SIGINT to it and the kernel ends it if the parent dies (``PR_SET_PDEATHSIG``), so it
never outlives `secfm serve`. This module plans the command, estimates memory and supervises.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from secfm.errors import SecfmError
from secfm.models import ResolvedModel, resolve
from secfm.registry import PACKAGE_DIR, Architecture

Backend = Literal["vllm", "transformers"]
GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory for serving: weights plus the KV cache of ``max_model_len`` tokens x ``sequences``."""

    weights_gib: float
    kv_cache_gib: float
    kv_bytes_per_token: int
    tensor_parallel_size: int
    max_model_len: int
    sequences: int

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib

    def describe(self) -> str:
        return (
            f"per GPU (TP={self.tensor_parallel_size}): weights {self.weights_gib:.2f} GiB + KV cache "
            f"{self.kv_cache_gib:.2f} GiB ({self.sequences} x {self.max_model_len} tokens, "
            f"{self.kv_bytes_per_token / 1024:.0f} KiB/token) = {self.total_gib:.2f} GiB"
        )


def estimate_serving_memory(
    arch: Architecture, max_model_len: int, tensor_parallel_size: int = 1, sequences: int = 1, bytes_per_param: int = 2
) -> MemoryEstimate:
    """Weights split across TP ranks; KV heads split too (replicated when fewer heads than ranks)."""
    tp = tensor_parallel_size
    kv_heads_per_rank = max(1, arch.kv_heads // tp)
    kv_per_token = 2 * arch.layers * kv_heads_per_rank * arch.head_dim * bytes_per_param  # K and V
    return MemoryEstimate(
        weights_gib=arch.params * bytes_per_param / tp / GIB,
        kv_cache_gib=kv_per_token * max_model_len * sequences / GIB,
        kv_bytes_per_token=kv_per_token,
        tensor_parallel_size=tp,
        max_model_len=max_model_len,
        sequences=sequences,
    )


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost). An empty host
    binds every interface, so it is not loopback."""
    host = (host or "").strip().strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def detect_backend() -> Backend:
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "transformers"


@dataclass
class ServePlan:
    backend: Backend
    argv: list[str]
    cwd: Path
    served_model: str
    host: str
    port: int
    api_key: str | None = None
    lora_names: list[str] = field(default_factory=list)
    memory: MemoryEstimate | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "localhost", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def shell_command(self) -> str:
        import shlex

        key = " ".join(f"{k}=***" for k in self.env if k.endswith("API_KEY"))
        return f"cd {shlex.quote(str(self.cwd))} && " + (key + " " if key else "") + " ".join(shlex.quote(a) for a in self.argv)


def _chat_template_file(resolved: ResolvedModel) -> Path | None:
    if not resolved.spec or not resolved.spec.chat_template:
        return None
    return PACKAGE_DIR / "chat_templates" / resolved.spec.chat_template


def _resolve_for_plan(model: str, dry_run: bool) -> ResolvedModel:
    """Resolve weights; a dry run of a hub model that is not here plans with its hub id."""
    from secfm.registry import get_spec

    try:
        return resolve(model, auto_pull=not dry_run)
    except SecfmError:
        spec = get_spec(model)
        if not dry_run or spec is None:
            raise
        source = spec.source.repo or model
        return ResolvedModel(spec.name, Path(source), spec.adapter_path(), spec.chat_template_text(), spec.context_length, spec)


def plan_serve(
    model: str,
    adapters: list[str] | None = None,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: Backend | None = None,
    api_key: str | None = None,
    merge: bool = True,
    max_batch: int | None = None,
) -> ServePlan:
    """Decide what to run. ``merge=False`` skips building the merged folder (for --dry-run)."""
    adapters = adapters or []
    if backend is not None and backend not in get_args(Backend):
        raise SecfmError(f"unknown backend '{backend}': choose {' or '.join(get_args(Backend))}")
    backend = backend or detect_backend()
    api_key = api_key or os.environ.get("SECFM_API_KEY")
    if not is_loopback(host) and not api_key:
        raise SecfmError(f"binding to {host} exposes the model beyond this machine: set SECFM_API_KEY or pass --api-key")
    if tensor_parallel_size < 1:
        raise SecfmError("--tensor-parallel-size must be at least 1")
    resolved = _resolve_for_plan(model, dry_run=not merge)
    served = resolved.spec.name if resolved.spec and resolved.spec.name == model else Path(model).name
    length = max_model_len or min(resolved.context_length, 8192)
    memory = estimate_serving_memory(resolved.spec.arch, length, tensor_parallel_size) if resolved.spec and resolved.spec.arch else None
    if backend == "vllm":
        from secfm.engines.vllm_engine import NGRAM_PROCESSOR, lora_rank_limit

        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(resolved.weights_dir),
                "--served-model-name", served, "--tensor-parallel-size", str(tensor_parallel_size),
                "--max-model-len", str(length), "--host", host, "--port", str(port),
                "--logits-processors", NGRAM_PROCESSOR]
        template = _chat_template_file(resolved)
        if template is not None:
            argv += ["--chat-template", str(template)]
        all_adapters = ([str(resolved.adapter_dir)] if resolved.adapter_dir else []) + adapters
        lora_names = []
        if all_adapters:
            modules = []
            for path in all_adapters:
                name = Path(path).name
                lora_names.append(name)
                modules.append(f"{name}={path}")
            argv += ["--enable-lora", "--max-lora-rank", str(lora_rank_limit(all_adapters)), "--lora-modules", *modules]
        env = {"VLLM_API_KEY": api_key} if api_key else {}
        return ServePlan("vllm", argv, Path.cwd(), served, host, port, api_key, lora_names, memory, env)
    # CPU: this project's server over the continuously batched transformers engine (adapter applied with PEFT)
    if len(adapters) > 1 or (adapters and resolved.adapter_dir):
        raise SecfmError("on a CPU `secfm serve` serves one adapter; vLLM on a GPU serves several")
    argv = [sys.executable, "-m", "secfm.serving_api", "--model", model, "--served-model-name", served,
            "--host", host, "--port", str(port)]
    if adapters:
        if merge:
            resolve(model, adapter=adapters[0], auto_pull=True)  # a bad adapter fails here, with one line
        argv += ["--adapter", adapters[0]]
    if max_batch:
        argv += ["--max-batch", str(max_batch)]
    env = {"HF_HUB_OFFLINE": "1"}
    if api_key:
        env["SECFM_API_KEY"] = api_key
    return ServePlan("transformers", argv, Path.cwd(), served, host, port, api_key, [], memory, env)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGTERM this process when its parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def run_child(plan: ServePlan) -> int:
    """Run the planned server as a child and supervise it: SIGTERM and SIGINT are forwarded,
    the child dies with this process, and this returns the child's exit status."""
    env = {**os.environ, **plan.env}
    proc = subprocess.Popen(plan.argv, cwd=plan.cwd, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    forwarded: list[int] = []

    def forward(signum, _frame):
        forwarded.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = proc.wait(timeout=60 if forwarded else None)
                break
            except subprocess.TimeoutExpired:  # asked to stop a minute ago and still running
                proc.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if forwarded and code in (0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT):
        return 0
    return code


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(base_url: str, model: str, timeout: float = 300.0, proc=None, api_key: str | None = None) -> None:
    """Poll the server with a one-token completion until it answers (or fail clearly)."""
    import time

    import httpx

    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SecfmError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            r = httpx.post(f"{base_url}/completions", json={"model": model, "prompt": "ok", "max_tokens": 1},
                           headers=headers, timeout=60)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise SecfmError(f"the server at {base_url} was not ready after {timeout:.0f}s ({last})")


def start_local_server(model: str = "gemma-3-270m", port: int | None = None, log_path: Path | None = None,
                       argv0: list[str] | None = None, env: dict | None = None):
    """Start `secfm serve` on loopback in a child process; returns (process, base_url, served_model).
    ``argv0`` replaces ``[python, -m, secfm.cli]`` (e.g. the venv's ``secfm`` script run without
    the venv activated); ``env`` replaces the environment."""
    port = port or free_port()
    plan = plan_serve(model, port=port, merge=False)
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([*(argv0 or [sys.executable, "-m", "secfm.cli"]), "serve", "--model", model, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_until_ready(plan.base_url, plan.served_model, proc=proc)
    except BaseException:
        stop_server(proc)
        raise
    return proc, plan.base_url, plan.served_model


def stop_server(proc) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, PermissionError):
            pass
        except Exception:  # noqa: BLE001 - last resort
            os.killpg(proc.pid, signal.SIGKILL)

"""`secfm serve`: one OpenAI-compatible protocol everywhere.

On a GPU the server is vLLM's (`vllm serve`), adapters as named LoRA models; on a CPU it is
`transformers serve` over the same weights (base + adapter merged into one folder). This module
only plans the command and estimates memory; the CLI runs it.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    try:
        import torch

        if torch.cuda.is_available() and shutil.which("vllm"):
            return "vllm"
    except ImportError:  # pragma: no cover
        pass
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

        redacted = ["***" if i > 0 and self.argv[i - 1] == "--api-key" else a for i, a in enumerate(self.argv)]
        return f"cd {shlex.quote(str(self.cwd))} && " + " ".join(shlex.quote(a) for a in redacted)


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
) -> ServePlan:
    """Decide what to run. ``merge=False`` skips building the merged folder (for --dry-run)."""
    adapters = adapters or []
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
        argv = ["vllm", "serve", str(resolved.weights_dir), "--served-model-name", served,
                "--tensor-parallel-size", str(tensor_parallel_size), "--max-model-len", str(length),
                "--host", host, "--port", str(port)]
        template = _chat_template_file(resolved)
        if template is not None:
            argv += ["--chat-template", str(template)]
        all_adapters = ([str(resolved.adapter_dir)] if resolved.adapter_dir else []) + adapters
        lora_names = []
        if all_adapters:
            modules = []
            for path in all_adapters:
                name = Path(path).name
                if not (Path(path) / "adapter_config.json").is_file():
                    raise SecfmError(f"adapter {path} is not a PEFT adapter folder (no adapter_config.json)")
                lora_names.append(name)
                modules.append(f"{name}={path}")
            argv += ["--enable-lora", "--max-lora-rank", "64", "--lora-modules", *modules]
        if api_key:
            argv += ["--api-key", api_key]
        return ServePlan("vllm", argv, Path.cwd(), served, host, port, api_key, lora_names, memory)
    # CPU: transformers serve pins one folder; base + adapter are merged into one first.
    if len(adapters) > 1 or (adapters and resolved.adapter_dir):
        raise SecfmError("on a CPU `secfm serve` serves one adapter (merged into the base); vLLM on a GPU serves several")
    if api_key and not is_loopback(host):
        raise SecfmError("transformers serve has no API keys: on a CPU bind to 127.0.0.1 (put `secfm api` in front to expose it)")
    if adapters:
        resolved = resolve(model, adapter=adapters[0], auto_pull=merge)
    weights = resolved.weights_dir
    if resolved.adapter_dir is not None and merge:
        from secfm.merge import merge_adapter

        weights = merge_adapter(resolved)
    # transformers serve names the model by the path it was given: serve "<served>" from a folder
    # holding a link of that name, so clients ask for the registry name.
    from secfm.settings import cache_dir

    serve_root = cache_dir("serve")
    link = serve_root / served
    if merge:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(weights, target_is_directory=True)
    argv = ["transformers", "serve", served, "--host", host, "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    hub_cache = Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    return ServePlan("transformers", argv, serve_root, served, host, port, None, [], memory, env)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(base_url: str, model: str, timeout: float = 300.0, proc=None) -> None:
    """Poll the server with a one-token completion until it answers (or fail clearly)."""
    import time

    import httpx

    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SecfmError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            r = httpx.post(f"{base_url}/completions", json={"model": model, "prompt": "ok", "max_tokens": 1}, timeout=60)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise SecfmError(f"the server at {base_url} was not ready after {timeout:.0f}s ({last})")


def start_local_server(model: str = "gemma-3-270m", port: int | None = None, log_path: Path | None = None):
    """Start `secfm serve` on loopback in a child process; returns (process, base_url, served_model)."""
    import subprocess
    import sys

    port = port or free_port()
    plan = plan_serve(model, port=port)
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "secfm.cli", "serve", "--model", model, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(plan.base_url, plan.served_model, proc=proc)
    except BaseException:
        stop_server(proc)
        raise
    return proc, plan.base_url, plan.served_model


def stop_server(proc) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, PermissionError):
            pass
        except Exception:  # noqa: BLE001 - last resort
            os.killpg(proc.pid, signal.SIGKILL)

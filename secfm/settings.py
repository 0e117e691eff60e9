"""Process-wide settings read from the environment (one place for each knob)."""

from __future__ import annotations

import os
from pathlib import Path


def secfm_home() -> Path:
    """Root of secfm's caches: converted models, knowledge caches, vector store.

    ``$SECFM_HOME`` when set, else ``~/.cache/secfm``.
    """
    home = Path(os.environ.get("SECFM_HOME") or Path.home() / ".cache" / "secfm").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir(*parts: str) -> Path:
    """A sub-folder of ``secfm_home()``, created on demand."""
    path = secfm_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device() -> str:
    """``$SECFM_DEVICE`` or ``cuda`` when available, else ``cpu``."""
    env = os.environ.get("SECFM_DEVICE")
    if env:
        return env
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_threads() -> int | None:
    """Torch intra-op threads, from ``$SECFM_THREADS`` when set."""
    value = os.environ.get("SECFM_THREADS")
    return int(value) if value else None

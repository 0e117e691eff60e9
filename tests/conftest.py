"""Shared fixtures: one real engine on the embedded default model per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def engine():
    """The real gemma-3-270m on the transformers engine (pulled into $SECFM_HOME on first use)."""
    from secfm.engines import get_engine

    return get_engine("transformers", model="gemma-3-270m")

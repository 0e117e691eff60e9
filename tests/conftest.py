"""Shared fixtures: one real engine on the embedded default model per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def engine():
    """The real gemma-3-270m on the transformers engine (pulled into $SECFM_HOME on first use); the
    process's shared engine, so heads and workflows that ask ``shared_engine`` reuse it."""
    from secfm.engines import shared_engine

    return shared_engine("transformers", model="gemma-3-270m")

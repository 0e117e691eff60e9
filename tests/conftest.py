"""Shared fixtures: one real engine on the embedded default model per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_SUITE_COUNTS: list[str] = []


@pytest.fixture
def suite_count():
    """``suite_count("fuzz suite: ...")``: a line the session's summary prints (the fuzz, injection
    and concurrency suites say what they ran, in CI's log too)."""
    return _SUITE_COUNTS.append


def pytest_terminal_summary(terminalreporter):
    if _SUITE_COUNTS:
        terminalreporter.section("suite counts")
        for line in _SUITE_COUNTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def engine():
    """The real gemma-3-270m on the transformers engine (pulled into $SECFM_HOME on first use); the
    process's shared engine, so heads and workflows that ask ``shared_engine`` reuse it."""
    from secfm.engines import shared_engine

    return shared_engine("transformers", model="gemma-3-270m")


@pytest.fixture(scope="session")
def chat_engine(engine):
    """secfm-270m (the shipped LoRA adapter on gemma-3-270m, the chat's default model) on the
    transformers engine; its base weights are the session's ``engine`` (``Engine.base_engine``)."""
    from secfm.engines import shared_engine

    return shared_engine("transformers", model="secfm-270m")

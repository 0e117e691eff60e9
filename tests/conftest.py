"""Shared fixtures: one real engine on the embedded default model per test session."""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Gemma-3 with the real tokenizer (fast to train, load and serve)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from secfm.models import resolve

    base = resolve("gemma-3-270m").weights_dir
    out = tmp_path_factory.mktemp("tiny") / "tiny-gemma"
    cfg = Gemma3TextConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=16, vocab_size=262144, sliding_window=32,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
                           tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (base / name).is_file():
            shutil.copy(base / name, out / name)
    return out

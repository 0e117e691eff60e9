"""Shared helpers for the workflow tests: a scripted engine and a small knowledge store.

(Kept in a test module because the workflow tests may not add a conftest; it holds no tests.)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "workflows"


class FakeEngine:
    """An engine that answers from a script: ``responder(prompt) -> str`` (no model, no GPU).

    Its kind is not transformers/vllm/openai, so structured generation takes the
    validate-and-retry path, exactly as an engine without constrained decoding would.
    """

    kind = "fake"
    model_name = "fake-model"
    adapter = None

    def __init__(self, responder, max_context: int = 2048):
        self.responder = responder
        self._max_context = max_context
        self.prompts: list[str] = []

    @property
    def max_context(self) -> int:
        return self._max_context

    def apply_chat_template(self, messages) -> str:
        return "\n".join(f"<{m['role']}>\n{m['content']}" for m in messages)

    def chat(self, conversations, params=None) -> list[str]:
        out = []
        for conv in conversations:
            prompt = self.apply_chat_template(conv)
            self.prompts.append(prompt)
            out.append(self.responder(prompt))
        return out

    def generate(self, prompts, params=None) -> list[str]:
        self.prompts.extend(prompts)
        return [self.responder(p) for p in prompts]

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def special_tokens(self) -> tuple[str, ...]:
        return ()

    json_backend = "none"

    def generate_json(self, conversations, schema, params=None) -> list[str]:
        from secfm.engines import EngineUnsupported

        raise EngineUnsupported("the fake engine has no constrained decoding")

    def describe(self) -> dict:
        return {"engine": self.kind, "model": self.model_name}


def constant(obj) -> FakeEngine:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return FakeEngine(lambda prompt: text)


def load_payloads() -> list[dict]:
    return json.loads((FIXTURES / "injection" / "payloads.json").read_text())["payloads"]


SMALL_KB_IDS = {"T1110", "T1110.001", "T1110.003", "T1059.001", "T1070.001", "T1486", "T1021.001", "T1003.001",
                "M1032", "M1027", "M1036", "CWE-79", "CWE-89", "CWE-798", "CWE-250"}


@functools.lru_cache(maxsize=1)
def _small_chunks() -> tuple:
    from secfm.workflows import corpus

    picked, seen = [], set()
    for chunk in list(corpus.attack_chunks()) + list(corpus.cwe_chunks()):
        ref = chunk.metadata["ref_id"]
        if ref in SMALL_KB_IDS and ref not in seen:
            seen.add(ref)
            picked.append(chunk)
    picked += corpus.document_chunks(FIXTURES / "runbook.md") + corpus.document_chunks(FIXTURES / "policy.html")
    return tuple(picked)


def small_chunks() -> list:
    """First chunks of a few ATT&CK and CWE entries, and the two fixture documents."""
    return list(_small_chunks())


@functools.lru_cache(maxsize=1)
def _build_small_store():
    import atexit
    import shutil
    import tempfile

    from secfm.workflows.store import KnowledgeStore, chroma_client

    folder = tempfile.mkdtemp(prefix="secfm-test-chroma-")
    atexit.register(shutil.rmtree, folder, True)
    store = KnowledgeStore(chroma_client(folder))
    store.add_chunks(small_chunks())
    return store


@pytest.fixture(scope="session")
def small_store():
    """A small embedded Chroma store (about 17 chunks) in a temporary folder, built once per run
    (the fixture is imported by several modules; the build is cached here)."""
    return _build_small_store()

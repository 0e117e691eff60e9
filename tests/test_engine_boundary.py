"""Only secfm/engines knows engine kinds and internals (issue #19): every other module talks to
the Engine interface. This test reads the source tree and names each line that breaks the rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("secfm", "workflows", "evals", "app", "training", "cookbook")
ENGINE_NAMES = "transformers|vllm|openai"
RULES = {
    "branches on an engine's kind": re.compile(
        rf"""\.kind\s*(==|!=)\s*["']({ENGINE_NAMES})["']|\.kind\s+(not\s+)?in\s*[(\[{{][^)\]}}]*["']({ENGINE_NAMES})["']"""
        rf"""|getattr\([^,]*engine[^,]*,\s*["']kind["']"""),
    "touches an engine's private member": re.compile(r"\bengine\w*\.(_[a-z]\w*)|getattr\([^,]*engine[^,]*,\s*[\"']_"),
    "reaches into one engine's internals": re.compile(r"\bengine\w*\.(model|tokenizer|llm|client|device|resolved)\b(?!_)"),
    "imports an engine's private helpers": re.compile(r"from secfm\.engines\.\w+ import [^\n]*\b_\w+"),
}


def _offences() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("secfm", "engines"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for what, pattern in RULES.items():
                    if pattern.search(line):
                        found.append(f"{rel}:{number}: {what}: {line.strip()}")
    return found


def test_nothing_outside_the_engines_knows_engine_kinds_or_internals():
    offences = _offences()
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("line", [
    'if getattr(engine, "kind", "") == "transformers":',
    'if engine.kind in ("vllm", "openai"):',
    "with engine._lock:",
    "out = engine.model.generate(**batch)",
    "from secfm.engines.transformers_engine import _decoder_layers",
])
def test_the_rules_catch_what_they_are_for(line):
    assert any(p.search(line) for p in RULES.values())

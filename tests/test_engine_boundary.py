"""Only secfm/engines knows engine kinds and internals (issue #19): every other module talks to
the Engine interface. This test reads the source tree and names each line that breaks the rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("secfm", "workflows", "evals", "app", "training", "cookbook")
ENGINE_NAMES = r"transformers|vllm|openai|llama\.cpp"
KIND = rf"""["']({ENGINE_NAMES})["']"""
ENGINE_VAR = r"\b_?(?:engine|eng)\w*"  # engine, self._engine, eng, engine_for_heads...
INTERNALS = "model|tokenizer|llm|client|device|resolved|_lora"
RULES = {
    "branches on an engine's kind": re.compile(
        rf"""\.kind\s*(==|!=)\s*{KIND}|\.kind\s+(not\s+)?in\s*[(\[{{][^)\]}}]*{KIND}"""
        rf"""|getattr\([^,]*engine[^,]*,\s*["']kind["']"""
        rf"""|(==|!=)\s*{KIND}|{KIND}\s*(==|!=)|^(?!\s*for\b).*\bin\s*[(\[{{][^)\]}}]*{KIND}|{KIND}\s+if\b|\belse\s+{KIND}"""),
    "touches an engine's private member": re.compile(rf"{ENGINE_VAR}\.(_[a-z]\w*)|getattr\([^,]*engine[^,]*,\s*[\"']_"),
    "reaches into one engine's internals": re.compile(
        rf"{ENGINE_VAR}\.({INTERNALS})\b(?!_)|\.(llm|_lora)\b|getattr\([^,]*,\s*[\"']({INTERNALS})[\"']"),
    "imports an engine's private helpers": re.compile(r"from secfm\.engines\.\w+ import [^\n]*\b_\w+"),
}
#: modules allowed a rule, each with why
ALLOWED = {
    "secfm/serving.py": "the serve planner picks a server program (`vllm serve` or `transformers serve`), not an Engine",
}
#: modules known to break the rule, each with what is left to do (the list may only shrink)
PENDING: dict[str, str] = {
}


def _offences() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("secfm", "engines") or rel.as_posix() in ALLOWED:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for what, pattern in RULES.items():
                    if pattern.search(line):
                        found.setdefault(rel.as_posix(), []).append(f"{rel}:{number}: {what}: {line.strip()}")
    return found


def test_nothing_outside_the_engines_knows_engine_kinds_or_internals():
    offences = [line for module, lines in _offences().items() if module not in PENDING for line in lines]
    assert not offences, "\n".join(offences)


def test_the_pending_list_only_names_modules_that_still_offend():
    fixed = set(PENDING) - set(_offences())
    assert not fixed, f"these modules no longer offend: remove them from PENDING: {sorted(fixed)}"


@pytest.mark.parametrize("line", [
    'if getattr(engine, "kind", "") == "transformers":',
    'if engine.kind in ("vllm", "openai"):',
    "with engine._lock:",
    "out = engine.model.generate(**batch)",
    "from secfm.engines.transformers_engine import _decoder_layers",
    'options = {"batch_size": 8} if cfg.engine == "transformers" else {}',
    'name = engine if not endpoint else "openai"',
    'if kind in ("vllm", "openai"):',
    "self._engine._lora",
    "return self.llm.tokenize(text)",
    'model = getattr(scorer, "model", None)',
])
def test_the_rules_catch_what_they_are_for(line):
    assert any(p.search(line) for p in RULES.values())


@pytest.mark.parametrize("line", [
    '    for package in ("torch", "transformers"):',
    'engine = shared_engine(model=model, endpoint=endpoint)',
    'engine: str = DEFAULT_ENGINE',
    'controls = control_strings(engine)',
    'report.model = getattr(engine, "model_name", None)',
])
def test_the_rules_let_interface_use_through(line):
    assert not any(p.search(line) for p in RULES.values())

"""The tokenizer benchmark (secfm.evals.bench_tokenizer)."""

from __future__ import annotations

import importlib
import json

import pytest

from secfm.errors import SecfmError
from secfm.evals import bench_tokenizer
from secfm.evals.bench_tokenizer import SAMPLES, Skipped, load_tokenizers, run_tokenizer_bench
from secfm.text.iocs import extract_iocs, ioc_kinds


@pytest.fixture(scope="module")
def gemma_tokenizer():
    models = importlib.import_module("secfm.models")
    if not hasattr(models, "load_tokenizer"):
        pytest.skip("secfm.models.load_tokenizer is not written yet")
    return models.load_tokenizer("gemma-3-270m")


class CharTokenizer:
    """One token per character: every kind costs exactly as much per character as prose."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text] + ([0] if add_special_tokens else [])


def test_samples_are_the_iocs_they_claim_to_be():
    assert set(SAMPLES) <= set(ioc_kinds())
    assert {"ipv4", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256", "cve", "attack",
            "windows_path", "registry_key"} <= set(SAMPLES)
    for kind, fields in SAMPLES.items():
        assert len(set(fields)) == len(fields) >= 3
        for field in fields:
            (ioc,) = extract_iocs(field)
            assert (ioc.kind, ioc.raw) == (kind, field)


def test_bench_writes_json_and_markdown(tmp_path):
    out = tmp_path / "nested" / "bench.json"
    results = run_tokenizer_bench({"chars": CharTokenizer(), "gone": Skipped("weights not offline")}, out, allow_busy=True)

    assert json.loads(out.read_text()) == results and results["provenance"]["command"]
    chars = results["tokenizers"]["chars"]
    assert chars["status"] == "ok"
    assert chars["english"]["tokens_per_char"] == 1.0
    assert set(chars["kinds"]) == set(SAMPLES)
    for kind, m in chars["kinds"].items():
        assert m["fields"] == len(SAMPLES[kind])
        assert m["tokens_per_char"] == m["ratio_to_words"] == 1.0
        assert m["mean_tokens"] == pytest.approx(sum(map(len, SAMPLES[kind])) / len(SAMPLES[kind]), abs=1e-3)
    assert results["tokenizers"]["gone"] == {"status": "skipped", "reason": "weights not offline"}

    markdown = out.with_suffix(".md").read_text()
    assert "## chars" in markdown and "| ipv4 | 5 |" in markdown
    assert "## Skipped" in markdown and "- gone: weights not offline" in markdown


def test_load_tokenizers_records_models_that_are_not_available(monkeypatch):
    def fake_load(name):
        if name == "missing":
            raise SecfmError("model missing is not in the local hub cache")
        return CharTokenizer()

    monkeypatch.setattr(bench_tokenizer, "load_tokenizer", fake_load)
    loaded = load_tokenizers(["here", "missing"])
    assert isinstance(loaded["here"], CharTokenizer)
    assert loaded["missing"] == Skipped("model missing is not in the local hub cache")


@pytest.mark.slow
def test_gemma_spends_more_tokens_per_character_on_ips_and_hashes(gemma_tokenizer, tmp_path):
    results = run_tokenizer_bench({"gemma-3-270m": gemma_tokenizer}, tmp_path / "bench.json", allow_busy=True)
    gemma = results["tokenizers"]["gemma-3-270m"]
    english = gemma["english"]["tokens_per_char"]
    for kind in ("ipv4", "sha256"):  # Gemma splits digits one by one
        assert gemma["kinds"][kind]["tokens_per_char"] > english
        assert gemma["kinds"][kind]["ratio_to_words"] > 1
    assert gemma["english"]["tokens_per_word"] < 2

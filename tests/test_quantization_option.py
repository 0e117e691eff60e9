"""`--quantization int8-dynamic` (issue #17): from the app, its bench and `secfm eval chat` through
the one engine factory to the transformers engine, the LoRA adapter merged before the weights are
quantized. A tiny random Gemma-3 with a LoRA adapter whose effect is not zero; no real model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft.save_pretrained(out)
    return out


def _lora_layers(model) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


def test_int8_dynamic_merges_the_adapter_before_quantizing(tiny_model, tiny_adapter, monkeypatch):
    import torch
    import torch.ao.quantization as taq
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from secfm.engines import shared_engine

    seen = []
    real = taq.quantize_dynamic

    def spy(model, *args, **kwargs):
        seen.append(_lora_layers(model))  # what the quantizer was handed: LoRA layers left means no merge yet
        return real(model, *args, **kwargs)

    monkeypatch.setattr(taq, "quantize_dynamic", spy)
    engine = shared_engine("transformers", model=str(tiny_model), adapter=str(tiny_adapter), quantization="int8-dynamic")
    assert seen == [0]  # quantized once, after the merge (the next test reuses this engine)
    assert engine.describe()["quantization"] == "int8-dynamic"
    q_proj = engine.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, torch.ao.nn.quantized.dynamic.Linear) and _lora_layers(engine.model) == 0

    ids = torch.tensor([[2, 100, 200, 300, 400]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        plain = real(base, {torch.nn.Linear}, dtype=torch.qint8)(ids).logits  # the base alone, quantized
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                           str(tiny_adapter)).merge_and_unload()
        expected = real(merged, {torch.nn.Linear}, dtype=torch.qint8)(ids).logits
        got = engine.model(ids).logits
    assert torch.allclose(got, expected, atol=1e-5)  # the same numbers as merge, then quantize
    assert not torch.allclose(got, plain, atol=1e-3)  # and the adapter's effect survived the quantization


def test_the_option_reaches_the_engine_from_the_app_and_the_chat_eval(tiny_model, tiny_adapter, tmp_path):
    from secfm.app.backend import Backend
    from secfm.workflows.chat_eval import ChatEvalSettings, _engine

    backend = Backend.from_options(str(tiny_model), adapter=str(tiny_adapter), quantization="int8-dynamic")
    assert backend.engine.describe()["quantization"] == "int8-dynamic"
    assert backend.describe()["quantization"] == "int8-dynamic"  # what the in-process bench records
    settings = ChatEvalSettings(out=str(tmp_path / "run"), model=str(tiny_model), adapter=str(tiny_adapter),
                                quantization="int8-dynamic")
    assert _engine(settings) is backend.engine  # the process's one int8 engine of that model and adapter
    assert settings.command().endswith("--quantization int8-dynamic")


def test_unknown_or_unsupported_quantization_is_one_clear_error(capsys):
    from secfm.cli import main
    from secfm.engines import check_quantization
    from secfm.errors import SecfmError

    with pytest.raises(SecfmError, match="unknown quantization 'int4': choose int8-dynamic"):
        check_quantization("transformers", None, "int4")
    with pytest.raises(SecfmError, match="needs the in-process transformers engine"):
        check_quantization("transformers", "http://127.0.0.1:9/v1", "int8-dynamic")
    assert check_quantization("vllm", None, None).kind == "vllm"  # no quantization asked: nothing refused
    for argv in (["eval", "chat", "--out", "x", "--quantization", "int4"],
                 ["eval", "chat", "--out", "x", "--engine", "vllm", "--quantization", "int8-dynamic"],
                 ["app", "--endpoint", "http://127.0.0.1:9/v1", "--quantization", "int8-dynamic"],
                 ["bench", "app", "--url", "http://127.0.0.1:9/", "--quantization", "int8-dynamic"]):
        with pytest.raises(SystemExit) as bad:
            main(argv)
        err = capsys.readouterr().err
        assert bad.value.code != 0 and err.startswith("secfm: error:") and err.count("\n") == 1, (argv, err)

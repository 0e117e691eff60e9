"""The shipped adapter names its base by its Hugging Face id, so any PEFT user loads it:
``AutoPeftModelForCausalLM.from_pretrained`` finds ``google/gemma-3-270m`` in the local hub cache
(a temporary one here, laid out as the hub does, holding the converted base), offline; secfm's
own loading still maps the id to its local copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ADAPTER = Path(__file__).resolve().parents[1] / "secfm" / "adapters" / "secfm-270m"

SCRIPT = r"""
import json, sys, torch
from peft import AutoPeftModelForCausalLM
from secfm.engines.transformers_engine import load_causal_lm
from secfm.models import resolve
adapter = sys.argv[1]
hub = AutoPeftModelForCausalLM.from_pretrained(adapter, dtype=torch.float32).eval()
ours = load_causal_lm(resolve("secfm-270m"), "cpu", dtype=torch.float32).eval()
ids = torch.tensor([[2, 818, 5279, 691, 236787, 506]])
with torch.inference_mode():
    a, b = hub(input_ids=ids).logits, ours(input_ids=ids).logits
print(json.dumps({"class": type(hub).__name__, "base": hub.peft_config["default"].base_model_name_or_path,
                  "max_diff": float((a - b).abs().max())}))
"""


def test_adapter_config_names_the_hub_base_and_secfm_resolves_it():
    from secfm.models import resolve

    config = json.loads((ADAPTER / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "google/gemma-3-270m"
    assert resolve(str(ADAPTER)).spec.name == "gemma-3-270m"  # offline: the registry's local weights


@pytest.mark.slow
def test_auto_peft_model_loads_the_shipped_adapter_from_a_local_hub_cache(tmp_path):
    from secfm.models import resolve

    weights = resolve("gemma-3-270m").weights_dir  # the converted safetensors cache (pulled once)
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--google--gemma-3-270m"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in weights.iterdir():
        if f.suffix in (".json", ".safetensors", ".jinja") and f.name != "secfm-cache.json":
            (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ADAPTER)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["class"] == "PeftModelForCausalLM" and out["base"] == "google/gemma-3-270m"
    assert out["max_diff"] < 1e-3  # the same model as secfm's own loading

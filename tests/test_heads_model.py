"""Heads on the real gemma-3-270m: multi-layer features equal the engine's, the disk cache is
used, a small training run end to end (features, head, thresholds, baseline, save, load), the
joint LoRA + head path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from secfm.errors import SecfmError
from secfm.features import FeatureCache, extract, features
from secfm.heads import load_head, read_manifest

pytestmark = pytest.mark.slow

TEXTS = [
    "The actor used PowerShell to download a payload.",
    "Credentials were dumped from LSASS memory.",
    "A scheduled task ran the implant every hour.",
    "Data was exfiltrated over HTTPS to a cloud storage account, in archives protected with a password.",
    "x",
]


def test_one_pass_gives_every_layer_and_matches_the_engine(engine):
    got = extract(engine, TEXTS, [2, -14], ["mean", "last"], batch_size=2)  # -14 of 18 is layer 5
    assert set(got) == {(2, "mean"), (2, "last"), (-14, "mean"), (-14, "last")}
    for (layer, pooling), X in got.items():
        ref = engine.hidden_states(TEXTS, layer=layer, pooling=pooling, batch_size=8, max_length=128)
        assert X.shape == ref.shape == (len(TEXTS), engine.hidden_size())
        assert np.allclose(X, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max()), (layer, pooling)
    assert not np.allclose(got[(2, "mean")], got[(-14, "mean")])
    with pytest.raises(SecfmError, match="out of range"):
        extract(engine, TEXTS, [19])


def test_cache_is_keyed_and_reused_without_the_model(engine, tmp_path):
    cache = FeatureCache(tmp_path)
    first = features(TEXTS[:3], [3, 4], "mean", engine=engine, cache=cache, progress=False)
    assert cache.count(next(iter(_keys(engine, 3)))) == 3

    def no_model():
        raise AssertionError("the cache should have answered")

    again = features(TEXTS[:3], 3, "mean", model=engine.model_name, engine_factory=no_model, cache=cache, progress=False)
    assert np.array_equal(again, first[(3, "mean")])
    # another pooling, max_length or adapter is another key: computed, not read
    other = features(TEXTS[:3], 3, "last", engine=engine, cache=cache, progress=False)
    assert not np.allclose(other, again)
    with pytest.raises(AssertionError, match="cache should have answered"):
        features(TEXTS[:3], 3, "mean", model=engine.model_name, adapter=str(tmp_path), engine_factory=no_model,
                 cache=cache, progress=False)


def _keys(engine, layer):
    from secfm.features import FeatureKey, engine_identity

    model, adapter = engine_identity(engine)
    yield FeatureKey(model, adapter, layer, "mean", 128)


def test_small_training_run_end_to_end(engine, tmp_path):
    from secfm.training.heads import FitConfig, HarnessConfig, run_harness

    cfg = HarnessConfig(task="attack", layer=3, pooling="mean", kinds=("linear",), limit=24, baseline_C=(4.0,),
                        fit=FitConfig(epochs=5, patience=3), exclude_sources=("G0016",),
                        command="pytest small run")
    res = run_harness(cfg, tmp_path / "head", tmp_path / "results", engine=engine)
    assert res["chosen"] == {"layer": 3, "layers": [3], "pooling": "mean", "kind": "linear",
                             "threshold_mode": res["chosen"]["threshold_mode"]}
    for block in (res["head"]["test"], res["baseline"]["eval"]["test"]):
        assert {"micro_f1", "macro_f1", "p_at_1", "p_at_5"} <= set(block)
    m = read_manifest(tmp_path / "head")
    assert m.excluded_sources == ["G0016"] and "G0016" not in m.trained_sources
    assert m.trained_sources and not set(m.trained_sources) & set(m.training["held_out_sources"]["test"])
    assert (tmp_path / "results" / "heads-attack-excl.json").is_file()
    head = load_head(tmp_path / "head", model=engine.model_name)
    X = features(TEXTS[:2], 3, "mean", engine=engine, progress=False)
    assert head.scores(X).shape == (2, len(m.labels))

    from secfm.workflows.attack_extraction import load_attack_predictor

    predictor = load_attack_predictor(exclude_sources="G0016", head=tmp_path / "head", engine=engine)
    assert len(predictor.predict(["They used PowerShell."])) == 1
    with pytest.raises(SecfmError, match="saw 1 evaluated entities"):
        load_attack_predictor(exclude_sources=m.trained_sources[0], head=tmp_path / "head", engine=engine)


def test_multi_layer_head_features_are_the_single_layers_side_by_side(engine, tmp_path):
    """A head over layers 1+3 (trained on frozen features): its input is layer 1's and layer 3's
    mean-pooled states concatenated, from one pass; extract_attack and the eval predictor run it."""
    from secfm.features import head_features
    from secfm.training.heads import FitConfig, HarnessConfig, run_harness
    from secfm.workflows.attack_extraction import AttackExtractor, extract_attack

    cfg = HarnessConfig(task="attack", layer=(3, 1), pooling="mean", kinds=("linear",), limit=24, baseline=False,
                        fit=FitConfig(epochs=3, patience=2), command="pytest multi-layer run")
    res = run_harness(cfg, tmp_path / "head", engine=engine)
    assert res["chosen"]["layers"] == [3, 1] and res["chosen"]["layer"] == 3
    head = load_head(tmp_path / "head", model=engine.model_name)
    m = head.manifest
    assert (m.layer, m.layers, m.input_dim) == (3, [3, 1], 2 * engine.hidden_size())
    X = head_features(engine, TEXTS, m, batch_size=2)
    single = [features(TEXTS, layer, "mean", engine=engine, cache=False, progress=False) for layer in (3, 1)]
    ref = np.concatenate(single, axis=1)
    assert X.shape == ref.shape and np.allclose(X, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    assert np.allclose(AttackExtractor(head, engine).features(TEXTS), X, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    hits = extract_attack("The actor used PowerShell to download a payload. Credentials were dumped from LSASS.",
                          head=tmp_path / "head", engine=engine, threshold=0.01, top_k=3)
    assert 1 <= len(hits) <= 3

    from secfm.evals.heads import EngineHeadPredictor

    predicted = EngineHeadPredictor(head, engine).predict(TEXTS[:2])
    assert len(predicted) == 2 and all(predicted)


def test_joint_lora_and_head_smoke(tmp_path):
    pytest.importorskip("peft")
    from secfm.training.heads import FitConfig, HarnessConfig, train_joint

    cfg = HarnessConfig(task="cwe", layer=2, pooling="mean", limit=16, fit=FitConfig(kind="linear"))
    summary = train_joint(cfg, tmp_path / "joint", steps=2, batch_size=4, device="cpu", max_train=8)
    assert summary["steps"] == 2
    m = read_manifest(tmp_path / "joint")
    assert m.adapter == "adapter" and (tmp_path / "joint" / "adapter" / "adapter_config.json").is_file()
    config = json.loads((tmp_path / "joint" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "gemma-3-270m" and not config.get("modules_to_save")
    head = load_head(tmp_path / "joint", model="gemma-3-270m", adapter=str(tmp_path / "joint" / "adapter"))
    with pytest.raises(SecfmError, match="adapter"):
        load_head(tmp_path / "joint", model="gemma-3-270m")
    assert head.manifest.layer == 2


def test_eval_head_mode_on_ate_and_rcm_with_the_shipped_heads(tmp_path):
    """`secfm eval cti-ate|cti-rcm --mode head` score with the shipped heads (the default when no
    --head is given), record --exclude-sources, and refuse a source the head was trained on."""
    import subprocess
    import sys
    from pathlib import Path

    from secfm.heads import shipped_head_path

    fixtures = Path(__file__).parent / "fixtures" / "ctibench"
    manifest = read_manifest(shipped_head_path("attack", "gemma-3-270m"))
    held_out = ",".join(manifest.training["held_out_sources"]["test"][:4])

    def run(task, data, out, *extra):
        return subprocess.run([sys.executable, "-m", "secfm.cli", "eval", task, "--data", str(fixtures / data), "--mode", "head",
                               "--bootstrap", "20", "--out", str(out), *extra], capture_output=True, text=True, timeout=900)

    ate = run("cti-ate", "cti-ate.tsv", tmp_path / "ate", "--exclude-sources", held_out)
    assert ate.returncode == 0, ate.stderr[-2000:]
    metrics = json.loads((tmp_path / "ate" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "ate" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and any(r["parsed"] for r in rows) and "micro_f1" in json.dumps(metrics)
    assert held_out.split(",")[0] in (tmp_path / "ate" / "run.json").read_text()

    rcm = run("cti-rcm", "cti-rcm.tsv", tmp_path / "rcm")
    assert rcm.returncode == 0, rcm.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "rcm" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(str(r["parsed"]).startswith("CWE-") for r in rows)

    leaked = run("cti-ate", "cti-ate.tsv", tmp_path / "leak", "--exclude-sources", manifest.trained_sources[0],
                 "--head", str(shipped_head_path("attack", "gemma-3-270m")))
    assert leaked.returncode != 0 and "saw 1 evaluated entities" in leaked.stderr
    assert len(leaked.stderr.strip().splitlines()) == 1

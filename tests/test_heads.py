"""Classifier heads without the model: data and entity splits, exclusions, metrics, thresholds,
save/load, base refusal, the baseline, the shipped heads' manifests, the eval predictors'
--exclude-sources check."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from secfm.errors import SecfmError
from secfm.heads import (
    HeadManifest,
    build_module,
    lift_parents,
    load_head,
    parent_index,
    parse_sources,
    read_manifest,
    save_head,
    shipped_head_path,
    source_clusters,
)
from secfm.knowledge import load_attack
from secfm.training.head_data import build_attack_dataset, build_cwe_dataset, split_of
from secfm.training.heads import (
    FitConfig,
    best_global_threshold,
    choose_threshold_mode,
    fit_head,
    multiclass_metrics,
    multilabel_metrics,
    per_class_thresholds,
    predict_module,
    ranking_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures" / "heads"


@pytest.fixture(scope="module")
def attack_data():
    return build_attack_dataset()


# --- data and splits ----------------------------------------------------------------------------
def test_every_source_entity_is_in_exactly_one_split(attack_data):
    where = defaultdict(set)
    for e in attack_data.examples:
        where[e.source].add(e.split)
    leaks = {s: splits for s, splits in where.items() if len(splits) > 1}
    assert not leaks
    counts = attack_data.counts()
    assert counts["val_sources"] > 50 and counts["test_sources"] > 50
    assert counts["train"] > 5 * counts["test"] > 0


def test_campaigns_travel_with_their_groups(attack_data):
    kb = load_attack()
    split_of_source = {e.source: e.split for e in attack_data.examples}
    checked = 0
    for cid, campaign in kb.campaigns_by_id.items():
        for gid in campaign.group_ids:
            if cid in split_of_source and gid in split_of_source:
                assert split_of_source[cid] == split_of_source[gid], (cid, gid)
                checked += 1
    assert checked > 5
    clusters = source_clusters(kb)
    assert all(clusters[c] == clusters[g] for c, camp in kb.campaigns_by_id.items() for g in camp.group_ids)


def test_labels_count_parents_and_knowledge_rows_train(attack_data):
    sub = [e for e in attack_data.examples if any("." in t for t in e.labels)]
    assert sub and all(t.split(".")[0] in e.labels for e in sub for t in e.labels)
    kb_rows = [e for e in attack_data.examples if e.kind == "technique"]
    assert len(kb_rows) == len(attack_data.labels) and all(e.split == "train" for e in kb_rows)
    assert attack_data.data_hash() == build_attack_dataset().data_hash()  # stable


def test_split_is_a_stable_function_of_the_id():
    assert split_of("G0016") == split_of("G0016")
    fractions = defaultdict(int)
    for i in range(2000):
        fractions[split_of(f"S{i:04d}")] += 1
    assert 0.6 < fractions["train"] / 2000 < 0.8 and fractions["val"] > 200 and fractions["test"] > 200


def test_exclude_sources_drops_entities_and_their_campaigns(attack_data):
    kb = load_attack()
    group = next(g for g in ("G0032", "G0016", "G0007") if g in kb.groups_by_id)  # one with campaigns, ideally
    campaigns = {c for c, camp in kb.campaigns_by_id.items() if group in camp.group_ids}
    data = build_attack_dataset(exclude_sources=group)
    sources = {e.source for e in data.examples}
    assert group not in sources and not (campaigns & sources)
    assert data.excluded_sources == [group]
    assert len(data.examples) < len(attack_data.examples)
    # other splits are unchanged
    before = {e.source: e.split for e in attack_data.examples}
    assert all(before[e.source] == e.split for e in data.examples if e.kind == "procedure")


def test_exclude_sources_from_a_file_and_bad_ids():
    assert parse_sources(f"@{FIXTURES / 'exclude.txt'}") == {"G0016", "S0154", "C0022"}
    assert parse_sources("g0016, s0154") == {"G0016", "S0154"}
    assert parse_sources(None) == set()
    with pytest.raises(SecfmError, match="not an ATT&CK group"):
        parse_sources("T1059")
    with pytest.raises(SecfmError, match="not found"):
        parse_sources("@/nonexistent/file.txt")


def test_user_jsonl_rows_are_validated_and_added():
    data = build_attack_dataset(user_jsonl=[FIXTURES / "user-attack.jsonl"])
    users = [e for e in data.examples if e.kind == "user"]
    assert len(users) == 2
    assert set(users[1].labels) == {"T1140", "T1105"}
    excluded = build_attack_dataset(user_jsonl=[FIXTURES / "user-attack.jsonl"], exclude_sources="G9999")
    assert len([e for e in excluded.examples if e.kind == "user"]) == 1


def test_user_jsonl_bad_rows_fail_clearly(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "techniques": ["T9999"]}\n')
    with pytest.raises(SecfmError, match="unknown or retired id"):
        build_attack_dataset(user_jsonl=[bad])
    bad.write_text("not json\n")
    with pytest.raises(SecfmError, match="not JSON"):
        build_attack_dataset(user_jsonl=[bad])


def test_cwe_split_keeps_each_cve_in_one_split():
    data = build_cwe_dataset()
    where = defaultdict(set)
    for e in data.examples:
        where[e.source].add(e.split)
    assert all(len(s) == 1 for src, s in where.items() if src.startswith("CVE-"))
    assert {e.split for e in data.examples if e.kind == "weakness"} == {"train"}
    labels = set(data.labels)
    assert all(set(e.labels) <= labels for e in data.examples)
    assert len(data.split("test")) > 100


# --- metrics and thresholds ---------------------------------------------------------------------
def test_metrics_on_a_toy_case():
    Y = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=np.float32)
    P = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.1, 0.7, 0.6]], dtype=np.float32)
    m = multilabel_metrics(P, Y, 0.5)
    # predicted: {0}, {1}, {1,2}: tp=3 fp=1 fn=1
    assert m["micro_precision"] == pytest.approx(0.75) and m["micro_recall"] == pytest.approx(0.75)
    assert m["micro_f1"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))
    r = ranking_metrics(P, Y, (1, 2))
    assert r["p_at_1"] == pytest.approx(2 / 3) and r["r_at_2"] == pytest.approx((1 + 1 + 1) / 3)
    mc = multiclass_metrics(P, Y)
    assert mc["top1"] == pytest.approx(2 / 3) and mc["top5"] == 1.0


def test_threshold_tuning_finds_the_separating_value():
    rng = np.random.default_rng(0)
    Y = (rng.random((400, 6)) < 0.2).astype(np.float32)
    P = np.clip(Y * 0.35 + 0.3 + rng.normal(0, 0.05, Y.shape), 0, 1).astype(np.float32)
    t, f1 = best_global_threshold(P, Y)
    assert 0.4 < t < 0.65 and f1 > 0.95
    pc = per_class_thresholds(P, Y, t)
    assert pc.shape == (6,) and np.all((pc > 0.3) & (pc < 0.7))
    mode, info = choose_threshold_mode(P, Y, [f"S{i % 40}" for i in range(400)])
    assert mode in ("global", "per-class") and set(info) == {"crossfit_micro_f1_global", "crossfit_micro_f1_per-class"}


def test_sub_technique_scores_lift_their_parents():
    labels = ["T1059", "T1059.001", "T1003", "T1003.001", "T1003.002"]
    parents = parent_index(labels)
    assert parents.tolist() == [-1, 0, -1, 2, 2]
    lifted = lift_parents(np.array([[0.1, 0.8, 0.2, 0.3, 0.6]]), parents)
    assert lifted[0].tolist() == pytest.approx([0.8, 0.8, 0.6, 0.3, 0.6])
    assert lift_parents(np.array([0.1, 0.8, 0.2, 0.3, 0.6]), parents).tolist() == pytest.approx([0.8, 0.8, 0.6, 0.3, 0.6])


# --- fitting, save and load ---------------------------------------------------------------------
def _toy_problem(n=300, d=24, labels=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (labels, d))
    y = rng.integers(0, labels, n)
    X = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    Y = np.eye(labels, dtype=np.float32)[y]
    return X, Y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("objective", ["multilabel", "multiclass"])
def test_fit_save_load_round_trip(tmp_path, kind, objective):
    X, Y = _toy_problem()
    module, hist = fit_head(X[:200], Y[:200], X[200:], Y[200:], objective,
                            FitConfig(kind=kind, epochs=40, hidden_dim=32, patience=8, batch_size=32, lr=1e-2))
    P = predict_module(module, X[200:], objective)
    assert hist["best_val"] > 0.9
    labels = ["T1001", "T1002", "T1003", "T1003.001", "T1005"]
    manifest = HeadManifest(task="attack" if objective == "multilabel" else "cwe", kind=kind, objective=objective,
                            base_model="gemma-3-270m", adapter=None, layer=6, pooling="mean", max_length=128,
                            input_dim=X.shape[1], hidden_dim=32 if kind == "mlp" else None, labels=labels,
                            threshold=0.4, class_thresholds=[0.3] * 5, threshold_mode="per-class",
                            trained_sources=["G0001"])
    save_head(tmp_path / "h", module, manifest)
    head = load_head(tmp_path / "h", model="gemma-3-270m")
    raw = head.scores(X[200:], lift=False)
    assert np.allclose(raw, P, atol=2e-2)  # float16 weights
    assert head.thresholds().tolist() == pytest.approx([0.3] * 5)
    assert head.thresholds("global").tolist() == pytest.approx([0.4] * 5)
    assert read_manifest(tmp_path / "h").trained_sources == ["G0001"]
    with pytest.raises(SecfmError, match="trained on base model 'gemma-3-270m'"):
        load_head(tmp_path / "h", model="llama-3.1-8b")
    with pytest.raises(SecfmError, match="adapter"):
        load_head(tmp_path / "h", model="gemma-3-270m", adapter=str(tmp_path / "some-adapter"))
    with pytest.raises(SecfmError, match="shape"):
        head.scores(np.zeros((2, 7), dtype=np.float32))


def _multi_layer_manifest(d: int, layers=(1, 3, 6)) -> HeadManifest:
    return HeadManifest(task="attack", kind="linear", objective="multilabel", base_model="gemma-3-270m", adapter=None,
                        layer=max(layers), layers=list(layers), pooling="mean", max_length=128,
                        input_dim=d * len(layers), hidden_dim=None, labels=["T1001", "T1059", "T1059.001"])


def test_multi_layer_manifest_round_trip(tmp_path):
    d = 4
    manifest = _multi_layer_manifest(d)
    assert manifest.layer == 6 and manifest.layers == [1, 3, 6] and manifest.format == 2
    module = build_module(manifest.input_dim, len(manifest.labels), "linear")
    save_head(tmp_path / "h", module, manifest)
    assert json.loads((tmp_path / "h" / "head.json").read_text())["layers"] == [1, 3, 6]
    back = read_manifest(tmp_path / "h")
    assert (back.layer, back.layers, back.input_dim, back.format) == (6, [1, 3, 6], 12, 2)
    head = load_head(tmp_path / "h", model="gemma-3-270m")
    assert head.scores(np.zeros((2, 12), dtype=np.float32)).shape == (2, 3)
    with pytest.raises(SecfmError, match="shape"):
        head.scores(np.zeros((2, d), dtype=np.float32))  # one layer's features are not enough
    # a single-layer head keeps format 1 (older secfm reads it)
    single = _multi_layer_manifest(d, (6,))
    assert single.layers == [6] and single.format == 1
    with pytest.raises(SecfmError, match="deepest"):
        HeadManifest(**{**json.loads((tmp_path / "h" / "head.json").read_text()), "layer": 3})
    with pytest.raises(SecfmError, match="repeat"):
        _multi_layer_manifest(d, (1, 1))


def test_old_manifest_without_layers_loads(tmp_path):
    manifest = _multi_layer_manifest(4, (2,))
    save_head(tmp_path / "h", build_module(4, 3, "linear"), manifest)
    data = json.loads((tmp_path / "h" / "head.json").read_text())
    del data["layers"]
    data["format"] = 1
    (tmp_path / "h" / "head.json").write_text(json.dumps(data))
    head = load_head(tmp_path / "h", model="gemma-3-270m")
    assert head.manifest.layer == 2 and head.manifest.layers == [2] and head.manifest.input_dim == 4
    data["format"] = 4  # newer than this secfm reads (3: text features)
    (tmp_path / "h" / "head.json").write_text(json.dumps(data))
    with pytest.raises(SecfmError, match="head format 4"):
        load_head(tmp_path / "h")


def test_head_features_concatenate_the_layers_in_manifest_order():
    """The one helper inference uses: each layer's pooled states side by side, from one
    multi-layer ``Engine.hidden_states(layers=...)`` call."""
    from secfm.features import head_features, head_layers

    class FakeEngine:
        kind = "fake"
        has_hidden_states = True

        def hidden_states(self, texts, layer=-1, pooling="mean", batch_size=8, max_length=512, *,
                          layers=None, progress=None):
            assert layers is not None and not isinstance(pooling, str)
            return {(lay, p): np.full((len(texts), 2), float(lay), dtype=np.float32)
                    for lay in layers for p in pooling}

    m = _multi_layer_manifest(2, (1, 3, 6))
    X = head_features(FakeEngine(), ["a", "b"], m)
    assert X.tolist() == [[1, 1, 3, 3, 6, 6]] * 2 and head_layers(m) == [1, 3, 6]
    assert head_features(FakeEngine(), [], m).shape == (0, 6)
    m.layers, m.layer = [6, 1], 6  # manifest order, not sorted
    assert head_features(FakeEngine(), ["a"], m)[0].tolist() == [6, 6, 1, 1]


def test_sweep_pick_prefers_cheap_rows_within_tolerance_and_layer_lists():
    from secfm.training.heads import layer_list, layers_label, pick_from_sweep

    rows = [{"layer": 1, "layers": [1], "pooling": "mean", "val_micro_f1": 0.60},
            {"layer": 6, "layers": [6], "pooling": "mean", "val_micro_f1": 0.59},
            {"layer": 6, "layers": [1, 6], "pooling": "mean", "val_micro_f1": 0.62},
            {"layer": 6, "layers": [1, 3, 6], "pooling": "mean", "val_micro_f1": 0.624}]
    assert pick_from_sweep(rows, "multilabel")["layers"] == [1, 6]  # within tolerance of 1+3+6, fewer layers
    rows[2]["val_micro_f1"] = 0.61
    assert pick_from_sweep(rows, "multilabel")["layers"] == [1, 3, 6]
    rows[0]["val_micro_f1"] = 0.621
    assert pick_from_sweep(rows, "multilabel")["layers"] == [1]  # the shallowest within tolerance
    assert pick_from_sweep([{"layer": 2, "pooling": "mean", "val_top1": 0.5}], "multiclass")["layer"] == 2  # old rows
    assert layer_list("1,3,6") == [1, 3, 6] and layer_list(3) == [3] and layer_list(None) is None
    assert layers_label([1, 3, 6]) == "1+3+6"
    for bad in ("1,x", "1,1", "1,-2"):
        with pytest.raises(SecfmError):
            layer_list(bad)


def test_load_rejects_folders_that_are_not_heads(tmp_path):
    with pytest.raises(SecfmError, match="not a secfm head folder"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text("{not json")
    with pytest.raises(SecfmError, match="not valid JSON"):
        load_head(tmp_path)


def test_baseline_runs_on_a_small_subset(attack_data):
    from secfm.training.baseline import TfidfBaseline
    from secfm.training.heads import label_matrix

    rows = [e for e in attack_data.split("train") if e.kind == "procedure"][:300]
    keep = sorted({t for e in rows for t in e.labels})[:40]
    Y = label_matrix(rows, keep)
    b = TfidfBaseline("multilabel", C=4.0).fit([e.text for e in rows], Y)
    P = b.scores([e.text for e in rows[:20]])
    assert P.shape == (20, len(keep)) and np.all((P >= 0) & (P <= 1))
    assert b.describe()["vocabulary"] > 100


# --- the shipped heads --------------------------------------------------------------------------
SHIPPED = [("attack", "gemma-3-270m")]  # the NVD-trained CWE and CVSS heads: tests/test_cve_cli.py


@pytest.mark.parametrize("task,model", SHIPPED)
def test_shipped_heads_are_small_and_complete(task, model):
    path = shipped_head_path(task, model)
    assert (path / "head.json").is_file(), f"no shipped head at {path}"
    # small: a 1024-wide mlp over three concatenated 640-d layers is ~5.4 MB in float16
    assert (path / "head.safetensors").stat().st_size < 8_000_000
    m = read_manifest(path)
    assert m.base_model == model and m.adapter is None and m.task == task
    assert m.layer >= 1 and m.pooling in ("mean", "last") and len(m.labels) > 500
    assert m.layers and m.layer == max(m.layers)
    assert len(m.training_data_hash) == 64 and m.metrics["test"] and m.metrics["baseline_test"]
    if task == "attack":
        assert m.attack_version and len(m.trained_sources) > 300
        held = set(m.training["held_out_sources"]["test"])
        assert held and not held & set(m.trained_sources)
        assert len(m.class_thresholds) == len(m.labels)
    else:
        assert m.cwe_version
    head = load_head(path, model=model)
    assert head.scores(np.zeros((1, m.input_dim), dtype=np.float32)).shape == (1, len(m.labels))


def test_attack_predictor_refuses_sources_the_shipped_head_trained_on():
    from secfm.workflows.attack_extraction import load_attack_predictor

    m = read_manifest(shipped_head_path("attack", "gemma-3-270m"))
    trained = m.trained_sources[0]
    with pytest.raises(SecfmError, match="saw 1 evaluated entities"):
        load_attack_predictor(exclude_sources=[trained], retrain=False)  # (by default it would train a clean one)
    held_out = [s for s in m.training["held_out_sources"]["test"] if s.startswith("S")][:3]
    predictor = load_attack_predictor(exclude_sources=",".join(held_out))  # no model load until predict
    assert callable(predictor.predict) and predictor.head.manifest.task == "attack"
    assert predictor.exclusion.origin == "shipped" and not predictor.exclusion.contaminated


def test_cwe_predictor_loads_without_the_model():
    from secfm.workflows.cwe_mapping import load_cwe_predictor

    predictor = load_cwe_predictor()
    assert predictor.head.manifest.objective == "multiclass" and callable(predictor.predict)


# --- the CLI's input errors (no model) ------------------------------------------------------------
def _cli(capsys, *args):
    """Run the CLI in process (no interpreter start-up); (exit code, stderr)."""
    from secfm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


def test_cli_train_head_rejects_bad_input_in_one_line(tmp_path, capsys):
    for args, fragment in [
        (("train", "head", "--task", "ttps", "--out", str(tmp_path)), "--task must be one of"),
        (("train", "head", "--task", "attack"), "give --out DIR"),
        (("train", "head", "--task", "attack", "--out", str(tmp_path), "--exclude-sources", "X1"), "not an ATT&CK group"),
        (("train", "head", "--task", "attack", "--out", str(tmp_path), "--pooling", "max"), "--pooling must be"),
        (("train", "head", "--task", "attack", "--out", str(tmp_path), "--layer", "1,x"), "--layer must be"),
        (("train", "head", "--task", "attack", "--out", str(tmp_path), "--layer", "1,3", "--joint"), "--joint takes one"),
        (("train", "head", "--task", "all", "--ship"), "not the shipped NVD one"),
    ]:
        code, err = _cli(capsys, *args)
        assert code != 0
        err = err.strip()
        assert err.startswith("secfm: error:") and len(err.splitlines()) == 1 and fragment in err, err


def test_cli_attack_extract_rejects_bad_input_in_one_line(tmp_path, capsys):
    for args, fragment in [
        (("attack", "extract", "some text", "--threshold", "2"), "--threshold"),
        (("attack", "extract", "   "), "empty"),
        (("attack", "extract", "@/nonexistent.txt"), "not found"),
        (("attack", "extract", "text", "--head", str(tmp_path)), "not a secfm head folder"),
    ]:
        code, err = _cli(capsys, *args)
        assert code != 0
        err = err.strip()
        assert err.startswith("secfm: error:") and len(err.splitlines()) == 1 and fragment in err, err


def test_results_files_report_head_and_baseline():
    root = Path(__file__).resolve().parents[1] / "training" / "results"
    # the ATT&CK head's results (the NVD-trained CWE head's are heads-cve-cwe.json, tested with the CVE heads)
    for task, metrics in (("attack", ("micro_f1", "macro_f1", "p_at_1", "p_at_5")),):
        res = json.loads((root / f"heads-{task}.json").read_text())
        assert res["command"].startswith("secfm train head")
        head, base = res["head"]["test"], res["baseline"]["eval"]["test"]
        assert all(k in head and k in base for k in metrics)
        assert res["sweep"]["rows"], "the layer/pooling sweep is kept in the results"
        md = (root / f"heads-{task}.md").read_text()
        assert "baseline" in md and res["command"] in md


def test_baseline_refit_on_a_heads_own_splits_lands_in_its_results(tmp_path, monkeypatch):
    """`secfm train head --baseline-for HEAD`: the TF-IDF baseline on exactly the splits the
    head trained on (data hash checked) is written into the head's results; another dataset is
    refused."""
    from typer.testing import CliRunner

    from secfm.cli import app
    from secfm.heads import shipped_head_path
    from secfm.training import heads as th
    from secfm.training.head_data import Example, HeadDataset

    words = {"T1059": "powershell script command", "T1003": "lsass credential dump", "T1566": "phishing email attachment"}
    rows = []
    for i in range(60):
        tid = list(words)[i % 3]
        split = ("train", "train", "train", "val", "test")[i % 5]
        rows.append(Example(f"{words[tid]} seen on host {i}", (tid,), f"S{1000 + i // 3:04d}", "procedure", split))
    data = HeadDataset("attack", list(words), rows)
    head = tmp_path / "head"
    head.mkdir()
    manifest = json.loads((shipped_head_path("attack", "gemma-3-270m") / "head.json").read_text())
    manifest.update(labels=list(words), training_data_hash=data.data_hash(), excluded_sources=[])
    (head / "head.json").write_text(json.dumps(manifest))
    results = json.loads(Path("training/results/heads-attack.json").read_text())
    results["data"]["training_data_hash"] = data.data_hash()
    results["baseline"] = None
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "heads-attack.json").write_text(json.dumps(results))
    monkeypatch.setattr(th, "build_dataset", lambda cfg: data)
    run = CliRunner().invoke(app, ["train", "head", "--task", "attack", "--baseline-for", str(head), "--results",
                                   str(tmp_path / "res"), "--baseline-c", "1,4", "--allow-busy"])
    assert run.exit_code == 0, run.output
    got = json.loads((tmp_path / "res" / "heads-attack.json").read_text())
    assert got["baseline"]["eval"]["test"]["micro_f1"] > 0.9 and got["baseline"]["config"]["C_candidates"] == [1.0, 4.0]
    assert got["baseline"]["config"]["added_by"].startswith("secfm")
    assert "baseline" in (tmp_path / "res" / "heads-attack.md").read_text()
    other = HeadDataset("attack", list(words), rows[:-1])
    monkeypatch.setattr(th, "build_dataset", lambda cfg: other)
    run = CliRunner().invoke(app, ["train", "head", "--task", "attack", "--baseline-for", str(head), "--results", str(tmp_path / "res"), "--allow-busy"])
    assert run.exit_code != 0 and "not the one the head" in str(run.exception or run.output)

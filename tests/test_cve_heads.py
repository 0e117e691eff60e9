"""The CVE heads' readout: temperatures, per-metric merging, the expected-score CVSS decoding, sentence features."""

from __future__ import annotations

import numpy as np
import pytest

from secfm.errors import SecfmError


def _one_hot_groups(P, labels):
    from secfm.training.cve_heads import _groups

    Y = np.zeros_like(P)
    for _, idx in _groups(labels):
        Y[np.arange(len(P)), np.asarray(idx)[P[:, idx].argmax(axis=1)]] = 1.0
    return Y


def test_temperature_fit_recovers_the_temperature_that_made_the_labels():
    from secfm.training.cve_heads import apply_temperatures, fit_temperatures, probabilities

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 6)) * 3
    labels = [f"CWE-{i}" for i in range(6)]
    P = probabilities(z / 2.0, "multiclass", labels)  # the truth is softmax(z / 2)
    Y = np.zeros_like(P)
    Y[np.arange(len(P)), [rng.choice(6, p=p) for p in P]] = 1.0
    (t,) = fit_temperatures(z, Y, "multiclass", labels)
    assert 1.7 < t < 2.3
    again = apply_temperatures(z, [t], "multiclass", labels)
    assert np.array_equal(again.argmax(axis=1), z.argmax(axis=1))  # rankings never change


def test_merge_by_group_takes_each_metric_from_its_design():
    import torch

    from secfm.heads import build_module
    from secfm.training.cve_heads import CVSS_LABELS, _groups, merge_by_group

    torch.manual_seed(0)
    c = len(CVSS_LABELS)
    text_only = build_module(0, c, "linear", None, 0.0, text_dim=7)
    dense = build_module(5, c, "mlp", 8, 0.0, text_dim=7)
    for m in (text_only, dense):
        for p in m.parameters():
            torch.nn.init.normal_(p)
        m.eval()
    dense.mu.normal_()
    choice = {g: ("a" if i % 2 else "b") for i, (g, _) in enumerate(_groups(CVSS_LABELS))}
    merged = merge_by_group({"a": text_only, "b": dense}, choice, CVSS_LABELS)
    x, t = torch.randn(3, 5), torch.rand(3, 7)
    with torch.no_grad():
        za, zb, zm = text_only(torch.zeros(3, 0), t), dense(x, t), merged(x, t)
    for g, idx in _groups(CVSS_LABELS):
        assert torch.allclose(zm[:, idx], (za if choice[g] == "a" else zb)[:, idx], atol=1e-5), g
    with pytest.raises(SecfmError):
        merge_by_group({"a": text_only}, {"AV": "a"}, CVSS_LABELS)  # every metric needs a choice


def test_expected_score_decoding_picks_the_median_score_and_tolerance_gives_back_argmax():
    from secfm.evals.metrics import cvss_base_score
    from secfm.training.cve_heads import CVSS_LABELS, _groups, cvss_predictions, decode_vectors

    where = {label: i for i, label in enumerate(CVSS_LABELS)}
    sure = {"AV": "N", "AC": "L", "PR": "N", "UI": "N", "S": "U", "I": "N", "A": "N"}
    P = np.zeros((1, len(CVSS_LABELS)))
    for m, v in sure.items():
        P[0, where[f"{m}:{v}"]] = 1.0
    # C: None 0.45 (score 0.0), Low 0.10 (5.3), High 0.45 (7.5): argmax says None, but the
    # score is 0 with probability 0.45 only; the median of the score distribution is 5.3
    P[0, where["C:N"]], P[0, where["C:L"]], P[0, where["C:H"]] = 0.46, 0.08, 0.46
    (argmax_vec, _), = cvss_predictions(P, CVSS_LABELS)
    (expected_vec, values), = cvss_predictions(P, CVSS_LABELS, "expected-score")
    assert "/C:N/" in argmax_vec and cvss_base_score(argmax_vec) == 0.0
    assert "/C:L/" in expected_vec and cvss_base_score(expected_vec) == 5.3 and values["C"] == ("L", 0.08)
    assert np.array_equal(decode_vectors(P, CVSS_LABELS, "expected-score", tolerance=100.0),
                          decode_vectors(P, CVSS_LABELS, "argmax"))
    # a sharp distribution: every decoding agrees
    rng = np.random.default_rng(1)
    from secfm.training.cve_heads import probabilities

    sharp = probabilities(rng.normal(size=(20, len(CVSS_LABELS))) * 50, "groups", CVSS_LABELS)
    assert np.array_equal(decode_vectors(sharp, CVSS_LABELS, "expected-score"), decode_vectors(sharp, CVSS_LABELS))
    assert len(_groups(CVSS_LABELS)) == 8
    with pytest.raises(SecfmError):
        decode_vectors(P, CVSS_LABELS, "mode")


def test_manifest_temperatures_and_decoding_survive_save_and_load(tmp_path):
    from secfm.heads import HeadManifest, build_module, load_head, save_head
    from secfm.training.cve_heads import CVSS_LABELS, apply_temperatures, probabilities

    module = build_module(4, len(CVSS_LABELS), "linear", None, 0.0)
    temps = [0.5, 1.0, 2.0, 1.5, 1.0, 3.0, 0.8, 1.2]
    m = HeadManifest(task="cvss", kind="linear", objective="groups", base_model="gemma-3-270m", adapter=None, layer=2,
                     pooling="mean", max_length=128, input_dim=4, hidden_dim=None, labels=list(CVSS_LABELS),
                     temperatures=temps, decoding="expected-score", decoding_tolerance=0.25)
    save_head(tmp_path / "h", module, m)
    head = load_head(tmp_path / "h")
    assert head.manifest.decoding == "expected-score" and head.manifest.decoding_tolerance == 0.25
    X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    z = head.logits(X)
    want = probabilities(apply_temperatures(z, temps, "groups", CVSS_LABELS), "groups", CVSS_LABELS)
    assert np.allclose(head.scores(X), want, atol=1e-6)
    with pytest.raises(SecfmError):
        HeadManifest(task="cvss", kind="linear", objective="groups", base_model="m", adapter=None, layer=1, pooling="mean",
                     max_length=128, input_dim=4, hidden_dim=None, labels=list(CVSS_LABELS), temperatures=[1.0])


def _text_design(name, c, v, seed):
    import torch

    from secfm.heads import build_module

    torch.manual_seed(seed)
    m = build_module(0, c, "linear", None, 0.0, text_dim=v)
    torch.nn.init.normal_(m.text_weight)
    return m.eval()


def test_per_metric_choice_gives_the_baseline_every_metric_a_design_does_not_clearly_beat():
    """The shipped CVSS head is the baseline on each metric where no design is significantly more
    accurate on validation (a tie included); the results say, figure by figure, where the head loses."""
    import scipy.sparse as sp

    from secfm.training.cve_heads import CVSS_LABELS, CveHeadData, Design, Trained, _groups, build_vector, predict_logits
    from secfm.training.cve_train import comparison, figure_losses, group_accuracy, per_metric_choice

    c, v, n = len(CVSS_LABELS), 30, 400
    T = sp.random(n, v, density=0.2, format="csr", random_state=1, dtype=np.float32)
    groups = _groups(CVSS_LABELS)

    class Vec:  # the designs' shared (fitted) vocabulary
        def transform(self, texts):
            return T

    modules = {"baseline": _text_design("baseline", c, v, 1), "head-a": _text_design("head-a", c, v, 2)}
    Z = {name: predict_logits(m, T, None, CVSS_LABELS) for name, m in modules.items()}
    # gold: the baseline's prediction on AV..S, head-a's on C, I, A (where it is then clearly better)
    Y = np.zeros((n, c), dtype=np.float32)
    for g, idx in groups:
        src = Z["head-a"] if g in ("C", "I", "A") else Z["baseline"]
        Y[np.arange(n), np.asarray(idx)[src[:, idx].argmax(axis=1)]] = 1.0
    # on AC head-a matches the baseline everywhere: a tie goes to the baseline
    ac = dict(groups)["AC"]
    modules["head-a"].text_weight.data[:, ac] = modules["baseline"].text_weight.data[:, ac]
    modules["head-a"].bias.data[ac] = modules["baseline"].bias.data[ac]
    Z["head-a"] = predict_logits(modules["head-a"], T, None, CVSS_LABELS)
    gold = [(build_vector(dict(CVSS_LABELS[j].split(":") for j in np.flatnonzero(y))),) for y in Y]
    data = CveHeadData("cvss", list(CVSS_LABELS), {"validation": [""] * n}, {"validation": []}, {"validation": Y},
                       {"validation": gold}, {"validation": np.zeros(n)})
    trained = {}
    for name, m in modules.items():
        t = Trained(Design(name, max_features=v), Vec(), m, {"best_epoch": 1}, 0.0, 0.0, task="cvss")
        t.Z["validation"] = Z[name]
        t.refresh(data.labels)
        t.val_score = float(np.mean(list(group_accuracy(t.P["validation"], data).values())))
        trained[name] = t
    merged = per_metric_choice(trained["head-a"], trained["baseline"], trained, data, None, lambda s: None)
    assert merged.group_choice == {g: ("head-a" if g in ("C", "I", "A") else "baseline") for g, _ in groups}
    acc, base = group_accuracy(merged.P["validation"], data), group_accuracy(trained["baseline"].P["validation"], data)
    assert all(acc[g] >= base[g] for g in acc) and acc["C"] == 1.0 and acc["AV"] == 1.0
    # figure by figure
    h = {"n": 5, "mad": 1.0, "exact_vector": 0.4, "per_metric_accuracy": {"AV": 0.9, "AC": 0.95}}
    b = {"n": 5, "mad": 1.1, "exact_vector": 0.41, "per_metric_accuracy": {"AV": 0.8, "AC": 0.96}}
    assert figure_losses(h, b, "cvss") == ["exact_vector", "AC"]
    cw = {"n": 5, "top1": 0.6, "top5": 0.8, "macro_f1": 0.2, "ece": 0.05}
    assert figure_losses(cw, {**cw, "ece": 0.04}, "cwe") == ["ece"]
    rep = comparison({"test": h}, {"test": b}, "cvss", {"AV": "head-a", "AC": "baseline"})
    assert rep["test"]["head_loses_on"] == ["exact_vector", "AC"] and rep["test"]["figures"]["AV"]["from"] == "head-a"


def test_macro_f1_interval_holds_the_estimate_with_rare_classes():
    """60 gold CWEs seen once and never predicted: a plain resample drops a third of them (and
    their zeros) each time, which put the whole interval above the estimate."""
    from secfm.training.cve_heads import cwe_metrics

    rng = np.random.default_rng(0)
    labels = [f"CWE-{i}" for i in range(10)]
    gold = [(labels[i % 10],) for i in range(400)] + [(f"CWE-{100 + k}",) for k in range(60)]
    P = rng.random((len(gold), 10))
    P[np.arange(400), np.arange(400) % 10] += 0.4
    m = cwe_metrics(P / P.sum(axis=1, keepdims=True), labels, gold, resamples=200)
    lo, hi = m["macro_f1_ci"]
    assert lo <= m["macro_f1"] <= hi and hi - lo > 0.005

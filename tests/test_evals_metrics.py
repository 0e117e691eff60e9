"""Bootstrap intervals, F1, CVSS base scores (the maintained `cvss` package) and run figures."""

from __future__ import annotations

import math

import pytest

from secfm.errors import SecfmError
from secfm.evals import metrics as M
from secfm.evals.parsers import EMPTY, OK, REFUSAL, UNPARSEABLE, Parsed
from secfm.evals.scoring import score_item, summarise
from secfm.evals.specs import get_task


@pytest.mark.parametrize(
    "vector, score",
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:N", 5.4),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H", 5.5),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),
    ],
)
def test_cvss_base_scores_of_known_vectors(vector, score):
    assert M.cvss_base_score(vector) == pytest.approx(score)


def test_cvss_rejects_garbage():
    with pytest.raises(SecfmError, match="not a CVSS v3 vector"):
        M.cvss_base_score("CVSS:3.1/AV:Q")


def test_all_base_vectors():
    scores = M.all_base_scores()
    assert len(scores) == 2592 and min(scores) == 0.0 and max(scores) == 10.0


def test_ratio_and_bootstrap_are_seeded_and_bracket_the_value():
    numer = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1] * 5
    denom = [1] * 50
    value, ci = M.figure(numer, denom, 1000, seed=3)
    assert value == pytest.approx(0.7)
    assert ci[0] < value < ci[1]
    assert M.ratio_ci(numer, denom, 1000, seed=3) == ci
    assert M.ratio_ci(numer, denom, 1000, seed=4) != ci
    lo, hi = M.ratio_ci([1] * 20, [1] * 20, 200, 0)
    assert lo == hi == 1.0
    assert all(math.isnan(x) for x in M.ratio_ci([], [], 100, 0))


def test_prf():
    assert M.set_counts(["T1", "T2", "T3"], ["T2", "T3", "T4"]) == (2, 1, 1)
    p, r, f = M.prf(2, 1, 1)
    assert (p, r, f) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert M.prf(0, 0, 0) == (1.0, 1.0, 1.0)
    assert M.prf(0, 0, 3) == (0.0, 0.0, 0.0)


def _records(spec, pairs):
    return [score_item(spec, parsed, gold) for parsed, gold in pairs]


def test_accuracy_official_drops_unparseable_strict_counts_it_refusals_stay():
    spec = get_task("cti-mcqa")
    recs = _records(spec, [
        (Parsed("A"), "A"), (Parsed("B"), "A"), (Parsed(None, UNPARSEABLE), "C"),
        (Parsed(None, EMPTY), "D"), (Parsed(None, REFUSAL), "A"), (Parsed("C"), "C"),
    ])
    s = summarise(spec, recs, seed=0, resamples=200)
    assert s["figures"]["accuracy"] == pytest.approx(2 / 4)  # A, B, refusal, C counted
    assert s["figures"]["accuracy_strict"] == pytest.approx(2 / 6)
    assert s["counts"] == {"parsed": 3, "unparseable": 1, "empty": 1, "refusal": 1, "official_denominator": 4}
    assert set(s["intervals"]) == set(s["figures"])
    assert s["baselines"]["majority"]["predicts"] == "A"
    assert s["baselines"]["majority"]["value"] == pytest.approx(3 / 6)


def test_rcm_gold_normalised_and_random_baseline():
    spec = get_task("cti-rcm")
    recs = _records(spec, [(Parsed("CWE-79"), "CWE-079"), (Parsed("CWE-89"), "cwe-89"), (Parsed("CWE-22"), "CWE-20")])
    s = summarise(spec, recs, resamples=100)
    assert s["figures"]["accuracy"] == pytest.approx(2 / 3)
    assert s["baselines"]["random"]["value"] == pytest.approx(1 / 3)


def test_vsp_mad_official_and_strict():
    spec = get_task("cti-vsp")
    gold = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
    recs = _records(spec, [
        (Parsed("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H"), gold),  # 5.5 -> 4.3
        (Parsed(gold), gold),  # 0
        (Parsed(None, UNPARSEABLE), "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H"),  # strict: max(5.5, 4.5)
    ])
    assert recs[0]["abs_dev"] == pytest.approx(4.3)
    s = summarise(spec, recs, resamples=100)
    assert s["figures"]["mad"] == pytest.approx(4.3 / 2)
    assert s["figures"]["mad_strict"] == pytest.approx((4.3 + 0 + 5.5) / 3)
    assert s["figures"]["exact_vector"] == pytest.approx(1 / 3)
    assert s["higher_is_better"] is False
    assert 0 < s["baselines"]["random"]["value"] < 10


def test_ate_micro_f1_and_per_item():
    spec = get_task("cti-ate")
    recs = _records(spec, [
        (Parsed(("T1071", "T1059")), "T1071, T1573"),  # tp1 fp1 fn1
        (Parsed(("T1003",)), "T1003.001, T1021"),  # gold folded: T1003, T1021 -> tp1 fn1
        (Parsed(None, UNPARSEABLE), "T1486"),  # strict: fn1
    ])
    assert recs[1]["gold"] == ["T1003", "T1021"]
    s = summarise(spec, recs, resamples=100, context={"candidates": ["T1071", "T1059", "T1003", "T1021", "T1486", "T1573"]})
    f = s["figures"]
    assert f["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert f["micro_f1_strict"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))
    assert f["item_f1"] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-5)
    assert f["item_precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert f["item_recall"] == pytest.approx((0.5 + 0.5) / 2)
    assert f["item_f1_strict"] == pytest.approx((0.5 + 2 / 3 + 0) / 3, abs=1e-5)
    assert set(s["baselines"]) == {"majority", "random"}


def test_loglik_figures_per_scoring():
    spec = get_task("cti-mcqa")
    recs = []
    for by, gold in [({"letter": "A", "sum": "B", "per_token": "A", "per_char": "A"}, "A"),
                     ({"letter": "C", "sum": "C", "per_token": "D", "per_char": "C"}, "C")]:
        rec = score_item(spec, Parsed(by["letter"], OK), gold)
        rec["parsed_by"], rec["correct_by"] = by, {k: v == gold for k, v in by.items()}
        recs.append(rec)
    s = summarise(spec, recs, mode="loglik", resamples=50)
    f = s["figures"]
    assert f["accuracy"] == f["accuracy_letter"] == 1.0
    assert f["accuracy_sum"] == f["accuracy_per_token"] == 0.5
    assert f["accuracy_per_char"] == 1.0


def test_no_records_is_an_error():
    with pytest.raises(SecfmError):
        summarise(get_task("cti-mcqa"), [])


def test_percentile_interpolates_between_ranks():
    from secfm.stats import percentile

    assert percentile([], 0.5) is None and percentile([3.0], 0.95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile(list(range(21)), 0.95) == 19.0 and percentile([0.0, 10.0], 0.95) == 9.5

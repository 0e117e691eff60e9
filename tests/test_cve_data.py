"""`secfm data cve` (splits, near duplicates, exclusion, data card) and the CVE heads on fixture feeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from secfm.errors import SecfmError
from tests.nvd_fixtures import make_cves, v20_page, write_feed_dir, write_json


@pytest.fixture(scope="module")
def feeds(tmp_path_factory):
    root = write_feed_dir(tmp_path_factory.mktemp("feeds"))
    # an API 2.0 page in the same folder, a CVE also in a yearly feed (newer copy), and a broken file
    newer = dict(make_cves(2022, 1)[0], modified="2023-05-05T00:00Z", cwes=["CWE-78"])
    write_json(root / "api-2023.json", v20_page([newer]))
    (root / "nvdcve-1.1-2018.json.gz").write_bytes(b"\x1f\x8b\x08\x00 broken")
    return root


def test_data_cve_splits_groups_and_card(feeds, tmp_path):
    from secfm.training.cve_data import CveDataConfig, build_cve_dataset, load_cve_splits

    problems = []
    card = build_cve_dataset(tmp_path / "ds", CveDataConfig(feeds=[str(feeds)]), on_problem=problems.append)
    assert len(problems) == 1 and "nvdcve-1.1-2018.json.gz" in problems[0]
    assert card["unreadable_feeds"] == problems
    splits = load_cve_splits(tmp_path / "ds")
    assert {s: len(v) for s, v in splits.items()}["train"] > 0
    assert all(r["published"][:4] <= "2020" for r in splits["train"])
    assert all(r["published"][:4] == "2021" for r in splits["validation"])
    assert all(r["published"][:4] == "2022" for r in splits["test"])
    # the newer API copy won
    first2022 = make_cves(2022, 1)[0]["id"]
    assert [r["cwes"] for r in splits["test"] if r["id"] == first2022] == [["CWE-78"]]
    # fixture descriptions repeat a template per product: near duplicates exist, and no group straddles splits
    where = {}
    for s, rows in splits.items():
        for r in rows:
            where.setdefault(r["group"], set()).add(s)
    assert all(len(v) == 1 for v in where.values())
    assert card["near_duplicates"]["groups_with_2_or_more"] > 0
    assert card["steps"]["near_duplicate_drops"] > 0 and card["splits"]["train"]["cves"] == len(splits["train"])
    readme = (tmp_path / "ds" / "README.md").read_text()
    assert "| train |" in readme and "near duplicates of a more held-out split" in readme
    # the datasets library loads the folder with the standard split names
    import datasets

    ds = datasets.load_dataset(str(tmp_path / "ds"))
    assert {"train", "validation", "test"} <= set(ds) and ds["train"].num_rows == len(splits["train"])
    with pytest.raises(SecfmError, match="not empty"):
        build_cve_dataset(tmp_path / "ds", CveDataConfig(feeds=[str(feeds)]))


def test_data_cve_exclusion_and_date_range(feeds, tmp_path):
    from secfm.training.cve_data import CveDataConfig, build_cve_dataset, load_cve_splits

    target = make_cves(2019, 40)[1]["id"]  # CVE-2022-9001 repeats its description
    card = build_cve_dataset(tmp_path / "ex", CveDataConfig(feeds=[str(feeds)], exclude_cves=[target],
                                                            published_after="2019-03-02"))
    rows = [r for v in load_cve_splits(tmp_path / "ex").values() for r in v]
    assert {target, "CVE-2022-9001"}.isdisjoint({r["id"] for r in rows})
    assert card["steps"]["excluded_listed"] == 1 and card["steps"]["excluded_near_duplicates"] >= 1
    assert card["steps"]["outside_published_range"] > 0
    assert (tmp_path / "ex" / "excluded_cves.txt").read_text().split() == [target]
    with pytest.raises(SecfmError, match="split dates must increase"):
        build_cve_dataset(tmp_path / "bad", CveDataConfig(feeds=[str(feeds)], train_end="2023-01-01"))


def test_data_cve_cli(feeds, tmp_path):
    from typer.testing import CliRunner

    from secfm.cli import app

    ids = tmp_path / "ids.txt"
    ids.write_text(make_cves(2020, 1)[0]["id"] + "\n")
    res = CliRunner().invoke(app, ["data", "cve", "--feeds", str(feeds), "--out", str(tmp_path / "c"),
                                   "--exclude-cves", f"@{ids}"])
    assert res.exit_code == 0, res.output
    assert "| validation |" in res.output
    card = json.loads((tmp_path / "c" / "data_card.json").read_text())
    assert card["excluded_cves"] == 1 and card["settings"]["exclude_source"] == f"@{ids}"


def test_cve_heads_train_save_load_and_exclude(feeds, tmp_path):
    from secfm.heads import load_head, trained_cves
    from secfm.training.cve_data import CveDataConfig, build_cve_dataset, load_cve_splits
    from secfm.training.cve_heads import CveFitConfig, Design, cvss_metrics, cwe_metrics, prepare, save_trained, train_design

    build_cve_dataset(tmp_path / "ds", CveDataConfig(feeds=[str(feeds)], near_dup_threshold=1.0))
    splits = load_cve_splits(tmp_path / "ds")
    excluded = {splits["train"][0]["id"]}
    for task in ("cwe", "cvss"):
        data = prepare(splits, task, min_count=2, exclude=excluded)
        assert excluded.isdisjoint(data.ids["train"])
        design = Design("text", max_features=500, fit=CveFitConfig(epochs=8, text_lr=0.5, batch_size=16))
        trained = train_design(data, design, splits=("validation", "test"))
        P = trained.P["test"]
        m = (cwe_metrics if task == "cwe" else cvss_metrics)(P, data.labels, data.gold["test"], resamples=50)
        if task == "cwe":
            assert m["top1"] > 0.9 and m["top1_ci"][0] <= m["top1"] <= m["top1_ci"][1] and 0 <= m["ece"] <= 1
        else:
            assert m["mad"] < 1.0 and m["per_metric_accuracy"]["AV"] > 0.9
        out = save_trained(trained, data, "gemma-3-270m", {"test": m}, "pytest", tmp_path / f"head-{task}")
        head = load_head(out)
        assert not head.needs_hidden and head.needs_text and head.manifest.format == 3
        again = head.scores(None, texts=data.texts["test"])
        assert np.allclose(again, P, atol=2e-2)  # int8 text weights
        assert trained_cves(head) == set(data.ids["train"]) and excluded.isdisjoint(trained_cves(out))
        assert (out / "head.safetensors").stat().st_size < 200_000

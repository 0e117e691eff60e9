"""Task specs and CTIBench data loading: official layout, labels, subsets, shots, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from secfm.errors import SecfmError
from secfm.evals import data as D
from secfm.evals.specs import all_tasks, get_task, render

FIXTURES = Path(__file__).parent / "fixtures" / "ctibench"


def test_every_task_is_declared_as_data():
    tasks = all_tasks()
    assert set(tasks) == {"cti-mcqa", "cti-rcm", "cti-vsp", "cti-ate", "cti-taa"}
    assert get_task("cti-mcq").name == "cti-mcqa"  # the HF config name works too
    assert get_task("cti-rcm-2021").name == "cti-rcm"
    rcm = get_task("cti-rcm")
    assert rcm.variant("cti-rcm-2021") == ("cti-rcm-2021.tsv", "cti-rcm-2021")
    for spec in tasks.values():
        assert spec.system_prompt == "You are a cybersecurity expert specializing in cyberthreat intelligence."
        assert spec.hf.repo == "AI4Sec/cti-bench"
        assert "gen" in spec.modes
    assert get_task("cti-mcqa").modes == ["gen", "loglik"]
    assert set(get_task("cti-ate").modes) == {"gen", "head"}


def test_unknown_task_and_config_and_mode():
    with pytest.raises(SecfmError, match="unknown task 'cti-xyz'"):
        get_task("cti-xyz")
    with pytest.raises(SecfmError, match="no config 'cti-rcm-1999'"):
        get_task("cti-rcm").variant("cti-rcm-1999")
    with pytest.raises(SecfmError, match="no 'loglik' mode"):
        get_task("cti-vsp").check_mode("loglik")


def test_render_fills_columns_with_spaces_and_does_not_reexpand():
    assert render("{Option A}|{x}", {"Option A": "{x}", "x": "1"}) == "{x}|1"
    with pytest.raises(SecfmError, match="template field"):
        render("{missing}", {})


@pytest.mark.parametrize(
    "task, file, n",
    [("cti-mcqa", "cti-mcq.tsv", 10), ("cti-rcm", "cti-rcm.tsv", 6), ("cti-vsp", "cti-vsp.tsv", 6), ("cti-ate", "cti-ate.tsv", 4)],
)
def test_fixtures_load(task, file, n):
    ds = D.load_dataset(get_task(task), FIXTURES / file)
    assert len(ds.items) == n
    assert [i.id for i in ds.items] == [str(k) for k in range(1, n + 1)]
    assert all(i.gold for i in ds.items)
    assert len(ds.sha256) == 64 and ds.source.endswith(file)


def test_crlf_quotes_and_markdown_are_kept(tmp_path):
    ds = D.load_dataset(get_task("cti-mcqa"), FIXTURES / "cti-mcq.tsv")
    second = ds.items[1]
    assert '"HTTPS"' in second.fields["Question"]
    assert not any(v.endswith("\r") for i in ds.items for v in i.fields.values())
    assert "**mass file modification**" in ds.items[2].fields["Question"]
    assert ds.items[0].fields["Prompt"].endswith("additional text. ")  # trailing space of the official prompt


def test_fully_quoted_field_is_unwrapped_like_pandas(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('URL\tDescription\tPrompt\tGT\r\nu\t"say ""hi"""\tp\tCWE-79\r\n', encoding="utf-8")
    item = D.load_dataset(get_task("cti-rcm"), path).items[0]
    assert item.fields["Description"] == 'say "hi"'


def test_rcm_2021_config(tmp_path):
    ds = D.load_dataset(get_task("cti-rcm"), FIXTURES / "cti-rcm-2021.tsv", config="cti-rcm-2021")
    assert ds.config == "cti-rcm-2021" and len(ds.items) == 4


def test_missing_file_wrong_columns_bad_utf8_bad_rows(tmp_path):
    spec = get_task("cti-mcqa")
    with pytest.raises(SecfmError, match="file not found"):
        D.load_dataset(spec, tmp_path / "nope.tsv")
    with pytest.raises(SecfmError, match=r"lacks column\(s\) Question, Option A"):
        D.load_dataset(spec, FIXTURES / "cti-rcm.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"URL\tDescription\tPrompt\tGT\nu\td\tp\tCWE-79\nu\td \xff\tp\tCWE-79\n")
    with pytest.raises(SecfmError, match="not valid UTF-8.*line 3"):
        D.load_dataset(get_task("cti-rcm"), bad)
    short = tmp_path / "short.tsv"
    short.write_text("URL\tDescription\tPrompt\tGT\nu\td\tp\tCWE-79\nu\td\tp\n", encoding="utf-8")
    with pytest.raises(SecfmError, match="line 3 has 3 tab-separated fields, the header has 4"):
        D.load_dataset(get_task("cti-rcm"), short)
    empty_gold = tmp_path / "gold.tsv"
    empty_gold.write_text("URL\tDescription\tPrompt\tGT\nu\td\tp\t \n", encoding="utf-8")
    with pytest.raises(SecfmError, match="line 2 has an empty GT"):
        D.load_dataset(get_task("cti-rcm"), empty_gold)
    header_only = tmp_path / "header.tsv"
    header_only.write_text("URL\tDescription\tPrompt\tGT\n", encoding="utf-8")
    with pytest.raises(SecfmError, match="no data rows"):
        D.load_dataset(get_task("cti-rcm"), header_only)
    with pytest.raises(SecfmError, match="is a folder"):
        D.load_dataset(spec, tmp_path)


def test_taa_needs_labels_and_takes_them_from_a_file(tmp_path):
    spec = get_task("cti-taa")
    with pytest.raises(SecfmError, match="no GT column: pass --labels FILE"):
        D.load_dataset(spec, FIXTURES / "cti-taa.tsv")
    ds = D.load_dataset(spec, FIXTURES / "cti-taa.tsv", labels=FIXTURES / "cti-taa-labels.tsv")
    assert [i.gold for i in ds.items] == ["APT29", "Transparent Tribe", "Mustang Panda", "Lazarus Group"]
    assert ds.labels_sha256 and ds.labels_source.endswith("cti-taa-labels.tsv")
    as_json = tmp_path / "labels.json"
    as_json.write_text('{"1": "APT28", "2": "SideCopy", "3": "Mustang Panda", "4": "Kimsuky"}', encoding="utf-8")
    assert D.load_dataset(spec, FIXTURES / "cti-taa.tsv", labels=as_json).items[0].gold == "APT28"
    partial = tmp_path / "partial.tsv"
    partial.write_text("URL\tGT\nhttps://example.org/reports/svr-cloud-2099\tAPT29\n", encoding="utf-8")
    with pytest.raises(SecfmError, match="3 item\\(s\\) .* have no label"):
        D.load_dataset(spec, FIXTURES / "cti-taa.tsv", labels=partial)
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("link\tactor\nx\ty\n", encoding="utf-8")
    with pytest.raises(SecfmError, match="needs a key column"):
        D.load_dataset(spec, FIXTURES / "cti-taa.tsv", labels=wrong)


def test_taa_gt_column_in_the_data_file_is_used(tmp_path):
    path = tmp_path / "taa.tsv"
    path.write_text("URL\tText\tPrompt\tGT\nu1\tt\tp\tAPT29\n", encoding="utf-8")
    assert D.load_dataset(get_task("cti-taa"), path).items[0].gold == "APT29"


def test_subset_is_seeded_and_shots_are_disjoint():
    items = D.load_dataset(get_task("cti-mcqa"), FIXTURES / "cti-mcq-attack.tsv").items
    a = D.select_items(items, limit=20, seed=1)
    b = D.select_items(items, limit=20, seed=1)
    c = D.select_items(items, limit=20, seed=2)
    assert [i.id for i in a.scored] == [i.id for i in b.scored] != [i.id for i in c.scored]
    assert len(a.scored) == 20 and not a.shots
    k = D.select_items(items, limit=20, seed=1, shots=3)
    assert [i.id for i in k.scored] == [i.id for i in a.scored]  # same items as the zero-shot run
    assert len(k.shots) == 3 and not {s.id for s in k.shots} & {i.id for i in k.scored}
    full = D.select_items(items, seed=1, shots=3)
    assert len(full.scored) == len(items) - 3
    assert not {s.id for s in full.shots} & {i.id for i in full.scored}
    assert full.shot_source == "held-out rows of the data file"
    with pytest.raises(SecfmError, match="cannot give"):
        D.select_items(items[:2], shots=2)


def test_shot_pool_must_be_disjoint():
    items = D.load_dataset(get_task("cti-mcqa"), FIXTURES / "cti-mcq.tsv").items
    with pytest.raises(SecfmError, match="shares items"):
        D.select_items(items, shots=2, pool=items, pool_source="same.tsv")
    pool = D.load_dataset(get_task("cti-mcqa"), FIXTURES / "cti-mcq-attack.tsv").items
    sel = D.select_items(items, shots=2, pool=pool, pool_source="attack.tsv")
    assert len(sel.scored) == len(items) and sel.shot_source == "attack.tsv"


def test_hub_unreachable_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(D, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SecfmError) as err:
        D.load_dataset(get_task("cti-mcqa"))
    message = str(err.value)
    assert "AI4Sec/cti-bench" in message and "cti-mcq" in message and "--data" in message
    assert "\n" not in message


def test_hub_offline_without_cache_is_one_clear_line(monkeypatch, tmp_path):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "ds", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SecfmError) as err:
        D.load_dataset(get_task("cti-rcm"), config="cti-rcm-2021")
    message = str(err.value)
    assert message.startswith("cannot load AI4Sec/cti-bench (config cti-rcm-2021)") and "\n" not in message

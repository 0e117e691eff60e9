"""Document-level ATT&CK extraction without the model: the development set, retrieval votes,
the document model's rules, the seen-sources check, and the clean-by-construction CTI-ATE
evaluation (URL-derived exclusion, refusal, contamination record)."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from secfm.errors import SecfmError
from secfm.heads import seen_overlap, seen_sources, shipped_head_path, source_clusters
from secfm.knowledge import load_attack
from secfm.training.head_data import build_attack_documents, write_documents_tsv
from secfm.workflows.attack_extraction import (
    DOC_FEATURES,
    DocumentModel,
    IndexRow,
    ProcedureIndex,
    SeenEntitiesError,
    document_signals,
    load_attack_predictor,
)

SHIPPED = shipped_head_path("attack", "gemma-3-270m")


@pytest.fixture(scope="module")
def docs():
    return build_attack_documents(one_sentence=1)


# --- the development set -----------------------------------------------------------------------
def test_documents_are_split_by_entity_and_labelled_with_parents(docs) -> None:
    kb = load_attack()
    clusters = source_clusters(kb)
    split_of_entity: dict[str, set[str]] = defaultdict(set)
    split_of_cluster: dict[str, set[str]] = defaultdict(set)
    for d in docs:
        split_of_entity[d.entity].add(d.split)
        split_of_cluster[clusters.get(d.entity, d.entity)].add(d.split)
        assert d.labels and all("." not in t and kb.technique(t).domain == d.domain for t in d.labels)
        assert len(d.labels) <= 8
    assert all(len(s) == 1 for s in split_of_entity.values())  # an entity's documents stay together
    assert all(len(s) == 1 for s in split_of_cluster.values())  # and a campaign goes with its groups
    paragraphs = [d for d in docs if d.form == "paragraph"]
    assert {d.domain for d in paragraphs if d.split == "test"} == {"enterprise", "mobile", "ics"}
    assert {d.entity_kind for d in paragraphs} == {"software", "group", "campaign"}
    first = next(d for d in paragraphs if d.entity == "S0066")
    assert first.text.startswith("3PARA RAT is a remote access tool") and first.labels == ("T1070", "T1071", "T1083", "T1573")
    assert first.url == "https://attack.mitre.org/software/S0066/" and first.platform == "Enterprise"
    # a gold label comes from a procedure example in the text; the lead sentence carries none
    assert first.sentences[0] == "" and {t.split(".")[0] for t in first.sentences[1:]} == set(first.labels)
    assert any(d.form == "sentence" for d in docs)
    mobile = next(d for d in paragraphs if d.entity == "S0305")
    assert mobile.domain == "mobile" and mobile.id.endswith("-mobile") and mobile.platform == "Mobile"


def test_documents_leave_out_excluded_entities_and_their_clusters() -> None:
    kb = load_attack()
    groups = kb.campaigns_by_id["C0022"].group_ids  # Operation Dream Job -> Lazarus Group
    docs = build_attack_documents(exclude_sources="C0022")
    entities = {d.entity for d in docs}
    assert "C0022" not in entities and not set(groups) & entities


def test_documents_in_the_cti_ate_layout_load_and_name_their_entity(tmp_path: Path, docs) -> None:
    from secfm.evals.data import load_dataset
    from secfm.evals.heads import item_entity
    from secfm.evals.specs import get_task

    picked = [d for d in docs if d.form == "paragraph"][:5]
    path = write_documents_tsv(picked, tmp_path / "dev.tsv")
    ds = load_dataset(get_task("cti-ate"), str(path))
    assert [item_entity(i.url) for i in ds.items] == [d.entity for d in picked]
    assert ds.items[0].gold.replace(" ", "").split(",") == list(picked[0].labels)


def test_item_entity_reads_software_group_and_campaign_urls() -> None:
    from secfm.evals.heads import item_entity

    assert item_entity("https://attack.mitre.org/software/S0066/") == "S0066"
    assert item_entity("https://attack.mitre.org/groups/G0016") == "G0016"
    assert item_entity("https://attack.mitre.org/campaigns/C0022/") == "C0022"
    assert item_entity("https://attack.mitre.org/groups/S0066/") is None  # kind and letter disagree
    assert item_entity("https://attack.mitre.org/techniques/T1059/") is None and item_entity("") is None


# --- retrieval and the document model ---------------------------------------------------------------
def test_retrieval_votes_and_index_round_trip(tmp_path: Path) -> None:
    rows = [IndexRow("a", ("T1059", "T1059.001"), "G0001"), IndexRow("b", ("T1059",), "G0002"),
            IndexRow("c", ("T1003",), "S0001")]
    vectors = np.eye(3, 4, dtype=np.float32)
    index = ProcedureIndex(rows, vectors, {"sources": ["G0001", "G0002", "S0001"]})
    q = np.asarray([[0.9, 0.1, 0.0, 0.0]], dtype=np.float32)
    q /= np.linalg.norm(q)
    share, best, nearest = index.votes(q, ["T1059", "T1003"], k=3)
    assert share[0, 0] > 0.99 and share[0, 1] < 0.01 and abs(share.sum() - 1) < 1e-5
    assert best[0, 0] == pytest.approx(0.9 / np.linalg.norm([0.9, 0.1]), rel=1e-4) and nearest[0, 0] == 0
    assert nearest[0, 1] == -1 and best[0, 1] == 0  # no neighbour with a positive similarity
    index.save(tmp_path)
    back = ProcedureIndex.load(tmp_path)
    assert [r.techniques for r in back.rows] == [r.techniques for r in rows] and back.sources == index.sources
    assert np.allclose(back.vectors, vectors, atol=0.01)


def test_document_model_rules() -> None:
    S = np.asarray([[0.9, 0.1, 0.0], [0.2, 0.6, 0.0]], dtype=np.float32)
    F = document_signals(S, np.zeros_like(S), np.zeros_like(S), np.zeros(3), np.zeros(3, dtype=np.int64))
    assert F.shape == (3, len(DOC_FEATURES))
    n = len(DOC_FEATURES)
    coef = [0.0] * n
    coef[0] = 1.0  # the best sentence's logit alone
    base = {"features": list(DOC_FEATURES), "mean": [0.0] * n, "scale": [1.0] * n, "coef": coef, "intercept": 0.0}
    p = DocumentModel(**base).probabilities(F)
    assert p[0] > p[1] > p[2]
    assert list(DocumentModel(**base, threshold=0.5).decide(p)) == [0, 1]
    assert list(DocumentModel(**base, rule="relative", threshold=0.1, ratio=0.95).decide(p)) == [0]
    assert list(DocumentModel(**base, rule="count", threshold=0.0, count_a=0.0, count_b=1.0).decide(p)) == [0]
    with pytest.raises(SecfmError, match="rule"):
        DocumentModel(**base, rule="vibes")


# --- seen sources and the clean evaluation ----------------------------------------------------------
def _head_copy(tmp_path: Path, trained: list[str], index_sources: list[str], calibration: list[str]) -> Path:
    """A copy of the shipped head folder claiming to have seen the given entities."""
    head = tmp_path / "head"
    shutil.copytree(SHIPPED, head)
    for file in [head / "head.json", *head.glob("*/head.json")]:  # the short-text path's head too
        manifest = json.loads(file.read_text())
        manifest["trained_sources"] = trained
        file.write_text(json.dumps(manifest))
    for name, key, value in (("retrieval.json", "sources", index_sources), ("document.json", "calibration_sources", calibration)):
        if (head / name).is_file():
            data = json.loads((head / name).read_text())
            data[key] = value
            (head / name).write_text(json.dumps(data))
    return head


def test_seen_sources_cover_head_index_and_calibration(tmp_path: Path) -> None:
    head = _head_copy(tmp_path, ["G0016"], ["S0154"], ["S0066"])
    seen = seen_sources(head)
    assert seen["head"] == ["G0016"]
    if (head / "retrieval.json").is_file():
        assert seen["retrieval"] == ["S0154"] and seen["document"] == ["S0066"]
        assert seen_overlap(head, ["s0066", "S0002", "S0154"]) == ["S0066", "S0154"]
    assert seen_overlap(head, ["G0016"]) == ["G0016"]


def test_a_given_head_that_saw_an_evaluated_entity_is_refused(tmp_path: Path) -> None:
    head = _head_copy(tmp_path, ["G0016", "S0066"], [], [])
    with pytest.raises(SeenEntitiesError, match="saw 1 evaluated entities"):
        load_attack_predictor(["S0066"], head=head)
    extractor = load_attack_predictor(["S0066"], head=head, allow_seen=True)
    assert extractor.exclusion.contaminated and extractor.exclusion.seen == ["S0066"]
    clean = load_attack_predictor(["S9001"], head=head)
    assert not clean.exclusion.contaminated and clean.exclusion.origin == "given"


ATE_REAL = Path(__file__).parent / "fixtures" / "ctibench" / "cti-ate-attack-ids.tsv"  # S0066, S0002, S0305


def test_eval_refuses_a_head_that_saw_the_items_entities_in_one_line(tmp_path: Path, capsys) -> None:
    """The entities come from the items' URLs (no --exclude-sources needed): the shipped extractor
    trained on S0002 and calibrated on S0305, so given as --head it is refused in one line naming
    how many items, before any model loads or anything is written."""
    from secfm.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "cti-ate", "--data", str(ATE_REAL), "--mode", "head", "--head", str(SHIPPED), "--out", str(out)])
    assert exit_.value.code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "saw 2 evaluated entities (S0002, S0305)" in lines[0], lines
    assert "2 of the 3 items" in lines[0] and "--allow-seen" in lines[0]
    assert not (out / "metrics.json").exists()


def _clean_extractor_in_cache(tmp_path: Path, monkeypatch, excluded: set[str]) -> tuple[Path, dict]:
    """A copy of the shipped extractor claiming to have seen none of ``excluded``, placed where the
    evaluator looks for one trained without them (a temporary cache)."""
    from secfm.workflows import attack_extraction

    seen = seen_sources(SHIPPED)
    clean = _head_copy(tmp_path, *[[s for s in seen.get(part, []) if s not in excluded]
                                   for part in ("head", "retrieval", "document")])
    where = {}

    def cache(model, entities):
        where["key"] = (model, sorted(entities))
        return clean

    monkeypatch.setattr(attack_extraction, "clean_extractor_dir", cache)
    return clean, where


def test_eval_excludes_the_items_entities_by_construction(tmp_path: Path, monkeypatch) -> None:
    """No --head: the shipped extractor saw two of the items' entities, so the evaluator takes one
    built without all three (and what travels with them) and records the exclusion; nothing the
    items are about is in its head, index or calibration."""
    from secfm.evals.data import load_dataset
    from secfm.evals.heads import load_attack_extractor
    from secfm.evals.specs import get_task
    from secfm.workflows.attack_extraction import expand_sources

    items = load_dataset(get_task("cti-ate"), str(ATE_REAL)).items
    excluded = expand_sources({"S0066", "S0002", "S0305"})
    clean, where = _clean_extractor_in_cache(tmp_path, monkeypatch, excluded)
    extractor, record = load_attack_extractor(None, items)  # no model loads until it predicts
    assert where["key"] == ("gemma-3-270m", sorted(excluded))
    ex = record["exclusion"]
    assert ex["origin"] == "cache" and ex["head"] == str(clean) and ex["entities_from_urls"] == ["S0002", "S0066", "S0305"]
    assert set(ex["excluded"]) == excluded and ex["items_with_an_entity"] == 3
    assert not record["contamination"]["contaminated"] and not seen_overlap(extractor.exclusion.head, excluded)
    # the same items with --allow-seen and the shipped head: scored, but marked contaminated
    _, seen = load_attack_extractor(SHIPPED, items, allow_seen=True)
    assert seen["contamination"]["contaminated"] and seen["contamination"]["seen_items"] == 2
    assert sorted(seen["contamination"]["seen_entities"]) == ["S0002", "S0305"]


@pytest.mark.slow
def test_eval_scores_with_the_clean_extractor_and_records_the_exclusion(tmp_path: Path, monkeypatch, engine) -> None:
    """End to end on the real model (the session engine): metrics.json records what was excluded
    and where the extractor came from."""
    from secfm.evals.runner import EvalConfig, run_eval
    from secfm.workflows.attack_extraction import expand_sources

    excluded = expand_sources({"S0066", "S0002", "S0305"})
    clean, _ = _clean_extractor_in_cache(tmp_path, monkeypatch, excluded)
    m = run_eval(EvalConfig(task="cti-ate", data=str(ATE_REAL), out=str(tmp_path / "run"), mode="head", bootstrap=20),
                 engine=engine, progress=False)
    ex = m["exclusion"]
    assert ex["origin"] == "cache" and ex["head"] == str(clean) and not m["contaminated"]
    assert ex["entities_from_urls"] == ["S0002", "S0066", "S0305"] and set(ex["excluded"]) == excluded
    assert m["n"] == 3 and "micro_f1" in json.dumps(m["figures"])


def test_short_texts_take_the_path_without_retrieval_and_keep_evidence(monkeypatch, tmp_path: Path) -> None:
    """A text within the document model's short-path length skips the MiniLM embedding and is
    decided by the short model, its evidence example matched by word overlap; a longer text
    still retrieves."""
    import secfm.workflows.attack_extraction as ax
    from secfm.heads import lift_parents, load_head, parent_index

    head = load_head(SHIPPED)
    labels = head.labels
    rows = [IndexRow("The actor ran PowerShell scripts to download tools.", ("T1059", "T1059.001"), "G0001"),
            IndexRow("Used cmd to list files.", ("T1059",), "G0002"), IndexRow("Dumped lsass memory.", ("T1003",), "S0001")]
    index = ProcedureIndex(rows, np.eye(3, 4, dtype=np.float32), {"sources": ["G0001", "G0002", "S0001"]})
    n = len(DOC_FEATURES)
    coef = [0.0] * n
    coef[0] = 1.0
    base = {"features": list(DOC_FEATURES), "mean": [0.0] * n, "scale": [1.0] * n, "coef": coef, "intercept": 0.0,
            "threshold": 0.5}
    short = DocumentModel(**base, use_retrieval=False)
    from dataclasses import asdict

    model = DocumentModel(**base, short={"max_chars": 120, "model": asdict(short)})
    assert model.short_model(120) is not None and model.short_model(121) is None
    extractor = ax.AttackExtractor(head, index=index, document=model)

    def fake_scores(texts):
        S = np.zeros((len(texts), len(labels)), dtype=np.float32)
        for i, t in enumerate(texts):
            if "PowerShell" in t:
                S[i, labels.index("T1059.001")] = 0.97
        return lift_parents(S, parent_index(labels))

    calls = []

    def fake_embed(texts, **_):
        calls.append(list(texts))
        return np.tile(np.asarray([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32), (len(texts), 1))

    extractor.scores = fake_scores
    monkeypatch.setattr(ax, "embed_texts", fake_embed)
    alert = "powershell.exe -enc ... PowerShell scripts download a payload."
    hits = extractor.extract(alert)
    assert calls == [] and "T1059" in {h.id for h in hits}
    ev = next(h for h in hits if h.id == "T1059").evidence[0]
    assert ev.match == "words" and ev.example == rows[0].text and ev.example_source == "G0001" and ev.similarity > 0
    report = alert + " " + "The operators then moved laterally across the network over several days. " * 2
    hits = extractor.extract(report)
    assert len(calls) == 1 and "T1059" in {h.id for h in hits}
    assert next(h for h in hits if h.id == "T1059").evidence[0].match == "embedding"
    back = DocumentModel.load(model.save(tmp_path).parent)
    assert back.short_model(100) is not None and back.short_model(100).use_retrieval is False


def _save_short_path_extractor(folder: Path, short_head_src: Path):
    """Save a two-row index and a document model whose short path (texts up to 80 characters) votes by retrieval;
    returns (rows, index, base document-model fields, the short path's model)."""
    from dataclasses import asdict

    from secfm.training.attack_docs import SHORT_HEAD_DIR, save_extractor

    rows = [IndexRow("Dumped lsass memory with procdump.", ("T1003",), "S0001"), IndexRow("Used cmd.", ("T1059",), "G0002")]
    index = ProcedureIndex(rows, np.eye(2, 4, dtype=np.float32), {"sources": ["S0001", "G0002"]})
    n = len(DOC_FEATURES)
    coef = [0.0] * n
    coef[DOC_FEATURES.index("vote_max")] = 10.0
    base = {"features": list(DOC_FEATURES), "mean": [0.0] * n, "scale": [1.0] * n, "coef": coef, "intercept": -5.0,
            "threshold": 0.5}
    short = DocumentModel(**base, use_retrieval=True)
    save_extractor(folder, DocumentModel(**base, short={"max_chars": 80, "model": asdict(short), "head": SHORT_HEAD_DIR}),
                   index, short_head_src)
    return rows, index, base, short


def test_short_texts_use_the_shallower_head_saved_beside_the_extractor(monkeypatch, tmp_path: Path) -> None:
    """A short-text path with its own head: save_extractor copies that head into the head folder,
    the loaded extractor scores a text within the path's length with it (and still retrieves
    when that path's model uses retrieval) and longer texts with the main head; the seen-sources
    check covers the nested head; a path without a head removes a stale copy."""
    from dataclasses import asdict

    import secfm.workflows.attack_extraction as ax
    from secfm.heads import load_head
    from secfm.training.attack_docs import SHORT_HEAD_DIR, save_extractor

    folder = tmp_path / "extractor"
    folder.mkdir()
    for name in ("head.json", "head.safetensors"):
        shutil.copy2(SHIPPED / name, folder / name)
    shallow_src = tmp_path / "shallow"
    shallow_src.mkdir()
    data = json.loads((SHIPPED / "head.json").read_text())
    data["trained_sources"] = data["trained_sources"] + ["G9999"]  # marks the nested copy in the seen check
    (shallow_src / "head.json").write_text(json.dumps(data))
    shutil.copy2(SHIPPED / "head.safetensors", shallow_src / "head.safetensors")
    rows, index, base, short = _save_short_path_extractor(folder, shallow_src)
    assert (folder / SHORT_HEAD_DIR / "head.json").is_file() and "head:short" in seen_sources(folder)
    assert seen_overlap(folder, ["G9999"]) == ["G9999"]
    extractor = ax.AttackExtractor(load_head(folder))
    assert extractor.short_head is not None and extractor.describe()["document_model"]["short_path_layers"] == [1, 2, 6]
    used = []

    def scored_by(name, head):
        def run(texts, *_, **__):
            used.append((name, len(texts)))
            return head.scores(np.zeros((len(texts), head.manifest.input_dim), dtype=np.float32))

        return run

    extractor.scores = scored_by("main", extractor.head)
    extractor.short_head.run = scored_by("short", extractor.short_head)
    embedded = []

    def fake_embed(texts, **_):
        embedded.append(len(texts))
        return np.tile(np.asarray([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32), (len(texts), 1))

    monkeypatch.setattr(ax, "embed_texts", fake_embed)
    hits = extractor.extract("procdump.exe read lsass.exe memory on WS-01.")
    assert used == [("short", 1)] and embedded == [1]
    hit = next(h for h in hits if h.id == "T1003")
    assert hit.evidence[0].match == "embedding" and hit.evidence[0].example == rows[0].text
    used.clear()
    extractor.extract("procdump.exe read lsass.exe memory on WS-01. " * 3)
    assert [u[0] for u in used] == ["main"]
    # a path without a head leaves no stale copy behind
    save_extractor(folder, DocumentModel(**base, short={"max_chars": 80, "model": asdict(short)}), index)
    assert not (folder / SHORT_HEAD_DIR).exists() and ax.AttackExtractor(load_head(folder)).short_head is None


def test_alert_sized_calls_embed_beside_the_head_forward_with_the_same_hits(monkeypatch, tmp_path: Path) -> None:
    """Once its models are loaded, a call whose texts all take the short-text path runs the
    head's forward and the MiniLM embedding at once in two workers (both must be inside at once, or the barrier times out),
    one torch thread each; the hits are the same as one after the other, and neither the
    caller's nor the process-wide torch thread setting changes; a failure reaches the caller."""
    import threading
    from types import SimpleNamespace

    import torch

    import secfm.workflows.attack_extraction as ax
    from secfm.heads import load_head

    folder = tmp_path / "extractor"
    folder.mkdir()
    for name in ("head.json", "head.safetensors"):
        shutil.copy2(SHIPPED / "short" / name, folder / name)
    _save_short_path_extractor(folder, folder)
    extractor = ax.AttackExtractor(load_head(folder), SimpleNamespace(model_name="gemma-3-270m", adapter=None))
    both_inside = threading.Barrier(2, timeout=30)
    seen, meet = {}, {"on": True}

    def short_run(texts, *_, **__):
        seen["head"] = (threading.current_thread().name, torch.get_num_threads())
        if meet["on"]:
            both_inside.wait()
        return extractor.short_head.scores(np.zeros((len(texts), extractor.short_head.manifest.input_dim), dtype=np.float32))

    def fake_embed(texts, **_):
        seen["embed"] = (threading.current_thread().name, torch.get_num_threads())
        if meet["on"]:
            both_inside.wait()
        return np.tile(np.asarray([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32), (len(texts), 1))

    extractor.short_head.run = short_run
    monkeypatch.setattr(ax, "embed_texts", fake_embed)
    texts = ["procdump.exe read lsass.exe memory on WS-01.", "cmd.exe /c whoami"]
    before = torch.get_num_threads()
    monkeypatch.setattr(ax, "OVERLAP_THREADS", (1, 1))
    side_by_side = extractor.extract_many(texts)
    assert seen["head"][0].startswith("secfm-head") and seen["embed"][0].startswith("secfm-retrieval")
    assert seen["head"][1] == seen["embed"][1] == 1
    assert torch.get_num_threads() == before
    fresh = []
    probe = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    assert fresh == [before]  # a thread's first torch call still gets the process's setting
    meet["on"] = False
    monkeypatch.setattr(ax, "OVERLAP_THREADS", None)
    one_after_the_other = extractor.extract_many(texts)
    assert seen["head"][0] == seen["embed"][0] == threading.current_thread().name
    assert side_by_side == one_after_the_other and any(h.id == "T1003" for h in side_by_side[0])

    def failing_embed(texts, **_):
        raise SecfmError("no embedder")

    monkeypatch.setattr(ax, "OVERLAP_THREADS", (1, 1))
    monkeypatch.setattr(ax, "embed_texts", failing_embed)
    with pytest.raises(SecfmError, match="no embedder"):
        extractor.extract_many(texts)
    monkeypatch.setattr(ax, "embed_texts", fake_embed)
    # a longer text (not alert-sized) keeps the forward on the caller's threads, one after the other
    extractor.scores = lambda part: extractor.head.scores(np.zeros((len(part), extractor.head.manifest.input_dim),
                                                                   dtype=np.float32))
    extractor.extract("procdump.exe read lsass.exe memory on WS-01. " * 3)
    assert seen["embed"][0] == threading.current_thread().name

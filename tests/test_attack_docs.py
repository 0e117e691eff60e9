"""Document-level ATT&CK extraction without the model: the development set, retrieval votes,
the document model's rules, the seen-sources check, and the clean-by-construction CTI-ATE
evaluation (URL-derived exclusion, refusal, contamination record)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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
    manifest = json.loads((head / "head.json").read_text())
    manifest["trained_sources"] = trained
    (head / "head.json").write_text(json.dumps(manifest))
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


def test_eval_refuses_a_head_that_saw_the_items_entities_in_one_line(tmp_path: Path) -> None:
    """The entities come from the items' URLs: no --exclude-sources needed; the refusal names
    how many items, before any model loads or anything is written."""
    kb = load_attack()
    docs = [d for d in build_attack_documents(domains=["mobile"]) if d.split == "test"][:3]
    data = write_documents_tsv(docs, tmp_path / "mobile.tsv")
    head = _head_copy(tmp_path, [docs[0].entity], [], [])
    assert kb.get(docs[0].entity) is not None
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "secfm.cli", "eval", "cti-ate", "--data", str(data), "--mode", "head",
                           "--head", str(head), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    n = sum(d.entity == docs[0].entity for d in docs)
    assert len(lines) == 1 and f"{n} of the 3 items" in lines[0] and "--allow-seen" in lines[0], proc.stderr
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_eval_reuses_a_clean_extractor_from_the_cache_and_records_the_exclusion(tmp_path: Path) -> None:
    """Items about entities the shipped extractor saw: the evaluator takes the extractor trained
    earlier without them from the cache (here: placed there by the test), scores with it and
    records in metrics.json what it excluded and where the extractor came from."""
    from secfm.workflows.attack_extraction import clean_extractor_dir, expand_sources

    shipped_seen = set().union(*seen_sources(SHIPPED).values())
    docs = [d for d in build_attack_documents() if d.entity in shipped_seen and d.form == "paragraph"][:2]
    data = write_documents_tsv(docs, tmp_path / "seen.tsv")
    excluded = sorted(expand_sources({d.entity for d in docs}))
    cached = clean_extractor_dir("gemma-3-270m", excluded)  # in the real $SECFM_HOME (the model is cached there)
    placed = not cached.exists()
    clean = _head_copy(tmp_path, [s for s in seen_sources(SHIPPED)["head"] if s not in excluded],
                       [s for s in seen_sources(SHIPPED).get("retrieval", []) if s not in excluded],
                       [s for s in seen_sources(SHIPPED).get("document", []) if s not in excluded])
    if placed:
        shutil.copytree(clean, cached)
    out = tmp_path / "run"
    try:
        proc = subprocess.run([sys.executable, "-m", "secfm.cli", "eval", "cti-ate", "--data", str(data), "--mode", "head",
                               "--bootstrap", "20", "--out", str(out)], capture_output=True, text=True, timeout=600)
    finally:
        if placed:
            shutil.rmtree(cached, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    ex = m["exclusion"]
    assert ex["origin"] == "cache" and ex["head"] == str(cached) and not m["contaminated"]
    assert ex["entities_from_urls"] == sorted({d.entity for d in docs}) and set(ex["excluded"]) == set(excluded)
    assert m["n"] == 2 and "micro_f1" in json.dumps(m["figures"])

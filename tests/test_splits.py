"""The one splitting function (secfm.training.splits) and the leakage test: no held-out entity id
occurs in any training split of the corpus or the instruction data, and both load with
``datasets.load_dataset`` as well as ``load_from_disk``."""

from __future__ import annotations

import json
import re

import pytest

from secfm.training.splits import EntitySplit, SplitPlan, kb_entity_split

VALIDATION, TEST = 0.1, 0.15  # larger than the defaults so a slice of the knowledge base holds out enough


def test_entities_units_owners_and_pins():
    split = EntitySplit(SplitPlan.standard(0.2, 0.2, "t"), group_of={"C0001": "G0001"},
                        owners={"CVE-2020-0001": ["CWE-1"]}, assigned={"CWE-1": "test", "G0001": "validation"},
                        names={"Fancy Group": "G0001"})
    # a sub-technique goes with its parent; a campaign with its group; a CVE with the CWE listing it
    for i in range(50):
        assert split.entity(f"T{1000 + i}.001") == split.entity(f"T{1000 + i}") == split.entity(f"t{1000 + i}/001")
    assert split.entity("C0001") == split.entity("G0001") == "validation"
    assert split.entity("CVE-2020-0001") == "test"
    # a unit takes the most protected split of its entities and of what its text names
    train_id = next(f"G{i:04d}" for i in range(2, 99) if split.entity(f"G{i:04d}") == "train")
    assert split.unit([train_id]) == "train"
    assert split.unit([train_id], "it worked with G0001") == "validation"
    assert split.unit([train_id], "as Fancy Group did") == "validation"
    assert split.unit([train_id], "see CVE-2020-0001") == "test"
    assert split.unit([]) == "train"  # about no entity (a mitigation): train unless it names one
    assert not split.allows("train", "G0001") and split.allows("validation", "G0001") and split.allows("test", "G0001")
    assert split.leaks(["fine", "uses G0001"], "train") == [(1, "G0001")]
    with pytest.raises(ValueError):
        SplitPlan((("train", 0.5), ("test", 0.2)))


def test_heads_keep_their_assignment_through_the_same_function():
    import hashlib

    from secfm.training.head_data import split_of

    def before(key, salt="secfm-heads-v1"):  # the formula the shipped heads were split with
        x = int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big") / 2**64
        return "train" if x < 0.7 else ("val" if x < 0.85 else "test")

    assert all(split_of(f"G{i:04d}") == before(f"G{i:04d}") for i in range(300))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from secfm.training.corpus import CorpusConfig, build_corpus
    from secfm.training.sft_data import SftConfig, build_sft

    root = tmp_path_factory.mktemp("splits")
    corpus = build_corpus(root / "corpus", CorpusConfig(kb_limit=400, tokenizer=None, validation_fraction=VALIDATION,
                                                         test_fraction=TEST))
    sft = build_sft(root / "sft", SftConfig(limit=120, validation_fraction=VALIDATION, test_fraction=TEST))
    return root, corpus, sft


def _held_out_ids():
    """Every knowledge-base entity outside the training split, straight from the catalogs."""
    from secfm.knowledge import load_attack, load_cwe

    attack, cwe = load_attack(), load_cwe()
    split = kb_entity_split(SplitPlan.standard(VALIDATION, TEST), attack, cwe)
    ids = [t.id for t in attack.techniques()] + list(attack.groups_by_id) + list(attack.software_by_id)
    ids += list(attack.campaigns_by_id) + [w.cwe_id for w in cwe.weaknesses()] + [c for c, _, _ in cwe.observed_examples()]
    return split, {i for i in ids if split.entity(i) != "train"}, attack


_ID = re.compile(r"(?<![\w.])(?:T\d{4}(?:\.\d{3})?|[GSC]\d{4}|CWE-\d+|CVE-\d{4}-\d{4,7})(?![\w])")


def test_no_held_out_entity_in_any_training_split(built):
    from secfm.training.corpus import load_corpus
    from secfm.training.sft_data import load_mcq, load_sft

    root, corpus_card, sft_card = built
    split, held, attack = _held_out_ids()
    assert len(held) > 100
    corpus = load_corpus(root / "corpus")
    sft = load_sft(root / "sft")
    train_texts = list(corpus["train"]["text"])
    train_texts += ["\n".join(m["content"] for m in r["messages"]) for r in sft["train"]]
    train_texts += [r["prompt"] + " " + r["completion"] for r in sft["qa"]]
    train_entities = {e for rows in (corpus["train"], sft["train"], sft["qa"]) for r in rows["entities"] for e in r}
    leaked = sorted({i for t in train_texts for i in _ID.findall(t) if i in held} | (train_entities & held))
    assert leaked == [], f"held-out entities in training data: {leaked[:10]}"
    # the case: the procedure examples of held-out groups and techniques are not in CPT training
    train_set = set(corpus["train"]["text"])
    procedures = list(attack.procedures())
    held_procs = [p for p in procedures if p.source_id in held or p.technique_id in held]
    assert held_procs and not [p for p in held_procs if p.text.strip() in train_set]
    # held-out splits are non-empty, the questions are about held-out entities, the builders checked themselves
    assert corpus_card["splits"]["test"]["documents"] > 0 and corpus_card["splits"]["validation"]["documents"] > 0
    assert corpus_card["steps"]["leakage_check"] == {"train": 0, "validation": 0, "test": 0}
    assert set(sft_card["leakage_check"].values()) == {0}
    for name in ("validation", "test"):
        questions = load_mcq(root / "sft" / f"mcq_{name}.jsonl")
        assert questions and all(split.unit(q["entities"], q["prompt"]) == name for q in questions)
    # a test question's options all come from the answer's split (no seen/unseen cue)
    for q in load_mcq(root / "sft" / "mcq_test.jsonl"):
        if q["kind"] == "technique-name":
            assert all(split.entity(e) == "test" for e in q["entities"])


def test_dataset_folders_load_with_load_dataset(built):
    from datasets import load_dataset, load_from_disk

    root, corpus_card, sft_card = built
    cache = str(root / "hf-cache")  # datasets caches what it loaded by path: a fresh cache for fresh builds
    corpus = load_dataset(str(root / "corpus"), cache_dir=cache)
    assert set(corpus) == {"train", "validation", "test"} == set(load_from_disk(str(root / "corpus")))
    assert len(corpus["test"]) == corpus_card["splits"]["test"]["documents"]
    sft = load_dataset(str(root / "sft"), cache_dir=cache)
    assert set(sft) == {"train", "validation", "test"} and len(sft["train"]) == sft_card["train"]
    qa = load_dataset(str(root / "sft"), "qa", cache_dir=cache)
    assert len(qa["train"]) == sft_card["qa"]
    mcq = load_dataset(str(root / "sft"), "mcq", cache_dir=cache)
    assert len(mcq["test"]) == sft_card["mcq"]["test"] and len(mcq["validation"]) == sft_card["mcq"]["validation"]
    assert set(load_from_disk(str(root / "sft"))) == {"train", "validation", "test", "qa", "mcq_validation", "mcq_test"}
    assert json.loads((root / "sft" / "data_card.json").read_text())["split"]["salt"] == "secfm-entities-v2"

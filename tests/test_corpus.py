"""Corpus curation (normalise, filter, deduplicate, redact, split, data card) and SFT data."""

from __future__ import annotations

from pathlib import Path

import pytest

from secfm.errors import SecfmError
from secfm.training.corpus import (
    CorpusConfig,
    Document,
    build_corpus,
    dedup,
    html_to_text,
    language_ok,
    normalize_text,
    split_documents,
    split_long,
)
from secfm.training.splits import EntitySplit, SplitPlan

FIXTURES = Path(__file__).parent / "fixtures" / "training"


def test_normalisation_and_html():
    raw = "Caf\u00e9\u200b  fi\ufb01le\r\n\r\n\r\n\r\nnext\tline\x07  "
    assert normalize_text(raw) == "Café fifile\n\nnext line"
    assert normalize_text("code:\n    if x:\n\treturn  1") == "code:\n    if x:\n    return 1"
    text = html_to_text((FIXTURES / "docs" / "web-vulns.html").read_text())
    assert "Cross-site scripting happens" in text and "console.log" not in text and "font-family" not in text


def test_one_html_reader_for_corpus_and_knowledge_base():
    from secfm.text.html import read_html
    from secfm.workflows import corpus as kb_corpus

    page = read_html("<html><head><title> Web  vulns </title><style>p{}</style></head><body><h1>XSS</h1>"
                     "<p>Escape   &amp;lt;script&amp;gt; output.</p><ul><li>one</li><li>two</li></ul></body></html>")
    assert page.title == "Web vulns"
    assert page.text == "XSS\n\nEscape &lt;script&gt; output.\n\none\n\ntwo"  # entities decoded once
    assert html_to_text("<p>a</p>") == "a" and html_to_text is read_html.__globals__["html_to_text"]
    assert kb_corpus.read_html is read_html


def test_length_and_language_filters():
    english = "The attacker used the stolen credentials to log in to the VPN and then moved to the file server. " * 3
    assert language_ok(english, "en", 0.04)
    assert not language_ok("Злоумышленник использовал украденные учетные данные для входа в VPN " * 3, "en", 0.04)
    assert not language_ok(" ".join(f"0x{i:08x} mov eax ebx" for i in range(30)), "en", 0.04)
    assert language_ok("anything", None, 0.04)
    with pytest.raises(SecfmError, match="only 'en'"):
        language_ok(english, "fr", 0.04)
    pieces = split_long("para one. " * 50 + "\n\n" + "para two. " * 50, 300)
    assert all(len(p) <= 300 for p in pieces) and len(pieces) > 2


def test_exact_and_near_duplicates():
    base = ("Adversaries may abuse PowerShell commands and scripts for execution on Windows hosts, often with "
            "encoded command lines, to download payloads and run them in memory without touching disk. Defenders "
            "should enable script block logging, constrain the language mode for ordinary users, and alert on "
            "PowerShell processes started by office applications or by the WMI provider host, since those parent "
            "processes rarely launch an interactive shell during normal administration work.")
    docs = [
        Document(base, "s", "a"),
        Document(base.upper(), "s", "b"),  # exact after case folding
        Document(base.replace("payloads", "payload"), "s", "c"),  # near duplicate
        Document("A completely different document about SQL injection in login forms and parameterized queries.", "s", "d"),
    ]
    kept, exact, near = dedup(docs, threshold=0.8, num_perm=128, n=5)
    assert [d.doc_id for d in kept] == ["a", "d"] and exact == 1 and near == 1


def test_split_is_stable_and_by_entity():
    split = EntitySplit(SplitPlan.standard(0.1, 0.1, "salt"))
    docs = [Document(f"text {i}", "s", f"doc{i}", entities=(f"doc{i}",)) for i in range(400)]
    docs.append(Document("part", "s", "doc7@1", entities=("doc7",)))  # a piece of doc7: the same entity
    by = split_documents(docs, split)
    assert set(by) == {"train", "validation", "test"} and 20 < len(by["test"]) < 70 and 20 < len(by["validation"]) < 70
    again = split_documents(docs, EntitySplit(SplitPlan.standard(0.1, 0.1, "salt")))
    assert {d.doc_id for d in by["test"]} == {d.doc_id for d in again["test"]}
    assert any(d.doc_id == "doc7@1" for d in by["test"]) == any(d.doc_id == "doc7" for d in by["test"])


def test_build_corpus_from_files_writes_dataset_and_card(tmp_path):
    secret = tmp_path / "leak.txt"
    secret.write_text("During the incident the analyst found password=Hunter2024! and the key AKIAABCDEFGHIJKLMNOP "
                      "in a script, and mail from jane.doe@victim-corp.com to the attacker at 203.0.113.9.\n")
    dup = tmp_path / "dup.md"
    dup.write_text((FIXTURES / "docs" / "ransomware-brief.txt").read_text())
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short")
    cfg = CorpusConfig(inputs=[FIXTURES / "docs", secret, dup, tiny], kb=False, tokenizer=None, test_fraction=0.3,
                       redact=["ip"], salt="s")
    card = build_corpus(tmp_path / "corpus", cfg)
    steps = card["steps"]
    assert steps["read"]["documents"] == 9
    assert steps["length_filter"]["dropped_too_short"] == 1
    assert steps["dedup"]["exact_duplicates"] == 1
    assert steps["redaction"]["by_type"] == {"api_key": 1, "email": 1, "ip": 1, "password": 1}
    assert card["documents"] == 7 and sum(s["documents"] for s in card["splits"].values()) == 7
    from secfm.training.corpus import load_corpus

    dd = load_corpus(tmp_path / "corpus")
    texts = " ".join(t for split in dd.values() for t in split["text"])
    assert "Hunter2024!" not in texts and "jane.doe" not in texts and "203.0.113.9" not in texts
    assert "PASSWORD-" in texts and "@example.com" in texts
    md = (tmp_path / "corpus" / "data_card.md").read_text()
    assert "| file:leak.txt |" in md and "duplicate rate" in md and "| password | 1 |" in md
    with pytest.raises(SecfmError, match="exists"):
        build_corpus(tmp_path / "corpus", cfg)


def test_kb_corpus_slice_with_tokens_and_exclusions(tmp_path):
    cfg = CorpusConfig(kb=True, kb_limit=5, tokenizer="gemma-3-270m", exclude_sources=["G0016"], salt="s")
    card = build_corpus(tmp_path / "kb", cfg)
    assert set(card["sources"]) == {"kb-attack", "kb-cwe"}
    assert card["tokens"] > 1000 and card["sources"]["kb-cwe"]["tokens"] > 0
    assert card["steps"]["redaction"]["total"] == 0  # no false positives on knowledge-base prose
    from secfm.training.corpus import kb_documents

    assert not any(d.doc_id.startswith("proc:G0016:") or d.doc_id == "G0016" for d in kb_documents(exclude_sources=["G0016"]))


def test_unsupported_file_type_is_a_clear_error(tmp_path):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.7")
    with pytest.raises(SecfmError, match="report.pdf: unsupported file type"):
        build_corpus(tmp_path / "o", CorpusConfig(inputs=[pdf], kb=False, tokenizer=None))


# ------------------------------------------------------------------------------------------------
# instruction data
# ------------------------------------------------------------------------------------------------
def test_sft_data_from_the_knowledge_base(tmp_path):
    from secfm.training.sft_data import SftConfig, build_sft, load_mcq, load_sft

    card = build_sft(tmp_path / "sft", SftConfig(limit=40, user_files=[FIXTURES / "chats.jsonl"], test_fraction=0.2))
    kinds = set(card["by_kind"])
    for k in ("technique-tactic", "technique-description", "technique-detection", "technique-mitigation",
              "group-techniques", "cwe-description", "cve-cwe", "mcq-technique-tactic", "mcq-cwe-name", "user"):
        assert k in kinds, k
    dd = load_sft(tmp_path / "sft")
    keys_train = set(dd["train"]["key"])
    keys_test = set(dd["test"]["key"])
    from secfm.training.sft_data import sft_split

    split = sft_split(SftConfig(test_fraction=0.2))
    assert keys_train and keys_test  # split by entity: training rows are about training entities only
    assert all(split.entity(e) == "train" for row in dd["train"] for e in row["entities"])
    # a test row is about, or names, a test entity (a training CWE's row quoting a held-out CVE goes to test)
    assert all(split.unit(r["entities"], "\n".join(m["content"] for m in r["messages"])) == "test" for r in dd["test"])
    mcq = load_mcq(tmp_path / "sft" / "mcq_test.jsonl")
    assert mcq and all(q["key"] in keys_test for q in mcq)
    for q in mcq:
        assert len(q["options"]) == 4 and len(set(q["options"])) == 4 and q["answer"] in "ABCD"
        assert q["options"]["ABCD".index(q["answer"])] in q["prompt"]
    row = next(r for r in dd["train"] if r["kind"] == "cve-cwe")
    assert "Reason:" in row["messages"][-1]["content"] and row["messages"][0]["role"] == "system"
    # the qa split: training-entity questions alone with their answer text, one row per (question, answer)
    qa = dd["qa"]
    assert len(qa) == card["qa"] > 0 and set(qa["key"]) <= keys_train
    assert len({(r["prompt"], r["completion"]) for r in qa}) == len(qa)
    letter_rows = [r for r in dd["train"] if r["kind"].startswith("mcq-")]
    for r in qa.select(range(min(len(qa), 20))):
        assert r["prompt"].startswith("Question: ") and r["prompt"].endswith("\nAnswer:") and r["kind"].startswith("qa-")
        question = r["prompt"][len("Question: "):-len("\nAnswer:")]
        # the same question is a lettered MCQ in the train split, with this completion as its answer
        assert any(m["messages"][1]["content"].startswith(question + "\n")
                   and m["messages"][2]["content"].endswith(") " + r["completion"]) for m in letter_rows)
    tactic_q = next((q for q in load_mcq(tmp_path / "sft" / "mcq_test.jsonl") if q["kind"] == "technique-tactic"), None)
    if tactic_q:  # distractors of the same kind: all four options are tactic names
        from secfm.knowledge import load_attack

        names = {t.name for t in load_attack().tactics_by_id.values()}
        assert set(tactic_q["options"]) <= names


def test_user_chat_errors_name_the_file_and_line(tmp_path):
    from secfm.training.sft_data import read_user_chats

    bad = tmp_path / "c.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
                   '{"messages": [{"role": "wizard", "content": "q"}]}\n')
    with pytest.raises(SecfmError, match=r"c.jsonl: line 2: each message needs a role"):
        read_user_chats(bad)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(SecfmError, match="e.jsonl is empty"):
        read_user_chats(tmp_path / "e.jsonl")
    assert len(read_user_chats(FIXTURES / "chats.jsonl")) == 2

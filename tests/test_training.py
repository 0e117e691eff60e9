"""Training library: chunked loss, data packing and masking, recipes and --dry-run, the smoke
recipes end to end, kill -9 and resume with the same data order, TRL path, clear input errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "training"
RECIPES = ROOT / "training" / "recipes"
SECFM = [sys.executable, "-m", "secfm.cli"]


def secfm(*args: str, cwd: Path = ROOT, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SECFM, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})})


class _Proc:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(capsys, *args: str) -> _Proc:
    """Run the CLI in this process (much faster than a subprocess on a busy CPU)."""
    from secfm.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return _Proc(code, out.out, out.err)


def one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip().splitlines()
    assert err and err[-1].startswith("secfm: error:"), proc.stderr[-2000:]
    for f in fragments:
        assert f in err[-1], err[-1]


def write_recipe(path: Path, **body) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def tiny_cpt_recipe(tmp: Path, model: Path, **train) -> Path:
    return write_recipe(
        tmp / "tiny-cpt.yaml", name="tiny-cpt", stage="cpt", model=str(model), method="lora",
        output_dir=str(tmp / "run"),
        data={"path": str(tmp / "corpus"), "build": {"kb": False, "inputs": [str(FIXTURES / "docs")],
                                                    "tokenizer": None, "heldout_fraction": 0.3},
              "max_eval_samples": 4},
        seq_len=16, lora={"r": 2, "alpha": 4, "dropout": 0.0},
        train={"per_device_batch_size": 2, "learning_rate": 1e-3, "max_steps": 16, "warmup_ratio": 0.0,
               "gradient_checkpointing": False, "logging_steps": 1, "eval_steps": None, "save_steps": 4,
               "save_total_limit": 3, "threads": 1, **train},
    )


# ------------------------------------------------------------------------------------------------
# the one merge (secfm.merge.merge_adapter; secfm.training.merge_adapter is the same function)
# ------------------------------------------------------------------------------------------------
def test_merge_adapter_merges_and_reuses(tiny_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from secfm.errors import SecfmError
    from secfm.merge import merge_adapter
    from secfm.training import merge_adapter as training_merge

    assert training_merge is merge_adapter
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    with pytest.raises(SecfmError, match="unknown dtype"):  # both checked before anything loads
        merge_adapter(str(tiny_model), tmp_path / "adapter", tmp_path / "m2", "float8")
    with pytest.raises(SecfmError, match="not a PEFT adapter"):
        merge_adapter(str(tiny_model), tmp_path, tmp_path / "m3")
    ids = torch.tensor([[2, 100, 200, 300, 400]])
    with torch.no_grad():
        expected = peft(ids).logits
    out = merge_adapter(str(tiny_model), tmp_path / "adapter", tmp_path / "merged", "float32")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file() and (out / "secfm-merge.json").is_file()
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    assert torch.allclose(merged, expected, atol=1e-4)  # the adapter's effect, now in plain weights
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert merge_adapter(str(tiny_model), tmp_path / "adapter", out, "float32") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # same base, adapter content and dtype: reused


# ------------------------------------------------------------------------------------------------
# the chunked loss
# ------------------------------------------------------------------------------------------------
def test_chunked_loss_matches_the_plain_loss_and_gradients(tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from secfm.training.loss import chunked_lm_loss, plain_lm_loss

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False))
    ids = torch.randint(5, 5000, (3, 24))
    labels = ids.clone()
    labels[:, :10] = -100  # unlabelled prompt positions are skipped
    labels[1, 20:] = -100
    mask = torch.ones_like(ids)

    def grads(fn):
        model.zero_grad()
        loss, n = fn()
        (loss / n).backward()
        return float(loss.detach() / n), n, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain = grads(lambda: plain_lm_loss(model, ids, labels, mask))
    chunked = grads(lambda: chunked_lm_loss(model, ids, labels, mask, chunk_size=7, matmul_dtype=torch.float32))
    assert plain[1] == chunked[1] == int((labels[:, 1:] != -100).sum())
    assert abs(plain[0] - chunked[0]) < 1e-4
    for a, b in zip(plain[2], chunked[2]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    # bf16 output-layer matmuls stay close
    bf = grads(lambda: chunked_lm_loss(model, ids, labels, mask, chunk_size=16, matmul_dtype=torch.bfloat16))
    assert abs(bf[0] - plain[0]) < 0.05


# ------------------------------------------------------------------------------------------------
# data: packing and assistant-only labels
# ------------------------------------------------------------------------------------------------
def test_assistant_only_labels_and_packing():
    from secfm.models import load_tokenizer
    from secfm.training.trainer import encode_conversation, pack_documents, pack_examples

    tok = load_tokenizer("gemma-3-270m")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tactic of T1059?"},
                {"role": "assistant", "content": "Execution (TA0002)."}, {"role": "user", "content": "And T1003?"},
                {"role": "assistant", "content": "Credential Access."}]
    ids, labels = encode_conversation(tok, messages, 512)
    trained = tok.decode([t for t in labels if t != -100])
    assert "Execution (TA0002)." in trained and "Credential Access." in trained
    assert "Tactic of T1059" not in trained and "Be brief" not in trained and "user" not in trained
    assert trained.count("<end_of_turn>") == 2  # the model learns to stop
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    # truncation inside the prompt leaves nothing to learn: dropped
    assert encode_conversation(tok, messages, 5) is None
    packed = pack_examples([([1] * 5, [1] * 5), ([2] * 4, [-100] * 4), ([3] * 6, [3] * 6)], 10)
    assert [len(a) for a, _ in packed] == [9, 6]
    blocks = pack_documents(["alpha beta gamma", "delta epsilon"], tok, 4)
    assert all(len(b) == 4 for b in blocks) and blocks[0][0] == tok.bos_token_id


def test_completion_rows_train_the_answer_as_the_cloze_evaluation_scores_it(tmp_path):
    from secfm.errors import SecfmError
    from secfm.models import load_tokenizer
    from secfm.training.recipes import Recipe
    from secfm.training.sft_data import SftConfig, build_sft, cloze_prompt
    from secfm.training.trainer import build_datasets, encode_completion

    tok = load_tokenizer("gemma-3-270m")
    prompt = cloze_prompt("Which MITRE ATT&CK tactic does the technique T1003 (OS Credential Dumping) belong to?")
    ids, labels = encode_completion(tok, prompt, "Credential Access", 512)
    context = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    answer = tok(" Credential Access", add_special_tokens=False)["input_ids"]
    assert ids == context + answer + [tok.eos_token_id]  # the token ids the cloze scorer uses
    assert labels == [-100] * len(context) + answer + [tok.eos_token_id]
    assert encode_completion(tok, prompt, "Credential Access", 4) is None  # truncated inside the prompt

    build_sft(tmp_path / "sft", SftConfig(limit=6, test_fraction=0.1))
    recipe = Recipe(name="qa", stage="sft", model="gemma-3-270m", output_dir=str(tmp_path / "run"), seq_len=256,
                    data={"path": str(tmp_path / "sft"), "train_split": "qa", "max_eval_samples": 2})
    train, evaluation = build_datasets(recipe, tok)
    assert len(train) and len(evaluation) == 2
    trained = tok.decode([t for row in train["labels"] for t in row if t != -100])
    assert "Question:" not in trained and "Answer:" not in trained and "<eos>" in trained
    # selected kinds, with conversations of the train split replayed among them
    mixed = Recipe(name="qa", stage="sft", model="gemma-3-270m", output_dir=str(tmp_path / "run"), seq_len=256,
                   packing=False, data={"path": str(tmp_path / "sft"), "train_split": "qa", "kinds": ["qa-technique-t*"],
                                        "replay_split": "train", "replay_samples": 3, "max_eval_samples": 2})
    train, _ = build_datasets(mixed, tok)
    texts = [tok.decode(ids) for ids in train["input_ids"]]
    answers = [t for t in texts if t.startswith("<bos>Question: ")]
    assert len(answers) == len(train) - 3 and all("tactic" in t for t in answers)
    assert sum("<start_of_turn>" in t for t in texts) == 3
    assert train["input_ids"] == build_datasets(mixed, tok)[0]["input_ids"]  # the same order every time
    for data, message in (({"train_split": "nope"}, "has no split 'nope'"),
                          ({"train_split": "qa", "kinds": ["qa-nothing"]}, "no row of kinds qa-nothing")):
        bad = Recipe(name="qa", stage="sft", model="gemma-3-270m", output_dir=str(tmp_path / "run"),
                     data={"path": str(tmp_path / "sft"), **data})
        with pytest.raises(SecfmError, match=message):
            build_datasets(bad, tok)


# ------------------------------------------------------------------------------------------------
# recipes and --dry-run
# ------------------------------------------------------------------------------------------------
EIGHT_B = ["llama-3.1-8b/cpt.yaml", "llama-3.1-8b/cpt-fsdp.yaml", "llama-3.1-8b/cpt-1gpu-offload.yaml",
           "llama-3.1-8b/sft-lora.yaml", "llama-3.1-8b/sft-qlora.yaml"]


@pytest.mark.parametrize("recipe", EIGHT_B)
def test_8b_recipes_validate_with_dry_run(recipe):
    from secfm.training.recipes import dry_run, load_recipe, read_accelerate_config

    r = load_recipe(RECIPES / recipe)
    assert r.model == "llama-3.1-8b" and r.distributed.num_gpus >= 1
    assert read_accelerate_config(r) is not None
    report = dry_run(r)
    mem = report["memory"]
    assert mem["fits"], report["memory_table"]
    assert 7.9 < mem["params_b"] < 8.1
    assert mem["total_gib"] <= r.distributed.gpu_memory_gb


def test_dry_run_cli_prints_the_memory_estimate(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    secfm = lambda *a: cli(capsys, *a)  # noqa: E731
    proc = secfm("train", "cpt", "--config", "training/recipes/llama-3.1-8b/cpt.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "memory estimate per GPU" in proc.stdout and "fits" in proc.stdout and "DEEPSPEED" in proc.stdout
    proc = secfm("train", "sft", "--config", "training/recipes/llama-3.1-8b/sft-qlora.yaml", "--dry-run", "--json")
    report = json.loads(proc.stdout)
    assert report["method"] == "qlora" and report["memory"]["per_gpu_gib"]["weights"] < 8


def test_every_packaged_recipe_loads():
    from secfm.training.recipes import list_recipes, load_recipe

    names = {p.relative_to(RECIPES).as_posix() for p in list_recipes()}
    for expected in ["gemma-3-270m/smoke.yaml", "gemma-3-270m/smoke-sft.yaml", "gemma-3-270m/cpt-lora.yaml",
                     "gemma-3-270m/sft-lora.yaml", *EIGHT_B]:
        assert expected in names
    for p in list_recipes():
        load_recipe(p)


def test_bad_recipes_and_gpu_recipes_on_cpu_fail_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    secfm = lambda *a: cli(capsys, *a)  # noqa: E731
    bad = write_recipe(tmp_path / "bad.yaml", name="x", stage="cpt", model="gemma-3-270m", output_dir="o",
                       data={"path": "d"}, train={"max_stepz": 3})
    one_line_error(secfm("train", "cpt", "--config", str(bad)), "invalid recipe", "max_stepz")
    one_line_error(secfm("train", "sft", "--config", "training/recipes/gemma-3-270m/cpt-lora.yaml"), "is a cpt recipe")
    one_line_error(secfm("train", "cpt", "--config", str(tmp_path / "missing.yaml")), "recipe not found")
    proc = secfm("train", "sft", "--config", "training/recipes/llama-3.1-8b/sft-lora.yaml", "--no-launch")
    if not __import__("torch").cuda.is_available():
        one_line_error(proc, "needs 1 x A100")


# ------------------------------------------------------------------------------------------------
# the smoke recipes (real gemma-3-270m), end to end through the CLI
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_recipes_run_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    sets = ["--set", f"output_dir={out}/cpt", "--set", f"data.path={out}/corpus",
            "--set", f"export.adapter_dir={out}/cpt/adapter", "--set", "export.merged_dir=null"]
    proc = secfm("train", "cpt", "--config", "training/recipes/gemma-3-270m/smoke.yaml", *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "cpt" / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["bf16"] in (True, False)
    assert summary["eval_perplexity"] and summary["eval_perplexity"] > 1
    rows = [json.loads(line) for line in (out / "cpt" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows) and any("eval_loss" in r for r in rows)
    assert (out / "cpt" / "loss_curve.png").stat().st_size > 1000
    assert (out / "cpt" / "checkpoint-4" / "trainer_state.json").is_file()
    card = json.loads((out / "corpus" / "data_card.json").read_text())
    assert card["sources"]["kb-attack"]["tokens"] > 0 and "dedup" in card["steps"]
    adapter = out / "cpt" / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "google/gemma-3-270m" and cfg["peft_type"] == "LORA"
    assert not (adapter / "tokenizer.json").exists()  # the adapter alone
    assert not (out / "merged").exists()  # the merge itself: test_merge_adapter_merges_and_reuses (tiny model)

    sft_sets = ["--set", f"output_dir={out}/sft", "--set", f"data.path={out}/sft-data",
                "--set", f"export.adapter_dir={out}/sft/adapter", "--set", f"init_adapter={adapter}"]
    proc = secfm("train", "sft", "--config", "training/recipes/gemma-3-270m/smoke-sft.yaml", *sft_sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "sft" / "summary.json").read_text())
    assert summary["global_step"] == 3 and summary["eval_loss"] is not None
    # the adapter loads through the registry machinery (resolve by path)
    from secfm.models import resolve

    resolved = resolve(str(out / "sft" / "adapter"))
    assert resolved.adapter_dir is not None and resolved.chat_template


# ------------------------------------------------------------------------------------------------
# kill -9, then resume: continues from the last checkpoint with the same data order
# ------------------------------------------------------------------------------------------------
def _last_by_step(path: Path, key: str) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if key in row and not row.get("final"):
            out[(row["step"], row.get("micro", 0))] = row[key]
    return out


@pytest.mark.slow
def test_kill9_then_resume_continues_with_the_same_data_order(tiny_model, tmp_path):
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    ref_dir.mkdir()
    kill_dir.mkdir()
    ref = tiny_cpt_recipe(ref_dir, tiny_model)
    proc = secfm("train", "cpt", "--config", str(ref))
    assert proc.returncode == 0, proc.stderr[-3000:]

    recipe = tiny_cpt_recipe(kill_dir, tiny_model)
    run = kill_dir / "run"
    child = subprocess.Popen([*SECFM, "train", "cpt", "--config", str(recipe)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "checkpoint-8" / "trainer_state.json").is_file():
        if child.poll() is not None:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "summary.json").exists()

    proc = secfm("train", "cpt", "--config", str(recipe))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    resumed = summary["resumed_from"]
    assert resumed and int(resumed.rsplit("-", 1)[1]) >= 8
    assert summary["global_step"] == 16

    ref_order = _last_by_step(ref_dir / "run" / "data_order.jsonl", "batch")
    got_order = _last_by_step(run / "data_order.jsonl", "batch")
    assert len(ref_order) == 16 and got_order == ref_order
    ref_loss = _last_by_step(ref_dir / "run" / "metrics.jsonl", "loss")
    got_loss = _last_by_step(run / "metrics.jsonl", "loss")
    assert set(got_loss) == set(ref_loss)
    for k in ref_loss:
        assert abs(ref_loss[k] - got_loss[k]) < 2e-3, (k, ref_loss[k], got_loss[k])


# ------------------------------------------------------------------------------------------------
# the TRL SFTTrainer path (what GPUs run), on the tiny model
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sft_through_trl_sfttrainer(tiny_model, tmp_path):
    recipe = write_recipe(
        tmp_path / "trl.yaml", name="tiny-trl", stage="sft", model=str(tiny_model), trainer="trl",
        output_dir=str(tmp_path / "run"),
        data={"path": str(tmp_path / "sft"), "build": {"kb": True, "limit": 2, "user_files": [str(FIXTURES / "chats.jsonl")],
                                                       "heldout_fraction": 0.3}, "max_eval_samples": 2},
        seq_len=128, lora={"r": 2, "alpha": 4, "dropout": 0.0},
        train={"per_device_batch_size": 2, "max_steps": 2, "warmup_ratio": 0.0, "gradient_checkpointing": True,
               "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "threads": 1},
        export={"adapter_dir": str(tmp_path / "adapter"), "merged_dir": str(tmp_path / "merged"),
                "base_model_name": str(tiny_model)},
    )
    proc = secfm("train", "sft", "--config", str(recipe))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["eval_loss"] is not None
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "merged" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------
# clear errors on bad input files
# ------------------------------------------------------------------------------------------------
def test_corrupt_or_empty_inputs_name_the_file(tmp_path, capsys):
    secfm = lambda *a: cli(capsys, *a)  # noqa: E731
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line_error(secfm("data", "corpus", "--out", str(tmp_path / "o1"), "--no-kb", "--tokenizer", "none", str(empty)),
                   "empty.txt", "empty")
    binary = tmp_path / "blob.md"
    binary.write_bytes(b"\xff\xfe\x00garbage\x81")
    one_line_error(secfm("data", "corpus", "--out", str(tmp_path / "o2"), "--no-kb", "--tokenizer", "none", str(binary)),
                   "blob.md", "UTF-8")
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "fine row of text that is long enough to keep around"}\n{not json\n')
    one_line_error(secfm("data", "corpus", "--out", str(tmp_path / "o3"), "--no-kb", "--tokenizer", "none", str(bad)),
                   "rows.jsonl", "line 2")
    chats = tmp_path / "chats.jsonl"
    chats.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    one_line_error(secfm("data", "sft", "--out", str(tmp_path / "o4"), "--no-kb", "--user", str(chats)),
                   "chats.jsonl", "no assistant")
    one_line_error(secfm("data", "corpus", "--out", str(tmp_path / "o5"), "--no-kb", str(tmp_path / "nope.txt")),
                   "nope.txt", "not found")


# ------------------------------------------------------------------------------------------------
# the measurement script (perplexity + MCQ) on the tiny model
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(tiny_model):
    """The tiny model and the real tokenizer as the held-out scoring loads them (float32), loaded once."""
    from secfm.training.evaluate import _load

    return _load(str(tiny_model), None)


def test_evaluation_scores_perplexity_and_letters(tiny_lm):
    import math

    from secfm.training.evaluate import heldout_perplexity, mcq_accuracy, render

    lm, tok = tiny_lm
    ppl = heldout_perplexity(lm, tok, ["Adversaries dump credentials from LSASS memory.", "CWE-79 is cross-site scripting."],
                             ["procedure", "weakness"], max_tokens=1000)
    assert ppl["documents"] == 2 and set(ppl["by_kind"]) == {"procedure", "weakness"}
    assert math.isclose(math.log(ppl["perplexity"]), ppl["nll_per_token"], rel_tol=1e-3)
    questions = [{"prompt": "Which tactic?\n\nA) Execution\nB) Impact\nC) Discovery\nD) Collection", "answer": "B",
                  "kind": "technique-tactic"}] * 3
    mcq = mcq_accuracy(lm, tok, questions)
    assert mcq["questions"] == 3 and 0 <= mcq["accuracy"] <= 1 and sum(mcq["predicted_letters"].values()) == 3
    md = render({"runs": {"m": {"perplexity": ppl, "mcq": mcq}}, "comparisons": {}, "commands": ["secfm train eval"]})
    assert "| m |" in md and "secfm train eval" in md
    from secfm.training.evaluate import mcq_cloze_accuracy

    cloze = mcq_cloze_accuracy(lm, tok, [{**q, "question": "Which tactic?", "options": ["Execution", "Impact", "Discovery",
                                                                                     "Collection"]} for q in questions])
    assert cloze["questions"] == 3 and sum(cloze["predicted_letters"].values()) == 3
    both = {"perplexity": ppl, "mcq": mcq, "mcq_cloze": cloze}
    md = render({"runs": {"base": both, "tuned": both},
                 "comparisons": {"tuned": {"perplexity_reduction": 0.0, "perplexity_target_met": False,
                                           "mcq_gain_points": 0.0, "mcq_target_met": False,
                                           "mcq_cloze_gain_points": 12.0, "mcq_cloze_target_met": True}}})
    assert "MCQ letter" in md and "MCQ cloze (the primary figure, fixed before scoring) +12.0 points" in md
    assert "(meets the +10 target)" in md and "secondary MCQ formulations (reported, not chosen from): letter +0.0" in md


def test_train_eval_is_an_alias_of_the_registered_heldout_task(tiny_model, tiny_lm, tmp_path, monkeypatch, capsys):
    """`secfm train eval` and the harness task train-heldout give the same numbers (and a per-question log)."""
    from datasets import Dataset, DatasetDict

    from secfm.evals.harness import run_task
    from secfm.training import evaluate

    monkeypatch.chdir(tmp_path)  # the alias caches its runs under ./runs/eval-cache
    monkeypatch.setattr(evaluate, "_load", lambda model, adapter: tiny_lm)  # loaded once (the tokenizer takes seconds)
    corpus, sft = tmp_path / "corpus", tmp_path / "sft"
    docs = {"text": ["Adversaries dump credentials from LSASS memory.", "CWE-79 is cross-site scripting."],
            "kind": ["procedure", "weakness"]}
    DatasetDict({"validation": Dataset.from_dict(docs)}).save_to_disk(str(corpus))
    (corpus / "data_card.json").write_text("{}")
    sft.mkdir()
    question = {"prompt": "Which tactic?\n\nA) Execution\nB) Impact\nC) Discovery\nD) Collection", "answer": "B",
                "kind": "technique-tactic", "question": "Which tactic?",
                "options": ["Execution", "Impact", "Discovery", "Collection"]}
    (sft / "mcq_validation.jsonl").write_text("\n".join(json.dumps(question) for _ in range(2)) + "\n")
    proc = cli(capsys, "train", "eval", "--corpus", str(corpus), "--sft", str(sft), "--model", str(tiny_model),
               "--out", str(tmp_path / "alias.json"), "--max-tokens", "1000", "--fp32")
    assert proc.returncode == 0, proc.stderr
    # the same settings through the harness, scored again (no cache)
    task = run_task("train-heldout", {"out": str(tmp_path / "task.json"), "corpus": str(corpus), "sft": str(sft),
                                      "model": str(tiny_model), "max_tokens": 1000, "bf16": False, "cache_dir": None})
    alias = json.loads((tmp_path / "alias.json").read_text())
    for key in ("perplexity", "mcq", "mcq_calibrated", "mcq_cloze"):
        assert alias["runs"][str(tiny_model)][key] == task.metrics["runs"][str(tiny_model)][key]
    assert task.figures["perplexity"] == {str(tiny_model): alias["runs"][str(tiny_model)]["perplexity"]["perplexity"]}
    assert task.samples_path == tmp_path / "task.samples.jsonl" and "provenance" in task.metrics
    samples = [json.loads(line) for line in task.samples_path.read_text().splitlines()]
    assert len(samples) == 2 and set(samples[0]["correct"][str(tiny_model)]) == {"mcq", "mcq_calibrated", "mcq_cloze"}
    assert "held-out validation (2 questions)" in task.summary


#: questions a 270M model answers easily from the option text alone (one sensible option each)
EASY_QUESTIONS = [
    {"question": "What is the capital city of France?",
     "options": ["Paris", "Dog food", "Seventeen", "The color of rain"], "answer": "A", "kind": "geo"},
    {"question": "Which animal says meow and is often kept as a pet?",
     "options": ["Nine", "A cat", "Photosynthesis", "Tuesday"], "answer": "B", "kind": "animal"},
    {"question": "What is the opposite of hot?",
     "options": ["Window", "Purple", "Cold", "Running quickly through the forest"], "answer": "C", "kind": "word"},
    {"question": "How many days are there in a week?",
     "options": ["Bread", "Blue", "Democracy", "Seven"], "answer": "D", "kind": "word"},
]


def _rotated(q: dict, by: int) -> dict:
    """The same question with its options rotated, so the right answer has another letter."""
    from secfm.training.sft_data import LETTERS

    options = q["options"][by:] + q["options"][:by]
    right = q["options"][LETTERS.index(q["answer"])]
    return {**q, "options": options, "answer": LETTERS[options.index(right)]}


@pytest.fixture(scope="module")
def gemma_270m():
    """The real gemma-3-270m (float32), loaded once for the scoring tests."""
    from secfm.training.evaluate import _load

    return _load("gemma-3-270m", None)


def test_cloze_scoring_picks_the_likely_option_text_whatever_its_letter(gemma_270m):
    from secfm.training.evaluate import cloze_option_logprobs, mcq_accuracy, mcq_cloze_accuracy

    lm, tok = gemma_270m
    questions = EASY_QUESTIONS + [_rotated(q, 1) for q in EASY_QUESTIONS] + [_rotated(q, 2) for q in EASY_QUESTIONS]
    # the answers sit under every letter; the cloze formulation sees no letters, so it must follow the text
    cloze = mcq_cloze_accuracy(lm, tok, questions, batch=5)
    assert cloze["accuracy"] == 1.0, cloze
    assert cloze["predicted_letters"] == {"A": 3, "B": 3, "C": 3, "D": 3}
    assert set(cloze["by_kind"]) == {"animal", "geo", "word"}
    # the shared question cache (contexts of different lengths, left-padded; options of 1-5 tokens)
    # gives the same log-likelihoods as scoring every question + option row in full
    shared = cloze_option_logprobs(lm, tok, questions, batch=5)
    full = cloze_option_logprobs(lm, tok, questions, batch=5, share_context=False)
    for a, b in zip(shared, full):
        assert [n for _, n in a] == [n for _, n in b]
        assert all(abs(x - y) < 1e-3 for (x, _), (y, _) in zip(a, b)), (a, b)
    # length normalization: a long right answer has a lower total log-probability than a one-word
    # distractor but a far higher mean per token, and the mean decides
    long_answers = [
        {"question": "Which US president was known as Honest Abe?", "answer": "A", "kind": "history",
         "options": ["Abraham Lincoln, the sixteenth President of the United States", "Pizza", "Seven", "Blue"]},
        {"question": "Who wrote Romeo and Juliet?", "answer": "A", "kind": "literature",
         "options": ["William Shakespeare, the English playwright and poet", "Tuesday", "Green", "Nine"]},
        {"question": "What is the chemical formula of water?", "answer": "A", "kind": "chemistry",
         "options": ["H2O, two hydrogen atoms bonded to one oxygen atom", "Banana", "Car", "Loud"]},
    ]
    totals = cloze_option_logprobs(lm, tok, long_answers)
    assert all(max(range(4), key=lambda j: row[j][0]) != 0 for row in totals)  # the sum would get them wrong
    assert mcq_cloze_accuracy(lm, tok, long_answers)["accuracy"] == 1.0
    # letter scoring (with the lettered options in the prompt) and its content-free calibration
    from secfm.training.sft_data import LETTERS, MCQ

    lettered = [{**q, "prompt": MCQ(q["question"], q["options"], LETTERS.index(q["answer"]), q["kind"], "").prompt()}
                for q in questions]
    letter = mcq_accuracy(lm, tok, lettered, calibrate=True)
    prior = letter["calibrated"]["letter_prior"]
    assert set(prior) == set(LETTERS) and abs(sum(prior.values()) - 1) < 0.01
    assert sum(letter["calibrated"]["predicted_letters"].values()) == len(questions) == letter["questions"]


def test_ship_copies_only_the_adapter_and_writes_a_card(tmp_path):
    import torch
    from safetensors.torch import save_file

    from secfm.errors import SecfmError
    from secfm.training.ship import ship_adapter

    src = tmp_path / "adapter"
    src.mkdir()
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4)}, src / "adapter_model.safetensors")
    (src / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "gemma-3-270m", "r": 2,
                                                         "lora_alpha": 4, "target_modules": ["q_proj"]}))
    (src / "tokenizer.json").write_text("{}")
    target = ship_adapter(src, target=tmp_path / "shipped", results=tmp_path / "none.json", stages=())
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    card = (target / "README.md").read_text()
    assert card.startswith("---\nbase_model: google/gemma-3-270m") and "not measured yet" in card
    # with results: the shipped run is the one whose adapter was copied, and its gains are stated
    mcq = lambda acc: {"accuracy": acc, "questions": 4}  # noqa: E731
    results = {"mcq_questions": 4, "runs": {
        "base": {"adapter": None, "perplexity": {"perplexity": 80.0}, "mcq": mcq(0.25), "mcq_cloze": mcq(0.25)},
        "other": {"adapter": str(tmp_path / "other"), "perplexity": {"perplexity": 40.0}, "mcq": mcq(0.5), "mcq_cloze": mcq(0.5)},
        "ours": {"adapter": str(src), "perplexity": {"perplexity": 30.0}, "mcq": mcq(0.25), "mcq_cloze": mcq(0.5)}},
        "comparisons": {"other": {"perplexity_reduction": 0.5, "perplexity_target_met": True, "mcq_gain_points": 25.0},
                        "ours": {"perplexity_reduction": 0.625, "perplexity_target_met": True, "mcq_gain_points": 0.0,
                                 "mcq_cloze_gain_points": 25.0}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    card = (ship_adapter(src, target=tmp_path / "shipped", results=tmp_path / "results.json", stages=()) / "README.md").read_text()
    assert "**secfm-270m**" in card and "62.5% lower" in card
    assert "MCQ cloze (the primary figure, fixed before scoring) +25.0 points" in card
    (src / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/abs/path"}))
    with pytest.raises(SecfmError, match="expected 'gemma-3-270m'"):
        ship_adapter(src, target=tmp_path / "x")


def test_shipped_secfm_270m_adapter():
    """The packaged adapter: small, names its registry base, has a model card."""
    adapter = ROOT / "secfm" / "adapters" / "secfm-270m"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "google/gemma-3-270m" and cfg["peft_type"] == "LORA"
    assert (adapter / "adapter_model.safetensors").stat().st_size <= 25_000_000
    assert "secfm-270m" in (adapter / "README.md").read_text()
    from secfm.registry import get_spec

    assert get_spec("secfm-270m").adapter_path() == adapter

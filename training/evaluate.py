"""Measure a base model against its adapters: held-out security perplexity and accuracy on the
held-out synthetic multiple-choice questions (``secfm train eval`` / ``python -m
secfm.training.evaluate``).

* Perplexity: every held-out corpus document (BOS + text + EOS, up to 512 tokens) scored on its
  own, in float32; token-weighted, overall and per document kind.
* MCQ: each held-out question rendered with the chat template (the same system prompt for every
  model) and a generation prompt; the answer is the letter among A-D with the highest
  next-token probability.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from secfm.training.sft_data import LETTERS, SYSTEM_PROMPT


def _load(model: str, adapter: str | None):
    import torch

    from secfm.settings import default_threads

    if default_threads():
        torch.set_num_threads(default_threads())
    from secfm.engines.transformers_engine import load_causal_lm
    from secfm.models import resolve, tokenizer_for

    resolved = resolve(model, adapter)
    tok = tokenizer_for(resolved)
    lm = load_causal_lm(resolved, "cpu", dtype=torch.float32)
    if adapter:
        lm = lm.merge_and_unload()  # same numbers, faster scoring
    lm.eval()
    return lm, tok


#: how the recorded secfm-270m figures were produced (from a fresh clone, on the CPU)
REPRO_COMMANDS = [
    "secfm data corpus --out runs/data/corpus",
    "secfm data sft --out runs/data/sft",
    "secfm train cpt --config training/recipes/gemma-3-270m/cpt-lora.yaml",
    "secfm train sft --config training/recipes/gemma-3-270m/sft-lora.yaml",
    "secfm train eval --corpus runs/data/corpus --sft runs/data/sft --max-tokens 20000 "
    "--adapter runs/gemma-3-270m/cpt-lora/adapter --adapter runs/gemma-3-270m/sft-lora/adapter "
    "--out training/results/secfm-270m.json",
    "python -m secfm.training.ship --adapter runs/gemma-3-270m/sft-lora/adapter",
]


def _autocast(bf16: bool):
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def heldout_perplexity(lm, tok, texts: Sequence[str], kinds: Sequence[str], max_tokens: int = 40000,
                       max_len: int = 512, batch: int = 16, bf16: bool = False) -> dict:
    import torch

    from secfm.training.loss import chunked_lm_loss

    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    eos = [tok.eos_token_id]
    encoded = [bos + ids + eos for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]
    items = [(k, ids[:max_len]) for k, ids in zip(kinds, encoded)]
    import random

    random.Random(0).shuffle(items)  # a fixed sample of every kind under the token budget
    chosen, total = [], 0
    for k, ids in items:
        if total + len(ids) - 1 > max_tokens:
            continue
        chosen.append((k, ids))
        total += len(ids) - 1
    nll = defaultdict(float)
    count = defaultdict(int)
    by_kind = defaultdict(list)
    for k, ids in chosen:
        by_kind[k].append(ids)
    with torch.inference_mode(), _autocast(bf16):
        for k, docs in by_kind.items():
            docs.sort(key=len)
            for start in range(0, len(docs), batch):
                group = docs[start:start + batch]
                n = max(len(d) for d in group)
                ids = torch.full((len(group), n), tok.pad_token_id or 0, dtype=torch.long)
                labels = torch.full((len(group), n), -100, dtype=torch.long)
                mask = torch.zeros((len(group), n), dtype=torch.long)
                for i, d in enumerate(group):
                    ids[i, :len(d)] = torch.tensor(d)
                    labels[i, :len(d)] = torch.tensor(d)
                    mask[i, :len(d)] = 1
                loss, c = chunked_lm_loss(lm, ids, labels, mask, chunk_size=256,
                                          matmul_dtype=torch.bfloat16 if bf16 else torch.float32)
                nll[k] += float(loss)
                count[k] += c
    tokens = sum(count.values())
    return {
        "perplexity": round(math.exp(sum(nll.values()) / tokens), 4),
        "nll_per_token": round(sum(nll.values()) / tokens, 5),
        "tokens": tokens, "documents": len(chosen),
        "by_kind": {k: {"perplexity": round(math.exp(nll[k] / count[k]), 4), "tokens": count[k],
                        "documents": len(by_kind[k])} for k in sorted(count)},
    }


def mcq_accuracy(lm, tok, questions: Sequence[dict], system_prompt: str | None = SYSTEM_PROMPT, batch: int = 8,
                 bf16: bool = False) -> dict:
    import torch

    letter_ids = [tok.convert_tokens_to_ids(letter) for letter in LETTERS]
    prompts = []
    for q in questions:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": q["prompt"]}]
        prompts.append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    predictions: dict[int, str] = {}
    tok.padding_side = "left"
    with torch.inference_mode(), _autocast(bf16):
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            enc = tok([prompts[i] for i in idx], add_special_tokens=False, return_tensors="pt", padding=True)
            out = lm(**enc, logits_to_keep=1, use_cache=False)
            scores = out.logits[:, -1, letter_ids].float()
            for i, row in zip(idx, scores.argmax(-1).tolist()):
                predictions[i] = LETTERS[row]
    correct = defaultdict(int)
    total = defaultdict(int)
    for i, q in enumerate(questions):
        total[q["kind"]] += 1
        correct[q["kind"]] += predictions[i] == q["answer"]
    n = len(questions)
    letters = defaultdict(int)
    for p in predictions.values():
        letters[p] += 1
    return {
        "accuracy": round(sum(correct.values()) / n, 4), "questions": n,
        "by_kind": {k: {"accuracy": round(correct[k] / total[k], 4), "questions": total[k]} for k in sorted(total)},
        "predicted_letters": dict(sorted(letters.items())),
    }


def _file_sha(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def evaluate_models(model: str, adapters: Sequence[str], corpus: str | Path, sft: str | Path, out: str | Path,
                    max_tokens: int = 40000, max_mcq: int | None = None, bf16: bool | None = None,
                    cache_dir: str | Path | None = "runs/eval-cache",
                    progress: Callable[[str], None] | None = None) -> dict:
    """Score the base model and each adapter; each (model, adapter weights, data, settings)
    result is cached in ``cache_dir`` so a later comparison reuses the base model's run."""
    import hashlib

    from secfm.training.corpus import load_corpus
    from secfm.training.loss import cpu_supports_bf16
    from secfm.training.sft_data import load_mcq

    note = progress or (lambda s: None)
    if bf16 is None:
        bf16 = cpu_supports_bf16()
    heldout = load_corpus(corpus)["heldout"]
    questions = load_mcq(Path(sft) / "mcq_heldout.jsonl")
    if max_mcq:
        questions = questions[:max_mcq]
    data_key = [_file_sha(Path(corpus) / "data_card.json"), _file_sha(Path(sft) / "mcq_heldout.jsonl"),
                max_tokens, max_mcq, bf16]
    runs: dict[str, dict] = {}
    for adapter in [None, *adapters]:
        name = model if adapter is None else f"{model} + {adapter}"
        weights = Path(adapter) / "adapter_model.safetensors" if adapter else None
        key = hashlib.sha256(json.dumps([model, _file_sha(weights) if weights and weights.is_file() else None,
                                         *data_key]).encode()).hexdigest()[:20]
        cached = Path(cache_dir) / f"{key}.json" if cache_dir else None
        if cached is not None and cached.is_file():
            runs[name] = json.loads(cached.read_text())
            note(f"{name}: cached result ({cached})")
            continue
        note(f"scoring {name}")
        started = time.time()
        lm, tok = _load(model, adapter)
        ppl = heldout_perplexity(lm, tok, list(heldout["text"]), list(heldout["kind"]), max_tokens=max_tokens, bf16=bf16)
        note(f"{name}: held-out perplexity {ppl['perplexity']}")
        mcq = mcq_accuracy(lm, tok, questions, bf16=bf16)
        note(f"{name}: MCQ accuracy {mcq['accuracy']:.3f}")
        runs[name] = {"model": model, "adapter": adapter, "perplexity": ppl, "mcq": mcq, "bf16_autocast": bf16,
                      "seconds": round(time.time() - started, 1)}
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(runs[name], indent=2))
        del lm
    base = runs[model]
    comparisons = {}
    for name, r in runs.items():
        if r["adapter"] is None:
            continue
        drop = 1 - r["perplexity"]["perplexity"] / base["perplexity"]["perplexity"]
        gain = (r["mcq"]["accuracy"] - base["mcq"]["accuracy"]) * 100
        comparisons[name] = {
            "perplexity_reduction": round(drop, 4), "perplexity_target_met": drop >= 0.20,
            "mcq_gain_points": round(gain, 2), "mcq_target_met": gain >= 10.0,
        }
    results = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": str(corpus), "sft": str(sft), "heldout_documents": len(heldout), "mcq_questions": len(questions),
        "max_tokens": max_tokens, "bf16_autocast": bf16,
        "targets": {"perplexity_reduction": ">= 20%", "mcq_gain": ">= +10 points"},
        "runs": runs, "comparisons": comparisons,
        "commands": REPRO_COMMANDS,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(render(results))
    return results


def render(results: dict) -> str:
    lines = ["| model | held-out perplexity | MCQ accuracy | questions |", "|---|---:|---:|---:|"]
    for name, r in results["runs"].items():
        lines.append(f"| {name} | {r['perplexity']['perplexity']:.2f} | {r['mcq']['accuracy']:.1%} | {r['mcq']['questions']} |")
    lines.append("")
    for name, c in results["comparisons"].items():
        lines.append(f"- {name}: perplexity {c['perplexity_reduction']:+.1%} lower "
                     f"({'meets' if c['perplexity_target_met'] else 'misses'} the 20% target), "
                     f"MCQ {c['mcq_gain_points']:+.1f} points "
                     f"({'meets' if c['mcq_target_met'] else 'misses'} the +10 target)")
    kinds = sorted({k for r in results["runs"].values() for k in r["perplexity"]["by_kind"]})
    if kinds:
        lines += ["", "Perplexity by document kind:", "", "| model | " + " | ".join(kinds) + " |",
                  "|---|" + "---:|" * len(kinds)]
        for name, r in results["runs"].items():
            bk = r["perplexity"]["by_kind"]
            lines.append(f"| {name} | " + " | ".join(f"{bk[k]['perplexity']:.2f}" if k in bk else "-" for k in kinds) + " |")
    mk = sorted({k for r in results["runs"].values() for k in r["mcq"]["by_kind"]})
    if mk:
        lines += ["", "MCQ accuracy by question kind:", "", "| model | " + " | ".join(mk) + " |", "|---|" + "---:|" * len(mk)]
        for name, r in results["runs"].items():
            bk = r["mcq"]["by_kind"]
            lines.append(f"| {name} | " + " | ".join(f"{bk[k]['accuracy']:.0%} ({bk[k]['questions']})" if k in bk else "-" for k in mk) + " |")
        lines += ["", "Predicted letters: " + "; ".join(
            f"{name}: {r['mcq'].get('predicted_letters')}" for name, r in results["runs"].items())]
    if results.get("commands"):
        lines += ["", "Commands:", "", "```bash", *results["commands"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m secfm.training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--adapter", action="append", default=[])
    p.add_argument("--corpus", default="runs/data/corpus")
    p.add_argument("--sft", default="runs/data/sft")
    p.add_argument("--out", default="training/results/secfm-270m.json")
    p.add_argument("--max-tokens", type=int, default=40000)
    p.add_argument("--max-mcq", type=int, default=None)
    p.add_argument("--fp32", action="store_true", help="score in float32 (default: bf16 autocast where the CPU has it)")
    a = p.parse_args(argv)
    results = evaluate_models(a.model, a.adapter, a.corpus, a.sft, a.out, a.max_tokens, a.max_mcq,
                              bf16=False if a.fp32 else None, progress=print)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

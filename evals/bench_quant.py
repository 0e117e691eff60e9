"""`secfm bench quant`: quantized inference on the CPU, measured in one run.

Variants of the embedded gemma-3-270m: fp32 and bf16 (the safetensors cache), dynamic int8
(torch's ``quantize_dynamic`` on every Linear layer), and the GGUF Q4_K_M weights themselves run
by llama.cpp (``llama-cpp-python``, optional: ``pip install 'secfm[quant]'``). For each: load
time, memory, greedy decode tokens/s, and cti-mcqa log-likelihood accuracy with a 95 % bootstrap
interval on a fixed, seeded set of questions (letters scored after the listed options, as
``secfm eval cti-mcqa --mode loglik`` does; 200 by default). Each variant runs in its own process
so memory figures do not mix.

Memory, two figures: ``weights_mib`` is what the variant's weights take (the bytes of every tensor
in its state dict: float32 4 bytes a weight, bfloat16 2, int8 packed weights 1 plus their scales,
the GGUF file's size for llama.cpp) and ``rss_added_mib`` is the resident size the load added to the
process. The two differ: a dynamic-int8 model is first loaded in float32 and then converted, and
the allocator keeps the freed float32 pages, so its resident size is above fp32's though its
weights are a quarter of them (the embeddings, a third of the 270M weights, stay float32).

The GGUF row needs ``llama-cpp-python`` (the ``quant`` extra); where it cannot be installed the row is
reported as skipped with the reason, never as a figure. The bf16 row needs a CPU with bfloat16
instructions (AVX512-BF16 or AMX): elsewhere torch emulates bfloat16 several times slower than
float32, which is no deployment option, so by default the row is skipped with that reason; naming
it (``--variants bf16``) measures it anyway.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("fp32", "bf16", "int8-dynamic", "gguf-q4_k_m")
DECODE_PROMPT = "The incident response team found that the attacker"


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _load(variant: str, model: str):
    """The engine of ``variant`` and ``decode(prompt, n) -> tokens produced``."""
    from secfm.engines import SamplingParams, get_engine

    if variant == "gguf-q4_k_m":
        engine = get_engine("llama.cpp", model=model)
    else:
        import torch  # not imported for the GGUF row: its resident size is llama.cpp's alone

        dtype = torch.bfloat16 if variant == "bf16" else torch.float32
        engine = get_engine("transformers", model=model, device="cpu", dtype=dtype,
                            quantization="int8-dynamic" if variant == "int8-dynamic" else None)

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
    weights = round(scorer.weights_bytes() / 2**20, 1)
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
        "weights_mib": weights,
        "rss_added_mib": round(memory, 1),
        "decode_tokens": produced,
        "tokens_per_s": round(produced / decode_s, 2) if decode_s else None,
        "mcqa_items": len(questions),
        "mcqa_accuracy": round(correct / len(questions), 4),
        "mcqa_correct": [int(a == q.gold) for a, q in zip(answers, questions)],
        "mcqa_scoring": spec.loglik.headline,
        "mcqa_items_per_s": round(len(questions) / score_s, 3),
        "answers": answers,
        "data": source,
    }


def run_quant_bench(model: str = "gemma-3-270m", variants=None, items: int = 200, seed: int = 0,
                    decode_tokens: int = 32, out: str | Path = "evals/results/bench-quant.json",
                    allow_busy: bool = False) -> dict:
    """Run each variant in a child process; write JSON and a markdown table beside it through the
    provenance writer (refused on a machine busier than its cores unless ``allow_busy``). ``variants``
    None: all of them, bf16 skipped (with the reason) on a CPU without bfloat16 instructions."""
    from secfm.provenance import recording

    with recording(allow_busy=allow_busy) as rec:
        result = _run_variants(model, variants, items, seed, decode_tokens)
        written = rec.write_json(out, result)
        rec.write_text(Path(out).with_suffix(".md"), markdown_table(written))
    return written


def _skip_reason(variant: str, stderr: str, returncode: int) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if returncode < 0:
        return f"crashed with signal {-returncode}"
    last = (lines or ["failed"])[-1]
    if variant == "gguf-q4_k_m" and "llama-cpp-python is not installed" in stderr:
        return ("llama-cpp-python is not installed: `pip install llama-cpp-python` found no distribution on this "
                "machine's package index, so the GGUF row is not measured")
    return last


BF16_EMULATED = ("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so torch emulates bf16 several "
                 "times slower than fp32: not a deployment option here (`--variants bf16` measures it anyway)")


def _run_variants(model: str, variants, items: int, seed: int, decode_tokens: int) -> dict:
    from secfm.evals.metrics import ratio_ci
    from secfm.training.loss import cpu_supports_bf16

    skip_bf16 = variants is None and not cpu_supports_bf16()
    rows = []
    for variant in variants or VARIANTS:
        if variant == "bf16" and skip_bf16:
            rows.append({"variant": variant, "skipped": BF16_EMULATED})
            continue
        cmd = [sys.executable, "-m", "secfm.evals.bench_quant", "--variant", variant, "--model", model,
               "--items", str(items), "--seed", str(seed), "--decode-tokens", str(decode_tokens)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"variant": variant, "skipped": _skip_reason(variant, proc.stderr, proc.returncode)})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["mcqa_accuracy_ci95"] = [round(x, 4) for x in ratio_ci(row["mcqa_correct"], [1] * len(row["mcqa_correct"]),
                                                                    1000, seed)]
        rows.append(row)
    reference = next((r for r in rows if r["variant"] == "fp32" and "answers" in r), None)
    for r in rows:
        if reference and "answers" in r:
            r["answers_same_as_fp32"] = sum(a == b for a, b in zip(r["answers"], reference["answers"]))
            r["accuracy_change_vs_fp32_points"] = round(100 * (r["mcqa_accuracy"] - reference["mcqa_accuracy"]), 1)
            diff = [a - b for a, b in zip(r["mcqa_correct"], reference["mcqa_correct"])]
            lo, hi = ratio_ci(diff, [1] * len(diff), 1000, seed)
            r["accuracy_change_vs_fp32_ci95_points"] = [round(100 * lo, 1), round(100 * hi, 1)]
    return {
        "benchmark": "quant",
        "model": model,
        "items": items, "seed": seed, "decode_tokens": decode_tokens,
        "memory": "weights_mib: bytes of the variant's weights (state dict; the GGUF file for llama.cpp); "
                  "rss_added_mib: resident size the load added (an int8 model is loaded in float32 first)",
        "variants": rows,
    }


def markdown_table(result: dict) -> str:
    prov = result.get("provenance") or {}
    loads = f"load average {prov.get('load_average_start')} -> {prov.get('load_average_end')}" if prov else "load not recorded"
    lines = [
        f"# Quantized inference on the CPU: {result['model']}",
        "",
        f"Command: `{prov.get('command', 'secfm bench quant')}` ({loads}). *weights MiB*: the bytes of the variant's",
        "weights; *RSS added MiB*: the resident size the load added (a dynamic-int8 model is loaded in float32 and",
        "converted, and the freed float32 pages stay with the process). cti-mcqa accuracy: log-likelihood letter",
        f"scoring on {result.get('items', '?')} ATT&CK-derived questions in the cti-mcq layout (no CTIBench rows), with",
        "95 % bootstrap intervals; each variant ran in its own process.",
        "",
        "| variant | load s | weights MiB | RSS added MiB | decode tok/s | mcqa accuracy [95% CI] | change vs fp32, points [95% CI] | same answers as fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["variants"]:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | not measured: {r['skipped']} | | | | | | |")
            continue
        ci = r.get("mcqa_accuracy_ci95") or [None, None]
        change = r.get("accuracy_change_vs_fp32_points", "")
        cci = r.get("accuracy_change_vs_fp32_ci95_points")
        lines.append(
            f"| {r['variant']} | {r['load_s']} | {r.get('weights_mib')} | {r.get('rss_added_mib', r.get('memory_added_mib'))} "
            f"| {r['tokens_per_s']} | {r['mcqa_accuracy']:.3f} [{ci[0]}, {ci[1]}] "
            f"| {change}{f' [{cci[0]}, {cci[1]}]' if cci else ''} | {r.get('answers_same_as_fp32', '')}/{r['mcqa_items']} |"
        )
    return "\n".join(lines) + "\n"


def _main() -> None:
    parser = argparse.ArgumentParser(description="one variant of secfm bench quant (prints one JSON line)")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decode-tokens", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(measure_variant(args.variant, args.model, args.items, args.seed, args.decode_tokens)))


if __name__ == "__main__":
    _main()

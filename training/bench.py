"""`secfm bench train`: tokens/s of one CPU LoRA training step, plain against chunked loss.

The step is what the trainer runs: forward, loss, backward and an AdamW update of the LoRA
parameters (r=16 on all linear layers), on real corpus text (4 x 256 tokens by default).
Variants:

* ``plain-fp32``  - the model's own forward with ``labels`` (full 262k-word logits), float32;
* ``plain-bf16``  - the same under bfloat16 autocast;
* ``chunked-fp32`` - decoder body, then output layer + cross-entropy only on labelled
  positions, in chunks, float32;
* ``chunked-bf16`` - the chunked loss with bfloat16 autocast and bfloat16 output-layer matmuls
  (what the CPU recipes use where the CPU has AMX / AVX512-BF16).

Every variant is measured with every position labelled (CPT); the plain and chunked steps also
with only ~40% labelled (SFT: assistant tokens), where skipping unlabelled positions saves the
most. One warm-up step first, then ``steps`` rounds; each round times every variant once, so a
shared CPU's changing load affects all variants alike; the median is reported.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

VARIANTS = ("plain-fp32", "plain-bf16", "chunked-fp32", "chunked-bf16")


def _batch(tok, batch: int, seq_len: int):
    import torch

    from secfm.training.corpus import kb_documents
    from secfm.training.trainer import pack_documents

    texts = [d.text for d in kb_documents(limit=200)]
    blocks = pack_documents(texts, tok, seq_len, max_blocks=batch)
    ids = torch.tensor(blocks)
    return ids


def run_train_bench(out: str | Path, model: str = "gemma-3-270m", batch: int = 4, seq_len: int = 256, steps: int = 2,
                    variants: Sequence[str] | None = None, threads: int | None = None,
                    progress: Callable[[str], None] | None = None, allow_busy: bool = False) -> dict:
    """Time the variants and write ``out`` through the provenance writer (refused on a machine
    busier than its cores unless ``allow_busy``)."""
    from secfm.provenance import recording

    with recording(allow_busy=allow_busy) as rec:
        results = _measure(model, batch, seq_len, steps, variants, threads, progress)
        rec.note(threads=results["threads"], omp_wait_policy=results["omp_wait_policy"])
        return rec.write_json(out, results)


def _measure(model: str, batch: int, seq_len: int, steps: int, variants: Sequence[str] | None, threads: int | None,
             progress: Callable[[str], None] | None) -> dict:
    import contextlib

    import torch
    from peft import LoraConfig, get_peft_model

    from secfm.engines.transformers_engine import load_causal_lm
    from secfm.models import resolve, tokenizer_for
    from secfm.settings import default_threads
    from secfm.training.loss import chunked_lm_loss, cpu_supports_bf16, plain_lm_loss

    note = progress or (lambda s: None)
    variants = list(variants or VARIANTS)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        from secfm.errors import SecfmError

        raise SecfmError(f"unknown variant(s) {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    threads = threads or default_threads()
    if threads:
        torch.set_num_threads(threads)
    resolved = resolve(model)
    tok = tokenizer_for(resolved)
    ids = _batch(tok, batch, seq_len)
    mask = torch.ones_like(ids)
    cpt_labels = ids.clone()
    sft_labels = ids.clone()
    sft_labels[:, : int(seq_len * 0.6)] = -100  # ~40% labelled, like assistant turns
    torch.manual_seed(0)
    lm = load_causal_lm(resolved, "cpu", dtype=torch.float32)
    lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                       task_type="CAUSAL_LM"))
    lm.train()
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    bf16_ok = cpu_supports_bf16()

    def step(variant: str, labels) -> tuple[float, float]:
        use_bf16 = variant.endswith("bf16")
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        started = time.perf_counter()
        with ctx:
            if variant.startswith("plain"):
                loss_sum, n = plain_lm_loss(lm, ids, labels, mask)
            else:
                loss_sum, n = chunked_lm_loss(lm, ids, labels, mask, chunk_size=256,
                                              matmul_dtype=torch.bfloat16 if use_bf16 else torch.float32)
        loss = loss_sum / n
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - started, float(loss.detach())

    results: dict = {"variants": {}}
    note("warm-up step")
    step("chunked-bf16" if bf16_ok else "chunked-fp32", cpt_labels)
    plan = []
    for setting, labels in (("cpt", cpt_labels), ("sft", sft_labels)):
        for variant in variants:
            if variant.endswith("bf16") and not bf16_ok:
                continue
            if setting == "sft" and variant not in ("plain-fp32", "chunked-bf16", "chunked-fp32"):
                continue  # the SFT setting compares the plain step with the chunked one only
            plan.append((setting, variant, labels))
    # rounds: every variant once per round, so a shared CPU's changing load hits all of them alike
    times: dict[tuple, list[float]] = {(s, v): [] for s, v, _ in plan}
    losses: dict[tuple, float] = {}
    for r in range(steps):
        for setting, variant, labels in plan:
            dt, loss = step(variant, labels)
            times[(setting, variant)].append(dt)
            losses[(setting, variant)] = loss
            note(f"round {r + 1}/{steps} {setting} {variant}: {ids.numel() / dt:.1f} tokens/s")
    for (setting, variant), ts in times.items():
        ts = sorted(ts)
        median = ts[len(ts) // 2] if len(ts) % 2 else (ts[len(ts) // 2 - 1] + ts[len(ts) // 2]) / 2
        results["variants"][f"{setting}/{variant}"] = {
            "setting": setting, "variant": variant, "seconds_per_step": round(median, 3),
            "min_seconds": round(ts[0], 3), "tokens_per_second": round(ids.numel() / median, 1),
            "best_tokens_per_second": round(ids.numel() / ts[0], 1), "loss": round(losses[(setting, variant)], 4),
            "labelled_tokens": int(((cpt_labels if setting == "cpt" else sft_labels)[:, 1:] != -100).sum()),
        }
    v = results["variants"]
    speedups = {}
    for setting in ("cpt", "sft"):
        base = v.get(f"{setting}/plain-fp32")
        for variant in VARIANTS[1:]:
            row = v.get(f"{setting}/{variant}")
            if base and row:
                speedups[f"{setting}/{variant}"] = round(row["tokens_per_second"] / base["tokens_per_second"], 2)
    best = v.get("cpt/chunked-bf16") or v.get("cpt/chunked-fp32")
    results.update({
        "benchmark": "secfm bench train",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model, "lora": "r=16, all linear layers", "batch": batch, "seq_len": seq_len,
        "tokens_per_step": int(ids.numel()), "timed_steps": steps,
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "bf16_supported": bf16_ok,
        "speedup_vs_plain_fp32": speedups,
        "headline": {"plain_tokens_per_second": v.get("cpt/plain-fp32", {}).get("tokens_per_second"),
                     "chunked_tokens_per_second": best["tokens_per_second"] if best else None,
                     "speedup": speedups.get("cpt/chunked-bf16") or speedups.get("cpt/chunked-fp32"),
                     "target": ">= 2x the plain step"},
        "method": "median of interleaved rounds (each round runs every variant once)",
        "note": "compare variants within one run (interleaved rounds); the machine's load is in the provenance",
    })
    return results


__all__ = ["VARIANTS", "run_train_bench"]

"""`secfm bench eval`: cti-mcqa loglik items/s of the engine against a plain loop, same answers required.

The engine path is what `secfm eval cti-mcqa --mode loglik` runs: one request per question,
its context (question and listed options) computed once and shared by the eight continuations
(four option texts, four letters). The plain loop is what a naive user writes: for every
question and every continuation, one forward pass over the full sequence (context plus
continuation) that materialises the logits of every position, then a log-softmax over the
vocabulary. Both paths score the same items, interleaved item by item so that both see the same
machine load; their answers under every scoring (letter, sum, per token, per character) must
be identical.
"""

from __future__ import annotations

import time
from pathlib import Path

from secfm.engines.base import LoglikResult
from secfm.evals import prompts
from secfm.evals.data import Item, load_dataset, select_items
from secfm.evals.progress import progress_bar
from secfm.evals.specs import get_task

TARGET_SPEEDUP = 5.0


def synthetic_items(n: int, seed: int) -> tuple[list[Item], str]:
    """Questions derived from ATT&CK in the cti-mcq layout (offline default data)."""
    from secfm.evals.synthetic import attack_mcq_rows
    from secfm.knowledge.attack import load_attack

    kb = load_attack()
    rows = attack_mcq_rows(kb, n=n, seed=seed)
    return [Item(id=str(i + 1), fields=r, gold=r["GT"]) for i, r in enumerate(rows)], f"ATT&CK {kb.version} derived questions (seed {seed})"


def plain_loglik(model, tokenizer, context: str, continuation: str, device: str) -> float:
    """Log-likelihood of ``continuation`` after ``context`` with one full forward and full logits."""
    import torch

    ctx_ids = tokenizer(context)["input_ids"]
    cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx_ids + cont_ids], device=device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(ctx_ids) - 1
    return float(sum(logprobs[start + k, t] for k, t in enumerate(cont_ids)))


def run_eval_bench(
    data: str | Path | None = None,
    model: str = "gemma-3-270m",
    limit: int = 16,
    seed: int = 0,
    out: str | Path = "evals/results/bench-eval.json",
    engine=None,
    progress: bool = True,
    warmup: bool = True,
    allow_busy: bool = False,
) -> dict:
    """Time both paths on ``limit`` cti-mcqa items; write (through the provenance writer: refused
    on a machine busier than its cores unless ``allow_busy``) and return the results."""
    from secfm.provenance import recording

    with recording(data_files=[data] if data is not None else [], allow_busy=allow_busy) as rec:
        return rec.write_json(out, _measure(data, model, limit, seed, engine, progress, warmup))


def _measure(data, model: str, limit: int, seed: int, engine, progress: bool, warmup: bool) -> dict:
    spec = get_task("cti-mcqa")
    if data is not None:
        ds = load_dataset(spec, data)
        items, source, sha = ds.items, ds.source, ds.sha256
    else:
        items, source = synthetic_items(max(limit, 40), seed)
        sha = None
    items = select_items(items, limit, seed).scored
    if engine is None:
        from secfm.engines import shared_engine

        engine = shared_engine("transformers", model=model)
    # the reference: the same weights loaded plainly, scored with one full forward per continuation
    import torch

    from secfm.engines.transformers_engine import load_causal_lm
    from secfm.models import resolve, tokenizer_for

    device = "cpu"
    reference = resolve(engine.model_name, engine.adapter)
    tokenizer, lm = tokenizer_for(reference), load_causal_lm(reference, device)

    requests = [prompts.loglik_request(spec, item) for item in items]

    def fast(req):
        return engine.loglikelihood_many([req])[0]

    def plain(req):
        ctx, conts = req
        return [
            LoglikResult(c, plain_loglik(lm, tokenizer, ctx, c, device), len(tokenizer(c, add_special_tokens=False)["input_ids"]))
            for c in conts
        ]

    if warmup:
        fast(requests[0]), plain(requests[0])  # one untimed item, so that neither path pays first-call costs
    t_fast = t_plain = 0.0
    mismatches, max_diff = [], 0.0
    correct = {"engine": 0, "plain": 0}
    with progress_bar(progress) as bar:
        task = bar.add_task("bench eval (engine + plain loop)", total=len(items))
        for item, req in zip(items, requests):
            t0 = time.perf_counter()
            a = fast(req)
            t1 = time.perf_counter()
            b = plain(req)
            t2 = time.perf_counter()
            t_fast += t1 - t0
            t_plain += t2 - t1
            ans_a = prompts.loglik_answers(spec, *prompts.split_results(spec, a))
            ans_b = prompts.loglik_answers(spec, *prompts.split_results(spec, b))
            if ans_a != ans_b:
                mismatches.append({"id": item.id, "engine": ans_a, "plain": ans_b})
            max_diff = max(max_diff, *(abs(x.logprob - y.logprob) for x, y in zip(a, b)))
            correct["engine"] += ans_a[spec.loglik.headline] == item.gold
            correct["plain"] += ans_b[spec.loglik.headline] == item.gold
            bar.advance(task)
    n = len(items)
    ctx_tokens = [engine.count_tokens(r[0]) for r in requests]
    speedup = t_plain / t_fast if t_fast else float("nan")
    summary = {
        "items": n,
        "engine_items_per_s": round(n / t_fast, 4),
        "plain_loop_items_per_s": round(n / t_plain, 4),
        "speedup": round(speedup, 2),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": bool(speedup >= TARGET_SPEEDUP),
        "answers_identical": not mismatches,
    }
    result = {
        "benchmark": "eval",
        "task": "cti-mcqa",
        "mode": "loglik",
        "model": engine.model_name,
        "data": {"source": source, "sha256": sha},
        "summary": summary,
        "engine": {
            "seconds": round(t_fast, 3),
            "forward_passes": f"{n} context passes + up to {n} continuation passes (8 rows each, KV cache)",
            "accuracy_letter": round(correct["engine"] / n, 4),
        },
        "plain_loop": {
            "seconds": round(t_plain, 3),
            "forward_passes": f"{8 * n} full-sequence passes with full logits",
            "accuracy_letter": round(correct["plain"] / n, 4),
        },
        "max_abs_logprob_diff": round(max_diff, 6),
        "mismatches": mismatches[:10],
        "context_tokens_mean": round(sum(ctx_tokens) / n, 1),
        "machine": {"torch_threads": torch.get_num_threads(), "device": str(device)},
        "method": "items interleaved (engine then plain loop per item)" + (" after one untimed warm-up item" if warmup else ""),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return result

"""Measure a base model against its adapters: held-out security perplexity and accuracy on the
held-out synthetic multiple-choice questions (``secfm train eval`` / ``python -m
secfm.training.evaluate``).

* Perplexity: every held-out corpus document (BOS + text + EOS, up to 512 tokens) scored on its
  own, in float32; token-weighted, overall and per document kind.
* MCQ, three formulations of the same held-out questions, all reported:

  - **letter**: the question with its lettered options, rendered with the chat template (the same
    system prompt for every model) and a generation prompt; the answer is the letter among A-D
    with the highest next-token probability;
  - **letter, calibrated**: the same letter log-probabilities minus the model's content-free
    letter prior (Zhao et al. 2021, "Calibrate before use": the mean letter distribution for the
    same prompt with "N/A", "[MASK]" and "" as question and options), which removes a
    constant preference for one letter;
  - **cloze**: no letters and no option list: for each option the log-likelihood of its text as
    the continuation of ``"Question: {question}\nAnswer:"`` (plain text after BOS, the
    lm-evaluation-harness convention), divided by its number of tokens; the answer is the
    option with the highest mean log-probability per token. The question is run once and its
    key/value cache shared by the four options; logits are computed only where an option
    token is predicted.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from secfm.provenance import file_sha256
from secfm.training.sft_data import LETTERS, SYSTEM_PROMPT, cloze_prompt


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


#: how the secfm-270m figures are produced (from a fresh clone, on the CPU; protocol in
#: training/results/secfm-270m-protocol.md)
REPRO_COMMANDS = [
    "training/recipes/gemma-3-270m/chain.sh   # secfm data corpus/sft, then cpt-lora.yaml and sft-lora.yaml in chunks",
    "secfm train eval --split test --corpus runs/data/corpus --sft runs/data/sft --max-tokens 20000 "
    "--adapter runs/gemma-3-270m/sft-lora/adapter --out training/results/secfm-270m.json",
    "python -m secfm.training.ship --adapter runs/gemma-3-270m/sft-lora/adapter",
]
#: the headline formulation, fixed before any held-out figure (the protocol)
PRIMARY = "mcq_cloze"


def _right_pad(rows: Sequence[Sequence[int]], pad: int):
    """Token id lists -> (ids, attention mask) tensors, right-padded to the longest row."""
    import torch

    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, :len(row)] = 1
    return ids, mask


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


def _score_summary(questions: Sequence[dict], predictions: Sequence[int]) -> dict:
    """Accuracy overall and by question kind for predicted option indices (0-3)."""
    correct = defaultdict(int)
    total = defaultdict(int)
    letters = defaultdict(int)
    for q, p in zip(questions, predictions):
        total[q["kind"]] += 1
        correct[q["kind"]] += LETTERS[p] == q["answer"]
        letters[LETTERS[p]] += 1
    n = len(questions)
    return {
        "accuracy": round(sum(correct.values()) / n, 4) if n else 0.0, "questions": n,
        "correct": [int(LETTERS[p] == q["answer"]) for q, p in zip(questions, predictions)],
        "by_kind": {k: {"accuracy": round(correct[k] / total[k], 4), "questions": total[k]} for k in sorted(total)},
        "predicted_letters": dict(sorted(letters.items())),
    }


def _letter_prompts(tok, prompts: Sequence[str], system_prompt: str | None) -> list[str]:
    out = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}]
        out.append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def letter_logprobs(lm, tok, prompts: Sequence[str], system_prompt: str | None = SYSTEM_PROMPT, batch: int = 8,
                    bf16: bool = False) -> list[list[float]]:
    """log P(letter | chat prompt) for A-D, renormalized over the four letters, per prompt."""
    import torch

    letter_ids = [tok.convert_tokens_to_ids(letter) for letter in LETTERS]
    rendered = _letter_prompts(tok, prompts, system_prompt)
    order = sorted(range(len(rendered)), key=lambda i: len(rendered[i]))
    result: dict[int, list[float]] = {}
    tok.padding_side = "left"
    with torch.inference_mode(), _autocast(bf16):
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            enc = tok([rendered[i] for i in idx], add_special_tokens=False, return_tensors="pt", padding=True)
            out = lm(**enc, logits_to_keep=1, use_cache=False)
            scores = torch.log_softmax(out.logits[:, -1, letter_ids].float(), dim=-1)
            for i, row in zip(idx, scores.tolist()):
                result[i] = row
    return [result[i] for i in range(len(rendered))]


#: content-free questions for the letter prior (Zhao et al. 2021 use "N/A", "[MASK]" and "")
CONTENT_FREE = ("N/A", "[MASK]", "")


def content_free_prompts() -> list[str]:
    from secfm.training.sft_data import MCQ

    return [MCQ(text, [text] * len(LETTERS), 0, "content-free", "").prompt() for text in CONTENT_FREE]


def mcq_accuracy(lm, tok, questions: Sequence[dict], system_prompt: str | None = SYSTEM_PROMPT, batch: int = 8,
                 bf16: bool = False, calibrate: bool = False) -> dict:
    """Letter scoring: the letter among A-D with the highest next-token probability. With
    ``calibrate`` also ``"calibrated"``: the same scores minus the content-free letter prior."""
    import math

    scores = letter_logprobs(lm, tok, [q["prompt"] for q in questions], system_prompt, batch, bf16)
    result = _score_summary(questions, [max(range(len(LETTERS)), key=row.__getitem__) for row in scores])
    if calibrate:
        free = letter_logprobs(lm, tok, content_free_prompts(), system_prompt, batch, bf16)
        prior = [math.log(sum(math.exp(row[j]) for row in free) / len(free)) for j in range(len(LETTERS))]
        calibrated = [[s - p for s, p in zip(row, prior)] for row in scores]
        result["calibrated"] = {
            **_score_summary(questions, [max(range(len(LETTERS)), key=row.__getitem__) for row in calibrated]),
            "letter_prior": {letter: round(math.exp(p), 4) for letter, p in zip(LETTERS, prior)},
        }
    return result


def _head_logprobs(lm, hidden, targets, chunk: int = 256):
    """log P(target) at each hidden state: the output layer on these positions only, ``chunk``
    positions at a time, float32 softmax (Gemma's final logit soft-capping when the config has it)."""
    import torch

    head = lm.get_output_embeddings()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    out = []
    for start in range(0, hidden.shape[0], chunk):
        logits = head(hidden[start:start + chunk]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        y = targets[start:start + chunk, None]
        out.append((logits.gather(-1, y) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(-1))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def cloze_option_logprobs(lm, tok, questions: Sequence[dict], batch: int = 8, bf16: bool = False,
                          share_context: bool = True) -> list[list[tuple[float, int]]]:
    """Per question, per option: (sum of log P(option tokens | cloze context), number of tokens).

    The option text is tokenized on its own with a leading space and appended to the tokenized
    context (BOS + context). With ``share_context`` the decoder body runs each context once
    (left-padded batch) and the key/value cache is repeated for the options; otherwise every
    (context + option) row is run in full (the reference the tests compare with)."""
    import torch

    from secfm.training.trainer import cloze_token_ids

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ctx_ids: list[list[int]] = []
    opt_ids: list[list[list[int]]] = []
    for q in questions:
        context, options = cloze_token_ids(tok, cloze_prompt(q["question"]), q["options"])
        ctx_ids.append(context)
        opt_ids.append([ids or [pad] for ids in options])
    k = len(LETTERS)
    lm_body = lm.get_decoder()
    order = sorted(range(len(questions)), key=lambda i: len(ctx_ids[i]))
    result: dict[int, list[tuple[float, int]]] = {}
    with torch.inference_mode(), _autocast(bf16):
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            if share_context:
                # contexts, left-padded: the last position of every row predicts the first option token
                n = max(len(ctx_ids[i]) for i in idx)
                ids = torch.full((len(idx), n), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), n), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, n - len(ctx_ids[i]):] = torch.tensor(ctx_ids[i])
                    mask[r, n - len(ctx_ids[i]):] = 1
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                out = lm_body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
                last = out.last_hidden_state[:, -1]  # (B, H)
                cache = out.past_key_values
                cache.batch_repeat_interleave(k)
                # options, right-padded, continuing each context (4 rows per question)
                rows = [opt_ids[i][j] for i in idx for j in range(k)]
                oids, omask = _right_pad(rows, pad)
                m = oids.shape[1]
                ctx_len = torch.tensor([len(ctx_ids[i]) for i in idx]).repeat_interleave(k)
                opos = ctx_len[:, None] + torch.arange(m)[None, :]
                full_mask = torch.cat([mask.repeat_interleave(k, dim=0), omask], dim=1)
                if m > 1:
                    oout = lm_body(input_ids=oids[:, :-1], attention_mask=full_mask[:, :-1], position_ids=opos[:, :-1],
                                   past_key_values=cache, use_cache=True)
                    hidden = torch.cat([last.repeat_interleave(k, dim=0)[:, None], oout.last_hidden_state], dim=1)
                else:
                    hidden = last.repeat_interleave(k, dim=0)[:, None]
                targets, tmask = oids, omask
            else:
                rows = [ctx_ids[i] + opt_ids[i][j] for i in idx for j in range(k)]
                starts = [len(ctx_ids[i]) for i in idx for _ in range(k)]
                ids, mask = _right_pad(rows, pad)
                h = lm_body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                m = max(len(r) - s for r, s in zip(rows, starts))
                hidden = torch.zeros((len(rows), m, h.shape[-1]), dtype=h.dtype)
                targets = torch.full((len(rows), m), pad, dtype=torch.long)
                tmask = torch.zeros((len(rows), m), dtype=torch.long)
                for r, (row, s) in enumerate(zip(rows, starts)):
                    hidden[r, :len(row) - s] = h[r, s - 1:len(row) - 1]
                    targets[r, :len(row) - s] = torch.tensor(row[s:])
                    tmask[r, :len(row) - s] = 1
            keep = tmask.bool()
            lp = torch.zeros(targets.shape, dtype=torch.float32)
            lp[keep] = _head_logprobs(lm, hidden[keep], targets[keep])
            sums = lp.sum(-1).tolist()
            counts = tmask.sum(-1).tolist()
            for r, i in enumerate(idx):
                result[i] = [(sums[r * k + j], counts[r * k + j]) for j in range(k)]
    return [result[i] for i in range(len(questions))]


def mcq_cloze_accuracy(lm, tok, questions: Sequence[dict], batch: int = 8, bf16: bool = False) -> dict:
    """Cloze scoring: the option whose text has the highest mean log-probability per token as the
    continuation of the question (no letters shown or scored)."""
    scores = cloze_option_logprobs(lm, tok, questions, batch=batch, bf16=bf16)
    predictions = [max(range(len(row)), key=lambda j: row[j][0] / row[j][1]) for row in scores]
    result = _score_summary(questions, predictions)
    result["normalization"] = "mean log-probability per option token"
    return result


#: (label, results key) of the MCQ formulations, in report order; "mcq" is the letter scoring
MCQ_FORMULATIONS = [("letter", "mcq"), ("letter calibrated", "mcq_calibrated"), ("cloze", "mcq_cloze")]


def evaluate_models(model: str, adapters: Sequence[str], corpus: str | Path, sft: str | Path, out: str | Path,
                    max_tokens: int = 40000, max_mcq: int | None = None, bf16: bool | None = None,
                    split: str = "validation",
                    cache_dir: str | Path | None = "runs/eval-cache",
                    progress: Callable[[str], None] | None = None) -> dict:
    """Score the base model and each adapter; each (model, adapter weights, data, settings)
    result is cached in ``cache_dir`` so a later comparison reuses the base model's run."""
    import hashlib

    from secfm.provenance import Recorder
    from secfm.training.corpus import load_corpus
    from secfm.training.loss import cpu_supports_bf16
    from secfm.training.sft_data import load_mcq

    note = progress or (lambda s: None)
    # accuracy and perplexity do not depend on the load: recorded, not refused
    rec = Recorder([], allow_busy=True, command=None)
    rec.note(load_policy="accuracy and perplexity figures: the load is recorded, not refused; seconds are under that load")
    if bf16 is None:
        bf16 = cpu_supports_bf16()
    from secfm.errors import SecfmError
    from secfm.training.sft_data import MCQ_FILES

    if split not in MCQ_FILES:
        raise SecfmError(f"--split must be one of {', '.join(MCQ_FILES)} (got {split!r})")
    heldout = load_corpus(corpus)[split]
    questions = load_mcq(Path(sft) / MCQ_FILES[split])
    rec.add_data(Path(corpus) / split)
    rec.add_data(Path(sft) / MCQ_FILES[split])
    for adapter in adapters:
        rec.add_data(Path(adapter) / "adapter_model.safetensors")
    if max_mcq:
        questions = questions[:max_mcq]
    data_key = [file_sha256(Path(corpus) / "data_card.json"), file_sha256(Path(sft) / MCQ_FILES[split]),
                split, max_tokens, max_mcq, bf16]
    runs: dict[str, dict] = {}
    for adapter in [None, *adapters]:
        name = model if adapter is None else f"{model} + {adapter}"
        weights = Path(adapter) / "adapter_model.safetensors" if adapter else None
        key = hashlib.sha256(json.dumps([model, file_sha256(weights) if weights and weights.is_file() else None,
                                         *data_key]).encode()).hexdigest()[:20]
        cached = Path(cache_dir) / f"{key}.json" if cache_dir else None
        run = json.loads(cached.read_text()) if cached is not None and cached.is_file() else {}
        missing = [m for m in ("perplexity", "mcq", "mcq_calibrated", "mcq_cloze") if m not in run]
        if not missing:
            runs[name] = run
            note(f"{name}: cached result ({cached})")
            continue
        if run:
            note(f"{name}: cached {', '.join(m for m in run if m.startswith(('perplexity', 'mcq')))} ({cached}); "
                 f"scoring {', '.join(missing)}")
        else:
            note(f"scoring {name}")
        run.update({"model": model, "adapter": adapter, "bf16_autocast": bf16})
        seconds = run.setdefault("seconds_by_metric", {})
        if "seconds" in run and not seconds:  # cached before per-metric timings: perplexity + letter MCQ
            seconds["perplexity+mcq"] = run["seconds"]
        lm, tok = _load(model, adapter)
        if "perplexity" in missing:
            started = time.time()
            run["perplexity"] = heldout_perplexity(lm, tok, list(heldout["text"]), list(heldout["kind"]),
                                                   max_tokens=max_tokens, bf16=bf16)
            seconds["perplexity"] = round(time.time() - started, 1)
            note(f"{name}: held-out perplexity {run['perplexity']['perplexity']}")
        if "mcq" in missing or "mcq_calibrated" in missing:
            started = time.time()
            letter = mcq_accuracy(lm, tok, questions, bf16=bf16, calibrate=True)
            run["mcq_calibrated"] = letter.pop("calibrated")
            if "mcq" in run and run["mcq"]["accuracy"] != letter["accuracy"]:
                note(f"{name}: letter accuracy re-scored {letter['accuracy']} (cached {run['mcq']['accuracy']})")
            run["mcq"] = letter
            seconds["mcq_letter+calibrated"] = round(time.time() - started, 1)
            note(f"{name}: MCQ letter accuracy {letter['accuracy']:.3f}, "
                 f"calibrated {run['mcq_calibrated']['accuracy']:.3f}")
        if "mcq_cloze" in missing:
            started = time.time()
            run["mcq_cloze"] = mcq_cloze_accuracy(lm, tok, questions, bf16=bf16)
            seconds["mcq_cloze"] = round(time.time() - started, 1)
            note(f"{name}: MCQ cloze accuracy {run['mcq_cloze']['accuracy']:.3f}")
        run["seconds"] = round(sum(seconds.values()), 1)
        runs[name] = run
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(run, indent=2))
        del lm
    base = runs[model]
    comparisons = {}
    for name, r in runs.items():
        if r["adapter"] is None:
            continue
        drop = 1 - r["perplexity"]["perplexity"] / base["perplexity"]["perplexity"]
        comparisons[name] = {"perplexity_reduction": round(drop, 4), "perplexity_target_met": drop >= 0.20}
        # one gain per MCQ formulation; "mcq_gain_points" stays the letter scoring
        for _label, metric in MCQ_FORMULATIONS:
            if metric in r and metric in base:
                gain = (r[metric]["accuracy"] - base[metric]["accuracy"]) * 100
                comparisons[name][f"{metric}_gain_points"] = round(gain, 2)
                comparisons[name][f"{metric}_target_met"] = gain >= 10.0
                if "correct" in r[metric] and "correct" in base[metric]:
                    from secfm.evals.metrics import ratio_ci

                    diff = [a - b for a, b in zip(r[metric]["correct"], base[metric]["correct"])]
                    lo, hi = ratio_ci(diff, [1] * len(diff), 1000, 0)
                    comparisons[name][f"{metric}_gain_ci95_points"] = [round(100 * lo, 2), round(100 * hi, 2)]
    results = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "split": split, "primary": PRIMARY,
        "corpus": str(corpus), "sft": str(sft), "heldout_documents": len(heldout), "mcq_questions": len(questions),
        "max_tokens": max_tokens, "bf16_autocast": bf16,
        "targets": {"perplexity_reduction": ">= 20%", "mcq_gain": ">= +10 points"},
        "mcq_formulations": {
            "mcq": "letter: argmax over A-D of the next-token probability after the chat prompt with lettered options",
            "mcq_calibrated": "letter minus the content-free letter prior (mean over 'N/A', '[MASK]', '' prompts)",
            "mcq_cloze": "cloze: argmax over options of the mean per-token log-probability of the option text "
                         "after 'Question: ...\\nAnswer:' (no options shown, no letters)",
        },
        "runs": runs, "comparisons": comparisons,
        "commands": REPRO_COMMANDS,
    }
    results = rec.write_json(out, results)
    rec.write_text(Path(out).with_suffix(".md"), render(results))
    _write_samples(Path(out).with_suffix(SAMPLES_SUFFIX), questions, runs)
    return results


#: the per-question log beside the results JSON (the harness's per-sample log of ``train-heldout``)
SAMPLES_SUFFIX = ".samples.jsonl"


def _write_samples(path: Path, questions: Sequence[dict], runs: dict[str, dict]) -> None:
    """One line per held-out question: its kind, the right letter and, per run and MCQ
    formulation, whether the run answered it right."""
    from secfm.provenance import atomic_write_text

    lines = []
    for i, q in enumerate(questions):
        per_run = {name: {metric: r[metric]["correct"][i] for _label, metric in MCQ_FORMULATIONS
                          if metric in r and i < len(r[metric].get("correct", ()))} for name, r in runs.items()}
        lines.append(json.dumps({"id": i, "kind": q.get("kind"), "answer": q.get("answer"), "correct": per_run}))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


@dataclass
class HeldoutSettings:
    """The settings of the harness task ``train-heldout`` (``secfm train eval``'s options)."""

    out: str
    corpus: str
    sft: str
    model: str = "gemma-3-270m"
    adapters: list[str] = field(default_factory=list)
    max_tokens: int = 40000
    max_mcq: int | None = None
    bf16: bool | None = None
    split: str = "validation"
    cache_dir: str | None = "runs/eval-cache"


def run_heldout(settings: HeldoutSettings, progress: Callable[[str], None] | None = None) -> dict:
    """The harness's runner of ``train-heldout``: :func:`evaluate_models` on the settings."""
    return evaluate_models(settings.model, list(settings.adapters), settings.corpus, settings.sft, settings.out,
                           max_tokens=settings.max_tokens, max_mcq=settings.max_mcq, bf16=settings.bf16,
                           split=settings.split, cache_dir=settings.cache_dir, progress=progress)


def summary_line(results: dict) -> str:
    parts = []
    for name, r in results["runs"].items():
        figures = [f"perplexity {r['perplexity']['perplexity']}"] + [
            f"MCQ {label} {r[metric]['accuracy']:.3f}" for label, metric in MCQ_FORMULATIONS if metric in r]
        parts.append(f"{name}: {', '.join(figures)}")
    return f"held-out {results['split']} ({results['mcq_questions']} questions): " + " | ".join(parts)


def render(results: dict) -> str:
    runs = results["runs"]
    present = [(label, metric) for label, metric in MCQ_FORMULATIONS if any(metric in r for r in runs.values())]
    lines = ["| model | held-out perplexity | " + " | ".join(f"MCQ {label}" for label, _ in present) + " | questions |",
             "|---|---:|" + "---:|" * len(present) + "---:|"]
    for name, r in runs.items():
        cells = [f"{r[m]['accuracy']:.1%}" if m in r else "-" for _, m in present]
        lines.append(f"| {name} | {r['perplexity']['perplexity']:.2f} | " + " | ".join(cells) + f" | {r['mcq']['questions']} |")
    lines.append("")
    split = results.get("split", "held-out")
    for name, c in results["comparisons"].items():
        primary = results.get("primary", PRIMARY)
        head = ""
        if f"{primary}_gain_points" in c:
            ci = c.get(f"{primary}_gain_ci95_points")
            head = (f"MCQ {dict((m, lbl) for lbl, m in MCQ_FORMULATIONS)[primary]} (the primary figure, fixed before "
                    f"scoring) {c[f'{primary}_gain_points']:+.1f} points" + (f" [95% CI {ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")
                    + f" ({'meets' if c[f'{primary}_target_met'] else 'misses'} the +10 target); ")
        others = [f"{label} {c[f'{metric}_gain_points']:+.1f}" for label, metric in present
                  if metric != primary and f"{metric}_gain_points" in c]
        lines.append(f"- {name} on the {split} split: {head}perplexity {c['perplexity_reduction']:+.1%} lower "
                     f"({'meets' if c['perplexity_target_met'] else 'misses'} the 20% target)"
                     + (f"; secondary MCQ formulations (reported, not chosen from): {', '.join(others)} points" if others else ""))
    if any(m == "mcq_cloze" for _, m in present):
        lines += ["", "MCQ formulations (the same questions): *letter* = the letter A-D with the highest next-token "
                  "probability after the chat prompt listing the lettered options; *letter calibrated* = the same "
                  "minus the model's content-free letter prior; *cloze* = no options shown and no letters: the option "
                  "whose text has the highest mean log-probability per token as the continuation of "
                  "`Question: <question>\\nAnswer:`. Chance is 25 % for all three."]
    kinds = sorted({k for r in runs.values() for k in r["perplexity"]["by_kind"]})
    if kinds:
        lines += ["", "Perplexity by document kind:", "", "| model | " + " | ".join(kinds) + " |",
                  "|---|" + "---:|" * len(kinds)]
        for name, r in runs.items():
            bk = r["perplexity"]["by_kind"]
            lines.append(f"| {name} | " + " | ".join(f"{bk[k]['perplexity']:.2f}" if k in bk else "-" for k in kinds) + " |")
    for label, metric in present:
        mk = sorted({k for r in runs.values() if metric in r for k in r[metric]["by_kind"]})
        if not mk:
            continue
        lines += ["", f"MCQ accuracy by question kind ({label}):", "", "| model | " + " | ".join(mk) + " |",
                  "|---|" + "---:|" * len(mk)]
        for name, r in runs.items():
            if metric not in r:
                continue
            bk = r[metric]["by_kind"]
            lines.append(f"| {name} | " + " | ".join(f"{bk[k]['accuracy']:.0%} ({bk[k]['questions']})" if k in bk else "-" for k in mk) + " |")
    for label, metric in present:
        lines += ["", f"Predicted letters ({label}): " + "; ".join(
            f"{name}: {r[metric].get('predicted_letters')}" for name, r in runs.items() if metric in r)]
    priors = {name: r["mcq_calibrated"]["letter_prior"] for name, r in runs.items()
              if "letter_prior" in r.get("mcq_calibrated", {})}
    if priors:
        lines += ["", "Content-free letter prior: " + "; ".join(f"{name}: {p}" for name, p in priors.items())]
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
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    a = p.parse_args(argv)
    from secfm.evals.harness import run_task

    settings = HeldoutSettings(out=a.out, corpus=a.corpus, sft=a.sft, model=a.model, adapters=a.adapter,
                               max_tokens=a.max_tokens, max_mcq=a.max_mcq, bf16=False if a.fp32 else None, split=a.split)
    results = run_task("train-heldout", settings, progress=print).metrics  # the harness task (secfm eval run train-heldout)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPT and SFT on one code path: recipe -> data -> model (LoRA / QLoRA / full) -> Trainer.

* CPT: causal LM on packed sequences (documents joined with BOS/EOS, cut into ``seq_len``
  blocks); perplexity on the held-out documents.
* SFT: conversations rendered with the model's chat template, loss on assistant tokens only
  (the mask comes from rendering each conversation prefix, so any template works), optionally
  packed without splitting a conversation; eval loss on the held-out conversations.
* Trainer: ``transformers.Trainer`` subclass with the chunked loss of
  :mod:`secfm.training.loss` (the CPU path), or TRL's ``SFTTrainer`` for SFT on GPUs; both
  record metrics.jsonl, the data order (one hash per micro-batch), a loss-curve PNG, and
  checkpoints that ``resume`` picks up (same data order: the Trainer's seeded sampler skips
  the batches already seen).
* GPUs: bf16, gradient checkpointing, QLoRA through bitsandbytes NF4, full-parameter
  training under ``accelerate launch`` with DeepSpeed ZeRO-3 or FSDP (bitsandbytes, deepspeed
  and vLLM are imported only on those paths).
* Export: the adapter alone (``adapter_model.safetensors`` + ``adapter_config.json`` naming the
  base by its Hugging Face id: loads in secfm (offline, the registry maps the id to the local
  weights), in ``AutoPeftModelForCausalLM`` and in ``vllm serve --enable-lora --lora-modules``) and,
  on request, merge-and-unload into a Hugging Face folder for ``vllm serve DIR``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from secfm.errors import SecfmError
from secfm.merge import merge_adapter  # the one merge (re-exported: secfm.training.merge_adapter)
from secfm.training.recipes import Recipe

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
DATA_ORDER = "data_order.jsonl"
SUMMARY = "summary.json"
LOSS_PNG = "loss_curve.png"


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def ensure_data(recipe: Recipe, progress: Callable[[str], None] | None = None) -> Path:
    """The recipe's dataset folder, built from ``data.build`` when it is missing."""
    path = Path(recipe.data.path)
    if (path / "dataset_dict.json").is_file():
        return path
    if recipe.data.build is None:
        raise SecfmError(f"data {path} not found (build it with `secfm data {'corpus' if recipe.stage == 'cpt' else 'sft'} --out {path}`)")
    build = dict(recipe.data.build)
    if progress:
        progress(f"building {recipe.stage} data into {path}")
    if recipe.stage == "cpt":
        from secfm.training.corpus import CorpusConfig, build_corpus

        try:
            config = CorpusConfig(**build)
        except TypeError as exc:
            raise SecfmError(f"recipe {recipe.path}: data.build: {exc}") from exc
        build_corpus(path, config, force=True, progress=progress)
    else:
        from secfm.training.sft_data import SftConfig, build_sft

        kb = bool(build.pop("kb", True))
        try:
            config = SftConfig(**build)
        except TypeError as exc:
            raise SecfmError(f"recipe {recipe.path}: data.build: {exc}") from exc
        build_sft(path, config, kb=kb, force=True)
    return path


def pack_documents(texts: list[str], tokenizer, seq_len: int, max_blocks: int | None = None) -> list[list[int]]:
    """BOS + document + EOS, concatenated and cut into ``seq_len`` blocks (the tail is dropped)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    blocks: list[list[int]] = []
    buffer: list[int] = []
    for start in range(0, len(texts), 1000):
        for ids in tokenizer(texts[start:start + 1000], add_special_tokens=False)["input_ids"]:
            buffer.extend(bos + ids + eos)
            while len(buffer) >= seq_len:
                blocks.append(buffer[:seq_len])
                buffer = buffer[seq_len:]
                if max_blocks is not None and len(blocks) >= max_blocks:
                    return blocks
    return blocks


def encode_conversation(tokenizer, messages: list[dict], max_len: int) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels): labels are the token ids inside assistant turns (their end-of-turn
    token included), -100 elsewhere. None when truncation leaves no assistant token."""
    def render(msgs, gen=False):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    text = render(messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(render(messages[:i], gen=True))
        through = render(messages[: i + 1])
        if not text.startswith(through):
            raise SecfmError("the chat template does not render conversations prefix by prefix; cannot mask assistant turns")
        spans.append((start, len(through)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_len]
    labels = [
        tok if any(s <= a < e for s, e in spans) else -100
        for tok, (a, _b) in zip(ids, enc["offset_mapping"][:max_len])
    ]
    if all(x == -100 for x in labels):
        return None
    return ids, labels


def cloze_token_ids(tokenizer, prompt: str, continuations: list[str]) -> tuple[list[int], list[list[int]]]:
    """The token ids of a plain-text prompt (after BOS) and of each continuation (" " + text),
    tokenized apart: the layout the cloze evaluation scores and the short-answer rows train."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    context = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return context, tokenizer([" " + c for c in continuations], add_special_tokens=False)["input_ids"]


def encode_completion(tokenizer, prompt: str, completion: str, max_len: int) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) of a plain-text prompt/completion row (:func:`cloze_token_ids`), then
    EOS, with labels on the completion tokens and EOS only. None when truncation leaves no
    completion token."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    head, (tail,) = cloze_token_ids(tokenizer, prompt, [completion])
    tail = tail + eos
    ids = (head + tail)[:max_len]
    labels = ([-100] * len(head) + tail)[:max_len]
    if all(x == -100 for x in labels):
        return None
    return ids, labels


def pack_examples(examples: list[tuple[list[int], list[int]]], seq_len: int) -> list[tuple[list[int], list[int]]]:
    """Greedy packing in order: conversations are concatenated while they fit; none is split."""
    packed: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    for a, b in examples:
        if ids and len(ids) + len(a) > seq_len:
            packed.append((ids, labels))
            ids, labels = [], []
        ids = ids + a
        labels = labels + b
    if ids:
        packed.append((ids, labels))
    return packed


def build_datasets(recipe: Recipe, tokenizer, progress: Callable[[str], None] | None = None):
    """(train, eval) ``datasets.Dataset`` of input_ids (+ labels for SFT)."""
    from datasets import Dataset

    from secfm.training.corpus import load_corpus

    path = ensure_data(recipe, progress)
    dd = load_corpus(path)  # any DatasetDict saved to disk
    spec = recipe.data
    eval_split = recipe.eval_split
    if spec.eval_split is None and (eval_split not in dd or not len(dd[eval_split])) and "test" in dd:
        eval_split = "test"  # small user data with no validation entity: the running eval uses test
        if progress:
            progress("the validation split is empty: the running eval loss uses the test split")
    for split in (spec.train_split, eval_split, spec.replay_split):
        if split is not None and split not in dd:
            raise SecfmError(f"data {path} has no split '{split}' (has {', '.join(dd)})")
    train_rows = dd[spec.train_split].shuffle(seed=spec.shuffle_seed)
    eval_rows = dd[eval_split]
    if spec.kinds:
        if "kind" not in train_rows.column_names:
            raise SecfmError(f"data {path} split '{spec.train_split}' has no 'kind' column to select data.kinds from")
        train_rows = train_rows.filter(lambda kind: any(fnmatch(kind, k) for k in spec.kinds), input_columns="kind")
        if not len(train_rows):
            raise SecfmError(f"data {path} split '{spec.train_split}': no row of kinds {', '.join(spec.kinds)}")
    if spec.max_train_samples:
        train_rows = train_rows.select(range(min(len(train_rows), spec.max_train_samples)))
    replay_rows = None
    if spec.replay_split and spec.replay_samples:
        replay_rows = dd[spec.replay_split].shuffle(seed=spec.shuffle_seed)
        replay_rows = replay_rows.select(range(min(len(replay_rows), spec.replay_samples)))
    if progress:
        replay = f" + {len(replay_rows):,} {spec.replay_split}" if replay_rows is not None else ""
        progress(f"tokenizing {len(train_rows):,} {spec.train_split}{replay} and {len(eval_rows):,} eval rows")
    n_eval = recipe.data.max_eval_samples
    if recipe.stage == "cpt":
        if "text" not in train_rows.column_names:
            raise SecfmError(f"data {path} has no 'text' column: CPT needs a corpus from `secfm data corpus`")
        train_blocks = pack_documents(list(train_rows["text"]), tokenizer, recipe.seq_len)
        eval_blocks = pack_documents(list(eval_rows["text"]), tokenizer, recipe.seq_len, max_blocks=n_eval)
        if not train_blocks:
            raise SecfmError(f"data {path}: fewer than {recipe.seq_len} tokens in the train split")
        return Dataset.from_dict({"input_ids": train_blocks}), Dataset.from_dict({"input_ids": eval_blocks})

    def encode(rows, split: str, limit=None) -> list[tuple[list[int], list[int]]]:
        if "messages" in rows.column_names:
            encoded = (encode_conversation(tokenizer, m, recipe.seq_len) for m in rows["messages"])
        elif {"prompt", "completion"} <= set(rows.column_names):
            encoded = (encode_completion(tokenizer, p, c, recipe.seq_len)
                       for p, c in zip(rows["prompt"], rows["completion"]))
        else:
            raise SecfmError(f"data {path} split '{split}' has neither a 'messages' column nor 'prompt' and "
                             "'completion' columns: SFT needs data from `secfm data sft`")
        out = []
        for enc in encoded:
            if enc:
                out.append(enc)
            if limit and len(out) >= limit:
                break
        return out

    train_ex = encode(train_rows, spec.train_split)
    if replay_rows is not None:  # interleave the replayed rows, in a fixed order
        train_ex += encode(replay_rows, spec.replay_split)
        random.Random(spec.shuffle_seed).shuffle(train_ex)
    eval_ex = encode(eval_rows, eval_split, None if n_eval is None else n_eval * (4 if recipe.packing else 1))
    if recipe.packing:
        train_ex = pack_examples(train_ex, recipe.seq_len)
        eval_ex = pack_examples(eval_ex, recipe.seq_len)
    if n_eval:
        eval_ex = eval_ex[:n_eval]
    if not train_ex:
        raise SecfmError(f"data {path}: no trainable conversation")

    def table(ex):
        return Dataset.from_dict({"input_ids": [a for a, _ in ex], "labels": [b for _, b in ex]})

    return table(train_ex), table(eval_ex)


class PadCollator:
    """Right-pads input_ids (pad id), labels (-100; default: a copy of input_ids) and the mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        n = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), n), -100, dtype=torch.long)
        mask = torch.zeros((len(examples), n), dtype=torch.long)
        for i, e in enumerate(examples):
            k = len(e["input_ids"])
            ids[i, :k] = torch.tensor(e["input_ids"])
            labels[i, :k] = torch.tensor(e.get("labels", e["input_ids"]))
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
def pick_device(recipe: Recipe) -> str:
    import torch

    if recipe.distributed.num_gpus >= 1:
        if not torch.cuda.is_available():
            raise SecfmError(
                f"recipe {recipe.name} needs {recipe.distributed.num_gpus} x {recipe.distributed.gpu} and no GPU is "
                "visible here: validate it with --dry-run, run it on a GPU machine"
            )
        return "cuda"
    return "cpu"


def use_bf16(recipe: Recipe, device: str) -> bool:
    import torch

    from secfm.training.loss import cpu_supports_bf16

    if recipe.train.bf16 != "auto":
        return bool(recipe.train.bf16)
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def load_model(recipe: Recipe, device: str, bf16: bool):
    """The base model (4-bit for QLoRA) wrapped with a trainable LoRA (or not, for ``full``)."""
    import torch

    from secfm.engines.transformers_engine import load_causal_lm
    from secfm.models import resolve

    resolved = resolve(recipe.model)
    if resolved.adapter_dir is not None:
        raise SecfmError(f"recipe model {recipe.model} already carries an adapter; train on its base and set init_adapter")
    quantization = None
    if recipe.method == "qlora":
        try:
            import bitsandbytes  # noqa: F401 - presence check (GPU extra)
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise SecfmError("QLoRA needs bitsandbytes: pip install 'secfm[gpu]'") from exc
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.bfloat16)
    dtype = torch.bfloat16 if device.startswith("cuda") and bf16 else torch.float32
    if recipe.distributed.sharding != "none":
        # ZeRO-3 / FSDP: built sharded (zero3_init_flag) or on the CPU; accelerate places it on each rank
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(resolved.weights_dir), dtype=dtype)
    else:
        model = load_causal_lm(resolved, device if quantization is None else "cuda", dtype=dtype, quantization=quantization)
    model.config.use_cache = False
    if recipe.method == "full":
        model.train()
        return model, resolved
    from peft import LoraConfig, PeftModel, get_peft_model

    if recipe.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.train.gradient_checkpointing)
    if recipe.init_adapter:
        adapter = Path(recipe.init_adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise SecfmError(f"init_adapter {adapter} is not a PEFT adapter folder (run the CPT recipe first)")
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    else:
        lora = recipe.lora
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    if recipe.train.gradient_checkpointing:
        model.enable_input_require_grads()
    model.train()
    return model, resolved


# ------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------
class ChunkedLossMixin:
    """Loss only on labelled positions, in chunks (see :mod:`secfm.training.loss`); records the
    data order and token counts. Falls back to the model's own loss where the body and output
    layer cannot be called apart (FSDP) or when ``loss_mode='plain'``."""

    loss_mode = "chunked"
    loss_chunk_size = 1024
    matmul_dtype = None
    order_path: Path | None = None
    tokens_seen = 0
    labelled_seen = 0
    _micro = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from secfm.training.loss import chunked_lm_loss, supports_chunked_loss

        if self.loss_mode != "chunked" or "labels" not in inputs or not supports_chunked_loss(model):
            self.loss_is_scaled_for_ga = None
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        with self.accelerator.autocast():
            total, count = chunked_lm_loss(model, inputs["input_ids"], inputs["labels"], inputs.get("attention_mask"),
                                           chunk_size=self.loss_chunk_size, matmul_dtype=self.matmul_dtype)
        if num_items_in_batch is not None and model.training:
            denom = num_items_in_batch.to(total.device) if hasattr(num_items_in_batch, "to") else num_items_in_batch
            loss = total / denom
            self.loss_is_scaled_for_ga = True
        else:
            loss = total / max(count, 1)
            self.loss_is_scaled_for_ga = False
        return (loss, {"loss": loss}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        ids = inputs["input_ids"]
        self.tokens_seen += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else ids.numel()
        if "labels" in inputs:
            self.labelled_seen += int((inputs["labels"][:, 1:] != -100).sum())
        if self.order_path is not None and self.args.process_index == 0:
            digest = hashlib.sha1(ids.detach().cpu().numpy().tobytes()).hexdigest()[:16]
            with self.order_path.open("a") as f:
                f.write(json.dumps({"step": self.state.global_step + 1, "micro": self._micro, "batch": digest}) + "\n")
            self._micro = (self._micro + 1) % max(1, self.args.gradient_accumulation_steps)
        return super().training_step(model, inputs, num_items_in_batch)


def _trainer_classes():
    from transformers import Trainer

    class SecfmTrainer(ChunkedLossMixin, Trainer):
        """``transformers.Trainer`` with the chunked loss (CPT, and SFT on the CPU)."""

    return SecfmTrainer


def _sft_trainer_class():
    from trl import SFTTrainer

    class SecfmSFTTrainer(ChunkedLossMixin, SFTTrainer):
        """TRL's SFTTrainer on pre-tokenized, assistant-masked conversations."""

    return SecfmSFTTrainer


def _callbacks(recipe: Recipe, out: Path, started: float):
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """One JSON line per log event: step, loss, lr, eval loss/perplexity, tokens/s."""

        def __init__(self):
            self.trainer = None
            self.last_time = time.time()
            self.last_tokens = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            now = time.time()
            row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": round(now - started, 1)}
            row.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()})
            if "eval_loss" in logs:
                row["eval_perplexity"] = round(math.exp(min(logs["eval_loss"], 50)), 4)
            if "loss" in logs and self.trainer is not None:
                tokens = self.trainer.tokens_seen
                row["tokens_per_second"] = round((tokens - self.last_tokens) / max(now - self.last_time, 1e-6), 1)
                row["tokens_seen"] = tokens
                self.last_tokens, self.last_time = tokens, now
            with (out / METRICS).open("a") as f:
                f.write(json.dumps(row) + "\n")

    class TimeBudgetCallback(TrainerCallback):
        """Stop (and save) once ``max_minutes`` of training have passed in this run."""

        def __init__(self, minutes: float):
            self.deadline = time.time() + minutes * 60
            self.stopped_early = False

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() >= self.deadline and not control.should_training_stop:
                control.should_training_stop = True
                control.should_save = True
                self.stopped_early = True
            return control

    cbs = [MetricsCallback()]
    if recipe.train.max_minutes:
        cbs.append(TimeBudgetCallback(recipe.train.max_minutes))
    return cbs


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last, so a checkpoint cut
    by a kill has none and is skipped)."""
    best = None
    for ckpt in out.glob("checkpoint-*"):
        try:
            step = int(ckpt.name.split("-")[1])
            json.loads((ckpt / "trainer_state.json").read_text())
        except (ValueError, OSError, IndexError):
            continue
        if best is None or step > best[0]:
            best = (step, ckpt)
    return best[1] if best else None


def training_arguments(recipe: Recipe, out: Path, device: str, bf16: bool, has_eval: bool):
    t = recipe.train
    kwargs: dict[str, Any] = dict(
        output_dir=str(out),
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=float(t.warmup_ratio) if 0 < t.warmup_ratio < 1 else 0,
        max_steps=t.max_steps,
        num_train_epochs=t.num_epochs,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if (has_eval and t.eval_steps) else "no",
        eval_steps=t.eval_steps if has_eval else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        optim=t.optim,
        report_to=[],
        remove_unused_columns=False,
        prediction_loss_only=True,
        dataloader_num_workers=t.dataloader_num_workers,
        disable_tqdm=True,
        use_cpu=device == "cpu",
    )
    return kwargs


def _set_threads(recipe: Recipe) -> None:
    import torch

    from secfm.settings import default_threads

    threads = recipe.train.threads or default_threads()
    if threads:
        torch.set_num_threads(threads)


def run_training(recipe: Recipe, resume: str | bool = "auto", progress: Callable[[str], None] | None = None) -> dict:
    """Train a recipe end to end; returns (and writes) ``summary.json`` in the output folder."""
    import torch

    from secfm.provenance import Recorder

    note = progress or (lambda s: log.info(s))
    # training is no timing benchmark: a busy machine is recorded (load at start and end), not refused
    rec = Recorder([], allow_busy=True, command=None)
    rec.note(load_policy="training run: the load is recorded, not refused; tokens/s are this chunk's, under that load")
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _set_threads(recipe)
    device = pick_device(recipe)
    bf16 = use_bf16(recipe, device)
    random.seed(recipe.train.seed)
    torch.manual_seed(recipe.train.seed)

    from secfm.models import resolve, tokenizer_for

    tokenizer = tokenizer_for(resolve(recipe.model))
    train_ds, eval_ds = build_datasets(recipe, tokenizer, note)
    rec.add_data(recipe.data.path)
    if recipe.init_adapter and (Path(recipe.init_adapter) / "adapter_model.safetensors").is_file():
        rec.add_data(Path(recipe.init_adapter) / "adapter_model.safetensors")
    if recipe.path:
        rec.add_data(recipe.path)
    note(f"{len(train_ds):,} train sequences, {len(eval_ds):,} eval sequences of <= {recipe.seq_len} tokens")

    ckpt = None
    if resume:
        ckpt = latest_checkpoint(out)
        if resume is True and ckpt is None:
            raise SecfmError(f"--resume: no complete checkpoint in {out}")
    elif any(out.glob("checkpoint-*")):
        for old in out.glob("checkpoint-*"):
            shutil.rmtree(old)
        for name in (METRICS, DATA_ORDER):
            (out / name).unlink(missing_ok=True)
    if ckpt is None:
        for name in (METRICS, DATA_ORDER):
            (out / name).unlink(missing_ok=True)

    use_trl = recipe.stage == "sft" and (recipe.trainer == "trl" or (recipe.trainer == "auto" and device == "cuda"))
    args_kwargs = training_arguments(recipe, out, device, bf16, len(eval_ds) > 0)
    if use_trl:
        from trl import SFTConfig

        args = SFTConfig(**args_kwargs, max_length=recipe.seq_len, packing=False, assistant_only_loss=False,
                         completion_only_loss=False, dataset_kwargs={"skip_prepare_dataset": True})
    else:
        from transformers import TrainingArguments

        args = TrainingArguments(**args_kwargs)  # before the model: sets up ZeRO-3 init under accelerate

    note(f"loading {recipe.model} ({recipe.method}, {device}, {'bf16' if bf16 else 'fp32'})")
    model, resolved = load_model(recipe, device, bf16)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    note(f"trainable parameters: {trainable / 1e6:.2f}M of {total / 1e6:.1f}M")

    started = time.time()
    callbacks = _callbacks(recipe, out, started)
    cls = _sft_trainer_class() if use_trl else _trainer_classes()
    collator = PadCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    trainer_kwargs = dict(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds if len(eval_ds) else None,
                          data_collator=collator, callbacks=callbacks)
    trainer_kwargs["processing_class"] = tokenizer
    trainer = cls(**trainer_kwargs)
    trainer.loss_mode = recipe.train.loss
    trainer.loss_chunk_size = recipe.train.loss_chunk_size
    trainer.matmul_dtype = torch.bfloat16 if bf16 else None
    trainer.order_path = out / DATA_ORDER
    callbacks[0].trainer = trainer

    if ckpt is not None:
        note(f"resuming from {ckpt}")
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    train_seconds = time.time() - started
    stopped_early = any(getattr(cb, "stopped_early", False) for cb in callbacks)

    final_eval = {}
    if len(eval_ds):
        note("evaluating on the held-out split")
        final_eval = trainer.evaluate()
    export = export_artifacts(recipe, trainer, resolved, tokenizer, note)  # every rank: ZeRO-3/FSDP gather
    summary = {
        "recipe": recipe.name, "stage": recipe.stage, "model": recipe.model, "method": recipe.method,
        "device": device, "bf16": bf16, "loss": recipe.train.loss,
        "resumed_from": str(ckpt) if ckpt else None,
        "global_step": trainer.state.global_step, "max_steps": recipe.train.max_steps,
        "stopped_by_time_budget": stopped_early,
        "train_seconds_this_run": round(train_seconds, 1),
        "train_loss": round(result.training_loss, 5) if result and result.training_loss else None,
        "tokens_this_run": trainer.tokens_seen,
        "tokens_per_second": round(trainer.tokens_seen / max(train_seconds, 1e-6), 1),
        "train_sequences": len(train_ds), "eval_sequences": len(eval_ds), "seq_len": recipe.seq_len,
        "trainable_params": trainable,
        "eval_loss": round(final_eval["eval_loss"], 5) if "eval_loss" in final_eval else None,
        "eval_perplexity": round(math.exp(final_eval["eval_loss"]), 4) if "eval_loss" in final_eval else None,
        **export,
    }
    if trainer.args.process_index == 0:
        with (out / METRICS).open("a") as f:
            f.write(json.dumps({"step": trainer.state.global_step, "final": True,
                                **{k: summary[k] for k in ("eval_loss", "eval_perplexity")}}) + "\n")
        plot_loss_curve(out / METRICS, out / LOSS_PNG, title=recipe.name)
        summary["loss_curve"] = str(out / LOSS_PNG)
        summary["chunks"] = _previous_chunks(out, ckpt) + [
            {k: summary[k] for k in ("resumed_from", "global_step", "stopped_by_time_budget", "train_seconds_this_run",
                                     "tokens_this_run", "tokens_per_second")} | {"provenance": rec.stamp()}]
        summary["tokens_all_chunks"] = sum(c.get("tokens_this_run") or 0 for c in summary["chunks"])
        summary = rec.write_json(out / SUMMARY, summary)
    return summary


def _previous_chunks(out: Path, resumed_from) -> list[dict]:
    """The chunks of this run before the one that resumed now (from its summary.json)."""
    if resumed_from is None or not (out / SUMMARY).is_file():
        return []
    try:
        return list(json.loads((out / SUMMARY).read_text()).get("chunks") or [])
    except ValueError:
        return []


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def _fix_adapter_config(adapter_dir: Path, base_name: str) -> None:
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_name
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def _hub_name(model: str) -> str:
    """The name an exported adapter gives its base: the registry model's Hugging Face id when it
    has one (``google/gemma-3-270m``: any PEFT loader finds it; secfm resolves it to the local
    weights), else the name as given."""
    from secfm.registry import get_spec

    spec = get_spec(model)
    return (spec.hub_id() if spec is not None else None) or model


def export_artifacts(recipe: Recipe, trainer, resolved, tokenizer, note: Callable[[str], None]) -> dict:
    out: dict[str, Any] = {}
    model = trainer.model
    base_name = recipe.export.base_model_name or _hub_name(recipe.model)
    if recipe.method == "full":
        final = Path(recipe.export.merged_dir or Path(recipe.output_dir) / "final")
        trainer.save_model(str(final))  # collective under ZeRO-3 (16-bit gather) / FSDP (full state dict)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(final))
        return {"model_dir": str(final)}
    if not trainer.is_world_process_zero():
        return {}
    adapter_dir = Path(recipe.export.adapter_dir or Path(recipe.output_dir) / "adapter")
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    model.save_pretrained(str(adapter_dir))  # the adapter only
    _fix_adapter_config(adapter_dir, base_name)
    size = sum(f.stat().st_size for f in adapter_dir.iterdir() if f.is_file())
    note(f"adapter saved to {adapter_dir} ({size / 1e6:.1f} MB)")
    out.update(adapter_dir=str(adapter_dir), adapter_bytes=size)
    if recipe.export.merged_dir:
        merged = merge_adapter(recipe.model, adapter_dir, Path(recipe.export.merged_dir), recipe.export.merged_dtype)
        note(f"merged model written to {merged}")
        out["merged_dir"] = str(merged)
    return out


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------
def read_metrics(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill
    return rows


def plot_loss_curve(metrics: Path, png: Path, title: str = "") -> Path | None:
    rows = read_metrics(metrics)
    train = {}
    evals = {}
    for r in rows:  # later rows win (a resumed run re-logs the steps after its checkpoint)
        if "loss" in r and "eval_loss" not in r:
            train[r["step"]] = r["loss"]
        if "eval_loss" in r and not r.get("final"):
            evals[r["step"]] = r["eval_loss"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        xs = sorted(train)
        ax.plot(xs, [train[x] for x in xs], label="train loss", lw=1.2)
    if evals:
        xs = sorted(evals)
        ax.plot(xs, [evals[x] for x in xs], "o-", label="held-out loss", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


__all__ = ["PadCollator", "build_datasets", "encode_conversation", "ensure_data", "export_artifacts",
           "latest_checkpoint", "load_model", "merge_adapter", "pack_documents", "pack_examples", "plot_loss_curve",
           "read_metrics", "run_training"]

"""The in-process engine on transformers (CPU or GPU), the default here."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from secfm.engines.base import (
    POOLINGS,
    Engine,
    LoglikResult,
    Message,
    Pooling,
    SamplingParams,
)
from secfm.errors import SecfmError
from secfm.models import ResolvedModel, resolve, tokenizer_for
from secfm.settings import default_device, default_threads

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised from a forward hook once the wanted layer has run: later layers are skipped."""


def decoder_layers(model):
    """The list of decoder blocks of a causal LM (plain or wrapped by PEFT)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    for candidate in (inner, getattr(inner, "language_model", None)):
        layers = getattr(candidate, "layers", None)
        if layers is not None:
            return candidate, layers
    raise SecfmError(f"cannot find decoder layers in {type(base).__name__}")


def state_dict_bytes(model) -> int:
    """Bytes of a module's weights: each storage once, quantized packed weights at one byte each."""
    import torch

    seen: set[int] = set()
    total = 0

    def add(value) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if value.is_quantized:  # int8 packed weights: one byte each (per-channel scales are negligible)
                total += value.int_repr().nbytes
                return
            key = value.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += value.untyped_storage().nbytes()
        elif isinstance(value, (tuple, list)):
            for v in value:
                add(v)

    for value in model.state_dict().values():
        add(value)
    return total


def load_causal_lm(resolved: ResolvedModel, device: str, dtype=None, quantization=None):
    """Load weights (and adapter) of a resolved model for inference or training."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading from the safetensors cache takes well under a second
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    kwargs = {"dtype": dtype}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(resolved.weights_dir), **kwargs)
    except (OSError, ValueError) as exc:
        raise SecfmError(f"cannot load weights from {resolved.weights_dir}: {str(exc).splitlines()[0]}") from exc
    if quantization is None:
        model.to(device)
    if resolved.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolved.adapter_dir))
    model.eval()
    return model


class TransformersEngine(Engine):
    """In process on transformers; generation is continuously batched (``secfm.engines.batching``):
    up to ``max_batch`` requests decode together and new ones join at the next step."""

    kind = "transformers"
    has_hidden_states = True
    json_backend = "lmfe"
    #: int8-dynamic: torch's dynamic int8 Linear layers (CPU), applied after any adapter is merged
    quantizations = ("int8-dynamic",)

    def __init__(
        self,
        model: str = "gemma-3-270m",
        adapter: str | None = None,
        device: str | None = None,
        dtype=None,
        batch_size: int = 8,
        resolved: ResolvedModel | None = None,
        max_batch: int | None = None,
        quantization: str | None = None,
    ):
        import torch

        from secfm.engines.batching import Scheduler

        if quantization is not None and quantization not in self.quantizations:
            raise SecfmError(f"unknown quantization '{quantization}' for the transformers engine: "
                             f"choose {', '.join(self.quantizations)}")
        threads = default_threads()
        if threads:
            torch.set_num_threads(threads)
        self.resolved = resolved or resolve(model, adapter)
        self.model_name = self.resolved.name
        self.adapter = str(self.resolved.adapter_dir) if self.resolved.adapter_dir else None
        self.device = device or default_device()
        if quantization is not None and not str(self.device).startswith("cpu"):
            raise SecfmError(f"--quantization {quantization} runs on a CPU only (this engine is on {self.device})")
        self.batch_size = batch_size
        self.quantization = quantization
        self.tokenizer = tokenizer_for(self.resolved)
        self.model = load_causal_lm(self.resolved, self.device, dtype)
        if self.adapter and hasattr(self.model, "merge_and_unload"):
            # the LoRA weights folded into the base ones: the same numbers, and on this CPU a
            # batched prefill and a decode step take about a third less time (issue #17)
            self.model = self.model.merge_and_unload()
        if quantization == "int8-dynamic":  # after the merge: the LoRA deltas are quantized with their base
            from torch.ao.quantization import quantize_dynamic

            self.model = quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        if str(self.device) == "cpu" and quantization is None:
            _tall_linears(self.model)
        self._lock = threading.Lock()  # every forward on the model holds it (decode steps, scoring, hidden states)
        self._tok_lock = threading.Lock()  # the Rust tokenizer is not safe under concurrent padded calls
        self._specials: dict[str, int] | None = None
        self._headers: tuple[tuple[int, ...], ...] | None = None
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        slots = max_batch or int(os.environ.get("SECFM_MAX_BATCH", "32"))
        self._scheduler = Scheduler(self.model, self.tokenizer, self.device, self._lock, max_batch=slots)

    # -- helpers ------------------------------------------------------------------------------
    def base_engine(self) -> Engine:
        """The process's shared engine of the base weights (a registry adapter's base, or the
        model an ``adapter=`` was put on): heads trained on the base model read its hidden states,
        and the weights are loaded once however many callers ask."""
        if self.adapter is None:
            return self
        from secfm.engines import shared_engine

        spec = self.resolved.spec  # an adapter folder given as the model path carries its base's spec
        if spec is None:
            base = self.resolved.name
        else:
            base = spec.source.base if spec.source.kind == "adapter" and spec.source.base else spec.name
        return shared_engine(self.kind, model=base)

    @property
    def max_context(self) -> int:
        return self.resolved.context_length

    @property
    def fast_decoding(self) -> bool:
        return str(self.device).startswith("cuda")

    def describe(self) -> dict:
        info = super().describe()
        return {**info, "quantization": self.quantization} if self.quantization else info

    def weights_bytes(self) -> int:
        """Every tensor of the state dict once (tied weights, Gemma's embeddings and output layer, count
        once): float32 4 bytes a weight, bfloat16 2, dynamic-int8 packed weights 1 (scales left out)."""
        return state_dict_bytes(self.model)

    def count_tokens(self, text: str) -> int:
        with self._tok_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _strip_bos(self, text: str) -> str:
        bos = self.tokenizer.bos_token
        return text[len(bos):] if bos and text.startswith(bos) else text

    def _encode(self, texts: Sequence[str], padding_side: str = "left", max_length: int | None = None):
        """Tokenize with the model's special tokens exactly once (chat templates already add BOS)."""
        with self._tok_lock:
            batch = self.tokenizer(
                [self._strip_bos(t) for t in texts],
                return_tensors="pt",
                padding=True,
                padding_side=padding_side,
                truncation=max_length is not None,
                max_length=max_length,
            )
        return {k: v.to(self.device) for k, v in batch.items()}

    def _prompt_ids(self, text: str) -> list[int]:
        with self._tok_lock:
            return self.tokenizer(self._strip_bos(text))["input_ids"]

    def _token_ids(self, text: str) -> list[int]:
        with self._tok_lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        if not self.tokenizer.chat_template:
            raise SecfmError(f"model {self.model_name} has no chat template; add one to the registry")
        with self._tok_lock:
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def _special_tokens(self) -> dict[str, int]:
        """Every special token of the tokenizer (text -> id)."""
        if self._specials is None:
            tok = self.tokenizer
            found = {t.content: i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
            for t in tok.all_special_tokens:
                found.setdefault(t, tok.convert_tokens_to_ids(t))
            self._specials = found
        return self._specials

    def special_tokens(self) -> tuple[str, ...]:
        return tuple(t for t in self._special_tokens() if isinstance(t, str) and len(t) > 1)

    def turn_markers(self) -> tuple[str, ...]:
        """The special tokens the chat template writes around turns (BOS and padding left out)."""
        template = self.tokenizer.chat_template or ""
        skip = {self.tokenizer.bos_token, self.tokenizer.pad_token, self.tokenizer.eos_token}
        return tuple(t for t in self._special_tokens() if t and t not in skip and t in template)

    def _role_headers(self) -> tuple[tuple[int, ...], ...]:
        """The role lines that follow a turn marker in the chat template, as tokens (Gemma's
        ``user\n`` and ``model\n``): a base model often writes them without the special token
        when it starts the next turn on its own."""
        if self._headers is None:
            markers = {self._special_tokens()[m] for m in self.turn_markers()}
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], tokenize=False)
            ids = self._prompt_ids(rendered)
            headers = set()
            for i, token in enumerate(ids):
                if token in markers:
                    for j in range(i + 1, min(i + 5, len(ids))):
                        if ids[j] in markers:
                            break
                        if "\n" in self.tokenizer.decode([ids[j]]):
                            headers.add(tuple(ids[i + 1 : j + 1]))
                            break
            self._headers = tuple(h for h in headers if len(h) >= 2)
        return self._headers

    # -- generation (continuously batched) -----------------------------------------------------
    def _request(self, prompt: str, params: SamplingParams, constraint=None):
        from secfm.engines.batching import Request

        specials = self._special_tokens()
        stop_ids = frozenset([*self._eos_ids, *(specials[s] for s in params.stop if s in specials)])
        texts = tuple(s for s in params.stop if s and s not in specials)
        # a stop on the turn markers also stops at a role header written without them
        sequences = self._role_headers() if set(params.stop) & set(self.turn_markers()) else ()
        ids = self._prompt_ids(prompt)
        if len(ids) + params.max_new_tokens > self.max_context:
            raise SecfmError(f"the prompt has {len(ids)} tokens; with {params.max_new_tokens} new ones it exceeds the "
                             f"model's context of {self.max_context}")
        return Request(ids, params, stop_ids, texts, constraint, stop_sequences=sequences)

    def submit(self, prompt: str, params: SamplingParams | None = None):
        return self._scheduler.submit(self._request(prompt, params or SamplingParams()))

    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        params = params or SamplingParams()
        handles = [self._scheduler.submit(self._request(p, params)) for p in prompts]
        try:
            return [h.result() for h in handles]
        finally:
            for h in handles:
                h.cancel()

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield decoded pieces; closing the generator (a Stop button) ends the request at the next
        step and frees its slot."""
        from secfm.engines.batching import iterate

        return iterate(self.submit(prompt, params))

    def stats(self) -> dict:
        return self._scheduler.stats()

    def reference_generate(self, prompt: str, max_new_tokens: int = 32) -> tuple[str, int]:
        """Greedy text and completion-token count from plain transformers ``generate`` on the same
        weights, without the scheduler (the yardstick for its overhead; ``secfm bench latency``)."""
        import torch

        batch = self._encode([prompt])
        with self._lock, torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=int(max_new_tokens), do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self._eos_ids)
        new = out[0, batch["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True), int(new.numel())

    # -- constrained decoding ------------------------------------------------------------------
    def prepare_json(self) -> None:
        from secfm.engines.constrained import tokenizer_data

        tokenizer_data(self.tokenizer, self._eos_ids)

    def generate_json(self, conversations, schema, params: SamplingParams | None = None) -> list[str]:
        from secfm.engines.constrained import JsonConstraint, tokenizer_data

        conversations = [list(c) for c in conversations]
        schemas = [schema] * len(conversations) if isinstance(schema, dict) else list(schema)
        if len(schemas) != len(conversations):
            raise ValueError("one schema per conversation (or one for all)")
        params = replace(params or SamplingParams(), temperature=0.0)
        data = tokenizer_data(self.tokenizer, self._eos_ids)
        handles = []
        for conv, sch in zip(conversations, schemas):
            request = self._request(self.apply_chat_template(conv), params)
            request.constraint = JsonConstraint(data, sch, request.prompt_ids)
            handles.append(self._scheduler.submit(request))
        try:
            return [h.result() for h in handles]
        finally:
            for h in handles:
                h.cancel()

    # -- scoring --------------------------------------------------------------------------------
    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[LoglikResult]:
        return self.loglikelihood_many([(context, continuations)])[0]

    def loglikelihood_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[LoglikResult]]:
        import torch

        results = []
        with self._lock, torch.inference_mode():
            for context, continuations in requests:
                results.append(self._loglik_one(context, list(continuations)))
        return results

    def prompt_logprobs(self, text: str, top: int = 1) -> list[dict]:
        import torch

        with self._tok_lock:
            enc = self.tokenizer(self._strip_bos(text), return_offsets_mapping=True)
        ids = enc["input_ids"]
        offsets = [start for start, _end in enc["offset_mapping"]]
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        bos_offset = len(text) - len(self._strip_bos(text))
        rows = []
        for i, token_id in enumerate(ids):
            entry = {"token_id": token_id, "token": self.tokenizer.decode([token_id]), "offset": offsets[i] + bos_offset,
                     "logprob": None, "top": None}
            if i > 0:
                step = logp[i - 1]
                entry["logprob"] = float(step[token_id])
                values, indices = torch.topk(step, max(1, top))
                entry["top"] = {self.tokenizer.decode([int(j)]): float(v) for v, j in zip(values, indices)}
            rows.append(entry)
        return rows

    def _loglik_one(self, context: str, continuations: list[str]) -> list[LoglikResult]:
        """One forward over the context (cached), one batched forward over all continuations."""
        import torch

        if not continuations:
            return []
        ctx_ids = self._prompt_ids(context)
        cont_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        ctx = torch.tensor([ctx_ids], device=self.device)
        out = self.model(input_ids=ctx, use_cache=True, logits_to_keep=1)
        first_logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        width = max((len(ids) for ids in cont_ids), default=0)
        results_by_index: dict[int, LoglikResult] = {}
        rows = [i for i, ids in enumerate(cont_ids) if ids]
        for i, ids in enumerate(cont_ids):
            if not ids:
                results_by_index[i] = LoglikResult(continuations[i], 0.0, 0, True, ())
        if rows and width > 1:
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(rows))
            pad = self.tokenizer.pad_token_id
            inputs = torch.full((len(rows), width - 1), pad, device=self.device)
            mask = torch.zeros((len(rows), len(ctx_ids) + width - 1), dtype=torch.long, device=self.device)
            mask[:, : len(ctx_ids)] = 1
            for r, i in enumerate(rows):
                ids = cont_ids[i][:-1]
                if ids:
                    inputs[r, : len(ids)] = torch.tensor(ids, device=self.device)
                    mask[r, len(ctx_ids) : len(ctx_ids) + len(ids)] = 1
            positions = torch.arange(len(ctx_ids), len(ctx_ids) + width - 1, device=self.device)
            follow = self.model(
                input_ids=inputs,
                attention_mask=mask,
                past_key_values=cache,
                cache_position=positions,
                position_ids=positions.unsqueeze(0).expand(len(rows), -1),
                use_cache=False,
            )
            follow_logprobs = torch.log_softmax(follow.logits.float(), dim=-1)
        else:
            follow_logprobs = None
        for r, i in enumerate(rows):
            ids = cont_ids[i]
            token_lps = [float(first_logprobs[ids[0]])]
            greedy = int(first_logprobs.argmax()) == ids[0]
            for k in range(1, len(ids)):
                step = follow_logprobs[r, k - 1]
                token_lps.append(float(step[ids[k]]))
                greedy = greedy and int(step.argmax()) == ids[k]
            results_by_index[i] = LoglikResult(continuations[i], sum(token_lps), len(ids), greedy, tuple(token_lps))
        return [results_by_index[i] for i in range(len(continuations))]

    # -- representations ------------------------------------------------------------------------
    def num_layers(self) -> int:
        return len(decoder_layers(self.model)[1])

    def hidden_size(self) -> int:
        config = self.model.config
        return getattr(config, "hidden_size", None) or config.get_text_config().hidden_size

    def hidden_states(
        self,
        texts: Sequence[str],
        layer: int = -1,
        pooling: Pooling | Sequence[Pooling] = "mean",
        batch_size: int = 8,
        max_length: int = 512,
        *,
        layers: Sequence[int] | None = None,
        progress=None,
    ):
        """See :meth:`Engine.hidden_states`. Texts are batched in length order (little padding)
        and returned in input order; forward hooks on the wanted layers capture their outputs
        and stop the forward after the deepest one. Hooks are registered, run and removed while
        the model lock is held, so no other caller's forward ever passes through them."""
        import torch

        single_pooling = isinstance(pooling, str)
        poolings = (pooling,) if single_pooling else tuple(dict.fromkeys(pooling))
        for p in poolings:
            if p not in POOLINGS:
                raise SecfmError(f"pooling must be 'mean' or 'last', not {p!r}")
        wanted = [layer] if layers is None else list(dict.fromkeys(layers))
        if not wanted:
            raise SecfmError("no layer asked for")
        inner, blocks = decoder_layers(self.model)
        n = len(blocks)
        index_of = {lay: _layer_index(lay, n) for lay in wanted}
        deepest = max(index_of.values())
        hidden = self.hidden_size()
        out = {(lay, p): np.zeros((len(texts), hidden), dtype=np.float32) for lay in wanted for p in poolings}
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        bos = self.tokenizer.bos_token_id
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self._encode([texts[i] for i in rows], padding_side="right", max_length=max_length)
            mask = batch["attention_mask"]
            captured: dict[int, object] = {}

            def make_hook(index: int):
                def hook(_module, _inputs, output):
                    captured[index] = output[0] if isinstance(output, tuple) else output  # noqa: B023 - runs within this batch's forward
                    if index == deepest:
                        raise _StopForward

                return hook

            with self._lock, torch.inference_mode():
                handles = [(inner.embed_tokens if index == 0 else blocks[index - 1]).register_forward_hook(make_hook(index))
                           for index in sorted(set(index_of.values()))]
                try:
                    self.model(**batch, use_cache=False, logits_to_keep=1)
                except _StopForward:
                    pass
                finally:
                    for handle in handles:
                        handle.remove()
                weights = mask.clone().float()
                if bos is not None and bool((batch["input_ids"][:, 0] == bos).all()):
                    # the BOS position is an attention sink with a huge norm; leave it out of the mean
                    weights[:, 0] = torch.where(mask.sum(dim=1) > 1, 0.0, 1.0)
                denom = weights.sum(dim=1, keepdim=True)
                last = mask.sum(dim=1) - 1
                arange = torch.arange(mask.shape[0], device=mask.device)
                for lay, index in index_of.items():
                    states = captured[index].float()
                    for p in poolings:
                        vectors = (states * weights.unsqueeze(-1)).sum(dim=1) / denom if p == "mean" else states[arange, last]
                        out[(lay, p)][rows] = vectors.cpu().numpy()
            if progress is not None:
                progress(len(rows))
        if layers is None:
            return out[(layer, poolings[0])]
        if single_pooling:
            return {lay: out[(lay, poolings[0])] for lay in wanted}
        return out


def _tall_linear_forward(self, x):
    """``Linear`` as ``W @ x.T``: the weight is the tall operand, streamed once for every row.
    MKL's sgemm on this project's CPUs (AMD, AVX2) is slow for a few rows times a large weight
    in the usual ``x @ W.T`` order: for the 262k-token output layer at 8 rows this order takes
    about half the time (measured in the serving issue #17), which is what batching needs."""
    import torch

    flat = x.reshape(-1, x.shape[-1])
    out = torch.mm(self.weight, flat.t()).t()
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _tall_linears(model) -> None:
    """Use :func:`_tall_linear_forward` for the output layer and every linear that widens its input."""
    import types

    import torch

    for module in model.modules():
        if type(module) is torch.nn.Linear and module.out_features >= module.in_features:
            module.forward = types.MethodType(_tall_linear_forward, module)


def _layer_index(layer: int, n: int) -> int:
    index = n + layer + 1 if layer < 0 else layer
    if not 0 <= index <= n:
        raise SecfmError(f"layer {layer} is out of range for a model with {n} layers (use 0..{n} or -1..-{n})")
    return index

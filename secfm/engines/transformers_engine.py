"""The in-process engine on transformers (CPU or GPU), the default here."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from secfm.engines.base import Engine, LoglikResult, Message, Pooling, SamplingParams, truncate_at_stop
from secfm.errors import SecfmError
from secfm.models import ResolvedModel, resolve, tokenizer_for
from secfm.settings import default_device, default_threads

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised from a forward hook once the wanted layer has run: later layers are skipped."""


def _decoder_layers(model):
    """The list of decoder blocks of a causal LM (plain or wrapped by PEFT)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    for candidate in (inner, getattr(inner, "language_model", None)):
        layers = getattr(candidate, "layers", None)
        if layers is not None:
            return candidate, layers
    raise SecfmError(f"cannot find decoder layers in {type(base).__name__}")


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
    kind = "transformers"

    def __init__(
        self,
        model: str = "gemma-3-270m",
        adapter: str | None = None,
        device: str | None = None,
        dtype=None,
        batch_size: int = 8,
        resolved: ResolvedModel | None = None,
    ):
        import torch

        threads = default_threads()
        if threads:
            torch.set_num_threads(threads)
        self.resolved = resolved or resolve(model, adapter)
        self.model_name = self.resolved.name
        self.adapter = str(self.resolved.adapter_dir) if self.resolved.adapter_dir else None
        self.device = device or default_device()
        self.batch_size = batch_size
        self.tokenizer = tokenizer_for(self.resolved)
        self.model = load_causal_lm(self.resolved, self.device, dtype)
        self._lock = threading.Lock()  # one forward at a time per engine (the app shares one)
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])

    # -- helpers ------------------------------------------------------------------------------
    @property
    def max_context(self) -> int:
        return self.resolved.context_length

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _strip_bos(self, text: str) -> str:
        bos = self.tokenizer.bos_token
        return text[len(bos):] if bos and text.startswith(bos) else text

    def _encode(self, texts: Sequence[str], padding_side: str = "left", max_length: int | None = None):
        """Tokenize with the model's special tokens exactly once (chat templates already add BOS)."""
        self.tokenizer.padding_side = padding_side
        batch = self.tokenizer(
            [self._strip_bos(t) for t in texts],
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def _prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer(self._strip_bos(text))["input_ids"]

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        if not self.tokenizer.chat_template:
            raise SecfmError(f"model {self.model_name} has no chat template; add one to the registry")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def _generate_kwargs(self, params: SamplingParams) -> dict:
        kwargs = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": not params.greedy,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self._eos_ids or None,
        }
        if params.greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    @staticmethod
    def _seed(params: SamplingParams) -> None:
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)

    # -- generation -----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[str]:
        import torch

        params = params or SamplingParams()
        outputs: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            batch = self._encode(chunk)
            with self._lock, torch.inference_mode():
                self._seed(params)
                generated = self.model.generate(**batch, **self._generate_kwargs(params))
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            for row in new_tokens:
                text = self.tokenizer.decode(row, skip_special_tokens=True)
                outputs.append(truncate_at_stop(text, params.stop))
        return outputs

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield decoded pieces; closing the generator (a Stop button) ends decoding at once."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        params = params or SamplingParams()
        batch = self._encode([prompt])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        cancelled = threading.Event()
        errors: list[BaseException] = []

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self._seed(params)
                    self.model.generate(
                        **batch, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                        **self._generate_kwargs(params),
                    )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            yield from _stop_filtered(streamer, params.stop)
        finally:
            cancelled.set()  # a closed generator frees the model for the next caller
            worker.join()
        if errors:
            raise errors[0]

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
        return len(_decoder_layers(self.model)[1])

    def hidden_size(self) -> int:
        config = self.model.config
        return getattr(config, "hidden_size", None) or config.get_text_config().hidden_size

    @contextmanager
    def _capture(self, layer: int):
        """Capture the output of decoder layer ``layer`` (1-based; 0 embeddings; -1 last), stop there."""
        inner, layers = _decoder_layers(self.model)
        n = len(layers)
        index = n + layer + 1 if layer < 0 else layer
        if not 0 <= index <= n:
            raise SecfmError(f"layer {layer} is out of range for a model with {n} layers (use 0..{n} or -1..-{n})")
        module = inner.embed_tokens if index == 0 else layers[index - 1]
        captured: dict = {}

        def hook(_module, _inputs, output):
            captured["h"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def hidden_states(
        self,
        texts: Sequence[str],
        layer: int = -1,
        pooling: Pooling = "mean",
        batch_size: int = 8,
        max_length: int = 512,
    ) -> np.ndarray:
        import torch

        if pooling not in ("mean", "last"):
            raise SecfmError(f"pooling must be 'mean' or 'last', not {pooling!r}")
        pooled: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            batch = self._encode(list(texts[start : start + batch_size]), padding_side="right", max_length=max_length)
            mask = batch["attention_mask"]
            with self._lock, torch.inference_mode(), self._capture(layer) as captured:
                try:
                    self.model(**batch, use_cache=False, logits_to_keep=1)
                except _StopForward:
                    pass
            states = captured["h"].float()
            if pooling == "last":
                last = mask.sum(dim=1) - 1
                vectors = states[torch.arange(states.shape[0]), last]
            else:
                weights = mask.clone().float()
                has_bos = self.tokenizer.bos_token_id is not None and bool(
                    (batch["input_ids"][:, 0] == self.tokenizer.bos_token_id).all()
                )
                if has_bos:
                    # the BOS position is an attention sink with a huge norm; leave it out of the mean
                    weights[:, 0] = torch.where(mask.sum(dim=1) > 1, 0.0, 1.0)
                vectors = (states * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True)
            pooled.append(vectors.cpu().numpy().astype(np.float32))
        if not pooled:
            return np.zeros((0, self.hidden_size()), dtype=np.float32)
        return np.concatenate(pooled, axis=0)


def _stop_filtered(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Pass streamed pieces through, holding back just enough text to cut at a stop string."""
    stop = [s for s in stop if s]
    if not stop:
        for piece in pieces:
            if piece:
                yield piece
        return
    hold = max(len(s) for s in stop) - 1
    buffer = ""
    for piece in pieces:
        buffer += piece
        cut = truncate_at_stop(buffer, stop)
        if len(cut) < len(buffer):
            if cut:
                yield cut
            for _ in pieces:  # drain so the producer thread can finish
                pass
            return
        if len(buffer) > hold:
            emit, buffer = buffer[: len(buffer) - hold], buffer[len(buffer) - hold :]
            yield emit
    if buffer:
        yield buffer

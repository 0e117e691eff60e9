"""The causal-LM loss computed only where labels exist, in chunks, without full-vocabulary logits.

Gemma-3's output layer is 640 x 262,144: for a 4 x 256 batch the plain forward materializes a
1 GB float32 logits tensor, its log-softmax, and their gradients, and most of the step's time
goes there. :func:`chunked_lm_loss` instead

* runs the decoder body only (``model.get_decoder()``), giving the final hidden states;
* keeps the positions whose (shifted) label is not ``-100`` — in SFT only the assistant tokens;
* for each chunk of ``chunk_size`` positions computes logits, log-sum-exp and, in the same
  pass, the gradient with respect to the hidden states (a fused linear + cross-entropy: the
  logits of a chunk never outlive it and are never recomputed);
* does the two output-layer matmuls in ``matmul_dtype`` (bfloat16 where the CPU has AMX or
  AVX512-BF16, about 9x faster than float32 here) with the softmax in float32.

The result is the sum of token losses (or its mean); callers normalize by the number of
labelled tokens of the whole accumulated batch, as ``transformers.Trainer`` expects.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(softcap(h_i W^T), y_i); the gradient w.r.t. ``h`` (and ``W`` if needed) is
    computed chunk by chunk in the forward pass and only scaled in the backward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size, matmul_dtype, softcap, w_cast):
        needs_h = ctx.needs_input_grad[0]
        needs_w = ctx.needs_input_grad[1]
        w_mm = w_cast if w_cast is not None else weight.to(matmul_dtype)
        grad_h = torch.empty_like(hidden) if needs_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start:start + chunk_size]
            y = targets[start:start + chunk_size]
            h_mm = h.to(matmul_dtype)
            z = (h_mm @ w_mm.T).float()
            if softcap:
                t = torch.tanh(z / softcap)
                logits = t * softcap
            else:
                logits = z
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if needs_h or needs_w:
                # d loss / d logits = softmax - onehot, written over the logits buffer
                probs = logits.sub_(lse[:, None]).exp_()
                probs.scatter_add_(1, y[:, None], torch.full_like(y[:, None], -1, dtype=probs.dtype))
                if softcap:
                    probs.mul_(1 - t * t)
                g = probs.to(matmul_dtype)
                if needs_h:
                    grad_h[start:start + chunk_size] = (g @ w_mm).to(hidden.dtype)
                if needs_w:
                    grad_w += (g.T @ h_mm).float()
            del z, logits
        ctx.save_for_backward(grad_h if needs_h else None, grad_w if needs_w else None)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None, None


class _WeightCastCache:
    """A low-precision copy of a frozen output layer, rebuilt only when the weight changes."""

    def __init__(self):
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def get(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        if weight.requires_grad:
            return None
        if weight.dtype == dtype:
            return weight
        key = (weight.data_ptr(), weight._version, dtype, weight.device)
        if key != self.key:
            self.value = weight.detach().to(dtype)
            self.key = key
        return self.value


_CAST_CACHE = _WeightCastCache()


def unwrap_causal_lm(model: Any):
    """The ``*ForCausalLM`` inside a PEFT / DDP wrapper."""
    inner = model
    while hasattr(inner, "module") and not hasattr(inner, "get_decoder"):
        inner = inner.module
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


def supports_chunked_loss(model: Any) -> bool:
    """True for causal LMs whose body and output layer can be called apart (not under FSDP)."""
    if type(model).__name__.startswith(("FullyShardedDataParallel", "FSDP")):
        return False
    lm = unwrap_causal_lm(model)
    try:
        return lm.get_decoder() is not None and lm.get_output_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False


def cpu_supports_bf16() -> bool:
    """Whether bfloat16 matmuls are fast on this CPU (AMX or AVX512-BF16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def chunked_lm_loss(
    model: Any,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    chunk_size: int = 1024,
    matmul_dtype: torch.dtype | None = None,
    reduction: str = "sum",
) -> tuple[torch.Tensor, int]:
    """(loss, number of labelled tokens): next-token cross-entropy over labelled positions only.

    ``labels`` are aligned with ``input_ids`` (the shift happens here), ``-100`` = ignored.
    """
    lm = unwrap_causal_lm(model)
    decoder = lm.get_decoder()
    head = lm.get_output_embeddings()
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    count = int(keep.sum())
    if count == 0:
        zero = hidden.sum() * 0.0
        return zero, 0
    h = hidden[:, :-1][keep]
    y = targets[keep]
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError("chunked_lm_loss: output layers with a bias are not supported")
    weight = head.weight
    if matmul_dtype is None:
        matmul_dtype = h.dtype if h.dtype != torch.float32 else weight.dtype
    softcap = getattr(lm.config, "final_logit_softcapping", None) or 0.0
    with torch.autocast(device_type=h.device.type, enabled=False):
        total = _FusedLinearCrossEntropy.apply(
            h, weight, y, chunk_size, matmul_dtype, float(softcap), _CAST_CACHE.get(weight, matmul_dtype)
        )
    if reduction == "mean":
        return total / count, count
    return total, count


def plain_lm_loss(model: Any, input_ids, labels, attention_mask=None) -> tuple[torch.Tensor, int]:
    """The model's own loss (full logits), as a sum and a count, for comparison and FSDP."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False)
    count = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return out.loss * count, count


__all__ = ["IGNORE_INDEX", "chunked_lm_loss", "cpu_supports_bf16", "plain_lm_loss", "supports_chunked_loss",
           "unwrap_causal_lm"]

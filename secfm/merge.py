"""Merge a PEFT adapter into its base weights: a plain Hugging Face folder any server loads."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from secfm.errors import SecfmError
from secfm.models import ResolvedModel, resolve, tokenizer_for
from secfm.settings import cache_dir

log = logging.getLogger(__name__)

MARKER = "secfm-merge.json"


def adapter_fingerprint(adapter_dir: Path) -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in Path(adapter_dir).iterdir() if p.is_file()):
        h.update(name.encode())
        h.update((Path(adapter_dir) / name).read_bytes())
    return h.hexdigest()[:16]


def merge_adapter(model: str | ResolvedModel, adapter_dir: str | Path | None = None, out_dir: str | Path | None = None,
                  dtype: str = "bfloat16") -> Path:
    """Base weights (loaded unquantized in float32, so QLoRA adapters merge too) + adapter, merged and
    unloaded (merge_and_unload), cast to ``dtype`` and written as a Hugging Face folder with the tokenizer
    and chat template (``vllm serve DIR``).

    ``model`` is a registered name, a path or a :class:`ResolvedModel`; ``adapter_dir`` defaults to the
    resolved model's adapter. Without ``out_dir`` the result is cached under ``$SECFM_HOME/merged`` keyed
    by the adapter's content. A folder this function wrote for the same base, adapter content and dtype
    is reused as it is.
    """
    import torch
    from peft import PeftModel

    from secfm.engines.transformers_engine import load_causal_lm

    resolved = model if isinstance(model, ResolvedModel) else resolve(model)
    adapter = Path(adapter_dir) if adapter_dir is not None else resolved.adapter_dir
    if adapter is None:
        raise SecfmError(f"{resolved.name} has no adapter to merge")
    if not (adapter / "adapter_config.json").is_file():
        raise SecfmError(f"adapter {adapter} is not a PEFT adapter folder (no adapter_config.json)")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise SecfmError(f"unknown dtype {dtype!r} for the merged model (use bfloat16, float16 or float32)")
    fingerprint = adapter_fingerprint(adapter)
    target = Path(out_dir) if out_dir else cache_dir("merged") / f"{Path(resolved.name).name}-{fingerprint}"
    stamp = {"base": str(resolved.weights_dir), "adapter": str(adapter), "adapter_fingerprint": fingerprint, "dtype": dtype}
    marker = target / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return target
    log.info("merging %s into %s", adapter, target)
    base = ResolvedModel(resolved.name, resolved.weights_dir, None, resolved.chat_template, resolved.context_length,
                         resolved.spec)
    merged = PeftModel.from_pretrained(load_causal_lm(base, "cpu", dtype=torch.float32), str(adapter)).merge_and_unload()
    merged = merged.to(torch_dtype)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer_for(resolved).save_pretrained(str(tmp))
    if resolved.chat_template and not (tmp / "chat_template.jinja").is_file():
        (tmp / "chat_template.jinja").write_text(resolved.chat_template)
    (tmp / MARKER).write_text(json.dumps(stamp, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


__all__ = ["adapter_fingerprint", "merge_adapter"]

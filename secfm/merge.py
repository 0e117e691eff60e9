"""Merge a PEFT adapter into its base weights: a plain Hugging Face folder any server loads."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from secfm.errors import SecfmError
from secfm.models import ResolvedModel, tokenizer_for
from secfm.settings import cache_dir

log = logging.getLogger(__name__)


def adapter_fingerprint(adapter_dir: Path) -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in adapter_dir.iterdir() if p.is_file()):
        h.update(name.encode())
        h.update((adapter_dir / name).read_bytes())
    return h.hexdigest()[:16]


def merge_adapter(resolved: ResolvedModel, out_dir: Path | None = None, dtype=None) -> Path:
    """Write base + adapter merged (merge_and_unload) with the tokenizer and chat template.

    Without ``out_dir`` the result is cached under ``$SECFM_HOME/merged`` keyed by the adapter's
    content, so serving the same adapter twice merges once.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if resolved.adapter_dir is None:
        raise SecfmError(f"{resolved.name} has no adapter to merge")
    from peft import PeftModel

    fingerprint = adapter_fingerprint(resolved.adapter_dir)
    target = Path(out_dir) if out_dir else cache_dir("merged") / f"{Path(resolved.name).name}-{fingerprint}"
    marker = target / "secfm-merge.json"
    if marker.is_file() and json.loads(marker.read_text()).get("adapter_fingerprint") == fingerprint:
        return target
    log.info("merging %s into %s", resolved.adapter_dir, target)
    base = AutoModelForCausalLM.from_pretrained(str(resolved.weights_dir), dtype=dtype or torch.float32)
    merged = PeftModel.from_pretrained(base, str(resolved.adapter_dir)).merge_and_unload()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer_for(resolved).save_pretrained(tmp)
    (tmp / "secfm-merge.json").write_text(
        json.dumps({"base": str(resolved.weights_dir), "adapter": str(resolved.adapter_dir), "adapter_fingerprint": fingerprint}, indent=2)
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target

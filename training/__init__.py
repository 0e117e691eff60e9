"""secfm.training: corpus curation, instruction data, CPT and SFT (LoRA / QLoRA / full), recipes.

Public API (imported lazily; torch, datasets and transformers load on first use)::

    from secfm.training import CorpusConfig, build_corpus       # `secfm data corpus`
    from secfm.training import SftConfig, build_sft             # `secfm data sft`
    from secfm.training import Redactor                         # secrets / PII -> salted pseudonyms
    from secfm.training import load_recipe, dry_run             # recipes, memory estimate per GPU
    from secfm.training import run_training                     # `secfm train cpt|sft`
    from secfm.training import chunked_lm_loss                  # loss on labelled positions, in chunks
    from secfm.training import merge_adapter                    # merge-and-unload for `vllm serve`
    from secfm.training import evaluate_models                  # perplexity + MCQ, base vs adapters
    from secfm.training import run_train_bench                  # `secfm bench train`
    from secfm.training import features, fit_head, FitConfig    # a classifier head on your own labelled texts:
    from secfm.training import HeadManifest, save_head, load_head  # features -> fit -> save -> load (cookbook 6)
"""

from __future__ import annotations

from secfm.lazy import lazy_exports

_EXPORTS = {
    "CorpusConfig": "secfm.training.corpus",
    "build_corpus": "secfm.training.corpus",
    "load_corpus": "secfm.training.corpus",
    "SftConfig": "secfm.training.sft_data",
    "build_sft": "secfm.training.sft_data",
    "load_sft": "secfm.training.sft_data",
    "load_mcq": "secfm.training.sft_data",
    "Redactor": "secfm.training.redaction",
    "Recipe": "secfm.training.recipes",
    "load_recipe": "secfm.training.recipes",
    "dry_run": "secfm.training.recipes",
    "estimate": "secfm.training.memory",
    "run_training": "secfm.training.trainer",
    "merge_adapter": "secfm.merge",
    "chunked_lm_loss": "secfm.training.loss",
    "evaluate_models": "secfm.training.evaluate",
    "run_train_bench": "secfm.training.bench",
    "features": "secfm.features",
    "FitConfig": "secfm.training.heads",
    "fit_head": "secfm.training.heads",
    "predict_module": "secfm.training.heads",
    "best_global_threshold": "secfm.training.heads",
    "HeadManifest": "secfm.heads",
    "save_head": "secfm.heads",
    "load_head": "secfm.heads",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

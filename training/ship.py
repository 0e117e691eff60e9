"""Ship a trained adapter into the package (``secfm/adapters/<name>/``) with its model card.

``python -m secfm.training.ship --adapter runs/gemma-3-270m/sft-lora/adapter`` copies the
adapter weights and config (nothing else: no tokenizer, no optimizer state), checks the size
limit and the base-model name the registry resolves, and writes ``README.md`` from the run
summaries and ``training/results/secfm-270m.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from secfm.errors import SecfmError
from secfm.registry import PACKAGE_DIR

PACKAGE_ADAPTERS = PACKAGE_DIR / "adapters"  # secfm/adapters/, package data beside registry.yaml
MAX_BYTES = 25 * 1000 * 1000


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


#: (stage label, recipe, run summary) of each training stage of the shipped adapter, in order
STAGES = (
    ("CPT-LoRA", "training/recipes/gemma-3-270m/cpt-lora.yaml", "runs/gemma-3-270m/cpt-lora/summary.json"),
    ("SFT-LoRA, short answers + replayed conversations", "training/recipes/gemma-3-270m/sft-lora.yaml",
     "runs/gemma-3-270m/sft-lora/summary.json"),
)
_FORMULATIONS = (("mcq", "letter"), ("mcq_calibrated", "letter, calibrated"), ("mcq_cloze", "cloze"))


def _run_label(key: str, run: dict, name: str, shipped: str | None) -> str:
    adapter = run.get("adapter")
    if not adapter:
        return f"{key} (base)"
    if shipped and Path(adapter).resolve() == Path(shipped).resolve():
        return f"**{name}** (`{adapter}`)"
    return f"`{adapter}`"


def model_card(name: str, base: str, stages: list[tuple[str, str, dict]], results: dict, adapter_cfg: dict, size: int,
               shipped_from: str | None = None) -> str:
    """The adapter's README: use, adapter, training stages, held-out evaluation, limitations."""
    comp = results.get("comparisons", {})
    runs = results.get("runs", {})
    final_key = next((k for k, r in runs.items() if shipped_from and r.get("adapter")
                      and Path(r["adapter"]).resolve() == Path(shipped_from).resolve()), None)
    final = comp.get(final_key) if final_key else None
    from secfm.registry import get_spec

    spec = get_spec(base)
    hub = (spec.hub_id() if spec else None) or base
    lines = [
        "---",
        f"base_model: {hub}",
        "library_name: peft",
        "license: gemma",
        "pipeline_tag: text-generation",
        "tags: [security, cyber-threat-intelligence, mitre-attack, cwe, lora, secfm]",
        "---",
        "",
        f"# {name}",
        "",
        f"A LoRA adapter for Google's Gemma 3 270M (`{hub}`; `{base}` in the secfm registry), trained by secfm's",
        "own CPU recipes in one chain fixed before any held-out figure (`training/results/secfm-270m-protocol.md`):",
        "LoRA continued pretraining on the training split of a curated security corpus (MITRE ATT&CK and CWE",
        "rendered as prose), then supervised fine-tuning of the same adapter on the short answers to training",
        "questions with conversations replayed among them. It is the embedded, laptop-sized member of the",
        "secfm family; production uses the Llama 3.1 8B recipes.",
        "",
        "## Use",
        "",
        "```bash",
        f"secfm generate --model {name} --chat \"Which ATT&CK tactic does T1003 serve?\"",
        "# any PEFT loader: base gemma-3-270m + this folder; vLLM:",
        f"vllm serve <gemma-3-270m HF folder> --enable-lora --lora-modules {name}=secfm/adapters/{name}",
        "```",
        "",
        "## Adapter",
        "",
        f"- LoRA r={adapter_cfg.get('r')}, alpha={adapter_cfg.get('lora_alpha')}, dropout={adapter_cfg.get('lora_dropout')}, "
        f"on all linear layers ({', '.join(sorted(adapter_cfg.get('target_modules') or []))}); "
        f"{size / 1e6:.1f} MB (float32 safetensors)",
        f"- `base_model_name_or_path`: `{adapter_cfg.get('base_model_name_or_path')}` (the Hugging Face id: "
        "`AutoPeftModelForCausalLM` loads it from the local hub cache; secfm maps it to its own local copy)",
        "",
        "## Training",
        "",
        "Each stage continues the adapter of the one before.",
        "",
        "| stage | recipe | steps | tokens | time | held-out |",
        "|---|---|---:|---:|---:|---|",
    ]
    tokens = 0
    for stage, recipe, s in stages:
        if s:
            extra = " (stopped by its time budget)" if s.get("stopped_by_time_budget") else ""
            tokens += s.get("tokens_all_chunks", s.get("tokens_this_run", 0))
            lines.append(f"| {stage} | `{recipe}` | {s.get('global_step')}{extra} | {s.get('tokens_this_run', 0):,} | "
                         f"{s.get('train_seconds_this_run', 0) / 60:.0f} min | "
                         f"eval loss {s.get('eval_loss')} (perplexity {s.get('eval_perplexity')}) |")
    cut = any(s.get("stopped_by_time_budget") for _, _, s in stages if s)
    lines += [
        "",
        "Data: `secfm data corpus` and `secfm data sft` (data cards in `training/results/`), split by entity",
        "(`training/splits.py`): 5 % of technique families, groups, software, CWEs and CVEs are validation and",
        "5 % test, with every document and question about or naming them; nothing from CTIBench.",
        "Hardware: a shared 2-core CPU (bfloat16 autocast on AMX, the chunked output-layer loss), in resumable",
        f"chunks; {'a stage was cut by its time budget; ' if cut else ''}the adapter has seen {tokens:,} tokens in all.",
        "",
        f"## Evaluation ({results.get('split', 'held-out')} split, `secfm train eval`, scored once)",
        "",
    ]
    if runs:
        lines += ["| model | held-out security perplexity | MCQ letter | MCQ letter, calibrated | MCQ cloze |",
                  "|---|---:|---:|---:|---:|"]
        for key, r in runs.items():
            cells = [f"{r[k]['accuracy']:.1%}" if r.get(k) else "-" for k, _ in _FORMULATIONS]
            lines.append(f"| {_run_label(key, r, name, shipped_from)} | {r['perplexity']['perplexity']:.2f} | {' | '.join(cells)} |")
        if final and "mcq_cloze_gain_points" in final:
            ci = final.get("mcq_cloze_gain_ci95_points")
            lines += ["", f"{name}: MCQ cloze (the primary figure, fixed before scoring) {final['mcq_cloze_gain_points']:+.1f} "
                      "points over the base" + (f" [95% CI {ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")
                      + f"; perplexity {final['perplexity_reduction']:.1%} lower than the base."]
        n = results.get("mcq_questions", "the")
        lines += ["", "Perplexity: each held-out corpus document scored on its own (20k tokens, bf16 autocast).",
                  f"MCQ ({n} questions, 4 options, chance 25 %): *letter* = the letter with the highest next-token probability after",
                  "the chat prompt; *calibrated* = the same minus the model's content-free letter prior; *cloze* = no options",
                  "shown: the option text with the highest mean log-probability per token after the question. The questions are",
                  "about technique families, groups, CWEs and CVEs held out of both the corpus and the instruction data (by",
                  "entity, with every document naming them), and their options come from one split, so they test",
                  "generalisation, not recall. Full tables: `training/results/secfm-270m.md`; all figures: `RESULTS.md`."]
    else:
        lines.append("(not measured yet: run `secfm train eval`)")
    lines += [
        "",
        "## Limitations",
        "",
        "A 270M model with a small adapter: it recalls ATT&CK/CWE names and formats better than the base,",
        "but its answers are often wrong; use it for demos and tests, and the 8B models for analysis.",
        "Knowledge is ATT&CK v18.1 and CWE 4.14 as packaged. Licence: the Gemma terms of use apply to the",
        "base model and this derivative.",
    ]
    return "\n".join(lines) + "\n"


def ship_adapter(adapter: str | Path, name: str = "secfm-270m", base: str = "gemma-3-270m",
                 results: str | Path = "training/results/secfm-270m.json",
                 stages: tuple[tuple[str, str, str], ...] = STAGES,
                 target: str | Path | None = None) -> Path:
    adapter = Path(adapter)
    weights = adapter / "adapter_model.safetensors"
    config = adapter / "adapter_config.json"
    if not weights.is_file() or not config.is_file():
        raise SecfmError(f"{adapter} is not a trained adapter (adapter_model.safetensors, adapter_config.json)")
    cfg = json.loads(config.read_text())
    from secfm.registry import get_spec

    named = get_spec(str(cfg.get("base_model_name_or_path")))
    if named is None or named is not get_spec(base):
        raise SecfmError(f"{config}: base_model_name_or_path is {cfg.get('base_model_name_or_path')!r}, expected {base!r} "
                         f"or its Hugging Face id")
    size = weights.stat().st_size + config.stat().st_size
    if size > MAX_BYTES:
        raise SecfmError(f"adapter is {size / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit: lower the rank")
    target = Path(target) if target else PACKAGE_ADAPTERS / name
    target.mkdir(parents=True, exist_ok=True)
    for f in target.iterdir():
        if f.is_file():
            f.unlink()
    shutil.copy2(weights, target / weights.name)
    shutil.copy2(config, target / config.name)
    for f in (target / weights.name, target / config.name):
        f.chmod(0o644)  # safetensors are written 0600; the package ships them readable
    stage_summaries = [(label, recipe, _read(Path(summary))) for label, recipe, summary in stages]
    card = model_card(name, base, stage_summaries, _read(Path(results)), cfg, size, shipped_from=str(adapter))
    (target / "README.md").write_text(card)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m secfm.training.ship", description=__doc__.split("\n")[0])
    p.add_argument("--adapter", default="runs/gemma-3-270m/sft-lora/adapter")
    p.add_argument("--name", default="secfm-270m")
    p.add_argument("--base", default="gemma-3-270m")
    p.add_argument("--results", default="training/results/secfm-270m.json")
    a = p.parse_args(argv)
    print(ship_adapter(a.adapter, a.name, a.base, a.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

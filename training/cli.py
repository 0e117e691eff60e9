"""`secfm data corpus|sft`, `secfm train cpt|sft|eval`, `secfm bench train` (registered by secfm.cli)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_groups import command_group
from secfm.cli_options import AllowBusyOpt
from secfm.errors import SecfmError
from secfm.evals.bench import bench_group


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _ids(value: str | None) -> list[str]:
    """Comma/space separated ids, or @FILE with one id per line (# comments allowed)."""
    if not value:
        return []
    if value.startswith("@"):
        from secfm.inputs import read_file_text

        text = read_file_text(value[1:])
        value = "\n".join(line.split("#")[0] for line in text.splitlines())
    return [v for v in value.replace(",", " ").split() if v]


def _quiet_omp() -> None:
    """Shared CPUs: OpenMP threads that spin while waiting make small ops 10-20x slower when the
    cores are oversubscribed. Must be set before torch starts its thread pool."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _parse_sets(values: list[str] | None) -> dict:
    import yaml

    out = {}
    for item in values or []:
        if "=" not in item:
            raise SecfmError(f"--set expects KEY=VALUE (dotted keys, e.g. train.max_steps=10), got '{item}'")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. training/recipes/gemma-3-270m/cpt-lora.yaml.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Validate the recipe and print the memory estimate per GPU; no training.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")]
ResumeOpt = Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="Resume from the last complete checkpoint (default: when one exists) or start over.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe key: train.max_steps=10 (repeatable).")]
LaunchOpt = Annotated[bool, typer.Option("--launch/--no-launch", help="Multi-GPU recipes: re-run under `accelerate launch` with the recipe's config.")]


def register(app: typer.Typer) -> None:
    data = command_group(app, "data", "Training data: corpus curation and instruction data.")
    train = command_group(app, "train", "Training: CPT, SFT and classifier heads.")
    bench = bench_group(app)

    # -------------------------------------------------------------------------------------------
    @data.command("corpus")
    def data_corpus(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: a datasets DatasetDict (train, validation, test; loads with load_dataset and load_from_disk) and data_card.{json,md}.")],
        inputs: Annotated[Optional[list[Path]], typer.Argument(help="Files or folders: .txt .md .html .htm .jsonl (a 'text' field).")] = None,
        kb: Annotated[bool, typer.Option("--kb/--no-kb", help="Include the knowledge base (ATT&CK and CWE) as documents.")] = True,
        hf_dataset: Annotated[Optional[list[str]], typer.Option("--hf-dataset", help="Hugging Face dataset NAME[:SPLIT[:FIELD]] (repeatable); skipped when unreachable.")] = None,
        text_field: Annotated[str, typer.Option("--text-field", help="Text field of JSONL rows and HF datasets.")] = "text",
        redact: Annotated[Optional[str], typer.Option("--redact", help="Also redact these kinds: ip,hostname,username (secrets, emails, passwords, tokens, keys always are).")] = None,
        salt: Annotated[Optional[str], typer.Option("--salt", envvar="SECFM_REDACTION_SALT", help="Salt for stable pseudonyms across builds (random when unset).")] = None,
        min_chars: Annotated[int, typer.Option("--min-chars", min=1, help="Drop documents shorter than this.")] = 40,
        max_chars: Annotated[int, typer.Option("--max-chars", min=100, help="Split documents longer than this.")] = 20000,
        language: Annotated[str, typer.Option("--language", help="Keep only this language (en), or 'none'.")] = "en",
        near_dup: Annotated[float, typer.Option("--near-dup-threshold", min=0.1, max=1.0, help="MinHash LSH Jaccard threshold.")] = 0.85,
        validation: Annotated[float, typer.Option("--validation-fraction", min=0.0, max=0.5, help="Fraction of entities (technique families, groups, software, CWEs, CVEs) in the validation split; their documents follow them.")] = 0.05,
        test: Annotated[float, typer.Option("--test-fraction", min=0.0, max=0.5, help="Fraction of entities in the test split (reported once).")] = 0.05,
        exclude_sources: Annotated[Optional[str], typer.Option("--exclude-sources", help="ATT&CK group/software/campaign ids (or @FILE) whose procedure examples are left out.")] = None,
        exclude_ids: Annotated[Optional[str], typer.Option("--exclude-ids", help="Drop documents mentioning any of these ids (or @FILE), e.g. evaluation CVEs.")] = None,
        tokenizer: Annotated[str, typer.Option("--tokenizer", help="Tokenizer (registered model) to count tokens with; 'none' to skip.")] = "gemma-3-270m",
        skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip (and report) JSONL lines that are not valid rows instead of stopping.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Write into OUT even when it holds files secfm did not write (nothing there is deleted; inputs are never overwritten).")] = False,
    ) -> None:
        """Curate a pretraining corpus: normalise, filter, deduplicate, redact, split; write a data card."""
        from secfm.training.corpus import CorpusConfig, build_corpus

        config = CorpusConfig(
            inputs=[str(p) for p in inputs or []], kb=kb, hf_datasets=hf_dataset or [], text_field=text_field,
            min_chars=min_chars, max_chars=max_chars, language=None if language.lower() == "none" else language,
            near_dup_threshold=near_dup, redact=[r.strip() for r in (redact or "").split(",") if r.strip()],
            salt=salt, validation_fraction=validation, test_fraction=test, exclude_sources=_ids(exclude_sources),
            exclude_ids=_ids(exclude_ids), tokenizer=None if tokenizer.lower() == "none" else tokenizer, skip_bad=skip_bad,
        )
        with _console().status("building the corpus") as status:
            card = build_corpus(out, config, force=force, progress=lambda s: status.update(s))
        print((out / "data_card.md").read_text())
        _console().print(f"corpus: {card['documents']:,} documents -> {out}")

    @data.command("sft")
    def data_sft(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: DatasetDict (train, validation, test; configs qa and mcq), mcq_validation.jsonl, mcq_test.jsonl, data_card.json.")],
        user: Annotated[Optional[list[Path]], typer.Option("--user", help="Chat-format JSONL ({'messages': [...]}) to add (repeatable).")] = None,
        kb: Annotated[bool, typer.Option("--kb/--no-kb", help="Generate conversations from ATT&CK and CWE.")] = True,
        validation: Annotated[float, typer.Option("--validation-fraction", min=0.0, max=0.5, help="Fraction of entities in the validation split (the same entities as the corpus's).")] = 0.05,
        test: Annotated[float, typer.Option("--test-fraction", min=0.0, max=0.5, help="Fraction of entities in the test split (the same entities as the corpus's).")] = 0.05,
        mcq_per_fact: Annotated[int, typer.Option("--mcq-per-fact", min=0, help="Multiple-choice variants per fact.")] = 2,
        exclude_sources: Annotated[Optional[str], typer.Option("--exclude-sources", help="ATT&CK group ids (or @FILE) left out.")] = None,
        seed: Annotated[int, typer.Option(help="Seed for phrasing, distractors and order.")] = 0,
        skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip (and report) JSONL lines that are not valid rows instead of stopping.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Write into OUT even when it holds files secfm did not write (nothing there is deleted; inputs are never overwritten).")] = False,
    ) -> None:
        """Build instruction data (conversations and multiple-choice questions) from the knowledge base."""
        from secfm.training.sft_data import SftConfig, build_sft

        cfg = SftConfig(user_files=[str(u) for u in user or []], validation_fraction=validation, test_fraction=test,
                        seed=seed, mcq_per_fact=mcq_per_fact, exclude_sources=_ids(exclude_sources), skip_bad=skip_bad)
        with _console().status("generating conversations"):
            card = build_sft(out, cfg, kb=kb, force=force)
        print(json.dumps(card, indent=2))

    @bench.command("redaction")
    def bench_redaction(
        data: Annotated[Optional[Path], typer.Option("--data", help="Labelled JSONL (default: the gitleaks-derived vectors shipped in training/data).")] = None,
        out: Annotated[Path, typer.Option("--out", help="JSON results.")] = Path("training/results/redaction-recall.json"),
        allow_busy: AllowBusyOpt = False,
    ) -> None:
        """Redaction recall and false-alarm rate on secret-scanner test vectors we did not write."""
        from secfm.training.redaction_eval import DEFAULT_DATA, run_redaction_bench

        res = run_redaction_bench(data or DEFAULT_DATA, out, allow_busy)
        for part, figures in (("held_out", res["held_out"]), ("development", res["development"]), ("all", res)):
            for name in ("with_detect_secrets", "project_patterns_only"):
                r = figures[name]
                print(f"{part} {name}: recall {r['recall']:.1%} ({r['caught']}/{r['secret_lines']}), "
                      f"false alarms {r['false_alarm_rate']:.1%} ({r['false_alarms']}/{r['clean_lines']})")
        print(f"wrote {out}")

    # -------------------------------------------------------------------------------------------
    def _train(stage: str, config: Path, dry_run: bool, as_json: bool, resume: Optional[bool], sets: list[str] | None,
               launch: bool) -> None:
        from secfm.training.recipes import dry_run as validate
        from secfm.training.recipes import load_recipe

        recipe = load_recipe(config, _parse_sets(sets))
        if recipe.stage != stage:
            raise SecfmError(f"recipe {config} is a {recipe.stage} recipe: run `secfm train {recipe.stage} --config {config}`")
        if dry_run:
            report = validate(recipe)
            if as_json:
                print(json.dumps({k: v for k, v in report.items() if k != "memory_table"}, indent=2))
            else:
                print(f"recipe {report['recipe']} ({report['stage']}, {report['method']}, {report['device']}): valid")
                print(f"data: {report['data']['path']} ({report['data']['state']})")
                if report["accelerate"]["config"]:
                    print(f"accelerate: {report['accelerate']['config']} ({report['accelerate']['distributed_type']})")
                print(f"tokens per optimizer step: {report['tokens_per_optimizer_step']:,}; max steps: {report['max_steps']}")
                print(report["memory_table"])
                if report["launch"]:
                    print(f"launch: {report['launch']}")
            return
        _quiet_omp()
        from secfm.training.recipes import needs_launcher

        if launch and needs_launcher(recipe) and "LOCAL_RANK" not in os.environ:
            import subprocess
            import sys

            accel = recipe.accelerate_config_path()
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accel), "-m",
                   "secfm.training.launch", stage, "--config", str(recipe.path)]
            for s in sets or []:
                cmd += ["--set", s]
            _console().print("launching: " + " ".join(cmd))
            raise typer.Exit(subprocess.call(cmd))
        from secfm.training.trainer import run_training

        console = _console()
        with console.status(f"training {recipe.name}") as status:
            summary = run_training(recipe, resume="auto" if resume is None else resume,
                                   progress=lambda s: (status.update(s), console.log(s)))
        print(json.dumps(summary, indent=2))

    @train.command("cpt")
    def train_cpt(config: ConfigOpt, dry_run: DryOpt = False, as_json: JsonOpt = False, resume: ResumeOpt = None,
                  sets: SetOpt = None, launch: LaunchOpt = True) -> None:
        """Continued pretraining (causal LM on packed sequences): LoRA on the CPU, full-parameter on GPUs."""
        _train("cpt", config, dry_run, as_json, resume, sets, launch)

    @train.command("sft")
    def train_sft(config: ConfigOpt, dry_run: DryOpt = False, as_json: JsonOpt = False, resume: ResumeOpt = None,
                  sets: SetOpt = None, launch: LaunchOpt = True) -> None:
        """Supervised fine-tuning with LoRA/QLoRA on all linear layers, loss on assistant tokens only."""
        _train("sft", config, dry_run, as_json, resume, sets, launch)

    @train.command("eval")
    def train_eval(
        corpus: Annotated[Path, typer.Option("--corpus", help="Corpus folder (its --split split gives the perplexity).")],
        sft: Annotated[Path, typer.Option("--sft", help="Instruction-data folder (its mcq_<split>.jsonl gives the MCQ accuracy).")],
        adapter: Annotated[Optional[list[Path]], typer.Option("--adapter", help="Adapter folder(s) to compare with the base (repeatable).")] = None,
        model: Annotated[str, typer.Option("--model", "-m", help="Base model.")] = "gemma-3-270m",
        out: Annotated[Path, typer.Option("--out", help="JSON results; a markdown table is written beside it.")] = Path("training/results/secfm-270m.json"),
        max_tokens: Annotated[int, typer.Option("--max-tokens", min=1000, help="Held-out tokens scored for perplexity.")] = 40000,
        max_mcq: Annotated[Optional[int], typer.Option("--max-mcq", help="At most this many held-out questions.")] = None,
        fp32: Annotated[bool, typer.Option("--fp32", help="Score in float32 (default: bfloat16 autocast where the CPU has it).")] = False,
        split: Annotated[str, typer.Option("--split", help="validation (the development set: choose methods here) or test (report once, after the choices are made).")] = "validation",
    ) -> None:
        """Held-out perplexity and synthetic-MCQ accuracy of the base model and each adapter."""
        _quiet_omp()
        from secfm.evals.harness import run_task
        from secfm.training.evaluate import HeldoutSettings

        settings = HeldoutSettings(out=str(out), corpus=str(corpus), sft=str(sft), model=model,
                                   adapters=[str(a) for a in adapter or []], max_tokens=max_tokens, max_mcq=max_mcq,
                                   bf16=False if fp32 else None, split=split)
        # the harness task `train-heldout` (secfm eval run train-heldout)
        results = run_task("train-heldout", settings, progress=lambda s: _console().log(s)).metrics
        print(out.with_suffix(".md").read_text() if out.with_suffix(".md").is_file() else json.dumps(results, indent=2))

    # -------------------------------------------------------------------------------------------
    @bench.command("train")
    def bench_train(
        out: Annotated[Path, typer.Option("--out", help="JSON results.")] = Path("training/results/bench-train.json"),
        batch: Annotated[int, typer.Option("--batch", min=1, help="Sequences per step.")] = 4,
        seq_len: Annotated[int, typer.Option("--seq-len", min=16, help="Tokens per sequence.")] = 256,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Interleaved rounds after one warm-up step; each round times every variant once (median reported).")] = 2,
        model: Annotated[str, typer.Option("--model", "-m", help="Model to train (LoRA r=16, all linear layers).")] = "gemma-3-270m",
        variants: Annotated[Optional[str], typer.Option("--variants", help="Comma-separated subset of: plain-fp32,plain-bf16,chunked-fp32,chunked-bf16.")] = None,
        allow_busy: AllowBusyOpt = False,
    ) -> None:
        """Tokens/s of one CPU LoRA training step: the plain step against the chunked-loss step."""
        _quiet_omp()
        from secfm.training.bench import run_train_bench

        result = run_train_bench(out, model=model, batch=batch, seq_len=seq_len, steps=steps,
                                 variants=variants.split(",") if variants else None,
                                 progress=lambda s: _console().log(s), allow_busy=allow_busy)
        print(json.dumps(result, indent=2))

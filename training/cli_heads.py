"""`secfm train head`: train (and ship) the ATT&CK and CWE classifier heads."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_options import AllowBusyOpt
from secfm.errors import SecfmError

TASKS = ("attack", "cwe", "cvss", "all")
CVE_TASKS = ("cwe", "cvss")


def _command_line() -> str:
    args = sys.argv[1:]
    return "secfm " + " ".join(a if a and " " not in a else json.dumps(a) for a in args)


def register(app: typer.Typer) -> None:
    from secfm.cli_groups import command_group

    train = command_group(app, "train", "Training: CPT, SFT and classifier heads.")

    @train.command("head")
    def train_head(
        task: Annotated[str, typer.Option("--task", "-t", help="attack (ATT&CK techniques), cwe (CVE to CWE, NVD), cvss (CVE to CVSS v3.1 vector, NVD) or all (attack and the knowledge-base cwe head; not with --ship).")],
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the head (head.safetensors, head.json, results). With --task all: a parent folder.")] = None,
        ship: Annotated[bool, typer.Option("--ship", help="Write to the shipped location (secfm/assets/heads/TASK-MODEL) and the results to training/results.")] = False,
        exclude_sources: Annotated[Optional[str], typer.Option("--exclude-sources", help="ATT&CK groups/software/campaigns to leave out entirely: ids (G0016,S0154) or @FILE.")] = None,
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model (registered name or path); default: the embedded one.")] = None,
        adapter: Annotated[Optional[str], typer.Option("--adapter", help="PEFT adapter on the base model.")] = None,
        layer: Annotated[Optional[str], typer.Option("--layer", help="Decoder layer (1-based; -1 last), or several to concatenate (1,3,6); default: chosen by a validation sweep.")] = None,
        pooling: Annotated[Optional[str], typer.Option("--pooling", help="mean or last; default: chosen by the sweep.")] = None,
        kind: Annotated[str, typer.Option("--kind", help="linear, mlp (one hidden layer) or both (pick by validation).")] = "both",
        data: Annotated[Optional[list[Path]], typer.Option("--data", help="Extra JSONL rows {text, techniques} (attack) or {text, cwes} (cwe); repeatable.")] = None,
        results: Annotated[Optional[Path], typer.Option("--results", help="Also write heads-TASK.json/.md into this folder.")] = None,
        baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Train and report the TF-IDF + logistic regression baseline on the same splits.")] = True,
        limit: Annotated[Optional[int], typer.Option("--limit", min=8, help="Cap the rows per split (smoke runs).")] = None,
        epochs: Annotated[int, typer.Option("--epochs", min=1, help="Most epochs of head training (early stopping on validation).")] = 80,
        seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
        joint: Annotated[bool, typer.Option("--joint", help="GPU: fine-tune LoRA and the head together (peft, head in modules_to_save).")] = False,
        init_head: Annotated[Optional[Path], typer.Option("--init-head", help="With --joint: start from this head (trained on frozen features).")] = None,
        steps: Annotated[int, typer.Option("--steps", min=1, help="With --joint: optimizer steps.")] = 1000,
        cve_data: Annotated[Optional[Path], typer.Option("--cve-data", help="cwe/cvss: a `secfm data cve` folder (date splits of NVD's feeds).")] = None,
        exclude_cves: Annotated[Optional[str], typer.Option("--exclude-cves", help="cwe/cvss: CVE ids (or @FILE, e.g. a CTIBench TSV) to leave out with their near duplicates.")] = None,
        hidden_layer: Annotated[Optional[list[str]], typer.Option("--hidden-layer", help="cwe/cvss: also try a head over TF-IDF plus these layers' mean-pooled hidden states (1 or 1,2; repeatable; 0 = token embeddings).")] = None,
        allow_busy: AllowBusyOpt = False,
        baseline_for: Annotated[Optional[Path], typer.Option("--baseline-for", help="Train no head: fit the TF-IDF baseline on the splits of the head in this folder (its data hash is checked) and add it to that head's results (--results FOLDER, default the head folder; with --ship: the shipped head and training/results).")] = None,
        baseline_c: Annotated[str, typer.Option("--baseline-c", help="Regularization strengths the baseline chooses among by validation (comma-separated).")] = "1,4,16",
    ) -> None:
        """Train a classifier head on hidden states (CPU: on cached frozen features), compare it with the TF-IDF baseline on the same entity splits, save it."""
        from rich.console import Console

        from secfm.heads import parse_sources, shipped_head_path
        from secfm.provenance import recording
        from secfm.registry import default_model_name
        from secfm.training.heads import FitConfig, HarnessConfig, layer_list, run_harness, train_joint, write_results

        err = Console(stderr=True)
        if task not in TASKS:
            raise SecfmError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
        try:
            cs = tuple(float(c) for c in baseline_c.split(",") if c.strip())
        except ValueError:
            raise SecfmError(f"--baseline-c must be numbers separated by commas, not {baseline_c!r}") from None
        if not cs or any(c <= 0 for c in cs):
            raise SecfmError(f"--baseline-c must be positive numbers, not {baseline_c!r}")
        if baseline_for is not None:
            _refit_baseline(task, baseline_for, ship, results, cs, allow_busy, err)
            return
        if task in CVE_TASKS:
            _train_cve_head(task, out, ship, cve_data, exclude_cves, hidden_layer, model, results, baseline, limit,
                            allow_busy, err)
            return
        if exclude_cves or cve_data:
            raise SecfmError("--cve-data and --exclude-cves apply to --task cwe and --task cvss")
        if pooling is not None and pooling not in ("mean", "last"):
            raise SecfmError(f"--pooling must be mean or last, not {pooling!r}")
        layers = layer_list(layer)
        layer_arg = None if layers is None else (layers[0] if len(layers) == 1 else tuple(layers))
        if joint and layers is not None and len(layers) > 1:
            raise SecfmError("--joint takes one --layer; heads over several layers train on frozen features only")
        kinds = {"both": ("linear", "mlp"), "linear": ("linear",), "mlp": ("mlp",)}.get(kind)
        if kinds is None:
            raise SecfmError(f"--kind must be linear, mlp or both, not {kind!r}")
        if out is None and not ship:
            raise SecfmError("give --out DIR (or --ship to write the shipped heads)")
        excluded = sorted(parse_sources(exclude_sources))
        if ship and excluded:
            raise SecfmError("--ship writes the shipped heads, which train on every source; drop --exclude-sources or use --out")
        if ship and limit:
            raise SecfmError("--ship with --limit would ship a smoke-test head; drop --limit")
        if ship and task == "all":  # its cwe is the knowledge-base head, which would replace the shipped NVD one
            raise SecfmError("--task all trains the knowledge-base CWE head, not the shipped NVD one: ship each head "
                             "by its task (--task attack --ship; --task cwe|cvss --cve-data DIR --ship)")
        for path in data or []:
            if not path.is_file():
                raise SecfmError(f"file not found: {path}")
        model_name = model or default_model_name()
        tasks = ("attack", "cwe") if task == "all" else (task,)
        command = _command_line()
        for t in tasks:
            if ship:
                target = shipped_head_path(t, model_name)
                results_dir = results or Path("training/results")
            else:
                target = out / f"{t}-{model_name.replace('/', '_')}" if task == "all" else out
                results_dir = results
            if t == "cwe" and excluded:
                err.print("[yellow]--exclude-sources applies to ATT&CK sources; the CWE head ignores it[/]")
            cfg = HarnessConfig(
                task=t, model=model_name, adapter=adapter, layer=layer_arg, pooling=pooling, kinds=kinds,
                exclude_sources=tuple(excluded) if t == "attack" else (), user_data=tuple(str(p) for p in data or ()),
                limit=limit, baseline=baseline, fit=FitConfig(epochs=epochs, seed=seed), command=command,
            )
            if joint:
                summary = train_joint(cfg, target, init_head=init_head, steps=steps)
                print(json.dumps(summary, indent=2))
                continue
            with recording(allow_busy=allow_busy, command=command) as rec:  # refused on a busy machine
                res = run_harness(cfg, target, results_dir, progress=lambda msg: err.print(msg), recorder=rec)
                if not ship:
                    write_results(res, Path(target), recorder=rec)  # the results travel with the head
            _print_summary(res)

    @train.command("attack-extractor")
    def train_attack_extractor(
        head: Annotated[Optional[Path], typer.Option("--head", help="ATT&CK head folder (trained on the train split); the index and document model are written into it. Default with --ship: the shipped head.")] = None,
        ship: Annotated[bool, typer.Option("--ship", help="Use (and complete) the shipped ATT&CK head folder, results to training/results.")] = False,
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model of the head; default: the embedded one.")] = None,
        results: Annotated[Optional[Path], typer.Option("--results", help="Results JSON (a markdown table beside it); default with --ship: training/results/attack-documents.json.")] = None,
        baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also score the TF-IDF baseline variants on the same splits.")] = True,
        short_head: Annotated[Optional[Path], typer.Option("--short-head", help="A shallower ATT&CK head (e.g. `secfm train head --task attack --layer 1,2`, same labels and training entities) the short-text path may use for alert-sized texts; copied into the head folder when the development set takes it.")] = None,
        allow_busy: AllowBusyOpt = False,
    ) -> None:
        """Fit the document-level ATT&CK extractor (retrieval index of the head's training entities, document model and decision rule chosen by development-set F1) on the ATT&CK development set and compare every variant with the TF-IDF baseline."""
        from rich.console import Console

        from secfm.heads import shipped_head_path
        from secfm.registry import default_model_name
        from secfm.training.attack_docs import results_markdown, run_document_harness, save_extractor, write_results

        err = Console(stderr=True)
        if head is None:
            if not ship:
                raise SecfmError("give --head DIR (or --ship for the shipped ATT&CK head)")
            head = shipped_head_path("attack", model or default_model_name())
        if not (head / "head.json").is_file():
            raise SecfmError(f"{head} is not a head folder (no head.json)")
        if results is None and ship:
            results = Path("training/results/attack-documents.json")
        if short_head is not None and not (short_head / "head.json").is_file():
            raise SecfmError(f"{short_head} is not a head folder (no head.json)")
        res, doc_model, index = run_document_harness(head, progress=lambda msg: err.print(msg), baseline=baseline,
                                                     short_head=short_head)
        res["command"] = _command_line()
        save_extractor(head, doc_model, index, short_head)
        if results is not None:
            write_results(res, results, allow_busy=allow_busy)
            err.print(f"results: {results} and {results.with_suffix('.md')}")
        print(results_markdown(res))

    data = command_group(app, "data", "Datasets: the CPT corpus, the instruction data, development sets.")

    @data.command("attack-docs")
    def data_attack_docs(
        out: Annotated[Path, typer.Option("--out", "-o", help="TSV in the CTI-ATE layout (URL, Platform, Description, Prompt, GT).")],
        split: Annotated[str, typer.Option("--split", help="train, val, test or all.")] = "test",
        limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most this many documents.")] = None,
        domain: Annotated[Optional[str], typer.Option("--domain", help="enterprise, mobile or ics (default: all three).")] = None,
    ) -> None:
        """Write the ATT&CK-derived development documents (paragraphs about one software, group or campaign; gold = its parent techniques; split by entity) in the CTI-ATE layout: a file `secfm eval cti-ate --data` reads. Never CTIBench rows."""
        from secfm.knowledge.attack import domain_name
        from secfm.training.head_data import build_attack_documents, write_documents_tsv

        if split not in ("train", "val", "test", "all"):
            raise SecfmError(f"--split must be train, val, test or all, not {split!r}")
        docs = build_attack_documents(domains=[domain_name(domain)] if domain else None)
        docs = [d for d in docs if split == "all" or d.split == split][: limit or None]
        write_documents_tsv(docs, out)
        print(f"{len(docs)} documents ({split}) -> {out}")


def _refit_baseline(task: str, head: Path, ship: bool, results: Path | None, cs, allow_busy: bool, err) -> None:
    from secfm.training.heads import refit_baseline

    if task not in ("attack", "cwe"):
        raise SecfmError("--baseline-for takes --task attack or --task cwe")
    if not (head / "head.json").is_file():
        raise SecfmError(f"{head} is not a head folder (no head.json)")
    folder = results or (Path("training/results") if ship else head)
    from secfm.heads import read_manifest

    stem = f"heads-{task}" + ("-excl" if read_manifest(head).excluded_sources else "")
    target = folder / f"{stem}.json"
    from secfm.provenance import recording

    command = _command_line()
    with recording(data_files=[head / "head.json"], allow_busy=allow_busy, command=command) as rec:
        res = refit_baseline(head, target, C=cs, command=command, progress=lambda msg: err.print(msg), recorder=rec)
    b = res["baseline"]["eval"]["test"]
    key = "micro_f1" if task == "attack" else "top1"
    err.print(f"baseline test {key} {b.get(key, float('nan')):.3f}; head {res['head']['test'].get(key, float('nan')):.3f}; "
              f"results: {target} and {target.with_suffix('.md')}")


def _train_cve_head(task, out, ship, cve_data, exclude_cves, hidden_layer, model, results, baseline, limit, allow_busy, err) -> None:
    from secfm.heads import shipped_head_path
    from secfm.knowledge.nvd import parse_cve_ids
    from secfm.registry import default_model_name
    from secfm.training.cve_train import run_cve_training
    from secfm.training.heads import layer_list

    if cve_data is None:
        raise SecfmError(f"--task {task} trains on NVD: give --cve-data DIR (built by `secfm data cve --feeds FEEDS --out DIR`)")
    if out is None and not ship:
        raise SecfmError("give --out DIR (or --ship to write the shipped head)")
    excluded = parse_cve_ids(exclude_cves)
    if ship and limit:
        raise SecfmError("--ship with --limit would ship a smoke-test head; drop --limit")
    model_name = model or default_model_name()
    target = shipped_head_path(task, model_name) if ship else out
    results_dir = results or (Path("training/results") if ship else out)
    layers = [tuple(layer_list(h)) for h in hidden_layer or []]
    res = run_cve_training(task, cve_data, out=target, results=results_dir, exclude_cves=excluded, layers=layers,
                           model=model_name, baseline=baseline, command=_command_line(), allow_busy=allow_busy,
                           limit=limit, progress=lambda msg: err.print(msg, highlight=False))
    key = "top1" if task == "cwe" else "mad"
    h, b = res["head"]["test"], (res.get("baseline") or {}).get("test")
    print(f"{task} head ({res['chosen']['design']['name']}): test {key} {h[key]:.3f} {h[key + '_ci']}"
          + (f"; baseline {b[key]:.3f} {b[key + '_ci']}" if b else "") + f"; head: {res.get('head_dir')}")


def _print_summary(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    task = res["task"]
    cols = ["micro_f1", "macro_f1", "p_at_1", "p_at_5"] if task == "attack" else ["top1", "top5", "micro_f1", "macro_f1"]
    table = Table(title=f"{task} head vs baseline (test split, held out)")
    table.add_column("system")
    for c in cols:
        table.add_column(c)
    for kind, h in res["heads"].items():
        table.add_row(f"head {kind}" + (" *" if kind == res["chosen"]["kind"] else ""), *[f"{h['eval']['test'][c]:.3f}" for c in cols])
    if res.get("baseline"):
        table.add_row("tfidf-logreg", *[f"{res['baseline']['eval']['test'][c]:.3f}" for c in cols])
    Console().print(table)
    if res.get("head_dir"):
        print(f"head: {res['head_dir']} (layer {'+'.join(map(str, res['chosen'].get('layers') or [res['chosen']['layer']]))}, {res['chosen']['pooling']}, {res['chosen']['kind']})")

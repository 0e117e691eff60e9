"""One evaluation run: select items, ask the model (gen, loglik or head), parse, score, write the run folder.

A run folder holds ``run.json`` (the settings, written first), ``predictions.jsonl`` (one line per
scored item, appended batch by batch) and ``metrics.json`` (written at the end). A run started
again with the same settings skips the items already in ``predictions.jsonl`` (resume); other
settings in the same folder are refused.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from secfm.engines import DEFAULT_ENGINE, engine_class, engine_name
from secfm.errors import SecfmError
from secfm.evals import prompts
from secfm.evals.data import Dataset, Item, load_dataset, select_items
from secfm.evals.heads import (
    CVE_KINDS,
    HeadPredictor,
    item_entity,
    labels_over,
    load_attack_extractor,
    load_cve_head,
    load_head,
    seen_items,
    top_label,
)
from secfm.evals.metrics import DEFAULT_BOOTSTRAP
from secfm.evals.parsers import EMPTY, OK, Parsed, get_parser, normalise_cwe, technique_parents
from secfm.evals.progress import progress_bar
from secfm.evals.registry import get_metric, in_points
from secfm.evals.scoring import score_item, summarise
from secfm.evals.specs import TaskSpec, get_task

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
RUN = "run.json"


@dataclass
class EvalConfig:
    """Everything that defines a run (the CLI options of `secfm eval TASK`)."""

    task: str
    out: str
    data: str | None = None
    config: str | None = None
    labels: str | None = None
    model: str | None = None
    adapter: str | None = None
    engine: str = DEFAULT_ENGINE
    endpoint: str | None = None
    mode: str = "gen"
    shots: int = 0
    shot_pool: str | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int | None = None
    head: str | None = None
    exclude_sources: tuple[str, ...] = field(default_factory=tuple)
    bootstrap: int = DEFAULT_BOOTSTRAP
    allow_seen: bool = False  # head mode: score items whose CVE the head trained on (the run is marked contaminated)
    train_limit: int | None = None  # cti-ate head mode: cap rows per split of a clean extractor trained now (smoke runs)

    def command(self) -> str:
        """The `secfm eval` command line that reproduces this run."""
        spec = get_task(self.task)
        parts = ["secfm", "eval", spec.name]
        options = [
            ("--data", self.data), ("--config", self.config), ("--labels", self.labels),
            ("--model", self.model), ("--adapter", self.adapter),
            ("--engine", self.engine if self.engine != DEFAULT_ENGINE else None), ("--endpoint", self.endpoint),
            ("--mode", self.mode), ("--shots", self.shots or None), ("--shot-pool", self.shot_pool),
            ("--limit", self.limit), ("--seed", self.seed), ("--max-new-tokens", self.max_new_tokens),
            ("--head", self.head), ("--exclude-sources", ",".join(self.exclude_sources) or None),
            ("--out", self.out),
        ]
        for flag, value in options:
            if value is not None:
                parts += [flag, str(value)]
        if self.allow_seen:
            parts.append("--allow-seen")
        if self.train_limit:
            parts += ["--train-limit", str(self.train_limit)]
        return shlex.join(parts)


# ---------------------------------------------------------------------------------------------
# the run folder
# ---------------------------------------------------------------------------------------------
def read_predictions(path: Path) -> dict[str, dict]:
    """Records by item id; a line cut by an interruption (and anything after it) is dropped."""
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    good_bytes = 0
    with path.open("rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
                if not line.endswith(b"\n"):
                    raise ValueError("incomplete line")
            except ValueError:
                break
            records[str(rec["id"])] = rec
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return records


def _settings(cfg: EvalConfig, spec: TaskSpec, ds: Dataset, scored: list[Item], shots: list[Item], max_new: int | None) -> dict:
    ids = ",".join(i.id for i in scored)
    return {
        "task": spec.name,
        "config": ds.config,
        "data_sha256": ds.sha256,
        "labels_sha256": ds.labels_sha256,
        "model": cfg.model,
        "adapter": cfg.adapter,
        "engine": cfg.engine,
        "endpoint": cfg.endpoint,
        "mode": cfg.mode,
        "shots": cfg.shots,
        "shot_ids": [s.id for s in shots],
        "seed": cfg.seed,
        "limit": cfg.limit,
        "max_new_tokens": max_new,
        "head": cfg.head,
        "exclude_sources": list(cfg.exclude_sources),
        "allow_seen": cfg.allow_seen,
        "train_limit": cfg.train_limit,
        "scored_ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
    }


def _claim_folder(out: Path, settings: dict) -> dict:
    """Create the run folder or check that it holds a run with the same settings; returns run.json.
    A folder that exists, is not empty and is not a secfm run folder is refused (a user's
    ``metrics.json`` is never overwritten)."""
    from secfm.outputs import claim_folder

    claim_folder(out, ours_if=(RUN,))
    run_file = out / RUN
    if run_file.is_file():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise SecfmError(f"{run_file} is not valid JSON; remove it or use another --out") from exc
        diff = [k for k in settings if previous.get("settings", {}).get(k) != settings[k]]
        if diff:
            k = diff[0]
            raise SecfmError(
                f"{out} holds a run with other settings ({k}: {previous.get('settings', {}).get(k)!r} "
                f"there, {settings[k]!r} now); use another --out"
            )
        return previous
    elif (out / PREDICTIONS).exists():
        raise SecfmError(f"{out} holds predictions without a {RUN}; use another --out")
    run = {"settings": settings, "engine_info": None, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    run_file.write_text(json.dumps(run, indent=2), encoding="utf-8")
    return run


# ---------------------------------------------------------------------------------------------
# asking the model
# ---------------------------------------------------------------------------------------------
def build_engine(cfg: EvalConfig):
    from secfm.engines import get_engine

    return get_engine(cfg.engine, model=cfg.model, adapter=cfg.adapter, endpoint=cfg.endpoint, batch_size=cfg.batch_size)


def _check_context(engine, spec: TaskSpec, items: list[Item], shots: list[Item], max_new: int) -> None:
    """Fail before the run when the longest prompt (with its shots) cannot fit the model's context."""
    longest = max(items, key=lambda i: len(i.fields[spec.prompt_column]))
    try:
        n = engine.count_tokens(engine.apply_chat_template(prompts.gen_messages(spec, longest, shots)))
    except SecfmError:
        return  # no local tokenizer (a remote server): the server will say
    if n + max_new > engine.max_context:
        raise SecfmError(
            f"the longest {spec.name} prompt{f' with {len(shots)} shots' if shots else ''} takes {n} tokens; "
            f"with {max_new} new tokens it exceeds the model's {engine.max_context}-token context "
            "(use fewer --shots or a smaller --max-new-tokens)"
        )


def _gen_batch(engine, spec, parser, batch, shots, max_new, seed) -> list[tuple[object, Parsed]]:
    from secfm.engines import SamplingParams

    params = SamplingParams(max_new_tokens=max_new, temperature=0.0, seed=seed)
    outputs = engine.chat([prompts.gen_messages(spec, item, shots) for item in batch], params)
    return [(text, parser(text)) for text in outputs]


def _loglik_batch(engine, spec, batch, shots) -> list[tuple[object, Parsed, dict]]:
    results = engine.loglikelihood_many([prompts.loglik_request(spec, item, shots) for item in batch])
    out = []
    for item_results in results:
        cloze, letters = prompts.split_results(spec, item_results)
        answers = prompts.loglik_answers(spec, cloze, letters)
        out.append((prompts.loglik_raw(spec, cloze, letters), Parsed(answers[spec.loglik.headline], OK), answers))
    return out


def _head_batch(head: HeadPredictor, spec, batch) -> list[tuple[object, Parsed]]:
    texts = [item.fields[spec.head.text_column] for item in batch]
    predictions = head.predict(texts)
    if len(predictions) != len(texts):
        raise SecfmError(f"the head returned {len(predictions)} predictions for {len(texts)} texts")
    out = []
    for scored in predictions:
        scored = [(str(label), float(score)) for label, score in scored]
        raw = sorted(scored, key=lambda s: -s[1])[:10]
        if spec.head.kind == "cwe":
            label = top_label(scored)
            cwe = normalise_cwe(label) if label else None
            out.append((raw, Parsed(cwe, OK) if cwe else Parsed(None, EMPTY)))
        elif spec.head.kind == "cvss":
            label = top_label(scored)
            out.append((raw, get_parser(spec.parser)(label) if label else Parsed(None, EMPTY)))
        else:
            threshold = getattr(head, "threshold", None)
            threshold = spec.head.threshold if threshold is None else threshold
            ids = technique_parents(" ".join(labels_over(scored, threshold)))
            out.append((raw, Parsed(tuple(ids), OK)))
    return out


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def make_parser(spec: TaskSpec, ds: Dataset):
    if spec.parser == "threat_actor":
        from secfm.evals.taa import ActorParser

        return ActorParser(extra_names=[i.gold for i in ds.items if i.gold])
    return get_parser(spec.parser)


def _context(spec: TaskSpec, items: list[Item]) -> dict:
    metric = get_metric(spec.metric)
    return metric.context(spec, items) if metric.context is not None else {}


def run_eval(cfg: EvalConfig, engine=None, head: HeadPredictor | None = None, progress: bool = True) -> dict:
    """Run (or resume) one evaluation; returns the metrics written to ``OUT/metrics.json``."""
    spec = get_task(cfg.task)
    spec.check_mode(cfg.mode)
    if cfg.shots and cfg.mode == "head":
        raise SecfmError("--shots applies to gen and loglik modes, not to head mode")
    if cfg.mode == "head" and not engine_class(engine_name(cfg.engine, cfg.endpoint)).has_hidden_states:
        raise SecfmError(f"head mode needs an engine with hidden states in process, not {engine_name(cfg.engine, cfg.endpoint)}")
    ds = load_dataset(spec, cfg.data, cfg.config, cfg.labels)
    pool = load_dataset(spec, cfg.shot_pool, cfg.config, cfg.labels) if cfg.shot_pool and cfg.shots else None
    sel = select_items(ds.items, cfg.limit, cfg.seed, cfg.shots, pool.items if pool else None, cfg.shot_pool)
    max_new = (cfg.max_new_tokens or spec.max_new_tokens) if cfg.mode == "gen" else None
    out = Path(cfg.out).expanduser()
    contamination = None
    if cfg.mode == "head" and spec.head.kind in CVE_KINDS:
        # the CVE heads record the CVEs they trained on: refuse items they saw (before anything is written)
        if head is None:
            head = load_cve_head(cfg.head, spec.head.kind, model=cfg.model, engine=engine)
        seen, with_cve = seen_items(head, sel.scored, spec.head.text_column)
        contamination = {"contaminated": bool(seen), "seen_items": len(seen), "items": len(sel.scored),
                         "items_with_a_cve_id": with_cve, "allowed": cfg.allow_seen,
                         "check": "item CVE ids (URL, else description) against the CVEs the head trained on",
                         "seen_ids": seen[:50]}
        if seen and not cfg.allow_seen:
            raise SecfmError(
                f"the head trained on the CVEs of {len(seen)} of the {len(sel.scored)} items (e.g. item {seen[0]}); "
                f"refusing to score them: retrain without them (`secfm train head --task {spec.head.kind} "
                f"--exclude-cves @{cfg.data or 'DATA.tsv'} ...`) or pass --allow-seen (the run is then marked contaminated)")
    attack_record = None
    if cfg.mode == "head" and spec.head.kind == "attack" and head is None:
        # the extractor must never have seen the items' entities (their URLs): the shipped one when
        # clean, else one trained (or reused) without them; a given --head that saw them is refused
        say = None
        if progress:
            from rich.console import Console

            say = Console(stderr=True).print
        head, attack_record = load_attack_extractor(cfg.head, sel.scored, engine, cfg.exclude_sources, cfg.allow_seen,
                                                    cfg.train_limit, cfg.model, progress=say)
        contamination = attack_record["contamination"]
        engine = engine or head.engine
    settings = _settings(cfg, spec, ds, sel.scored, sel.shots, max_new)
    run = _claim_folder(out, settings)
    if attack_record is not None:
        run["head_exclusion"] = attack_record["exclusion"]
        (out / RUN).write_text(json.dumps(run, indent=2), encoding="utf-8")
    pred_path = out / PREDICTIONS
    done = read_predictions(pred_path)
    todo = [i for i in sel.scored if i.id not in done]
    resumed = len(sel.scored) - len(todo)
    parser = make_parser(spec, ds)
    session_start = time.time()
    from secfm.provenance import PROVENANCE_KEY, Recorder

    # figures are accuracies: a busy machine is recorded (and items/s read under its load), not refused
    recorder = Recorder([p for p in (cfg.data, cfg.labels, cfg.shot_pool if cfg.shots else None) if p], allow_busy=True,
                   command=cfg.command())
    recorder.note(load_policy="accuracy figures: the load is recorded, not refused; items_per_s is under that load")
    if todo:
        needs_engine = not (cfg.mode == "head" and head is not None and getattr(head, "needs_engine", True) is False)
        if engine is None and needs_engine:
            from rich.console import Console

            with Console(stderr=True).status(f"loading {cfg.model or 'the default model'} ({cfg.engine} engine)"):
                engine = build_engine(cfg)
        if cfg.mode == "head" and head is None:
            head = load_head(cfg.head, spec.head.kind, engine, cfg.exclude_sources)
        if cfg.mode == "gen":
            _check_context(engine, spec, todo, sel.shots, max_new)
        run["engine_info"] = engine.describe() if engine is not None else {
            "model": f"secfm {spec.head.kind} head (TF-IDF)", "engine": None,
            "note": f"{spec.head.kind} head on TF-IDF text features: no language model runs"}
        (out / RUN).write_text(json.dumps(run, indent=2), encoding="utf-8")
        with progress_bar(progress) as bar, pred_path.open("a", encoding="utf-8") as sink:
            task_id = bar.add_task(f"{spec.name} {cfg.mode}", total=len(sel.scored), completed=resumed)
            step = max(1, cfg.batch_size)
            for start in range(0, len(todo), step):
                batch = todo[start : start + step]
                t0 = time.time()
                if cfg.mode == "gen":
                    answers = [(raw, parsed, None) for raw, parsed in _gen_batch(engine, spec, parser, batch, sel.shots, max_new, cfg.seed)]
                elif cfg.mode == "loglik":
                    answers = _loglik_batch(engine, spec, batch, sel.shots)
                else:
                    answers = [(raw, parsed, None) for raw, parsed in _head_batch(head, spec, batch)]
                per_item = (time.time() - t0) / len(batch)
                for item, (raw, parsed, by) in zip(batch, answers):
                    rec = {"id": item.id, "url": item.url, "raw": raw}
                    rec.update(score_item(spec, parsed, item.gold))
                    if by is not None:
                        rec["parsed_by"] = by
                        rec["correct_by"] = {k: v == rec["gold"] for k, v in by.items()}
                    rec["time_s"] = round(per_item, 4)
                    sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    done[item.id] = rec
                sink.flush()
                bar.advance(task_id, len(batch))
    records = [done[i.id] for i in sel.scored]
    summary = summarise(spec, records, cfg.mode, cfg.seed, cfg.bootstrap, _context(spec, sel.scored))
    wall = sum(float(r.get("time_s", 0.0)) for r in records)
    metrics = {
        "task": spec.name,
        "title": spec.title,
        "config": ds.config,
        "model": cfg.model or (run.get("engine_info") or {}).get("model"),
        "adapter": cfg.adapter,
        "engine": engine_name(cfg.engine, cfg.endpoint),
        "engine_info": run.get("engine_info"),
        "mode": cfg.mode,
        "shots": cfg.shots,
        "shot_ids": [s.id for s in sel.shots],
        "shot_source": sel.shot_source or None,
        "seed": cfg.seed,
        "limit": cfg.limit,
        "max_new_tokens": max_new,
        "system_prompt": spec.system_prompt,
        "parser": spec.parser,
        "metric": spec.metric,
        "data": {
            "source": ds.source,
            "sha256": ds.sha256,
            "rows": len(ds.items),
            "labels_source": ds.labels_source,
            "labels_sha256": ds.labels_sha256,
        },
        "data_sha256": ds.sha256,
        **summary,
        "bootstrap": {"resamples": cfg.bootstrap, "seed": cfg.seed, "level": 0.95, "method": "percentile, items resampled"},
        "wall_time_s": round(wall, 3),
        "items_per_s": round(len(records) / wall, 4) if wall > 0 else None,
        "session_wall_s": round(time.time() - session_start, 3),
        "resumed_items": resumed,
        "head": cfg.head,
        "head_info": head.describe() if head is not None and hasattr(head, "describe") else None,
        "exclude_sources": list(cfg.exclude_sources),
        "contaminated": bool(contamination and contamination["contaminated"]),
        "contamination": contamination,
        "exclusion": run.get("head_exclusion"),
        "item_sources": sorted({e for e in (item_entity(i.url) for i in sel.scored) if e}),
        "command": cfg.command(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from secfm.outputs import write_text

    metrics[PROVENANCE_KEY] = recorder.stamp()
    write_text(out / METRICS, json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    # the same run in lm-evaluation-harness's layout (results_<ts>.json, samples_<task>_<ts>.jsonl)
    from secfm.evals.lm_eval_export import write_harness_results

    if cfg.mode == "loglik":
        requests = [prompts.loglik_request(spec, i, sel.shots) for i in sel.scored]
    elif cfg.mode == "gen":
        requests = [prompts.gen_messages(spec, i, sel.shots) for i in sel.scored]
    else:
        requests = [i.fields.get(spec.head.text_column, "") for i in sel.scored]
    write_harness_results(out, spec, metrics, sel.scored, records, requests)
    return metrics


# ---------------------------------------------------------------------------------------------
# one line for the terminal
# ---------------------------------------------------------------------------------------------
def _fmt(metric: str, value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.3f}" if in_points(metric) else f"{100 * value:.1f}%"


def summary_line(m: dict) -> str:
    """``cti-mcqa accuracy 31.0% [24.5%, 37.5%] n=200 ...`` for the terminal."""
    h = m["headline"]
    lo, hi = m["intervals"][h]
    strict = f"{h}_strict"
    parts = [
        f"{m['task']} ({m['mode']}, {m['shots']}-shot, {m['model']}): {h} {_fmt(h, m['figures'][h])} "
        f"[95% CI {_fmt(h, lo)}, {_fmt(h, hi)}] n={m['n']}"
    ]
    if strict in m["figures"] and m["mode"] != "loglik":
        c = m["counts"]
        parts.append(
            f"strict {_fmt(h, m['figures'][strict])} (unparseable {c['unparseable'] + c['empty']}, refusals {c['refusal']})"
        )
    if m["mode"] != "loglik" and m.get("metric"):
        parts += [f"{name} {_fmt(name, m['figures'][name])}" for name in get_metric(m["metric"]).also_show
                  if name in m["figures"]]
    if m["mode"] == "loglik":
        parts.append(" ".join(f"{k.split('_', 1)[1]} {_fmt(k, v)}" for k, v in m["figures"].items() if k.startswith("accuracy_") and k != "accuracy_strict"))
    b = m.get("baselines") or {}
    if b:
        parts.append(f"majority {_fmt(h, b['majority']['value'])}, random {_fmt(h, b['random']['value'])}")
    if m.get("items_per_s"):
        parts.append(f"{m['items_per_s']:.2f} items/s")
    return "; ".join(parts)


def load_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir).expanduser() / METRICS
    if not path.is_file():
        raise SecfmError(f"{run_dir} is not a finished run (no {METRICS})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SecfmError(f"{path} is not valid JSON") from exc


#: the run-folder claim, shared with the other harness users (``secfm eval chat``)
claim_folder = _claim_folder

__all__ = ["EvalConfig", "METRICS", "PREDICTIONS", "RUN", "claim_folder", "load_metrics", "read_predictions", "run_eval",
           "summary_line"]

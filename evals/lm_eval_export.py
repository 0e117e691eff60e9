"""lm-evaluation-harness interoperability: results in the harness's layout, and harness task YAMLs.

* :func:`write_harness_results` (called by every ``secfm eval`` run) writes, beside
  ``metrics.json``, ``results_<timestamp>.json`` (``results`` with ``acc,none`` and
  ``acc_stderr,none``, ``n-shot``, ``configs``, ``versions``, ``higher_is_better``, ``n-samples``,
  ``config``) and ``samples_<task>_<timestamp>.jsonl`` (per item: ``doc_id``, ``doc``,
  ``target``, ``arguments``, ``resps``, ``filtered_resps``, the metric), as ``lm_eval
  --output_path --log_samples`` does, so harness tooling reads secfm runs.
* :func:`export_tasks` (``secfm eval export-lm-eval DIR``) writes a harness task YAML per
  CTIBench task (and a ``utils.py`` they share), so a harness user runs them with
  ``lm_eval --include_path DIR --tasks cti_mcqa``. cti_mcqa is the same request as ``secfm eval
  cti-mcqa --mode loglik`` (letter scoring after the listed options); the generation tasks use
  the official prompts with a regex filter (a simpler parser than the benchmark's own, said in
  each YAML). cti-taa needs a gold-label file that CTIBench does not ship and is not exported.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import datetime
from pathlib import Path

import yaml

from secfm.evals.registry import get_metric
from secfm.evals.specs import TaskSpec, get_task

EXPORTED = ("cti-mcqa", "cti-rcm", "cti-vsp", "cti-ate")


def harness_name(task: str) -> str:
    return task.replace("-", "_")


def _timestamp() -> str:
    return datetime.now().isoformat().replace(":", "-")


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _stderr(values: list[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


# -------------------------------------------------------------------------------------------------
# task configs (the YAML of each task; also the "configs" of a results file)
# -------------------------------------------------------------------------------------------------
def task_config(spec: TaskSpec, data: str | None = None) -> dict:
    """The harness task config of one CTIBench task (``data``: a local TSV instead of the hub)."""
    name = harness_name(spec.name)
    if data:
        source = {"dataset_path": "csv", "dataset_kwargs": {"data_files": {"test": str(Path(data).resolve())},
                                                            "delimiter": "\t"}}
    else:
        source = {"dataset_path": spec.hf.repo, "dataset_name": spec.hf.config}
    cfg: dict = {"task": name, "tag": ["ctibench_secfm"], **source, "test_split": "test",
                 "process_docs": "!function utils.process_docs"}
    metric = get_metric(spec.metric).harness
    if spec.loglik is not None:  # multiple choice (cti-mcqa): the loglik requests of `secfm eval --mode loglik`
        L = spec.loglik
        question = L.question
        for i, column in enumerate(L.choices):
            question = question.replace("{" + column + "}", "{{choice_" + "abcd"[i] + "}}")
        question = question.replace("{Question}", "{{Question}}")
        cfg.update({
            "output_type": "multiple_choice",
            "description": L.preamble.replace("{system}", spec.system_prompt),
            "doc_to_text": question,
            "doc_to_choice": list(L.letters),
            "doc_to_target": "label",
            "target_delimiter": " ",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        })
    else:
        parsers = {"cwe_id": r"CWE-\d+", "cvss_vector": r"CVSS:3\.[01]/[A-Z:/]+",
                   "technique_ids": r"T\d{4}(?:\.\d{3})?"}
        cfg.update({
            "output_type": "generate_until",
            "description": spec.system_prompt + "\n\n",
            "doc_to_text": "{{" + spec.prompt_column + "}}",
            "doc_to_target": "{{" + spec.gold_column + "}}",
            "generation_kwargs": {"until": ["<end_of_turn>"], "max_gen_toks": spec.max_new_tokens, "do_sample": False},
            "filter_list": [{"name": "last-id", "filter": [
                {"function": "regex", "regex_pattern": f"({parsers.get(spec.parser, '.+')})", "group_select": -1},
                {"function": "take_first"}]}],
        })
        if get_metric(spec.metric).harness_exact_match:
            cfg["metric_list"] = [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                   "ignore_case": True}]
        else:
            cfg["process_results"] = f"!function utils.{harness_name(spec.name)}_process_results"
            cfg["metric_list"] = [{"metric": metric, "aggregation": "mean", "higher_is_better": get_metric(spec.metric).higher_is_better}]
    cfg["metadata"] = {"version": 1.0, "source": "secfm eval export-lm-eval", "secfm_task": spec.name}
    return cfg


UTILS = '''"""Shared by the CTIBench task YAMLs written by `secfm eval export-lm-eval` (any harness user runs
them without secfm)."""

import re


def process_docs(dataset):
    def rename(doc):
        out = dict(doc)
        for i, letter in enumerate("abcd"):
            key = f"Option {letter.upper()}"
            if key in doc:
                out[f"choice_{letter}"] = doc[key]
        if "GT" in doc and str(doc["GT"]).strip().upper() in ("A", "B", "C", "D"):
            out["label"] = "ABCD".index(str(doc["GT"]).strip().upper())
        return out

    return dataset.map(rename)


def _ids(text):
    return {m.split(".")[0] for m in re.findall(r"T\\d{4}(?:\\.\\d{3})?", text or "")}


def cti_ate_process_results(doc, results):
    """Per-item F1 over parent technique ids (the harness averages it: macro, not the benchmark's micro-F1)."""
    pred, gold = _ids(results[0]), _ids(doc.get("GT", ""))
    tp = len(pred & gold)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    return {"f1": 2 * p * r / (p + r) if p + r else 0.0}


def cti_vsp_process_results(doc, results):
    """Absolute deviation of CVSS 3.1 base scores (needs the `cvss` package); 10 when unparseable."""
    from cvss import CVSS3

    def score(vector):
        try:
            return float(CVSS3(vector.strip()).scores()[0])
        except Exception:
            return None

    gold, pred = score(doc.get("GT", "")), score(results[0] or "")
    return {"mad": abs(gold - pred) if gold is not None and pred is not None else 10.0}
'''


def _dump_yaml(cfg: dict) -> str:
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=1000)
    return text.replace("'!function ", "!function ").replace("_process_results'", "_process_results") \
        .replace("utils.process_docs'", "utils.process_docs")


def export_tasks(out: str | Path, data: dict[str, str] | None = None, tasks=EXPORTED) -> list[Path]:
    """Write ``<task>.yaml`` for each task and ``utils.py`` into ``out``; ``data``: task -> local TSV."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        spec = get_task(task)
        cfg = task_config(spec, (data or {}).get(task))
        note = ("# lm-evaluation-harness task written by `secfm eval export-lm-eval`: the same request as "
                f"`secfm eval {task} --mode loglik` (letter scoring).\n" if spec.loglik is not None else
                "# lm-evaluation-harness task written by `secfm eval export-lm-eval`: the official prompt; a regex "
                "filter takes the answer (simpler than CTIBench's own parser, so figures may differ from secfm eval).\n")
        path = out / f"{harness_name(task)}.yaml"
        path.write_text(note + _dump_yaml(cfg), encoding="utf-8")
        written.append(path)
    (out / "utils.py").write_text(UTILS, encoding="utf-8")
    (out / "README.md").write_text(
        "# CTIBench tasks for lm-evaluation-harness\n\nWritten by `secfm eval export-lm-eval`. Run:\n\n"
        f"```bash\nlm_eval --model hf --model_args pretrained=MODEL --include_path {out} --tasks "
        + ",".join(harness_name(t) for t in tasks) + "\n```\n\ncti-taa is not exported: its gold actors are not part of "
        "CTIBench's release (secfm eval cti-taa takes them with --labels).\n", encoding="utf-8")
    return written


# -------------------------------------------------------------------------------------------------
# results in the harness layout
# -------------------------------------------------------------------------------------------------
def _sample(spec: TaskSpec, mode: str, item, rec: dict, request, metric: str, index: int) -> dict:
    doc = dict(item.fields)
    if mode == "loglik" and request is not None:
        context, continuations = request
        letters = rec.get("raw", {}).get("letters", {})
        k = len(spec.loglik.choices)
        conts = continuations[k:]  # the letter continuations: the headline scoring
        options = rec.get("raw", {}).get("options", [])
        greedy = [o.get("is_greedy") for o in options] or [None] * len(conts)
        arguments = {f"gen_args_{i}": {"arg_0": context, "arg_1": c} for i, c in enumerate(conts)}
        resps = [[[letters.get(letter), bool(greedy[j]) if j < len(greedy) and greedy[j] is not None else False]]
                 for j, letter in enumerate(spec.loglik.letters)]
        filtered = [r[0] for r in resps]
        gold = str(rec.get("gold") or "").strip().upper()
        target = spec.loglik.letters.index(gold) if gold in spec.loglik.letters else gold
    else:
        arguments = {"gen_args_0": {"arg_0": request if isinstance(request, str) else json.dumps(request),
                                    "arg_1": {"until": [], "do_sample": False}}}
        resps = [[rec.get("raw") if isinstance(rec.get("raw"), str) else json.dumps(rec.get("raw"))]]
        filtered = [rec.get("parsed")]
        target = rec.get("gold")
    value = rec.get("correct")
    value = float(value) if isinstance(value, (bool, int, float)) else rec.get("score")
    return {"doc_id": index, "doc": doc, "target": target, "arguments": arguments, "resps": resps,
            "filtered_resps": filtered, "filter": "none", "metrics": [metric],
            "doc_hash": _hash(doc), "prompt_hash": _hash(arguments), "target_hash": _hash(target), metric: value}


def write_harness_results(out: str | Path, spec: TaskSpec, metrics: dict, items: list, records: list[dict],
                          requests: list | None = None) -> tuple[Path, Path]:
    """``results_<ts>.json`` and ``samples_<task>_<ts>.jsonl`` in ``out`` (the run folder)."""
    out = Path(out)
    task = harness_name(spec.name)
    metric = get_metric(spec.metric).harness
    stamp = _timestamp()
    samples = [_sample(spec, metrics["mode"], item, rec, requests[i] if requests else None, metric, i)
               for i, (item, rec) in enumerate(zip(items, records))]
    values = [s[metric] for s in samples if isinstance(s[metric], (int, float))]
    h = metrics["headline"]
    official = metrics["figures"].get(h)
    strict = metrics["figures"].get(f"{h}_strict")
    lo, hi = metrics["intervals"].get(h, [None, None])
    stderr = _stderr(values) if get_metric(spec.metric).harness_exact_match else (
        (hi - lo) / 3.92 if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else None)
    result = {"alias": task, f"{metric},none": official, f"{metric}_stderr,none": stderr}
    if strict is not None:
        result[f"{metric}_strict,none"] = strict
    prov = metrics.get("provenance") or {}
    model = str(metrics.get("model"))
    payload = {
        "results": {task: result},
        "group_subtasks": {task: []},
        "configs": {task: task_config(spec, None if str(metrics["data"]["source"]).startswith("hf://")
                                      else metrics["data"]["source"])},
        "versions": {task: 1.0},
        "n-shot": {task: metrics.get("shots", 0)},
        "higher_is_better": {task: {metric: get_metric(spec.metric).higher_is_better}},
        "n-samples": {task: {"original": metrics["data"]["rows"], "effective": metrics["n"]}},
        "config": {"model": "secfm", "model_args": f"model={model},adapter={metrics.get('adapter')},"
                                                   f"engine={metrics.get('engine')},mode={metrics['mode']}",
                   "batch_size": None, "device": None, "limit": metrics.get("limit"),
                   "bootstrap_iters": (metrics.get("bootstrap") or {}).get("resamples"),
                   "random_seed": metrics.get("seed"), "gen_kwargs": {"max_new_tokens": metrics.get("max_new_tokens")}},
        "git_hash": ((prov.get("git") or {}).get("commit") or "")[:7] or None,
        "date": time.time(),
        "model_name": model,
        "model_name_sanitized": model.replace("/", "__"),
        "total_evaluation_time_seconds": str(metrics.get("session_wall_s")),
        "secfm": {"metrics": "metrics.json", "command": metrics.get("command"), "data_sha256": metrics["data"]["sha256"],
                  "contaminated": metrics.get("contaminated", False), "stderr": "standard error of the mean over items"
                  if get_metric(spec.metric).harness_exact_match else "95% bootstrap interval width / 3.92"},
    }
    results_path = out / f"results_{stamp}.json"
    samples_path = out / f"samples_{task}_{stamp}.jsonl"
    results_path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    samples_path.write_text("".join(json.dumps(s, default=str, ensure_ascii=False) + "\n" for s in samples),
                            encoding="utf-8")
    return results_path, samples_path


__all__ = ["EXPORTED", "export_tasks", "harness_name", "task_config", "write_harness_results"]

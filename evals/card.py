"""`secfm card`: a Hugging Face model card (front matter with model-index) from evaluation runs.

Inputs: the runs' ``metrics.json``; ``model_card/card.yaml`` (prose per model over defaults);
``model_card/template.md`` (``${placeholders}``); the model registry (license, hub ids).
"""

from __future__ import annotations

import shlex
import string
from importlib.resources import files
from pathlib import Path

import yaml

from secfm.errors import SecfmError
from secfm.evals.registry import in_points
from secfm.evals.report import fmt, fmt_ci
from secfm.evals.runner import load_metrics
from secfm.evals.specs import get_task

MODEL_CARD_DIR = Path(str(files("secfm.model_card")))  # card.yaml and template.md (package data)
CTIBENCH = "AI4Sec/cti-bench"


def _read_yaml(path: Path) -> dict:
    from secfm.inputs import read_file_text

    try:
        data = yaml.safe_load(read_file_text(path))
    except yaml.YAMLError as exc:
        raise SecfmError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise SecfmError(f"{path} must be a YAML mapping")
    return data


def card_info(*names: str, info_path: Path | None = None) -> dict:
    """The card prose: the defaults, then the entries of each name in turn (model, then card name)."""
    path = Path(info_path) if info_path else MODEL_CARD_DIR / "card.yaml"
    data = _read_yaml(path) if path.is_file() or info_path else {}
    info = dict(data.get("defaults") or {})
    for name in names:
        info.update((data.get("models") or {}).get(name) or {})
    return info


def _registry_facts(name: str) -> dict:
    from secfm.registry import get_spec

    spec = get_spec(name)
    if spec is None:
        return {}
    facts = {"license": spec.license}
    base = spec
    if spec.source.kind == "adapter" and spec.source.base:
        base = get_spec(spec.source.base) or spec
        facts["library_name"] = "peft"
    if base.hub_id():
        facts["base_model"] = base.hub_id()
    return facts


def is_benchmark_data(m: dict) -> bool:
    """Whether the run's data is CTIBench itself: read from the benchmark's Hugging Face dataset.
    A local file (even in CTIBench's layout) cannot be told from a hand-made one, so it is named
    by its file name and sha256 and never as the benchmark."""
    return str(m["data"]["source"]).startswith(f"hf://{CTIBENCH}/")


def _dataset(m: dict, split: str) -> dict:
    sha = m["data"]["sha256"]
    if is_benchmark_data(m):
        return {"name": f"CTIBench {m['config']}", "type": CTIBENCH, "config": m["config"], "split": split,
                "args": {"data_sha256": sha, "rows": m["data"]["rows"]}}
    name = Path(str(m["data"]["source"])).name
    return {"name": f"{name} (local file, sha256 {sha[:12]}; not CTIBench)", "type": f"local/{name}",
            "args": {"data_sha256": sha, "rows": m["data"]["rows"], "layout": f"CTIBench {m['config']}"}}


def _dataset_label(m: dict) -> str:
    return _dataset(m, "test")["name"]


def _contamination(m: dict) -> str:
    c = m.get("contamination") or {}
    if not m.get("contaminated"):
        return ""
    return f"contaminated: the model or head saw {c.get('seen_items', '?')} of the {c.get('items', m.get('n'))} items"


def _setting(m: dict) -> str:
    return f"{m['shots']}-shot" if m.get("shots") else "zero-shot"


def _scale(metric: str, value):
    if value is None or value != value:
        return None
    return round(value, 3) if in_points(metric) else round(100 * value, 2)


def model_index(name: str, runs: list[dict]) -> list[dict]:
    """The ``model-index`` entry: one result per run, settings in the metric's name and args."""
    results = []
    for m in runs:
        spec = get_task(m["task"])
        h = m["headline"]
        value, (lo, hi) = _scale(h, m["figures"][h]), m["intervals"][h]
        label = h
        if value is None:  # nothing parseable: the official figure is undefined, give the strict one
            label = f"{h}_strict"
            value, (lo, hi) = _scale(label, m["figures"][label]), m["intervals"][label]
        args = {
            "mode": m["mode"],
            "shots": m["shots"],
            "engine": m["engine"],
            "n": m["n"],
            "ci95": [_scale(h, lo), _scale(h, hi)],
            "strict": _scale(h, m["figures"].get(f"{h}_strict")),
            "unparseable": m["counts"].get("unparseable", 0) + m["counts"].get("empty", 0),
        }
        if m.get("limit"):
            args["limit"] = m["limit"]
        dirty = _contamination(m)
        if dirty:
            args["contaminated"] = True
        results.append({
            "task": {"type": spec.card.task_type, "name": spec.title},
            "dataset": _dataset(m, spec.hf.split),
            "metrics": [{
                "type": spec.card.metric_type,
                "value": value,
                "name": f"{label} ({m['mode']}, {_setting(m)}, {m['engine']}, n={m['n']})" + (f" [{dirty}]" if dirty else ""),
                "args": args,
                "verified": False,
            }],
        })
    return [{"name": name, "results": results}]


def results_table(runs: list[dict]) -> str:
    rows = [
        "| task | data | metric | value [95% CI] | strict [95% CI] | setting | mode | engine | n | unparseable | majority / random |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in runs:
        h = m["headline"]
        s = f"{h}_strict"
        b = m.get("baselines", {})
        c = m.get("counts", {})
        unit = " (score points, lower is better)" if in_points(h) else " (%)"
        dirty = _contamination(m)
        rows.append("| " + " | ".join([
            f"{get_task(m['task']).title} ({m['config']})" + (f" **{dirty}**" if dirty else ""),
            _dataset_label(m),
            h + unit,
            fmt_ci(h, m["figures"][h], m["intervals"][h]),
            fmt_ci(h, m["figures"][s], m["intervals"][s]) if s in m["figures"] else "-",
            _setting(m),
            m["mode"],
            m["engine"],
            str(m["n"]),
            str(c.get("unparseable", 0) + c.get("empty", 0)),
            f"{fmt(h, b.get('majority', {}).get('value'))} / {fmt(h, b.get('random', {}).get('value'))}",
        ]) + " |")
    return "\n".join(rows)


def results_notes(runs: list[dict]) -> str:
    notes = []
    for m in runs:
        extra = [f"{k} {fmt(k, v)}" for k, v in m["figures"].items() if k not in (m["headline"], f"{m['headline']}_strict")]
        if extra:
            notes.append(f"- {get_task(m['task']).title} ({m['mode']}, {_setting(m)}): " + ", ".join(extra))
    return "Other figures of the same runs:\n\n" + "\n".join(notes) if notes else ""


def render_card(
    run_dirs: list[str],
    name: str | None = None,
    info: Path | None = None,
    template: Path | None = None,
    out: str | Path | None = None,
) -> str:
    if not run_dirs:
        raise SecfmError("give at least one run folder with --runs")
    runs = [load_metrics(r) for r in run_dirs]
    models = {(m.get("model"), m.get("adapter")) for m in runs}
    if len(models) > 1:
        listed = ", ".join(f"{mo}{' + ' + ad if ad else ''}" for mo, ad in sorted(models, key=str))
        raise SecfmError(f"the runs evaluate different models ({listed}); a card describes one")
    model, adapter = next(iter(models))
    name = name or str(model)
    facts = _registry_facts(str(model))
    details = card_info(str(model), name, info_path=info)
    license_ = details.get("license") or facts.get("license") or "other"
    base_model = details.get("base_model") or facts.get("base_model")
    front = {"license": license_, "library_name": details.get("library_name") or facts.get("library_name")
             or "transformers", "pipeline_tag": details.get("pipeline_tag") or "text-generation"}
    if base_model:
        front["base_model"] = base_model
    front["tags"] = list(details.get("tags") or [])
    front["datasets"] = list(details.get("datasets") or [])
    front["model-index"] = model_index(name, runs)
    template_path = Path(template) if template else MODEL_CARD_DIR / "template.md"
    if not template_path.is_file():
        raise SecfmError(f"model card template not found: {template_path} (pass --template)")
    from importlib.metadata import PackageNotFoundError, version

    from secfm.inputs import read_file_text

    try:
        secfm_version = version("secfm")
    except PackageNotFoundError:  # pragma: no cover
        secfm_version = "dev"
    values = {
        "front_matter": yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000).strip(),
        "name": name,
        "summary": details.get("summary", ""),
        "base_model": f"`{base_model}`" if base_model else "-",
        "adapter": f"`{adapter}`" if adapter else "-",
        "license": license_,
        "secfm_version": secfm_version,
        "intended_uses": details.get("intended_uses", ""),
        "out_of_scope": details.get("out_of_scope", ""),
        "training_data": details.get("training_data", ""),
        "results_table": results_table(runs),
        "results_notes": results_notes(runs),
        "limitations": details.get("limitations", ""),
        "reproduce": "\n".join(f"- {get_task(m['task']).title} ({m['mode']}, {_setting(m)}): `{m['command']}`" for m in runs),
        "card_command": shlex.join(["secfm", "card", *sum((["--runs", r] for r in run_dirs), []), "--out", str(out or "README.md")]),
    }
    try:
        return string.Template(read_file_text(template_path)).substitute(values)
    except (KeyError, ValueError) as exc:
        raise SecfmError(f"model card template {template_path} has an unknown placeholder: {exc}") from exc


def write_card(run_dirs: list[str], out: str | Path, name: str | None = None, info: Path | None = None, template: Path | None = None) -> Path:
    text = render_card(run_dirs, name=name, info=info, template=template, out=out)
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["card_info", "model_index", "render_card", "write_card"]

"""`secfm eval report`: a markdown table comparing runs and PNG plots (figures with intervals, RCM confusion)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from secfm.errors import SecfmError
from secfm.evals.registry import in_points
from secfm.evals.runner import PREDICTIONS, load_metrics, read_predictions

TOP_CWE = 8


def fmt(metric: str, value) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.2f}" if in_points(metric) else f"{100 * value:.1f}"


def fmt_ci(metric: str, value, interval) -> str:
    lo, hi = interval or (None, None)
    return f"{fmt(metric, value)} [{fmt(metric, lo)}, {fmt(metric, hi)}]"


def _labels(run_dirs: list[str]) -> list[str]:
    names = [Path(r).name or str(r) for r in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [str(Path(r)) for r in run_dirs]


def _unit(metric: str) -> str:
    return "MAD (score points, lower is better)" if in_points(metric) else "%"


def _setting(m: dict) -> str:
    shots = f"{m['shots']}-shot" if m.get("shots") else "zero-shot"
    return f"{m['mode']}, {shots}"


def table(runs: list[tuple[str, dict]]) -> str:
    """The comparison table: one row per run."""
    head = (
        "| run | task | model | adapter | mode | engine | n | headline | value [95% CI] | strict [95% CI] "
        "| unparseable | majority | random | items/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for label, m in runs:
        h = m["headline"]
        strict = f"{h}_strict"
        c = m.get("counts", {})
        b = m.get("baselines", {})
        task = m["task"] if m.get("config") in (None, m["task"], "cti-mcq") else f"{m['task']} ({m['config']})"
        rows.append(
            "| " + " | ".join([
                label,
                task,
                str(m.get("model")),
                str(m.get("adapter") or "-"),
                _setting(m),
                str(m.get("engine")),
                str(m["n"]),
                h + (" (%)" if not in_points(h) else ""),
                fmt_ci(h, m["figures"][h], m["intervals"].get(h)),
                fmt_ci(h, m["figures"].get(strict), m["intervals"].get(strict)) if strict in m["figures"] else "-",
                f"{c.get('unparseable', 0) + c.get('empty', 0)} (+{c.get('refusal', 0)} refusals)",
                fmt(h, b.get("majority", {}).get("value")),
                fmt(h, b.get("random", {}).get("value")),
                f"{m['items_per_s']:.2f}" if m.get("items_per_s") else "-",
            ]) + " |"
        )
    return "\n".join(rows)


def details(runs: list[tuple[str, dict]]) -> str:
    """Every figure of every run, with its interval, and the command that reproduces it."""
    out = []
    for label, m in runs:
        out.append(f"### {label}\n")
        out.append(f"`{m.get('command', '')}`\n")
        out.append(f"data: `{m['data']['source']}` (sha256 `{m['data']['sha256'][:16]}…`, {m['data']['rows']} rows)"
                   + (f"; labels `{m['data']['labels_source']}`" if m["data"].get("labels_source") else "")
                   + (f"; shots: rows {', '.join(m['shot_ids'])} ({m['shot_source']})" if m.get("shot_ids") else "")
                   + "\n")
        out.append("| figure | value [95% CI] |\n|---|---|")
        for name, value in m["figures"].items():
            out.append(f"| {name} | {fmt_ci(name, value, m['intervals'].get(name))} |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_figures(task: str, runs: list[tuple[str, dict]], path: Path) -> Path:
    """Per run: the official and the strict headline figure with their 95% intervals as error
    bars (an official figure with nothing parsed is left out), and the baselines as markers."""
    import math

    plt = _pyplot()
    h = runs[0][1]["headline"]
    scale = 1.0 if in_points(h) else 100.0
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(runs) + 3.5), 4.6))
    width = 0.38
    for offset, name, style in ((-width / 2, h, {"color": "#4C72B0"}),
                                (width / 2, f"{h}_strict", {"color": "#8DA0CB", "hatch": "//"})):
        xs, values, lows, highs = [], [], [], []
        for x, (_, m) in enumerate(runs):
            v = m["figures"].get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            lo, hi = m["intervals"][name]
            xs.append(x + offset)
            values.append(v * scale)
            lows.append(max(0.0, (v - lo) * scale))
            highs.append(max(0.0, (hi - v) * scale))
        if xs:
            ax.bar(xs, values, width=width, yerr=[lows, highs], capsize=5, label="official" if name == h else "strict", **style)
    for key, style, color in (("majority", "--", "#C44E52"), ("random", ":", "#55A868")):
        ys = [(x, m.get("baselines", {}).get(key, {}).get("value")) for x, (_, m) in enumerate(runs)]
        ys = [(x, y * scale) for x, y in ys if y is not None]
        if ys:
            ax.hlines([y for _, y in ys], [x - 0.45 for x, _ in ys], [x + 0.45 for x, _ in ys],
                      linestyles=style, colors=color, label=f"{key} baseline")
    ax.set_xlim(-0.75, len(runs) - 0.25)
    ticks = []
    for label, m in runs:
        c = m.get("counts", {})
        unparsed = c.get("unparseable", 0) + c.get("empty", 0)
        ticks.append(f"{label}\n{_setting(m)}\nn={m['n']}" + (f", {unparsed} unparsed" if unparsed else ""))
    ax.set_xticks(range(len(runs)), ticks, fontsize=8)
    ax.set_ylabel(f"{h} ({_unit(h)})")
    ax.set_title(f"{task}: {h} with 95% bootstrap intervals")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion(records: list[dict], top: int = TOP_CWE) -> tuple[list[str], list[str], list[list[int]]]:
    """Gold rows (the most frequent CWE classes), predicted columns (same classes, other, none), counts."""
    gold_counts = Counter(r["gold"] for r in records)
    classes = [c for c, _ in gold_counts.most_common(top)]
    cols = classes + ["other", "none"]
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(cols) for _ in classes]
    for r in records:
        if r["gold"] not in index:
            continue
        pred = r.get("parsed")
        j = index.get(pred, len(classes)) if pred else len(classes) + 1
        matrix[index[r["gold"]]][j] += 1
    return classes, cols, matrix


def plot_confusion(label: str, records: list[dict], path: Path) -> Path:
    plt = _pyplot()
    rows, cols, matrix = confusion(records)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(cols), 1.2 + 0.55 * len(rows)))
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold (most frequent classes)")
    ax.set_title(f"{label}: CWE confusion", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def _pipeline_spec(m: dict):
    """The pipeline task spec of a run (``secfm eval workflows``, ``secfm eval chat``), or None."""
    from secfm.evals.specs import PipelineTaskSpec, registered_tasks

    spec = registered_tasks().get(str(m.get("task", "")))
    return spec if isinstance(spec, PipelineTaskSpec) else None


def _figure_cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pipeline_table(runs: list[tuple[str, dict]]) -> str:
    """Gold-set runs of pipeline tasks: one row per headline figure the task's spec declares."""
    from secfm.evals.harness import figures_of

    rows = ["| run | task | model | figure | value | better |", "|---|---|---|---|---|---|"]
    for label, m in runs:
        spec = _pipeline_spec(m)
        model = m.get("model") if not isinstance(m.get("model"), dict) else m["model"].get("model")
        for name, value in figures_of(spec, m).items():
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for key, v in values:
                figure = name if key is None else f"{name} ({key})"
                better = "higher" if spec.figures[name].higher_is_better else "lower"
                rows.append(f"| {label} | {spec.name} | {model or '-'} | {figure} | {_figure_cell(v)} | {better} |")
    return "\n".join(rows)


def write_report(run_dirs: list[str], out_dir: str | Path) -> Path:
    """Write ``report.md`` and the PNG plots into ``out_dir``; returns the markdown path.

    CTIBench runs get the comparison table and plots; runs of the pipeline tasks (the workflow and
    chat gold sets) get a table of the headline figures their task specs declare."""
    if not run_dirs:
        raise SecfmError("give at least one run folder")
    every = list(zip(_labels(run_dirs), [load_metrics(r) for r in run_dirs], run_dirs))
    gold = [(label, m) for label, m, _ in every if _pipeline_spec(m) is not None]
    runs = [(label, m) for label, m, _ in every if _pipeline_spec(m) is None]
    run_dirs = [d for _label, m, d in every if _pipeline_spec(m) is None]
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if not runs:
        path = out / "report.md"
        path.write_text("\n".join(["# Gold-set results", "", pipeline_table(gold), ""]), encoding="utf-8")
        return path
    by_task: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for label, m in runs:
        by_task[m["config"] if m["task"] == "cti-rcm" else m["task"]].append((label, m))
    lines = ["# CTIBench results", "", table(runs), ""]
    lines.append(
        "Official figure: unparseable answers dropped (as the official notebook); strict: counted wrong "
        "(CTI-VSP: the largest possible deviation; CTI-ATE: no technique predicted). Intervals: 95% percentile "
        "bootstrap over items (seeded). Baselines are computed on the same items.\n"
    )
    lines.append("## Plots\n")
    for task, task_runs in by_task.items():
        for metric_group in {m["headline"] for _, m in task_runs}:
            group = [(label, m) for label, m in task_runs if m["headline"] == metric_group]
            png = plot_figures(task, group, out / f"{_slug(task)}-{metric_group}.png")
            lines.append(f"![{task} {metric_group}]({png.name})\n")
    for (label, m), run_dir in zip(runs, run_dirs):
        if m.get("parser") == "cwe_id":  # CWE mapping tasks (cti-rcm and any task that answers with a CWE)
            records = list(read_predictions(Path(run_dir) / PREDICTIONS).values())
            if records:
                png = plot_confusion(label, records, out / f"{_slug(label)}-cwe-confusion.png")
                lines.append(f"![{label} CWE confusion]({png.name})\n")
    lines += ["## Runs", "", details(runs)]
    if gold:
        lines += ["", "## Gold-set runs", "", pipeline_table(gold), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

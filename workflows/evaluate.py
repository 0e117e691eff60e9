"""`secfm eval workflows`: score triage, summarization and config review on the gold sets.

Gold sets (``workflows/gold/``, written for secfm; see its README):

* ``alerts.jsonl`` - labelled alerts (severity, ATT&CK techniques) in every supported family;
* ``configs.jsonl`` + ``configs/`` - configurations with seeded misconfigurations (rule id or
  ``null`` for ones no rule covers, and the line) and clean ones;
* ``incidents.jsonl`` + ``incidents/`` - incident reports with their IOCs and ids.

Metrics: severity accuracy (exact and within one level), technique precision/recall/F1 (exact
ids and parent techniques, micro-averaged), finding precision/recall/F1 (a finding matches a gold
entry when its line range overlaps and, for rule findings, the rule id agrees), IOC and id
precision/recall of the deterministic extraction, and the invented-entity rate (entities the
model named that failed the checks, over entities it named). Precision, recall and F1 are the
harness's (secfm.evals.metrics.prf: an empty prediction for an empty gold is perfect). The run
folder is the harness's too: ``run.json`` (settings and the command), ``predictions.jsonl`` (one
line per item) and ``metrics.json``.
"""

from __future__ import annotations

import json
import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from secfm.engines import DEFAULT_ENGINE
from secfm.errors import SecfmError
from secfm.evals.harness import GoldRunSettings
from secfm.evals.metrics import prf_figures as prf
from secfm.evals.runner import METRICS, PREDICTIONS, RUN
from secfm.workflows.schemas import SEVERITY_RANK

GOLD_DIR = Path(__file__).resolve().parent / "gold"


@dataclass
class EvalSettings(GoldRunSettings):
    use_kb: bool = True
    use_head: bool = True
    limit: int | None = None
    gold: str | None = None

    def command(self) -> str:
        parts = ["secfm", "eval", "workflows", "--out", self.out]
        for flag, value in (("--model", self.model), ("--adapter", self.adapter), ("--endpoint", self.endpoint),
                            ("--limit", self.limit), ("--gold", self.gold)):
            if value is not None:
                parts += [flag, str(value)]
        if self.engine != DEFAULT_ENGINE:
            parts += ["--engine", self.engine]
        if not self.use_model:
            parts.append("--no-model")
        if not self.use_kb:
            parts.append("--no-kb")
        if not self.use_head:
            parts.append("--no-head")
        return shlex.join(parts)


# --------------------------------------------------------------------------------------------
# metric helpers
# --------------------------------------------------------------------------------------------
def _r(x):
    return None if x is None else round(x, 4)


def _parent(tid: str) -> str:
    return tid.split(".")[0]


def _load_jsonl(path: Path, limit: int | None) -> list[dict]:
    from secfm.inputs import jsonl_rows

    if not path.is_file():
        raise SecfmError(f"gold set missing: {path}")
    rows = [row for _, row in jsonl_rows(path, hint=None)]
    return rows[:limit] if limit else rows


def _norm_ioc(kind: str, value: str) -> str:
    v = value.strip()
    if kind == "ipv4":
        v = v.split(":")[0]
    if kind in ("domain", "email", "url", "md5", "sha1", "sha256"):
        v = v.lower()
    if kind in ("windows_path", "registry_key"):
        v = v.lower().replace("\\\\", "\\")
    return v


def _ioc_match(kind: str, pred: str, gold: str) -> bool:
    if pred == gold:
        return True
    return kind == "domain" and (pred.endswith("." + gold) or gold.endswith("." + pred))


def ioc_scores(pred: dict[str, list[str]], gold: dict[str, list[str]]) -> tuple[int, int, int]:
    """(tp, fp, fn): a predicted IOC is right when it matches a gold IOC of its kind (a domain
    also matches its parent or child domain); a gold IOC is found when some prediction matches."""
    tp = fp = fn = 0
    for kind in set(pred) | set(gold):
        p = [_norm_ioc(kind, v) for v in pred.get(kind, [])]
        g = [_norm_ioc(kind, v) for v in gold.get(kind, [])]
        tp_p = sum(any(_ioc_match(kind, x, y) for y in g) for x in p)
        fp += len(p) - tp_p
        found = sum(any(_ioc_match(kind, x, y) for x in p) for y in g)
        tp += found
        fn += len(g) - found
    return tp, fp, fn


# --------------------------------------------------------------------------------------------
# the three parts
# --------------------------------------------------------------------------------------------
def eval_triage(gold_dir: Path, limit, engine, store, use_model: bool, tick, source=None) -> tuple[list[dict], dict]:
    from secfm.workflows.context import DEFAULT
    from secfm.workflows.triage import triage_alerts

    gold = _load_jsonl(gold_dir / "alerts.jsonl", limit)
    result = triage_alerts([g["input"] for g in gold], use_model=use_model, engine=engine, store=store,
                           technique_source=DEFAULT if source is None else source, progress=lambda d, t: tick(min(d, t), "triage"))
    preds, exact, within = [], 0, 0
    tp = fp = fn = ptp = pfp = pfn = 0
    model_sev_right = model_sev_n = 0
    cand_found = cand_total = 0
    for g, a in zip(gold, result.alerts):
        gs, ps = g["severity"], a.severity
        exact += gs == ps
        within += abs(SEVERITY_RANK[gs] - SEVERITY_RANK[ps]) <= 1
        gt, pt = set(g["techniques"]), {t.id for t in a.techniques}
        tp += len(gt & pt)
        fp += len(pt - gt)
        fn += len(gt - pt)
        cand_total += len(gt)
        cand_found += len(gt & (pt | {t.id for t in a.candidate_techniques}))
        gp, pp = {_parent(t) for t in gt}, {_parent(t) for t in pt}
        ptp += len(gp & pp)
        pfp += len(pp - gp)
        pfn += len(gp - pp)
        if a.model_view.severity:
            model_sev_n += 1
            model_sev_right += a.model_view.severity == gs
        preds.append({"task": "triage", "id": g["id"], "gold": {"severity": gs, "techniques": sorted(gt)},
                      "pred": {"severity": ps, "score": a.score, "techniques": sorted(pt), "signatures": [s.id for s in a.signatures],
                               "candidates": [f"{t.id}:{t.source}" for t in a.candidate_techniques],
                               "model_severity": a.model_view.severity, "model_status": a.model_view.status,
                               "evidence_verified": all(e.verified for e in a.evidence)},
                      "correct_severity": gs == ps})
    n = len(gold)
    metrics = {
        "items": n,
        "severity_accuracy": _r(exact / n) if n else None,
        "severity_within_one_level": _r(within / n) if n else None,
        "technique": prf(tp, fp, fn),
        "technique_parent": prf(ptp, pfp, pfn),
        "technique_recall_with_candidates": _r(cand_found / cand_total) if cand_total else None,
        "model_severity_accuracy": _r(model_sev_right / model_sev_n) if model_sev_n else None,
        "evidence_verified_rate": _r(sum(e.verified for a in result.alerts for e in a.evidence) / max(1, sum(len(a.evidence) for a in result.alerts))),
        "model": _model_summary(result.model),
        "technique_source": result.technique_source,
        "knowledge": result.knowledge,
    }
    return preds, metrics


def eval_configs(gold_dir: Path, limit, engine, store, use_model: bool, tick, offset: int) -> tuple[list[dict], dict]:
    from secfm.workflows.review import review_configs

    gold = _load_jsonl(gold_dir / "configs.jsonl", limit)
    texts = [((gold_dir / "configs" / g["file"]).read_text(encoding="utf-8"), "auto", g["file"]) for g in gold]
    reviews = review_configs(texts, use_model=use_model, engine=engine, store=store,
                             progress=lambda d, t: tick(offset + (len(gold) * d) // max(t, 1), "config review"))
    preds = []
    tp = fp = fn = 0
    rule_tp = rule_fp = 0
    model_tp = model_fp = 0
    kinds_right = 0
    proposed = invented = 0
    statuses: dict[str, int] = {}
    for g, review in zip(gold, reviews):
        kinds_right += review.kind == g["kind"]
        used_pred: set[int] = set()
        matched = 0
        for gf in g["findings"]:
            for j, f in enumerate(review.findings):
                if j in used_pred:
                    continue
                rule_ok = gf["rule"] is None or f.source == "model" or gf["rule"] == f.rule_id
                if rule_ok and f.line_start <= gf["lines"][1] and gf["lines"][0] <= f.line_end:
                    used_pred.add(j)
                    matched += 1
                    break
        for j, f in enumerate(review.findings):
            hit = j in used_pred
            if f.source == "rule":
                rule_tp += hit
                rule_fp += not hit
            else:
                model_tp += hit
                model_fp += not hit
        tp += matched
        fp += len(review.findings) - len(used_pred)
        fn += len(g["findings"]) - matched
        proposed += review.model.proposed
        invented += review.model.invented
        statuses[review.model.status] = statuses.get(review.model.status, 0) + 1
        preds.append({"task": "config", "id": g["file"], "gold": {"kind": g["kind"], "findings": g["findings"]},
                      "pred": {"kind": review.kind, "findings": [{"rule": f.rule_id, "lines": [f.line_start, f.line_end], "source": f.source,
                                                                 "severity": f.severity, "title": f.title} for f in review.findings],
                               "rejected": [r.model_dump() for r in review.rejected], "model_status": review.model.status},
                      "matched": matched})
    n = len(gold)
    metrics = {
        "items": n,
        "clean_configs": sum(1 for g in gold if not g["findings"]),
        "kind_accuracy": _r(kinds_right / n) if n else None,
        "finding": prf(tp, fp, fn),
        "rule_findings": {"correct": rule_tp, "wrong": rule_fp},
        "model_findings": {"correct": model_tp, "wrong": model_fp},
        "model": {"statuses": statuses, "proposed": proposed, "invented": invented,
                  "invented_rate": _r(invented / proposed) if proposed else None},
    }
    return preds, metrics


def eval_incidents(gold_dir: Path, limit, engine, use_model: bool, tick, offset: int, source=None) -> tuple[list[dict], dict]:
    from secfm.workflows.context import DEFAULT
    from secfm.workflows.summarize import summarize_incidents

    gold = _load_jsonl(gold_dir / "incidents.jsonl", limit)
    texts = [(gold_dir / "incidents" / g["file"]).read_text(encoding="utf-8") for g in gold]
    summaries = summarize_incidents([(t, g["audience"]) for t, g in zip(texts, gold)], use_model=use_model, engine=engine,
                                    technique_source=DEFAULT if source is None else source,
                                    progress=lambda d, t: tick(offset + (len(gold) * d) // max(t, 1), "summaries"))
    preds = []
    itp = ifp = ifn = 0
    dtp = dfp = dfn = 0
    unknown_flagged = unknown_total = 0
    proposed = invented = 0
    canary_leaks = 0
    sources: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for g, _text, s in zip(gold, texts, summaries):
        a, b, c = ioc_scores(s.iocs, g["iocs"])
        itp, ifp, ifn = itp + a, ifp + b, ifn + c
        pred_ids = {m.id for m in s.ids}
        gold_ids = set(g["ids"])
        dtp += len(pred_ids & gold_ids)
        dfp += len(pred_ids - gold_ids)
        dfn += len(gold_ids - pred_ids)
        for uid in g.get("unknown_ids", []):
            unknown_total += 1
            unknown_flagged += any(m.id == uid and not m.known for m in s.ids)
        proposed += s.model.proposed
        invented += s.model.invented
        canary = g.get("injection_canary")
        leaked = bool(canary and (canary in s.summary or canary in s.headline))
        canary_leaks += leaked
        sources[s.summary_source] = sources.get(s.summary_source, 0) + 1
        statuses[s.model.status] = statuses.get(s.model.status, 0) + 1
        preds.append({"task": "incident", "id": g["file"], "gold": {"iocs": g["iocs"], "ids": g["ids"]},
                      "pred": {"audience": s.audience, "headline": s.headline, "summary": s.summary, "summary_source": s.summary_source,
                               "iocs": s.iocs, "ids": [m.model_dump() for m in s.ids], "flags": [f.model_dump() for f in s.flags],
                               "chunks": s.chunks, "model_status": s.model.status, "model_detail": s.model.detail},
                      "ioc": {"tp": a, "fp": b, "fn": c}, "canary_leaked": leaked})
    metrics = {
        "items": len(gold),
        "ioc_extraction": prf(itp, ifp, ifn),
        "id_extraction": prf(dtp, dfp, dfn),
        "unknown_ids_flagged": f"{unknown_flagged}/{unknown_total}",
        "summary_sources": sources,
        "injection_canary_leaks": canary_leaks,
        "model": {"statuses": statuses, "proposed": proposed, "invented": invented,
                  "invented_rate": _r(invented / proposed) if proposed else None},
    }
    return preds, metrics


def _model_summary(part) -> dict:
    return {"status": part.status, "method": part.method, "calls": part.calls, "proposed": part.proposed, "invented": part.invented,
            "invented_rate": _r(part.invented / part.proposed) if part.proposed else None, "detail": part.detail}


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def run_workflow_eval(settings: EvalSettings, progress: Callable[[int, int], None] | None = None) -> dict:
    from secfm.workflows.context import DEFAULT, default_engine, resolve_store
    from secfm.workflows.store import knowledge_status

    gold_dir = Path(settings.gold) if settings.gold else GOLD_DIR
    from secfm.outputs import claim_folder, write_text
    from secfm.provenance import PROVENANCE_KEY, Recorder

    out = claim_folder(Path(settings.out), ours_if=(RUN,))  # never a user's folder (their metrics.json stays)
    started = time.time()
    # accuracy figures do not depend on the machine's load: recorded, never refused
    recorder = Recorder([gold_dir / name for name in ("alerts.jsonl", "configs.jsonl", "incidents.jsonl")], allow_busy=True,
                        command=settings.command())
    n_alerts = len(_load_jsonl(gold_dir / "alerts.jsonl", settings.limit))
    n_configs = len(_load_jsonl(gold_dir / "configs.jsonl", settings.limit))
    n_incidents = len(_load_jsonl(gold_dir / "incidents.jsonl", settings.limit))
    total = n_alerts + n_configs + n_incidents
    engine = default_engine(settings.model, settings.engine, settings.adapter, settings.endpoint) if settings.use_model else None
    store = resolve_store(DEFAULT) if settings.use_kb else False
    run = {"command": settings.command(), "settings": asdict(settings), "gold": str(gold_dir),
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "engine": engine.describe() if engine is not None else None, "knowledge": knowledge_status(store),
           "machine": {"python": platform.python_version(), "platform": platform.platform()}}
    (out / RUN).write_text(json.dumps(run, indent=2), encoding="utf-8")

    def tick(done: int, _stage: str) -> None:
        if progress:
            progress(done, total)

    timings: dict[str, float] = {}
    stage_metrics: dict[str, dict] = {}
    (out / PREDICTIONS).write_text("", encoding="utf-8")

    def finish_stage(name: str, preds: list[dict], stage: dict, seconds: float) -> None:
        """Append the stage's predictions and write partial metrics, so a stopped run keeps them."""
        timings[f"{name}_s"] = round(seconds, 1)
        stage_metrics[name] = stage
        with (out / PREDICTIONS).open("a", encoding="utf-8") as f:
            for rec in preds:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        partial = {"task": "workflows", "command": settings.command(), "partial": True, **stage_metrics, "timings": timings}
        write_text(out / METRICS, json.dumps(partial, indent=2))

    t = time.time()
    source = None if settings.use_head else (lambda text: [])
    triage_preds, triage_metrics = eval_triage(gold_dir, settings.limit, engine, store, settings.use_model,
                                               lambda d, s: tick(min(d, n_alerts), s), source)
    finish_stage("triage", triage_preds, triage_metrics, time.time() - t)
    t = time.time()
    config_preds, config_metrics = eval_configs(gold_dir, settings.limit, engine, store, settings.use_model, tick, n_alerts)
    finish_stage("config_review", config_preds, config_metrics, time.time() - t)
    t = time.time()
    incident_preds, incident_metrics = eval_incidents(gold_dir, settings.limit, engine, settings.use_model, tick, n_alerts + n_configs, source)
    finish_stage("incident_summary", incident_preds, incident_metrics, time.time() - t)
    proposed = triage_metrics["model"]["proposed"] + config_metrics["model"]["proposed"] + incident_metrics["model"]["proposed"]
    invented = triage_metrics["model"]["invented"] + config_metrics["model"]["invented"] + incident_metrics["model"]["invented"]
    metrics = {
        "task": "workflows",
        "command": settings.command(),
        "model": engine.describe() if engine is not None else None,
        "use_model": settings.use_model,
        "knowledge": run["knowledge"],
        "triage": triage_metrics,
        "config_review": config_metrics,
        "incident_summary": incident_metrics,
        "invented_entity_rate": _r(invented / proposed) if proposed else None,
        "invented_entities": {"invented": invented, "named_by_model": proposed},
        "timings": {**timings, "total_s": round(time.time() - started, 1)},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    metrics["headline"] = {"triage_severity_accuracy": triage_metrics["severity_accuracy"],
                           "triage_technique_f1": triage_metrics["technique"]["f1"],
                           "triage_technique_f1_parent": triage_metrics["technique_parent"]["f1"],
                           "config_finding_f1": config_metrics["finding"]["f1"],
                           "incident_ioc_recall": incident_metrics["ioc_extraction"]["recall"],
                           "use_model": settings.use_model, "use_head": settings.use_head}
    metrics[PROVENANCE_KEY] = recorder.stamp()
    write_text(out / METRICS, json.dumps(metrics, indent=2, default=str))
    return metrics


def summary_line(metrics: dict) -> str:
    t, c, s = metrics["triage"], metrics["config_review"], metrics["incident_summary"]
    inv = metrics["invented_entity_rate"]
    return (f"triage: severity accuracy {t['severity_accuracy']}, technique F1 {t['technique']['f1']} "
            f"(parent {t['technique_parent']['f1']}) | config review: precision {c['finding']['precision']}, "
            f"recall {c['finding']['recall']} | summaries: IOC recall {s['ioc_extraction']['recall']}, "
            f"id recall {s['id_extraction']['recall']} | invented-entity rate {inv if inv is not None else 'n/a (no model output)'}")

"""`secfm bench heads` (CVE part): analyze_cve latency and throughput, and the CVE heads' training time.

Timed: ``CveAnalyzer.predict_cwe`` + ``predict_cvss`` (features and both heads) for one real-length
description at a time (p50/p95) and for batches; descriptions are varied NVD-style texts written
here. Training time comes from the heads' results files (``training/results/heads-cve-*.json``:
the whole feed set, features cached). Written through :mod:`secfm.provenance` (refuses a busy
machine unless ``--allow-busy``).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from secfm.stats import percentile

DESCRIPTIONS = [
    "A SQL injection in the login form of Acme CMS 2.1 lets remote attackers run arbitrary SQL commands via the username parameter.",
    "Cross-site scripting (XSS) vulnerability in the search page of Foo Portal before 3.4.2 allows remote attackers to inject arbitrary web script or HTML via the q parameter.",
    "A use-after-free in the USB driver of the Linux kernel before 6.1.4 allows a local user to crash the system or possibly escalate privileges.",
    "Buffer overflow in the TIFF parser of ImageLib 2.3 allows remote attackers to execute arbitrary code via a crafted image file.",
    "Path traversal in the file download endpoint of Bar Wiki 1.9 allows authenticated users to read arbitrary files via ../ sequences.",
    "An issue was discovered in Zed Router firmware 1.0.3: a hard-coded password for the telnet service allows remote attackers to obtain root access.",
    "Improper authentication in the REST API of Nimbus CRM 5.2 lets remote attackers bypass login by sending a crafted JWT with the none algorithm.",
    "A server-side request forgery (SSRF) in the webhook feature of Omni Desk 4.1 allows attackers to reach internal services.",
    "Deserialization of untrusted data in the session handler of Qux Forum 2.0 allows remote code execution via a crafted cookie.",
    "The Baz Shop mobile app 3.2 for Android stores user credentials in cleartext in a world-readable file, letting other apps read them.",
    "OS command injection in the diagnostics page of the NetBox NAS web interface allows authenticated administrators to run arbitrary commands via the host field.",
    "Missing authorization in the admin panel of Zed Blog 7.0 allows any logged-in user to delete posts of other users.",
    "An out-of-bounds read in the font rendering of PDFView 11 allows a remote attacker to disclose memory via a crafted PDF document.",
    "Cross-site request forgery (CSRF) in the settings page of Foo Portal 3.1 allows attackers to change the administrator email address.",
    "Unrestricted upload of files with a dangerous type in the avatar feature of Bar Wiki allows remote attackers to upload and run PHP code.",
    "An integer overflow in the packet parser of SmartCam firmware 2.4 allows adjacent attackers to cause a denial of service.",
]


def run_cve_bench(out: str | Path | None, *, repeats: int = 60, batch: int = 32, allow_busy: bool = False,
                  results_dir: str | Path = "training/results", analyzer=None) -> dict:
    from secfm.evals.bench import latency_stats, timed_calls
    from secfm.provenance import recording
    from secfm.workflows.cve_analysis import CveAnalyzer

    data_files = [p for p in Path(results_dir).glob("heads-cve-*.json") if not p.name.endswith("-excl.json")]
    with recording(data_files=data_files, allow_busy=allow_busy) as rec:
        t0 = time.perf_counter()
        analyzer = analyzer or CveAnalyzer.load()
        load_s = time.perf_counter() - t0

        def analyse(texts):
            analyzer.predict_cwe(texts)
            analyzer.predict_cvss(texts)

        for d in DESCRIPTIONS[:4]:  # warm up
            analyse([d])
        single = timed_calls(lambda d: analyse([d]), DESCRIPTIONS, repeats)
        texts = [DESCRIPTIONS[i % len(DESCRIPTIONS)] for i in range(batch)]
        batched = timed_calls(analyse, [texts], max(3, repeats // 10))
        training = {}
        for f in data_files:
            r = json.loads(f.read_text(encoding="utf-8"))
            training[r["task"]] = {"seconds_total": r.get("seconds"), "designs_tried": len(r["selection"]["tried"]),
                                   "seconds_per_design": {t["design"]["name"]: t["seconds"] for t in r["selection"]["tried"]},
                                   "train_rows": r["data"]["rows"]["train"], "results_file": str(f)}
        heads = analyzer.describe()
        res = {
            "what": "CVE analysis of one description: CWE head (top 5) and CVSS head (8 metrics, vector, base score)",
            "heads": heads,
            "uses_hidden_states": any(h.get("uses_hidden") for h in heads.values()),
            "load_seconds": round(load_s, 3),
            "descriptions": {"count": len(DESCRIPTIONS), "chars_mean": round(statistics.mean(len(d) for d in DESCRIPTIONS), 1)},
            "single": latency_stats(single, per_call=1, rate_digits=1),
            "batch": {"size": batch, **latency_stats(batched, per_call=batch, rate_digits=1)},
            "target": {"p50_single_ms": 50, "met": 1000 * percentile(single, 0.5) < 50},
            "training": training,
        }
        if out is not None:
            out = Path(out)
            res = rec.write_json(out, res)
            rec.write_text(out.with_suffix(".md"), bench_markdown(res))
    return res


def bench_markdown(r: dict) -> str:
    lines = ["# Benchmark: CVE analysis (CWE and CVSS heads)", "", f"Made by: `{r.get('provenance', {}).get('command', 'secfm bench heads --task cve')}`", "",
             "Heads: " + "; ".join(f"{k}: {v['labels']} labels, " + (f"layers {v['layers']} + TF-IDF" if v["uses_hidden"] else "TF-IDF text features, no language model")
                                   for k, v in r["heads"].items()) + f". Load: {r['load_seconds']} s.", "",
             "| case | p50 ms | p95 ms | texts/s |", "|---|---|---|---|",
             f"| 1 description per call | {r['single']['p50_ms']} | {r['single']['p95_ms']} | {r['single']['texts_per_s']} |",
             f"| {r['batch']['size']} descriptions per call | {r['batch']['p50_ms']} | - | {r['batch']['texts_per_s']} |", "",
             f"Target p50 < {r['target']['p50_single_ms']} ms for one description: {'met' if r['target']['met'] else 'NOT met'}.", ""]
    if r["training"]:
        lines += ["Training on the whole feed set (features cached):", "", "| head | train rows | designs tried | total s |", "|---|---|---|---|"]
        for task, t in r["training"].items():
            lines.append(f"| {task} | {t['train_rows']:,} | {t['designs_tried']} | {t['seconds_total']} |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["DESCRIPTIONS", "bench_markdown", "run_cve_bench"]

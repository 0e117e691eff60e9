"""The CVE tab: a CVE id or a vulnerability description -> likely CWE ids, CVSS v3.1 vector and
score, and NVD's own facts (with links) for a known CVE."""

from __future__ import annotations

import html

import gradio as gr

from secfm.app.sessions import Session
from secfm.app.ui_common import json_box, json_text, user_errors

SAMPLE = ("A SQL injection in the login form of Acme CMS 2.1 lets remote attackers run arbitrary SQL commands "
          "via the username parameter.")


def _md(text: str) -> str:
    """Untrusted text shown as text, never as markup."""
    return html.escape(text or "").replace("|", "&#124;").replace("\n", " ")


def cve_markdown(result) -> str:
    """A compact card for one :class:`~secfm.workflows.cve_analysis.CveAnalysis` (also for chat cards)."""
    lines = []
    if result.cve_id:
        url = f"https://nvd.nist.gov/vuln/detail/{result.cve_id}"
        lines.append(f"### [{result.cve_id}]({url})" + ("" if result.found else " (not in the local CVE store)"))
    if result.nvd is not None:
        n = result.nvd
        lines += ["", f"{_md(n.description)}", ""]
        cwes = ", ".join(f"[{c.id}]({c.url}) {_md(c.name or '')}".strip() for c in n.cwes) or "none"
        lines.append(f"- **NVD CWE:** {cwes}" + (f" (source: {_md(n.cwe_source)})" if n.cwe_source else ""))
        if n.cvss_vector:
            lines.append(f"- **NVD CVSS:** {n.cvss_score} {n.cvss_severity} `{n.cvss_vector}` (source: {_md(n.cvss_source)})")
        lines.append(f"- published {n.published[:10]}, from {_md(n.source_file)}. _{n.notice}_")
    for note in result.notes:
        lines += ["", f"> {_md(note)}"]
    if result.cwe:
        lines += ["", "**Predicted CWE** (CWE head)", "", "| # | CWE | name | probability |", "|---|---|---|---|"]
        lines += [f"| {h.rank} | [{h.id}]({h.url}) | {_md(h.name)} | {h.score:.3f} |" for h in result.cwe]
    if result.cvss is not None:
        c = result.cvss
        lines += ["", f"**Predicted CVSS v3.1:** {c.base_score} {c.severity} `{c.vector}`", "",
                  "| metric | value | probability |", "|---|---|---|"]
        lines += [f"| {m.name} ({m.metric}) | {m.value_name} ({m.value}) | {m.score:.3f} |" for m in c.metrics]
    return "\n".join(lines) or "Nothing to show."


def build_cve_tab(backend, state: gr.State) -> dict:
    with gr.Tab("CVE", id="cve", elem_id="tab-cve"):
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                text = gr.Textbox(label="CVE id or vulnerability description", lines=8, max_lines=30,
                                  elem_id="cve-input", placeholder="CVE-2021-44228, or paste a description")
                with gr.Row():
                    load = gr.Button("Load sample", size="sm", elem_id="cve-sample")
                    run = gr.Button("Analyse", variant="primary", elem_id="cve-run")
            with gr.Column(scale=3, min_width=420):
                out = gr.Markdown(label="CVE analysis", elem_id="cve-output", container=True, min_height=200)
                with gr.Accordion("JSON", open=False):
                    raw = json_box("cve-json")

    load.click(lambda: SAMPLE, None, [text], queue=False, api_visibility="private")

    @user_errors
    def on_analyse(body: str, session: Session, request: gr.Request):
        from secfm.inputs import check_text
        from secfm.workflows.cve_analysis import analyze_cve

        session.claim(request)
        result = analyze_cve(check_text(body or "", "CVE id or description").strip())
        session.results["cve"] = result.model_dump(mode="json")
        return cve_markdown(result), json_text(result.model_dump(mode="json")), session

    run.click(on_analyse, [text, state], [out, raw, state], api_name="cve", concurrency_id="heads")
    return {"input": text, "run": run, "output": out, "json": raw}


__all__ = ["build_cve_tab", "cve_markdown"]

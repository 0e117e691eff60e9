"""secfm.workflows: the analyst's daily work, done by the model with retrieval and checked by code.

    from secfm.workflows import triage_alerts, summarize_incident, review_config, extract_attack

* :func:`triage_alerts` (JSON, JSONL, CSV, Zeek or raw log lines -> severity, techniques,
  evidence, next steps, related knowledge, ranked queue);
* :func:`summarize_incident` (map-reduce summary for an executive or an analyst, IOCs and ids
  extracted and checked, invented entities flagged);
* :func:`review_config` (deterministic rules per config kind plus a grounded model review);
* :func:`extract_attack` (ATT&CK techniques from the classifier head; its own module);
* :func:`analyze_cve` (a CVE id or vulnerability description -> CWE ids, CVSS vector and score,
  NVD's own facts; Pydantic in and out);
* :class:`ChatPipeline` / :func:`answer_question` (the grounded analyst chat: tools first, every fact
  with its source, the model's phrasing checked against what the tools returned);
* the knowledge base: :func:`build_kb`, :class:`KnowledgeStore`.

Each workflow is also a LangChain runnable (``triage_runnable()``, ``summarize_runnable()``,
``review_runnable()``) with Pydantic input and output types. Names are resolved lazily, so
``import secfm.workflows`` stays light.
"""

from __future__ import annotations

from secfm.lazy import lazy_exports

_EXPORTS = {
    "triage_alerts": "secfm.workflows.triage",
    "triage_runnable": "secfm.workflows.triage",
    "summarize_incident": "secfm.workflows.summarize",
    "summarize_runnable": "secfm.workflows.summarize",
    "summarize_incidents": "secfm.workflows.summarize",
    "review_config": "secfm.workflows.review",
    "review_runnable": "secfm.workflows.review",
    "review_configs": "secfm.workflows.review",
    "detect_kind": "secfm.workflows.config_rules",
    "parse_alerts": "secfm.workflows.alerts",
    "build_kb": "secfm.workflows.store",
    "KnowledgeStore": "secfm.workflows.store",
    "extract_attack": "secfm.workflows.attack_extraction",
    "analyze_cve": "secfm.workflows.cve_analysis",
    "analyze_cves": "secfm.workflows.cve_analysis",
    "CveAnalysis": "secfm.workflows.cve_analysis",
    "CveAnalysisRequest": "secfm.workflows.cve_analysis",
    "ChatPipeline": "secfm.workflows.chat",
    "answer_question": "secfm.workflows.chat",
    "ChatAnswer": "secfm.workflows.chat_schemas",
    "Conversation": "secfm.workflows.chat_schemas",
    "TriageResult": "secfm.workflows.schemas",
    "IncidentSummary": "secfm.workflows.schemas",
    "ConfigReview": "secfm.workflows.schemas",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

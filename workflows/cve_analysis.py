"""CVE analysis: a vulnerability description (or a CVE id) -> likely CWE weaknesses and a CVSS v3.1 vector.

    from secfm.workflows import analyze_cve
    result = analyze_cve("SQL injection in the login form of Acme CMS ...")
    result.cwe[0].id, result.cvss.vector, result.cvss.base_score
    analyze_cve("CVE-2021-44228").nvd          # NVD's own CWE and CVSS, with their source

Predictions come from the CVE heads trained on NVD (``secfm train head --task cwe|cvss``; the
shipped ones load offline from the package): the top CWE ids with names and probabilities, the
eight CVSS base metrics with the probability of each chosen value, the assembled vector and its
base score (the ``cvss`` package). For a CVE id the local CVE store (``secfm kb add-nvd``) gives
the description and NVD's own CWE/CVSS; without it the answer says how to add the data.
Descriptions are data: nothing in them is followed as an instruction.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from secfm.errors import SecfmError

METRIC_NAMES = {"AV": "Attack Vector", "AC": "Attack Complexity", "PR": "Privileges Required",
                "UI": "User Interaction", "S": "Scope", "C": "Confidentiality", "I": "Integrity", "A": "Availability"}
VALUE_NAMES = {
    "AV": {"N": "Network", "A": "Adjacent", "L": "Local", "P": "Physical"}, "AC": {"L": "Low", "H": "High"},
    "PR": {"N": "None", "L": "Low", "H": "High"}, "UI": {"N": "None", "R": "Required"},
    "S": {"U": "Unchanged", "C": "Changed"}, "C": {"N": "None", "L": "Low", "H": "High"},
    "I": {"N": "None", "L": "Low", "H": "High"}, "A": {"N": "None", "L": "Low", "H": "High"},
}
MAX_TEXT_CHARS = 20_000
NVD_URL = "https://nvd.nist.gov/vuln/detail/{}"
CWE_URL = "https://cwe.mitre.org/data/definitions/{}.html"


# ---------------------------------------------------------------------------------------------
# in and out
# ---------------------------------------------------------------------------------------------
class CveAnalysisRequest(BaseModel):
    """A description to analyse, or a CVE id to look up (and analyse its NVD description)."""

    text: str | None = Field(None, max_length=200_000, description="Vulnerability description (free text).")
    cve_id: str | None = Field(None, max_length=40, description="A CVE id, e.g. CVE-2021-44228.")
    top_k: int = Field(5, ge=1, le=20, description="How many CWE ids to return.")

    @field_validator("cve_id")
    @classmethod
    def _cve(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from secfm.knowledge.ids import normalize_id

        parsed = normalize_id(v)
        if parsed is None or parsed[1] != "cve":
            raise ValueError(f"not a CVE id: {v!r} (expected CVE-YYYY-NNNN)")
        return parsed[0]

    @model_validator(mode="after")
    def _one(self) -> CveAnalysisRequest:
        if self.text is not None and not self.text.strip():
            self.text = None
        if self.text is None and self.cve_id is None:
            raise ValueError("give a description (text) or a CVE id")
        if self.text is not None and len(self.text) > MAX_TEXT_CHARS:
            raise ValueError(f"the description is longer than {MAX_TEXT_CHARS} characters")
        return self


class CweScore(BaseModel):
    id: str
    name: str
    score: float = Field(description="Probability under the CWE head.")
    rank: int
    url: str


class CvssMetricValue(BaseModel):
    metric: str  # AV
    name: str  # Attack Vector
    value: str  # N
    value_name: str  # Network
    score: float = Field(description="Probability of this value under the CVSS head.")


class CvssPrediction(BaseModel):
    vector: str
    base_score: float
    severity: str
    metrics: list[CvssMetricValue]


class CweRef(BaseModel):
    id: str
    name: str | None = None
    url: str


class NvdFacts(BaseModel):
    """What NVD itself says about a CVE (from the local CVE store)."""

    cve_id: str
    url: str
    published: str
    last_modified: str
    description: str
    cwes: list[CweRef]
    cwe_source: str | None = None
    cvss_vector: str | None = None
    cvss_score: float | None = None
    cvss_severity: str | None = None
    cvss_source: str | None = None
    source_file: str
    notice: str


class CveAnalysis(BaseModel):
    cve_id: str | None = None
    text: str | None = Field(None, description="The description analysed (the input, or NVD's for a CVE id).")
    description_source: str | None = Field(None, description="input or nvd")
    cwe: list[CweScore] = Field(default_factory=list, description="Predicted CWE ids, best first.")
    cvss: CvssPrediction | None = Field(None, description="Predicted CVSS v3.1 vector and base score.")
    nvd: NvdFacts | None = Field(None, description="NVD's own CWE/CVSS for a known CVE id.")
    found: bool | None = Field(None, description="For a CVE id: whether the local CVE store holds it.")
    heads: dict = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def severity(score: float) -> str:
    if score == 0:
        return "None"
    if score < 4.0:
        return "Low"
    if score < 7.0:
        return "Medium"
    if score < 9.0:
        return "High"
    return "Critical"


# ---------------------------------------------------------------------------------------------
# the heads
# ---------------------------------------------------------------------------------------------
def open_cve_head(task: str, head: str | Path | None = None, model: str | None = None):
    """The CWE or CVSS head (``task``): the folder ``head`` or the one shipped for ``model``; its
    base is checked where it runs (only heads reading hidden states)."""
    from secfm.heads import open_head

    return open_head(task, head, model, check_base=False,
                     train_hint=f"train one with `secfm train head --task {task} --cve-data DIR --out HEAD` and pass --{task}-head HEAD")


class CveAnalyzer:
    """The CWE and CVSS heads, run together; ``predict_cwe`` / ``predict_cvss`` take texts."""

    def __init__(self, cwe_head=None, cvss_head=None, engine=None, batch_size: int = 16):
        self.cwe_head, self.cvss_head = cwe_head, cvss_head
        self._engine = engine
        self.batch_size = batch_size
        self._cwe_names = None
        for h in (cwe_head, cvss_head):
            if h is not None and h.needs_hidden and engine is not None:
                h.check_base(engine.model_name, getattr(engine, "adapter", None))

    @classmethod
    def load(cls, cwe_head: str | Path | None = None, cvss_head: str | Path | None = None, model: str | None = None,
             engine=None, tasks: Sequence[str] = ("cwe", "cvss")) -> CveAnalyzer:
        model = model or (engine.model_name if engine is not None else None)
        return cls(open_cve_head("cwe", cwe_head, model) if "cwe" in tasks else None,
                   open_cve_head("cvss", cvss_head, model) if "cvss" in tasks else None, engine)

    def _scores(self, head, texts: list[str]) -> np.ndarray:
        if head.needs_hidden and self._engine is None:
            self._engine = head.own_engine()
        return head.run(texts, self._engine, batch_size=self.batch_size)

    def predict_cwe(self, texts: Sequence[str], top_k: int = 5) -> list[list[CweScore]]:
        if self.cwe_head is None:
            raise SecfmError("no CWE head loaded")
        from secfm.knowledge import load_cwe

        kb = load_cwe()
        P = self._scores(self.cwe_head, list(texts))
        labels = self.cwe_head.labels
        out = []
        for row in P:
            hits = []
            for rank, j in enumerate(np.argsort(-row)[:top_k], start=1):
                cid = labels[j]
                w = kb.get(cid) or kb.category(cid)
                hits.append(CweScore(id=cid, name=w.name if w else cid, score=round(float(row[j]), 4), rank=rank,
                                     url=CWE_URL.format(cid.split("-", 1)[1])))
            out.append(hits)
        return out

    def predict_cvss(self, texts: Sequence[str]) -> list[CvssPrediction]:
        if self.cvss_head is None:
            raise SecfmError("no CVSS head loaded")
        from secfm.evals.metrics import cvss_base_score
        from secfm.training.cve_heads import cvss_predictions

        P = self._scores(self.cvss_head, list(texts))
        out = []
        for vector, values in cvss_predictions(
                P, self.cvss_head.labels, self.cvss_head.manifest.decoding, self.cvss_head.manifest.decoding_tolerance):
            score = cvss_base_score(vector)
            metrics = [CvssMetricValue(metric=m, name=METRIC_NAMES[m], value=v, value_name=VALUE_NAMES[m][v],
                                       score=round(p, 4)) for m, (v, p) in values.items()]
            out.append(CvssPrediction(vector=vector, base_score=score, severity=severity(score), metrics=metrics))
        return out

    def describe(self) -> dict:
        out = {}
        for task, h in (("cwe", self.cwe_head), ("cvss", self.cvss_head)):
            if h is not None:
                m = h.manifest
                out[task] = {"path": str(h.path), "labels": len(m.labels), "uses_hidden": m.uses_hidden,
                             "layers": list(m.layers) if m.uses_hidden else [], "text_features": bool(m.text_features),
                             **({"decoding": m.decoding, "decoding_tolerance": m.decoding_tolerance} if task == "cvss" else {}),
                             "trained_cves": (m.trained_cves or {}).get("count"), "created": m.created}
        return out


_SHARED: dict[tuple, CveAnalyzer] = {}
_SHARED_LOCK = threading.Lock()


def default_analyzer(model: str | None = None, engine=None) -> CveAnalyzer:
    """One analyzer per (model, engine) per process, on the shipped heads."""
    key = (model, id(engine) if engine is not None else None)
    with _SHARED_LOCK:
        got = _SHARED.get(key)
        if got is None:
            got = CveAnalyzer.load(model=model, engine=engine)
            _SHARED[key] = got
        return got


# ---------------------------------------------------------------------------------------------
# the workflow
# ---------------------------------------------------------------------------------------------
def nvd_facts(record) -> NvdFacts:
    from secfm.knowledge import load_cwe
    from secfm.knowledge.nvd import NVD_NOTICE

    kb = load_cwe()
    cwes = []
    for cid in record.cwes:
        w = kb.get(cid) or kb.category(cid)
        cwes.append(CweRef(id=cid, name=w.name if w else None, url=CWE_URL.format(cid.split("-", 1)[1])))
    return NvdFacts(cve_id=record.id, url=NVD_URL.format(record.id), published=record.published,
                    last_modified=record.last_modified, description=record.description, cwes=cwes,
                    cwe_source=record.cwe_source, cvss_vector=record.cvss_vector, cvss_score=record.cvss_score,
                    cvss_severity=severity(record.cvss_score) if record.cvss_score is not None else None,
                    cvss_source=record.cvss_source, source_file=record.source_file, notice=NVD_NOTICE)


def as_request(value: CveAnalysisRequest | dict | str, top_k: int | None = None) -> CveAnalysisRequest:
    """A request from a request, a dict, a bare CVE id or a description."""
    if isinstance(value, CveAnalysisRequest):
        return value if top_k is None else value.model_copy(update={"top_k": top_k})
    if isinstance(value, dict):
        return CveAnalysisRequest(**({**value, "top_k": top_k} if top_k is not None else value))
    if not isinstance(value, str):
        raise SecfmError("analyze_cve takes a description, a CVE id or a CveAnalysisRequest")
    from secfm.knowledge.ids import normalize_id

    parsed = normalize_id(value) if len(value) < 40 else None
    extra = {"top_k": top_k} if top_k is not None else {}
    if parsed is not None and parsed[1] == "cve":
        return CveAnalysisRequest(cve_id=parsed[0], **extra)
    return CveAnalysisRequest(text=value, **extra)


def analyze_cve(request: CveAnalysisRequest | dict | str, *, top_k: int | None = None, analyzer: CveAnalyzer | None = None,
                store=None, model: str | None = None, engine=None) -> CveAnalysis:
    """Analyse one vulnerability description or CVE id (see the module docstring)."""
    return analyze_cves([request], top_k=top_k, analyzer=analyzer, store=store, model=model, engine=engine)[0]


def analyze_cves(requests: Sequence[CveAnalysisRequest | dict | str], *, top_k: int | None = None,
                 analyzer: CveAnalyzer | None = None, store=None, model: str | None = None, engine=None) -> list[CveAnalysis]:
    """:func:`analyze_cve` for several inputs, the heads run once over all their descriptions."""
    from pydantic import ValidationError

    from secfm.knowledge.nvd import how_to_add, open_store

    try:
        reqs = [as_request(r, top_k) for r in requests]
    except ValidationError as exc:
        raise SecfmError(f"bad CVE analysis request: {exc.errors()[0]['msg']}") from None
    store = store if store is not None else open_store(create=False)
    results: list[CveAnalysis] = []
    to_predict: list[tuple[int, str]] = []
    for i, req in enumerate(reqs):
        res = CveAnalysis(cve_id=req.cve_id)
        text = req.text
        if req.cve_id is not None:
            record = store.lookup(req.cve_id) if store is not None else None
            res.found = record is not None
            if record is not None:
                res.nvd = nvd_facts(record)
                if text is None:
                    text, res.description_source = record.description, "nvd"
            elif store is None or not store.count():
                res.notes.append(how_to_add())
            else:
                res.notes.append(f"{req.cve_id} is not in the local CVE store ({store.count():,} CVEs); "
                                 "`secfm kb update nvd` fetches newer ones, or paste its description")
        if text is not None:
            res.text = text
            res.description_source = res.description_source or "input"
            to_predict.append((i, text))
        results.append(res)
    if to_predict:
        analyzer = analyzer or default_analyzer(model, engine)
        texts = [t for _, t in to_predict]
        cwe = analyzer.predict_cwe(texts, top_k=max(r.top_k for r in reqs)) if analyzer.cwe_head else None
        cvss = analyzer.predict_cvss(texts) if analyzer.cvss_head else None
        heads = analyzer.describe()
        for k, (i, _) in enumerate(to_predict):
            if cwe is not None:
                results[i].cwe = cwe[k][: reqs[i].top_k]
            if cvss is not None:
                results[i].cvss = cvss[k]
            results[i].heads = heads
    return results


def analyze_cve_ids_in(text: str, *, limit: int = 10, analyzer: CveAnalyzer | None = None, store=None,
                       model: str | None = None, engine=None) -> list[CveAnalysis]:
    """Every CVE id mentioned in ``text`` (at most ``limit``), analysed; [] when none."""
    from secfm.knowledge.nvd import cve_ids_in

    ids = cve_ids_in(text)[:limit]
    if not ids:
        return []
    return analyze_cves(ids, analyzer=analyzer, store=store, model=model, engine=engine)


def analyze_cves_in_texts(texts: Sequence[str], *, limit: int = 10, analyzer: CveAnalyzer | None = None,
                          store=None) -> list[list[CveAnalysis]]:
    """For each text, the analyses of the CVE ids it mentions (at most ``limit`` each), from one
    batched call. Never raises: when the heads cannot run, each analysis carries NVD's facts (if
    stored) and a note saying why there is no prediction. Workflows (triage, summaries, chat)
    call this for every CVE id they see."""
    from secfm.knowledge.nvd import cve_ids_in

    per_text = [cve_ids_in(t or "")[:limit] for t in texts]
    unique = list(dict.fromkeys(c for ids in per_text for c in ids))
    if not unique:
        return [[] for _ in texts]
    try:
        results = analyze_cves(unique, analyzer=analyzer, store=store)
    except Exception as exc:  # noqa: BLE001 - an addition to the workflow, never its failure
        from secfm.knowledge.nvd import lookup, open_store

        note = f"CVE analysis unavailable: {exc}"
        results = []
        st = store if store is not None else open_store(create=False)
        for cve_id in unique:
            record = lookup(cve_id, st) if st is not None else None
            results.append(CveAnalysis(cve_id=cve_id, found=record is not None, nvd=nvd_facts(record) if record else None,
                                       notes=[note]))
    by_id = dict(zip(unique, results))
    return [[by_id[c] for c in ids] for ids in per_text]


__all__ = ["CveAnalysis", "analyze_cves_in_texts", "CveAnalysisRequest", "CveAnalyzer", "CvssMetricValue", "CvssPrediction", "CweScore",
           "NvdFacts", "analyze_cve", "analyze_cve_ids_in", "analyze_cves", "default_analyzer", "open_cve_head", "severity"]

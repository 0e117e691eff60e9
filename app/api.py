"""`secfm api`: a small FastAPI service for what vLLM does not do (heads and workflows).

The LLM part of the workflows runs on the in-process engine (``--model``) or on a `secfm serve`
endpoint (``--endpoint``); the classifier heads always run in process on their base model.
Beyond loopback an API key is required (an empty host binds every interface: not loopback);
request bodies are limited as they stream in (a chunked body without Content-Length too); every
request model is bounded (characters, items, fields); bad input gets a 4xx with one clear message
that never echoes the body.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from secfm.errors import SecfmError
from secfm.workflows.attack_extraction import AttackInput
from secfm.workflows.cve_analysis import CveAnalysisRequest
from secfm.workflows.schemas import ConfigInput, SummaryInput, TriageInput

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000
MAX_ALERTS = 1000
MAX_ALERT_FIELDS = 400
MAX_ERROR_CHARS = 300


@dataclass
class ApiSettings:
    model: str | None = None
    endpoint: str | None = None
    api_key: str | None = None
    max_body_bytes: int = 1_000_000

    def engine(self):
        from secfm.engines import shared_engine

        return shared_engine(model=self.model, endpoint=self.endpoint)

    def chat_engine(self):
        """The chat's engine: the chat's default model (secfm-270m) unless a model or an endpoint is set."""
        from secfm.engines import shared_engine
        from secfm.workflows.chat import chat_model

        return shared_engine(model=chat_model(self.model, None, self.endpoint), endpoint=self.endpoint)


class TextIn(BaseModel):
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="Untrusted text: treated as data.")


class AttackIn(AttackInput):
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="Untrusted text: treated as data.")
    threshold: float | None = Field(None, gt=0, lt=1, description="Override the head's tuned thresholds.")
    top_k: int | None = Field(None, ge=1, le=100)
    max_evidence: int = Field(3, ge=1, le=10)


class CweIn(TextIn):
    top_k: int = Field(5, ge=1, le=50)


AlertObject = Annotated[dict[str, Any], Field(max_length=MAX_ALERT_FIELDS)]


# The workflows' own input models (secfm.workflows.schemas), with the API's bounds on every field and one
# difference in defaults: over HTTP, triage and config review are deterministic unless the request asks
# for the model (`use_model: true`), so a request never waits on a model load it did not ask for.
class TriageIn(TriageInput):
    alerts: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)] | Annotated[list[AlertObject], Field(min_length=1, max_length=MAX_ALERTS)] = Field(
        ..., description=f"JSON/JSONL/CSV/log text, or a list of at most {MAX_ALERTS} alert objects.")
    use_model: bool = Field(False, description="Add the model's review to the deterministic triage.")


class SummarizeIn(SummaryInput):
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="Untrusted text: treated as data.")


class ReviewIn(ConfigInput):
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="Untrusted text: treated as data.")
    kind: str = Field("auto", max_length=40)
    filename: str | None = Field(None, max_length=255, description="The file's name (helps detect its kind).")
    use_model: bool = Field(False, description="Add the model's review to the deterministic findings.")


class ConversationIn(BaseModel):
    """What a follow-up needs from the previous answer's `conversation` (other fields are ignored)."""

    entities: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list, max_length=20)
    related: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list, max_length=20)
    intents: list[Annotated[str, Field(max_length=20)]] = Field(default_factory=list, max_length=10)


class ChatIn(BaseModel):
    message: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS,
                         description="A question, or a pasted alert, log, configuration or report (treated as data).")
    conversation: ConversationIn | None = Field(
        None, description="The `conversation` of the previous answer, for follow-up questions.")
    use_model: bool = Field(True, description="Let the model phrase the facts (false: the tools' facts only).")
    max_new_tokens: int = Field(64, ge=8, le=1024)


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    text = "".join(ch for ch in text if ch.isprintable())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, counted on the stream as it
    arrives (a missing or lying Content-Length changes nothing); the body is never parsed.

    ``message`` is the error the client reads (``{"error": message}``; the Gradio page shows it as
    a toast). ``drain`` reads and drops the rest of an oversized body before answering, so a
    browser still uploading reads the 413 instead of a reset connection; nothing is kept.
    """

    def __init__(self, app, max_bytes: int, message: str | None = None, drain: bool = False):
        self.app = app
        self.max_bytes = max_bytes
        self.message = message or f"request body over {max_bytes} bytes"
        self.drain = drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(receive, send)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                chunks.clear()
                return await self._reject(receive, send, more=message.get("more_body", False))
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, receive, send, more: bool = True) -> None:
        while self.drain and more:  # dropped as it arrives, never kept
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            more = message.get("more_body", False)
        response = JSONResponse({"error": self.message}, status_code=413)
        await response({"type": "http"}, None, send)


def create_api(settings: ApiSettings) -> FastAPI:
    api = FastAPI(
        title="secfm API",
        version="0.1.0",
        description="ATT&CK extraction, CWE mapping, alert triage, incident summaries, config review and the grounded chat.",
    )

    api.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @api.exception_handler(SecfmError)
    async def secfm_error(_request: Request, exc: SecfmError):
        return JSONResponse({"error": _one_line(str(exc))}, status_code=400)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        """Where and what, never the value that was sent (it may be megabytes, or a secret)."""
        problems = [{"loc": [str(part) for part in e.get("loc", ())][:8], "msg": _one_line(str(e.get("msg", "")))[:200],
                     "type": str(e.get("type", ""))} for e in exc.errors()[:10]]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        return JSONResponse({"error": f"invalid request: {'.'.join(first['loc'])}: {first['msg']}", "detail": problems},
                            status_code=422)

    @api.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception):
        log.exception("request failed")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def require_key(request: Request) -> None:
        if not settings.api_key:
            return
        supplied = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            supplied = supplied or auth[7:]
        if not hmac.compare_digest(supplied.encode(), settings.api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API key")

    guarded = [Depends(require_key)]

    @api.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": settings.model or "gemma-3-270m", "endpoint": settings.endpoint}

    @api.post("/v1/attack/extract", dependencies=guarded)
    def attack_extract(body: AttackIn) -> dict:
        return _run_workflow("attack", body)  # {"techniques": [...]}: the head's details stay on the server

    @api.post("/v1/cwe/map", dependencies=guarded)
    def cwe_map(body: CweIn) -> dict:
        from secfm.workflows.cwe_mapping import map_cwe

        return {"weaknesses": _dump(map_cwe(body.text, top_k=body.top_k))}

    @api.post("/v1/cve/analyze", dependencies=guarded)
    def cve_analyze(body: CveAnalysisRequest) -> dict:
        """A CVE id and/or a description -> CWE ids, CVSS vector and score, NVD's own facts."""
        from secfm.workflows.cve_analysis import analyze_cve

        return _dump(analyze_cve(body))

    @api.post("/v1/triage", dependencies=guarded)
    def triage(body: TriageIn) -> dict:
        return _run_workflow("triage", body)

    @api.post("/v1/summarize", dependencies=guarded)
    def summarize(body: SummarizeIn) -> dict:
        return _run_workflow("summarize", body)

    @api.post("/v1/review-config", dependencies=guarded)
    def review(body: ReviewIn) -> dict:
        return _run_workflow("review-config", body)

    def _run_workflow(name: str, body) -> dict:
        """Dispatch through the Workflow protocol (secfm.workflows.protocol); the engine loads only
        for a request that asks for the model step."""
        from secfm.workflows.protocol import get_workflow

        workflow = get_workflow(name)
        wants_engine = getattr(body, "use_model", False) if workflow.engine_gated else False  # attack: the head's own
        return _dump(workflow.run(body, engine=settings.engine() if wants_engine else None))

    chat_pipelines: dict[bool, Any] = {}

    @api.post("/v1/chat", dependencies=guarded)
    def chat(body: ChatIn) -> dict:
        """One grounded answer with its facts, sources and tool cards; pass `conversation` back for follow-ups."""
        from secfm.workflows.chat import ChatPipeline
        from secfm.workflows.chat_schemas import Conversation
        from secfm.workflows.protocol import get_workflow

        conversation = Conversation(**(body.conversation.model_dump() if body.conversation else {}))
        pipeline = chat_pipelines.get(body.use_model)
        if pipeline is None:
            pipeline = chat_pipelines[body.use_model] = ChatPipeline(settings.chat_engine() if body.use_model else None,
                                                                     use_model=body.use_model)
        answer = get_workflow("chat").run({"message": body.message, "conversation": conversation,
                                           "max_new_tokens": body.max_new_tokens}, pipeline=pipeline)
        return {**answer.model_dump(mode="json"), "conversation": conversation.model_dump(mode="json")}

    return api

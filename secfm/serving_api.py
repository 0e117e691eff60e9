"""The OpenAI-compatible HTTP server `secfm serve` runs on a CPU (vLLM's own server on a GPU).

It serves one engine (the transformers engine, continuously batched: concurrent requests decode
together) over the OpenAI protocol: ``/v1/models``, ``/v1/models/{id}``, ``/v1/completions``
(a prompt or a list of prompts, ``n``, ``echo`` + ``logprobs`` for prompt log-probabilities,
streaming) and ``/v1/chat/completions`` (streaming, ``n``, ``logprobs``, ``response_format``
``json_object``/``json_schema`` and a forced ``tool_choice`` honoured with constrained decoding).
Every field it does not honour is refused with a 400 that names it, never silently ignored.
A client that disconnects cancels its requests (their batch slots free at the next step).
With an API key every request needs ``Authorization: Bearer KEY``; request bodies, prompts,
``n`` and ``max_tokens`` are bounded.

Run as ``python -m secfm.serving_api --model NAME --port P`` (what `secfm serve` starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass

from fastapi import Request  # at module level: FastAPI resolves the (string) annotations here

from secfm.engines import Engine, EngineUnsupported, SamplingParams
from secfm.errors import SecfmError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2_000_000
MAX_PROMPTS = 64
MAX_N = 16
MAX_CHARS = 400_000


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_prompts: int = MAX_PROMPTS
    max_n: int = MAX_N
    max_chars: int = MAX_CHARS


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


# ---------------------------------------------------------------------------------------------
# request checks
# ---------------------------------------------------------------------------------------------
_REFUSED_UNLESS_DEFAULT = {
    "frequency_penalty": 0, "presence_penalty": 0, "logit_bias": None, "suffix": None, "best_of": None,
    "functions": None, "function_call": None, "audio": None, "modalities": None, "prediction": None,
}


def _refuse_unsupported(body: dict) -> None:
    for name, default in _REFUSED_UNLESS_DEFAULT.items():
        value = body.get(name, default)
        if value not in (default, None, {}, [], 0) and not (name == "best_of" and value == body.get("n", 1)):
            raise ApiError(400, f"'{name}' is not supported by this server (use repetition_penalty / "
                                f"no_repeat_ngram_size for repetition control)" if "penalty" in name else
                           f"'{name}' is not supported by this server", name)


def _number(body: dict, name: str, default, kind=float, low=None, high=None):
    value = body.get(name, default)
    if value is None:
        return default
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"'{name}' must be a number", name) from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ApiError(400, f"'{name}' must be between {low} and {high}", name)
    return value


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 16:
        return tuple(stop)
    raise ApiError(400, "'stop' must be a string or a list of at most 16 strings", "stop")


def sampling_from(body: dict, engine: Engine, logprobs: int | None = None, default_max: int = 16) -> SamplingParams:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", default_max, int, 0, engine.max_context)
    try:
        return SamplingParams(
            max_new_tokens=max(1, max_tokens),
            temperature=_number(body, "temperature", 1.0, float, 0, 2),
            top_p=_number(body, "top_p", 1.0, float, 1e-6, 1),
            seed=_number(body, "seed", None, int),
            stop=_stops(body),
            repetition_penalty=_number(body, "repetition_penalty", 1.0, float, 0.01, 10),
            no_repeat_ngram_size=_number(body, "no_repeat_ngram_size", 0, int, 0, 64),
            logprobs=logprobs,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _logprob_block(entries: list[dict], start_offset: int = 0) -> dict:
    """OpenAI's completions ``logprobs`` object from per-token entries (an entry without an
    ``offset`` follows the one before it)."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    offset = start_offset
    for e in entries:
        at = e.get("offset")
        at = offset if at is None else at
        tokens.append(e["token"])
        token_logprobs.append(e["logprob"])
        top_logprobs.append(e.get("top"))
        offsets.append(at)
        offset = at + len(e["token"])
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}


def _chat_logprobs(entries: list[dict] | None) -> dict | None:
    if entries is None:
        return None
    return {"content": [{"token": e["token"], "logprob": e["logprob"], "bytes": list(e["token"].encode()),
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in (e.get("top") or {}).items()]}
                        for e in entries]}


def _json_schema_of(body: dict) -> tuple[dict | None, str | None]:
    """The schema a chat request constrains its answer to: ``response_format`` (json_object /
    json_schema) or a forced tool; (schema, tool name)."""
    fmt = body.get("response_format")
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools:
        if not (isinstance(choice, dict) and choice.get("type") == "function"):
            raise ApiError(400, "'tools' are supported only with 'tool_choice' naming one function "
                                "(the answer is then constrained to its parameters)", "tool_choice")
        name = (choice.get("function") or {}).get("name")
        for tool in tools:
            fn = tool.get("function") or {}
            if fn.get("name") == name:
                return fn.get("parameters") or {"type": "object"}, name
        raise ApiError(400, f"tool_choice names '{name}', which is not among 'tools'", "tool_choice")
    if fmt in (None, {}) or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None, None
    if not isinstance(fmt, dict):
        raise ApiError(400, "'response_format' must be an object", "response_format")
    if fmt.get("type") == "json_object":
        return {"type": "object"}, None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format json_schema needs 'json_schema.schema'", "response_format")
        return schema, None
    raise ApiError(400, f"response_format type '{fmt.get('type')}' is not supported (text, json_object, json_schema)",
                   "response_format")


def _check_messages(messages, limits: ServerLimits) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "messages")
    out, chars = [], 0
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer", "tool"):
            raise ApiError(400, "each message needs a role (system, user, assistant) and content", "messages")
        content = m.get("content") or ""
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            if any(not isinstance(c, dict) or c.get("type") != "text" for c in content):
                raise ApiError(400, "only text content parts are supported", "messages")
            content = "".join(c.get("text", "") for c in content)
        if not isinstance(content, str):
            raise ApiError(400, "message content must be text", "messages")
        chars += len(content)
        role = {"developer": "system", "tool": "user"}.get(m["role"], m["role"])
        out.append({"role": role, "content": content})
    if chars > limits.max_chars:
        raise ApiError(413, f"the messages hold {chars:,} characters; the server takes at most {limits.max_chars:,}")
    return out


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------
def create_server(engine: Engine, served_model: str | None = None, api_key: str | None = None,
                  limits: ServerLimits = ServerLimits()):
    """The FastAPI app serving ``engine`` as ``served_model``."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    served = served_model or engine.model_name
    created = int(time.time())
    app = FastAPI(title="secfm serve", description="OpenAI-compatible endpoint", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse(ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                             kind="authentication_error").body(), status_code=401)
        if request.method == "POST":
            body, size = [], 0
            async for chunk in request.stream():  # counted as it arrives, whatever Content-Length says
                size += len(chunk)
                if size > limits.max_body_bytes:
                    return JSONResponse(ApiError(413, f"request body over {limits.max_body_bytes:,} bytes").body(),
                                        status_code=413)
                body.append(chunk)
            request.state.raw = b"".join(body)
        return await call_next(request)

    def model_card() -> dict:
        return {"id": served, "object": "model", "created": created, "owned_by": "secfm",
                "max_model_len": engine.max_context}

    async def read_json(request: Request) -> dict:
        try:
            body = json.loads(getattr(request.state, "raw", b"") or b"{}")
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model not in (None, served):
            raise ApiError(404, f"the model '{str(model)[:80]}' does not exist; this server serves '{served}'", "model",
                           kind="not_found_error")
        _refuse_unsupported(body)
        return body

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(SecfmError)
    async def secfm_error(_request, exc: SecfmError):
        return JSONResponse(ApiError(400, str(exc)).body(), status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served, **engine.stats()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str):
        if model_id != served:
            raise ApiError(404, f"the model '{model_id[:80]}' does not exist", "model", kind="not_found_error")
        return model_card()

    # -- completions ----------------------------------------------------------------------------
    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ApiError(400, "'prompt' must be a string or a list of strings (token-id prompts are not supported)", "prompt")
        if len(prompts) > limits.max_prompts:
            raise ApiError(400, f"at most {limits.max_prompts} prompts per request", "prompt")
        if sum(len(p) for p in prompts) > limits.max_chars:
            raise ApiError(413, f"the prompts hold more than {limits.max_chars:,} characters")
        n = _number(body, "n", 1, int, 1, limits.max_n)
        logprobs = _number(body, "logprobs", None, int, 0, 20)
        echo = bool(body.get("echo", False))
        raw_max = body.get("max_tokens", 16)
        score_only = echo and raw_max == 0
        params = sampling_from(body, engine, logprobs)
        rid = f"cmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            if echo and logprobs is not None:
                raise ApiError(400, "echo with logprobs is not supported when streaming", "stream")
            handles = [[engine.submit(p, params) for _ in range(n)] for p in prompts] if not score_only else []
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream_completions(handles, prompts, echo, rid, served, created, n, usage),
                                     media_type="text/event-stream")
        return await run_in_threadpool(_complete, prompts, n, params, echo, logprobs, score_only, rid)

    def _complete(prompts, n, params, echo, logprobs, score_only, rid):
        handles = [] if score_only else [engine.submit(p, params) for p in prompts for _ in range(n)]
        try:
            choices, prompt_tokens, completion_tokens = [], 0, 0
            for i, prompt in enumerate(prompts):
                prompt_rows = engine.prompt_logprobs(prompt, top=max(1, logprobs or 1)) if (echo and logprobs is not None) else None
                prompt_tokens += len(prompt_rows) if prompt_rows is not None else engine.count_tokens(prompt)
                for j in range(n):
                    text, reason, gen_rows = "", "length", []
                    if not score_only:
                        handle = handles[i * n + j]
                        text = handle.result()
                        reason = "length" if handle.finish_reason == "length" else "stop"
                        gen_rows = handle.token_logprobs or []
                        completion_tokens += handle.completion_tokens if handle.completion_tokens is not None else engine.count_tokens(text)
                    block = None
                    if logprobs is not None:
                        # the prompt's tokens (echo) then the generated ones, offsets into the returned text
                        rows = list(prompt_rows or []) + [{**r, "offset": None} for r in gen_rows]
                        block = _logprob_block(rows, start_offset=len(prompt) if echo else 0)
                        if echo:
                            for k in range(len(rows) - len(gen_rows), len(rows)):
                                block["text_offset"][k] = (len(prompt) if k == len(rows) - len(gen_rows)
                                                           else block["text_offset"][k - 1] + len(block["tokens"][k - 1]))
                    choices.append({"index": len(choices), "text": (prompt if echo else "") + text, "logprobs": block,
                                    "finish_reason": reason})
            return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": served,
                    "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                                   "total_tokens": prompt_tokens + completion_tokens}}
        except EngineUnsupported as exc:
            raise ApiError(400, str(exc), "logprobs") from None
        finally:
            for h in handles:
                h.cancel()

    async def _stream_completions(handles, prompts, echo, rid, model, created_at, n, usage=False):
        try:
            for i, row in enumerate(handles):
                for j, handle in enumerate(row):
                    index = i * n + j
                    if echo:
                        yield _sse({"id": rid, "object": "text_completion", "created": created_at, "model": model,
                                    "choices": [{"index": index, "text": prompts[i], "logprobs": None, "finish_reason": None}]})
                    async for piece in iterate_in_threadpool(handle):
                        if piece:
                            yield _sse({"id": rid, "object": "text_completion", "created": created_at, "model": model,
                                        "choices": [{"index": index, "text": piece, "logprobs": None, "finish_reason": None}]})
                    reason = "length" if handle.finish_reason == "length" else "stop"
                    yield _sse({"id": rid, "object": "text_completion", "created": created_at, "model": model,
                                "choices": [{"index": index, "text": "", "logprobs": None, "finish_reason": reason}]})
            if usage:
                done = sum(h.completion_tokens or 0 for row in handles for h in row)
                asked = sum(engine.count_tokens(p) for p in prompts)
                yield _sse({"id": rid, "object": "text_completion", "created": created_at, "model": model, "choices": [],
                            "usage": {"prompt_tokens": asked, "completion_tokens": done, "total_tokens": asked + done}})
            yield "data: [DONE]\n\n"
        finally:  # a client that went away frees its slots
            for row in handles:
                for handle in row:
                    handle.cancel()

    # -- chat -------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request)
        messages = _check_messages(body.get("messages"), limits)
        n = _number(body, "n", 1, int, 1, limits.max_n)
        top = _number(body, "top_logprobs", 0, int, 0, 20)
        logprobs = top if body.get("logprobs") else None
        schema, tool = _json_schema_of(body)
        params = engine.chat_params(sampling_from(body, engine, logprobs, default_max=512))
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if schema is not None:
            if body.get("stream"):
                raise ApiError(400, "JSON mode (response_format / tool_choice) is not supported with stream", "stream")
            return await run_in_threadpool(_chat_json, messages, schema, tool, n, params, rid)
        handles = [engine.submit_chat(messages, params) for _ in range(n)]
        if body.get("stream"):
            return StreamingResponse(_stream_chat(handles, rid, served, created), media_type="text/event-stream")
        return await run_in_threadpool(_chat_result, messages, handles, rid)

    def _chat_result(messages, handles, rid):
        try:
            choices, completion_tokens = [], 0
            for i, handle in enumerate(handles):
                text = handle.result()
                completion_tokens += handle.completion_tokens if handle.completion_tokens is not None else engine.count_tokens(text)
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "logprobs": _chat_logprobs(handle.token_logprobs),
                                "finish_reason": "length" if handle.finish_reason == "length" else "stop"})
            prompt_tokens = engine.count_tokens(engine.apply_chat_template(messages))
            return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": served, "choices": choices,
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens}}
        finally:
            for h in handles:
                h.cancel()

    def _chat_json(messages, schema, tool, n, params, rid):
        try:
            texts = engine.generate_json([messages] * n, schema, params)
        except EngineUnsupported as exc:
            raise ApiError(400, f"response_format: {exc}", "response_format") from None
        choices = []
        for i, text in enumerate(texts):
            if tool:
                message = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": tool, "arguments": text}}]}
                reason = "tool_calls"
            else:
                message, reason = {"role": "assistant", "content": text}, "stop"
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": reason})
        prompt_tokens = engine.count_tokens(engine.apply_chat_template(messages))
        completion_tokens = sum(engine.count_tokens(t) for t in texts)
        return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": served, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    async def _stream_chat(handles, rid, model, created_at):
        try:
            for i, handle in enumerate(handles):
                yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created_at, "model": model,
                            "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
                async for piece in iterate_in_threadpool(handle):
                    if piece:
                        yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created_at, "model": model,
                                    "choices": [{"index": i, "delta": {"content": piece}, "finish_reason": None}]})
                reason = "length" if handle.finish_reason == "length" else "stop"
                yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created_at, "model": model,
                            "choices": [{"index": i, "delta": {}, "finish_reason": reason}]})
            yield "data: [DONE]\n\n"
        finally:
            for handle in handles:
                handle.cancel()

    return app


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m secfm.serving_api``: what `secfm serve` runs on a CPU."""
    import uvicorn

    from secfm.engines import shared_engine

    parser = argparse.ArgumentParser(prog="python -m secfm.serving_api", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--adapter")
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=None, help="requests decoded together (default 32)")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    args = parser.parse_args(argv)
    if args.max_batch:
        os.environ["SECFM_MAX_BATCH"] = str(args.max_batch)
    api_key = os.environ.get("SECFM_API_KEY") or None  # never on the command line (ps shows it)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engine = shared_engine("transformers", model=args.model, adapter=args.adapter)
    app = create_server(engine, args.served_model_name or args.model, api_key,
                        ServerLimits(max_body_bytes=args.max_body_bytes))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    asyncio.run(server.serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

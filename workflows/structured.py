"""JSON-schema-constrained generation on every engine, with a bounded fallback.

* an engine with constrained decoding (``Engine.generate_json``: lm-format-enforcer on the
  transformers engine, vLLM's structured outputs, ``response_format`` on an OpenAI-compatible
  server) writes the JSON; the method is the engine's ``json_backend``;
* an engine without it (or one whose server refuses it): generate, take the first JSON object
  (``json.JSONDecoder.raw_decode``, no regex over the text), validate, and retry with the
  validation error, ``retries`` times at most.

Constrained output is a prefix of a valid document; when the token budget cuts it, the open
strings and brackets are closed ("repaired") and the result is validated again. Whatever
cannot be validated is reported as failed with the reason, never raised: a workflow keeps its
deterministic part.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from secfm.engines import EngineUnsupported, Message, SamplingParams

log = logging.getLogger(__name__)

RAW_LIMIT = 2000


@dataclass
class StructuredResult:
    value: dict | None
    raw: str
    status: str  # ok | repaired | failed
    error: str = ""
    method: str = ""


@dataclass
class StructuredBatch:
    results: list[StructuredResult]
    method: str
    seconds: float
    calls: int = 1
    notes: list[str] = field(default_factory=list)


def generate_structured(
    engine,
    conversations: Sequence[Sequence[Message]],
    schemas: dict | Sequence[dict],
    max_new_tokens: int = 128,
    retries: int = 1,
) -> StructuredBatch:
    """One JSON object per conversation, each constrained by its schema (see the module docstring)."""
    started = time.time()
    conversations = [list(c) for c in conversations]
    if isinstance(schemas, dict):
        schemas = [schemas] * len(conversations)
    schemas = list(schemas)
    if len(schemas) != len(conversations):
        raise ValueError("one schema per conversation")
    if not conversations:
        return StructuredBatch([], "none", 0.0, 0)
    try:
        texts = engine.generate_json(conversations, schemas, SamplingParams(max_new_tokens=max_new_tokens))
        results = [parse_output(t, s, True, engine.json_backend) for t, s in zip(texts, schemas)]
        return StructuredBatch(results, engine.json_backend, time.time() - started, len(conversations))
    except EngineUnsupported as exc:  # no constrained decoding on this engine
        log.info("no constrained decoding (%s); validate-and-retry instead", exc)
    except Exception as exc:  # noqa: BLE001 - a model failure must not cost the deterministic part
        log.warning("constrained decoding failed (%s: %s); falling back to validate-and-retry", type(exc).__name__, exc)
    results, calls = _validate_retry(engine, conversations, schemas, max_new_tokens, retries)
    return StructuredBatch(results, "validate-retry", time.time() - started, calls)


# --------------------------------------------------------------------------------------------
# parsing, validation, repair
# --------------------------------------------------------------------------------------------
def validate(value: Any, schema: dict) -> str:
    """'' when ``value`` satisfies ``schema``, else the first error, one line."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return ""
    e = errors[0]
    where = "/".join(str(p) for p in e.path) or "(root)"
    return f"{where}: {e.message}"[:300]


def first_json_object(text: str) -> tuple[Any, int] | None:
    """The first JSON object in ``text`` and where it starts (scan for '{', then raw_decode)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _end = decoder.raw_decode(text, start)
            if isinstance(value, dict):
                return value, start
        except ValueError:
            pass
        start = text.find("{", start + 1)
    return None


def fill_missing(value: dict, schema: dict) -> list[str]:
    """Give required properties that a cut output never reached an empty value (string "",
    array []); returns their names. Only for constrained output, whose prefix is valid."""
    filled = []
    props = schema.get("properties", {})
    for name in schema.get("required", []):
        if name in value:
            continue
        kind = props.get(name, {}).get("type")
        if kind == "string" and "enum" not in props.get(name, {}):
            value[name] = ""
        elif kind == "array":
            value[name] = []
        else:
            continue
        filled.append(name)
    return filled


def close_json(text: str) -> str | None:
    """Close a JSON prefix cut by the token budget: end an open string, drop a dangling key or
    comma, close brackets. None when the prefix has no object start."""
    start = text.find("{")
    if start == -1:
        return None
    s = text[start:]
    stack: list[str] = []
    in_string = escaped = False
    for ch in s:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack:
                stack.pop()
            if not stack:
                break
    out = s
    if in_string:
        if escaped:
            out = out[:-1]
        out += '"'
    out = out.rstrip()
    # a trailing comma, or a key whose value never started, cannot be closed as is
    if out.endswith(","):
        out = out[:-1].rstrip()
    if out.endswith(":"):
        out = out[:-1].rstrip()
        if out.endswith('"'):
            out = out[:out.rfind('"', 0, len(out) - 1)].rstrip()
        if out.endswith(","):
            out = out[:-1].rstrip()
    elif stack and stack[-1] == "}" and out.endswith('"') and not out.endswith(('{"', ',"')):
        # a string that closes an object member: fine unless it is a bare key ("key")
        body = out[:out.rfind('"', 0, len(out) - 1)].rstrip()
        if body.endswith(("{", ",")):
            out = body.rstrip(",").rstrip() if body.endswith(",") else body
    return out + "".join(reversed(stack))


def parse_output(text: str, schema: dict, constrained: bool, method: str) -> StructuredResult:
    raw = text[:RAW_LIMIT]
    stripped = text.strip()
    value: Any = None
    status = "ok"
    try:
        value = json.loads(stripped)
    except ValueError:
        found = first_json_object(stripped)
        if found is not None:
            value = found[0]
        else:
            repaired = close_json(stripped)
            if repaired is not None:
                try:
                    value = json.loads(repaired)
                    status = "repaired"
                except ValueError:
                    value = None
    if not isinstance(value, dict):
        return StructuredResult(None, raw, "failed", "no JSON object in the model output" if value is None else "the model output is not a JSON object", method)
    if status == "repaired" and constrained:
        filled = fill_missing(value, schema)
        if filled:
            status_note = f"output cut by the token budget; brackets closed, empty {', '.join(filled)}"
            error = validate(value, schema)
            if error:
                return StructuredResult(None, raw, "failed", f"model output does not match the schema: {error}", method)
            return StructuredResult(value, raw, "repaired", status_note, method)
    error = validate(value, schema)
    if error:
        return StructuredResult(None, raw, "failed", f"model output does not match the schema: {error}", method)
    return StructuredResult(value, raw, status, "output cut by the token budget; brackets closed" if status == "repaired" else "", method)


# --------------------------------------------------------------------------------------------
# any engine: generate, validate, retry
# --------------------------------------------------------------------------------------------
def _validate_retry(engine, conversations, schemas, max_new_tokens, retries) -> tuple[list[StructuredResult], int]:
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    results: list[StructuredResult | None] = [None] * len(conversations)
    pending = list(range(len(conversations)))
    current = [list(c) for c in conversations]
    calls = 0
    for attempt in range(retries + 1):
        if not pending:
            break
        try:
            outputs = engine.chat([current[i] for i in pending], params)
        except Exception as exc:  # noqa: BLE001
            for i in pending:
                results[i] = StructuredResult(None, "", "failed", f"model call failed: {type(exc).__name__}: {exc}"[:300], "validate-retry")
            return [r for r in results if r is not None], calls + 1
        calls += 1
        still = []
        for i, text in zip(pending, outputs):
            result = parse_output(text, schemas[i], False, "validate-retry")
            results[i] = result
            if result.status == "failed" and attempt < retries:
                still.append(i)
                current[i] = current[i] + [
                    {"role": "assistant", "content": text[:500]},
                    {"role": "user", "content": f"That was not valid: {result.error}. Answer again with one JSON object "
                                                f"that matches this JSON schema, and nothing else: {json.dumps(schema_brief(schemas[i]))}"},
                ]
        pending = still
    return [r if r is not None else StructuredResult(None, "", "failed", "no output", "validate-retry") for r in results], calls


def schema_brief(schema: dict) -> dict:
    """The schema without titles (shorter prompts)."""
    if isinstance(schema, dict):
        return {k: schema_brief(v) for k, v in schema.items() if k not in ("title", "description")}
    if isinstance(schema, list):
        return [schema_brief(v) for v in schema]
    return schema

"""JSON-schema-constrained generation on every engine, with a bounded fallback.

* ``transformers`` engine: lm-format-enforcer's ``JsonSchemaParser`` + ``TokenEnforcer`` filter
  the tokens at every step (a logits processor; one enforcer per row, so each row of a batch may
  have its own schema). lm-format-enforcer 0.11.3's ``integrations.transformers`` module does not
  import under transformers 5 (it imports ``PreTrainedTokenizerBase`` from a module that moved;
  fixed upstream in noamgat/lm-format-enforcer#175), so the few lines of glue it holds (the
  regular-token table and the processor) live here, on the library's public core classes.
* ``vllm`` engine: vLLM's own guided decoding (``StructuredOutputsParams(json=...)``, or
  ``GuidedDecodingParams`` on vLLM < 0.12).
* ``openai`` engine (a served model): ``response_format={"type": "json_schema", ...}``; when the
  server refuses it, the generic path below.
* anything else: generate, take the first JSON object (``json.JSONDecoder.raw_decode``, no regex
  over the text), validate, and retry with the validation error, ``retries`` times at most.

Constrained output is a prefix of a valid document; when the token budget cuts it, the open
strings and brackets are closed ("repaired") and the result is validated again. Whatever
cannot be validated is reported as failed with the reason, never raised: a workflow keeps its
deterministic part.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from secfm.engines import Message, SamplingParams

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
    kind = getattr(engine, "kind", "")
    try:
        if kind == "transformers" and hasattr(engine, "model") and hasattr(engine, "tokenizer"):
            results = _lmfe_generate(engine, conversations, schemas, max_new_tokens)
            return StructuredBatch(results, "lmfe", time.time() - started)
        if kind == "vllm" and hasattr(engine, "llm"):
            results = _vllm_generate(engine, conversations, schemas, max_new_tokens)
            return StructuredBatch(results, "vllm-guided", time.time() - started)
        if kind == "openai" and hasattr(engine, "client"):
            results = _openai_generate(engine, conversations, schemas, max_new_tokens)
            if results is not None:
                return StructuredBatch(results, "openai-json-schema", time.time() - started, len(conversations))
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
# transformers + lm-format-enforcer
# --------------------------------------------------------------------------------------------
_TOKENIZER_DATA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TOKENIZER_DATA_LOCK = threading.Lock()


def tokenizer_data(engine):
    """lm-format-enforcer's per-tokenizer tables for the engine (built once, about 10 s for a
    262k vocabulary)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    tok = engine.tokenizer
    with _TOKENIZER_DATA_LOCK:
        data = _TOKENIZER_DATA.get(tok)
        if data is not None:
            return data
        vocab_size = len(tok)
        special = set(tok.all_special_ids)
        zero = tok.encode("0", add_special_tokens=False)[-1]
        regular = []
        for token_id in range(vocab_size):
            if token_id in special:
                continue
            # decode after "0" to see a word-start token's leading space (as lmfe does)
            after_zero = tok.decode([zero, token_id])[1:]
            alone = tok.decode([token_id])
            regular.append((token_id, after_zero, len(after_zero) > len(alone)))
        eos = list(getattr(engine, "_eos_ids", None) or [tok.eos_token_id])

        def decode(ids: list[int]) -> str:
            return tok.decode(ids).rstrip("\ufffd")

        data = TokenEnforcerTokenizerData(regular, decode, eos, False, vocab_size)
        _TOKENIZER_DATA[tok] = data
        return data


def _enforcer(data, schema: dict):
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    parser = JsonSchemaParser(schema)
    enforcer = TokenEnforcer(data, parser)
    # TokenEnforcer gives the parser a fresh config; tune it in place: compact JSON, fields in order
    parser.config.max_consecutive_whitespaces = 1
    parser.config.force_json_field_order = True
    return enforcer


class _EnforcerProcessor:
    """A transformers logits processor: -inf for every token the row's enforcer forbids."""

    def __init__(self, enforcers):
        self.enforcers = enforcers

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids.tolist()):
            allowed = self.enforcers[row].get_allowed_tokens(ids).allowed_tokens
            allowed = [t for t in allowed if t < scores.shape[1]]
            mask[row, torch.tensor(allowed, dtype=torch.long, device=scores.device)] = 0
        return scores + mask


def _lmfe_generate(engine, conversations, schemas, max_new_tokens) -> list[StructuredResult]:
    import torch
    from transformers import LogitsProcessorList

    tok = engine.tokenizer
    data = tokenizer_data(engine)
    prompts = [engine.apply_chat_template(c) for c in conversations]
    batch_size = max(1, int(getattr(engine, "batch_size", 8)))
    results: list[StructuredResult] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        chunk_schemas = schemas[start:start + batch_size]
        bos = tok.bos_token or ""
        texts = [p[len(bos):] if bos and p.startswith(bos) else p for p in chunk]
        tok.padding_side = "left"
        batch = tok(texts, return_tensors="pt", padding=True)
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        processor = _EnforcerProcessor([_enforcer(data, s) for s in chunk_schemas])
        eos = list(getattr(engine, "_eos_ids", None) or [tok.eos_token_id])
        lock = getattr(engine, "_lock", None) or nullcontext()
        with lock, torch.inference_mode():
            out = engine.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
                logits_processor=LogitsProcessorList([processor]),
            )
        width = batch["input_ids"].shape[1]
        for row, schema in zip(out[:, width:], chunk_schemas):
            text = tok.decode(row, skip_special_tokens=True)
            results.append(parse_output(text, schema, True, "lmfe"))
    return results


# --------------------------------------------------------------------------------------------
# vLLM guided decoding
# --------------------------------------------------------------------------------------------
def _vllm_generate(engine, conversations, schemas, max_new_tokens) -> list[StructuredResult]:
    params = SamplingParams(max_new_tokens=max_new_tokens)
    sampling = []
    for schema in schemas:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            sampling.append(engine._sampling(params, structured_outputs=StructuredOutputsParams(json=schema)))
        except ImportError:  # vLLM < 0.12
            from vllm.sampling_params import GuidedDecodingParams

            sampling.append(engine._sampling(params, guided_decoding=GuidedDecodingParams(json=schema)))
    prompts = engine._token_prompts([engine.apply_chat_template(c) for c in conversations])
    outs = engine.llm.generate(prompts, sampling, lora_request=getattr(engine, "_lora", None), use_tqdm=False)
    return [parse_output(o.outputs[0].text, s, True, "vllm-guided") for o, s in zip(outs, schemas)]


# --------------------------------------------------------------------------------------------
# OpenAI-compatible servers
# --------------------------------------------------------------------------------------------
def _openai_generate(engine, conversations, schemas, max_new_tokens) -> list[StructuredResult] | None:
    results = []
    for messages, schema in zip(conversations, schemas):
        try:
            resp = engine.client.chat.completions.create(
                model=engine.model_name,
                messages=messages,
                max_tokens=max_new_tokens,
                temperature=0,
                response_format={"type": "json_schema", "json_schema": {"name": "secfm_output", "schema": schema}},
            )
        except Exception as exc:  # noqa: BLE001 - the server may not support response_format
            if results:
                results.append(StructuredResult(None, "", "failed", f"server error: {exc}"[:300], "openai-json-schema"))
                continue
            log.info("the server refused response_format (%s); validate-and-retry instead", exc)
            return None
        text = resp.choices[0].message.content or ""
        results.append(parse_output(text, schema, True, "openai-json-schema"))
    return results


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

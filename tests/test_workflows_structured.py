"""Structured output: parsing, repair of cut JSON, validation, bounded retries; and (slow) real
constrained decoding with lm-format-enforcer on the embedded model."""

from __future__ import annotations

import json

import pytest
from test_workflows_support import FakeEngine

from secfm.workflows.structured import close_json, first_json_object, generate_structured, parse_output, validate

SCHEMA = {"type": "object", "properties": {"severity": {"type": "string", "enum": ["high", "low"]},
                                           "ids": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                                           "why": {"type": "string", "maxLength": 80}},
          "required": ["severity", "ids", "why"], "additionalProperties": False}


@pytest.mark.parametrize("cut, closed", [
    ('{"a": "hel', {"a": "hel"}),
    ('{"a": "x", "b": [1, 2', {"a": "x", "b": [1, 2]}),
    ('{"a": "x", "b":', {"a": "x"}),
    ('{"a": "x", "b', {"a": "x"}),
    ('{"a": "x",', {"a": "x"}),
    ('{"a": {"b": "c"}, "d": "e\\', {"a": {"b": "c"}, "d": "e"}),
    ('noise {"a": 1', {"a": 1}),
])
def test_close_json(cut, closed):
    assert json.loads(close_json(cut)) == closed


def test_first_json_object_skips_noise():
    assert first_json_object('Sure! {"x": 1} and {"y": 2}') == ({"x": 1}, 6)
    assert first_json_object("no braces") is None
    assert first_json_object("{broken {\"ok\": true}") == ({"ok": True}, 8)


def test_parse_output_statuses():
    ok = parse_output('{"severity": "high", "ids": [], "why": "w"}', SCHEMA, True, "lmfe")
    assert ok.status == "ok" and ok.value["severity"] == "high"
    cut = parse_output('{"severity": "low", "ids": ["a"], "why": "trunc', SCHEMA, True, "lmfe")
    assert cut.status == "repaired" and cut.value["why"] == "trunc"
    bad = parse_output('{"severity": "medium", "ids": [], "why": ""}', SCHEMA, True, "lmfe")
    assert bad.status == "failed" and "severity" in bad.error and bad.value is None
    none = parse_output("I cannot comply", SCHEMA, False, "validate-retry")
    assert none.status == "failed" and "no JSON object" in none.error
    assert validate({"severity": "high", "ids": ["a", "b", "c"], "why": ""}, SCHEMA).startswith("ids")


def test_validate_and_retry_is_bounded():
    answers = iter(["nonsense", '{"severity": "high", "ids": [], "why": "second try"}'])
    engine = FakeEngine(lambda prompt: next(answers))
    batch = generate_structured(engine, [[{"role": "user", "content": "q"}]], SCHEMA, max_new_tokens=32, retries=1)
    assert batch.method == "validate-retry" and batch.calls == 2
    assert batch.results[0].value == {"severity": "high", "ids": [], "why": "second try"}
    assert "That was not valid" in engine.prompts[1]
    stubborn = FakeEngine(lambda prompt: "nope")
    batch = generate_structured(stubborn, [[{"role": "user", "content": "q"}]] * 3, SCHEMA, retries=2)
    assert all(r.status == "failed" for r in batch.results) and len(stubborn.prompts) == 9


def test_engine_errors_become_failed_results():
    class Broken(FakeEngine):
        def chat(self, conversations, params=None):
            raise RuntimeError("server down")

    batch = generate_structured(Broken(lambda p: ""), [[{"role": "user", "content": "q"}]], SCHEMA)
    assert batch.results[0].status == "failed" and "server down" in batch.results[0].error


@pytest.mark.slow
def test_lm_format_enforcer_on_the_embedded_model(engine):
    schemas = [SCHEMA, {"type": "object", "properties": {"n": {"type": "integer"}, "word": {"type": "string", "enum": ["yes", "no"]}},
                        "required": ["n", "word"], "additionalProperties": False}]
    convs = [[{"role": "user", "content": "Rate this alert: 400 failed logons for admin. JSON please."}],
             [{"role": "user", "content": "How many legs has a spider? Answer yes or no too."}]]
    batch = generate_structured(engine, convs, schemas, max_new_tokens=48)
    assert batch.method == "lmfe"
    for res, schema in zip(batch.results, schemas):
        assert res.status in ("ok", "repaired"), res.error
        assert validate(res.value, schema) == ""

"""Property tests (hypothesis) over every parser of untrusted input: whatever the bytes, a parser
returns or raises SecfmError (one clear line); never another exception. Prints its counts."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secfm.errors import SecfmError

EXAMPLES = 200
COUNTS: dict[str, int] = {}

# text that looks like the formats (so the fuzzer reaches the parsers' insides), mixed with noise
_ATOMS = ["{", "}", "[", "]", '"', ":", ",", "\n", "\t", " ", "#", "=", ";", "\\", "-", "---", "- ", "#fields\t", "#separator \\x09",
          "#separator \\x", "#path", "resource \"a\" \"b\" {", "dynamic \"ingress\" {", "content {", "Match User x",
          "PermitRootLogin yes", "FROM ubuntu:latest", "RUN \\", "server {", "location / {", "listen 80;", "apiVersion: v1",
          "kind: Pod", "services:", "Statement", '"Effect": "Allow"', "<<EOF", "EOF", "a,b,c", "1", "null", "true",
          "\u200b", "\U000e0041", "\x00", "\x1b", "ｍ", "а", "é", "\ud7a3", "%", "'", "`", "|", "<end_of_turn>", "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ="]
texts = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(_ATOMS), max_size=60).map("".join),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                 lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                 max_leaves=20).map(json.dumps),
)
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _only_secfm_errors(name: str, fn, *args) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    try:
        fn(*args)
    except SecfmError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


@pytest.mark.parametrize("fmt", ["auto", "json", "jsonl", "csv", "zeek", "lines"])
def test_alert_parsers(fmt):
    from secfm.workflows.alerts import parse_alerts
    from secfm.workflows.signatures import match_signatures

    @fuzz
    @given(texts, st.booleans())
    def run(text, skip_bad):
        def go():
            for alert in parse_alerts(text, fmt, "fuzz", skip_bad):
                match_signatures(alert)
        _only_secfm_errors(f"alerts:{fmt}", go)

    run()


@pytest.mark.parametrize("kind", ["auto", "terraform", "kubernetes", "docker-compose", "dockerfile", "sshd", "nginx", "aws-iam"])
def test_config_parsers_and_rules(kind):
    from secfm.workflows.review import review_config

    @fuzz
    @given(texts)
    def run(text):
        _only_secfm_errors(f"config:{kind}", lambda: review_config(text, kind, use_model=False, store=False))

    run()


def test_text_parsers():
    from secfm.inputs import jsonl_rows, load_json
    from secfm.text.defang import refang_with_offsets
    from secfm.text.iocs import extract_iocs
    from secfm.text.normalize import normalize
    from secfm.training.redaction import Redactor
    from secfm.workflows.summarize import extract_entities, timeline
    from secfm.workflows.untrusted import find_injection, injection_warnings, screen_model_text

    redactor = Redactor(types=("ip", "hostname", "username"), salt="s")

    @fuzz
    @given(texts)
    def run(text):
        for name, fn in (("load_json", lambda: load_json(text, "fuzz")),
                         ("jsonl_rows", lambda: list(jsonl_rows("fuzz", text or " ", skip_bad=True))),
                         ("normalize", lambda: normalize(text)), ("refang", lambda: refang_with_offsets(text)),
                         ("extract_iocs", lambda: extract_iocs(text)), ("find_injection", lambda: find_injection(text)),
                         ("injection_warnings", lambda: injection_warnings(text)),
                         ("screen_model_text", lambda: screen_model_text(text, text)),
                         ("entities", lambda: extract_entities(text)), ("timeline", lambda: timeline(text)),
                         ("redact", lambda: redactor.redact(text))):
            _only_secfm_errors(name, fn)

    run()


def test_zz_print_counts(suite_count):
    suite_count(f"fuzz suite: {sum(COUNTS.values())} parser calls over {len(COUNTS)} parsers: "
          + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))
    assert COUNTS

"""The official CTIBench answer rules against awkward model outputs."""

from __future__ import annotations

import pytest

from secfm.evals.parsers import (
    EMPTY,
    OK,
    REFUSAL,
    UNPARSEABLE,
    get_parser,
    parse_cvss_vector,
    parse_cwe_id,
    parse_mcq_letter,
    parse_technique_ids,
)


@pytest.mark.parametrize(
    "output, letter",
    [
        ("B", "B"),
        ("b", "B"),
        ("**B**", "B"),
        ("The answer is **C**.", "C"),
        ("Answer: D", "D"),
        ("A) Audit", "A"),
        ("(C) Process", "C"),
        ("B. Execution Prevention", "B"),
        ("Let me think.\nOption A looks wrong.\n\nD\n\n\n", "D"),  # trailing blank lines
        ("Reasoning...\n**Answer:** B\n   \n", "B"),
        ("A and C are wrong; B is tempting.\nThe best option is C", "C"),
        ("`A`", "A"),
        ("### D", "D"),
    ],
)
def test_mcq_letters(output, letter):
    parsed = parse_mcq_letter(output)
    assert parsed.status == OK and parsed.answer == letter


@pytest.mark.parametrize(
    "output",
    [
        "The answer involves Dangerous Code",  # D inside a word
        "CAD",  # letters inside a word
        "B2B",  # letter glued to a digit
        "The correct choice is the second one.",
        "Answer:",
    ],
)
def test_mcq_letters_inside_words_do_not_count(output):
    assert parse_mcq_letter(output).status == UNPARSEABLE


def test_mcq_only_the_last_line_counts():
    # the official rule reads the last non-empty line only
    assert parse_mcq_letter("B\nI am not sure about this one.").status == UNPARSEABLE


@pytest.mark.parametrize("output", ["", "   ", "\n\n"])
def test_empty_outputs(output):
    for parser in (parse_mcq_letter, parse_cwe_id, parse_cvss_vector, parse_technique_ids):
        assert parser(output).status == EMPTY
        assert parser(output).answer is None
    assert parse_mcq_letter(None).status == EMPTY


@pytest.mark.parametrize(
    "output",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot answer this question.",
        "As an AI language model, I am unable to determine the CWE.",
    ],
)
def test_refusals(output):
    for parser in (parse_mcq_letter, parse_cwe_id, parse_cvss_vector, parse_technique_ids):
        assert parser(output).status == REFUSAL


def test_refusal_with_an_answer_is_an_answer():
    assert parse_cwe_id("I cannot be certain, but the best fit is CWE-79").answer == "CWE-79"


@pytest.mark.parametrize(
    "output, cwe",
    [
        ("CWE-79", "CWE-79"),
        ("**CWE-416**", "CWE-416"),
        ("It could be CWE-20 or CWE-787.\nFinal: CWE-787\n\n", "CWE-787"),  # several ids: the last
        ("This is a use-after-free (CWE-416), not a double free (CWE-415).", "CWE-415"),
        ("cwe-0089", "CWE-89"),
        ("Mapped to CWE-22.", "CWE-22"),
    ],
)
def test_cwe_ids(output, cwe):
    assert parse_cwe_id(output) .answer == cwe


@pytest.mark.parametrize("output", ["CWE79", "XCWE-79", "CWE-", "The weakness is improper input validation."])
def test_cwe_not_found(output):
    assert parse_cwe_id(output).status == UNPARSEABLE


@pytest.mark.parametrize(
    "output, vector",
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        ("**CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H**\n\n", "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H"),
        ("AV:N/AC:H/PR:N/UI:R/S:C/C:L/I:L/A:N", "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:L/I:L/A:N"),  # no prefix
        ("cvss:3.0/av:n/ac:l/pr:n/ui:n/s:u/c:h/i:n/a:n", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"),
        (
            "Example: CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\nMine:\n`CVSS:3.1/AV:P/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N`",
            "CVSS:3.1/AV:P/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N",
        ),  # the last vector
        ("CVSS:3.1 / AV:A / AC:L / PR:N / UI:N / S:U / C:H / I:N / A:N", "CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"),
        ("CVSS:3.1/AC:L/AV:N/PR:N/UI:N/S:U/C:H/I:H/A:H", None),  # must start with AV
    ],
)
def test_cvss_vectors(output, vector):
    assert parse_cvss_vector(output).answer == vector


@pytest.mark.parametrize(
    "output",
    [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",  # incomplete
        "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",  # bad value
        "The base score is 9.8 (critical).",
    ],
)
def test_cvss_incomplete_or_invalid(output):
    assert parse_cvss_vector(output).status == UNPARSEABLE


@pytest.mark.parametrize(
    "output, ids",
    [
        ("T1071, T1573, T1083", ("T1071", "T1573", "T1083")),
        ("Reasoning: T1059.001 is PowerShell.\n\nT1059, T1105, T1059.001\n\n", ("T1059", "T1105")),  # folded, deduplicated
        ("**T1566**, **T1204**", ("T1566", "T1204")),
        ("- T1003 (credential dumping)\n- T1021 (remote services)\nThat is all.", ("T1003", "T1021")),  # last line has none
        ("t1486,t1490", ("T1486", "T1490")),
    ],
)
def test_technique_ids(output, ids):
    assert parse_technique_ids(output).answer == ids


def test_technique_ids_ignore_longer_numbers():
    assert parse_technique_ids("T10712 and XT1071").status == UNPARSEABLE


def test_unknown_parser():
    from secfm.errors import SecfmError

    with pytest.raises(SecfmError, match="unknown parser"):
        get_parser("nope")

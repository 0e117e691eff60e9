"""Issue #18's "Tried" list, one test (or a few) per bullet: what a careful user and an attacker did,
and what now happens instead."""

from __future__ import annotations

import pytest

from secfm.workflows import triage_alerts

MIMIKATZ = {"EventID": 4688, "Computer": "WS1", "CommandLine": 'mimikatz.exe "sekurlsa::logonpasswords" exit'}


def _triage(record: dict):
    return triage_alerts([record], use_model=False, store=False, technique_source=None).alerts[0]


# --------------------------------------------------------------------------------------------
# Evasion: a zero-width or tag character inside mimikatz/sekurlsa turned critical (95) into info
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    'mimi\u200bkatz.exe "sekur\u200dlsa::logonpasswords" exit',  # zero-width space / joiner
    'mimi\U000e0041katz.exe "sekurlsa\U000e0020::logonpasswords"',  # tag characters
    'mіmіkаtz.exe "ѕеkurlѕа::logonpasswords"',  # Cyrillic homoglyphs
    'ｍｉｍｉｋａｔｚ.exe "ｓｅｋｕｒｌｓａ::logonpasswords"',  # fullwidth
    'mimi\u00adkatz.exe "sekurlsa::logon\u2060passwords"',  # soft hyphen, word joiner
])
def test_invisible_or_lookalike_characters_do_not_hide_mimikatz(command):
    clean = _triage(MIMIKATZ)
    evasive = _triage({**MIMIKATZ, "CommandLine": command})
    assert (evasive.severity, evasive.score) == (clean.severity, clean.score) == ("critical", 95)
    assert [s.id for s in evasive.signatures] == [s.id for s in clean.signatures]
    assert evasive.evidence[0].value == command  # evidence quotes what was written

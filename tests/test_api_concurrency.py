"""Issue #18 item 1: 20 parallel calls of each `secfm api` endpoint all answer (no 500 from shared
engine state: hooks, tokenizer or caches), and answer as a single call does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_api import KEY, _serve

from secfm.app.api import ApiSettings

pytestmark = pytest.mark.slow

REPORT = ("The actor sent spearphishing emails with malicious Word attachments. A macro ran PowerShell with an "
          "encoded command, and the operators dumped LSASS memory with mimikatz.")
BODIES = {
    "/v1/attack/extract": {"text": REPORT},
    "/v1/cwe/map": {"text": "SQL injection in the login form allows attackers to run arbitrary SQL commands.", "top_k": 3},
    "/v1/triage": {"alerts": [{"EventID": 4625, "TargetUserName": "administrator", "IpAddress": "185.220.101.4"}]},
    "/v1/summarize": {"text": "On 3 May the attacker logged in from 203.0.113.7 and ran mimikatz.", "use_model": False},
    "/v1/review-config": {"text": "PermitRootLogin yes\nPasswordAuthentication yes\n", "kind": "sshd"},
}


@pytest.fixture(scope="module")
def api_url(engine):
    server, url = _serve(ApiSettings(model="gemma-3-270m", api_key="test-key"))
    yield url
    server.should_exit = True


@pytest.mark.parametrize("path", list(BODIES))
def test_twenty_parallel_calls_all_answer(api_url, path, suite_count):
    with httpx.Client(timeout=600) as client:
        single = client.post(f"{api_url}{path}", json=BODIES[path], headers=KEY)
        assert single.status_code == 200, single.text
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: client.post(f"{api_url}{path}", json=BODIES[path], headers=KEY), range(20)))
    assert [a.status_code for a in answers] == [200] * 20, [a.text[:200] for a in answers if a.status_code != 200]
    suite_count(f"concurrency: 20 parallel calls of {path}: 20 answered 200")
    if path in ("/v1/attack/extract", "/v1/cwe/map"):  # head scores: the same under load as alone
        assert all(a.json() == single.json() for a in answers)

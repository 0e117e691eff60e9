"""`secfm api` over real HTTP: schema, auth, size limits, clear 4xx, and the heads and workflows."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from secfm.app.api import ApiSettings, create_api
from secfm.serving import free_port


def _serve(settings: ApiSettings):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api_url():
    server, url = _serve(ApiSettings(model="gemma-3-270m", api_key="test-key", max_body_bytes=50_000))
    yield url
    server.should_exit = True


KEY = {"X-API-Key": "test-key"}


def test_health_and_openapi_schema(api_url):
    assert httpx.get(f"{api_url}/health").json()["status"] == "ok"
    schema = httpx.get(f"{api_url}/openapi.json").json()
    for path in ("/v1/attack/extract", "/v1/cwe/map", "/v1/triage", "/v1/summarize", "/v1/review-config", "/health"):
        assert path in schema["paths"], path


def test_api_key_is_required_and_checked(api_url):
    body = {"text": "powershell -enc AAAA"}
    assert httpx.post(f"{api_url}/v1/attack/extract", json=body).status_code == 401
    assert httpx.post(f"{api_url}/v1/attack/extract", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    bearer = httpx.post(f"{api_url}/v1/cwe/map", json={"text": ""}, headers={"Authorization": "Bearer test-key"})
    assert bearer.status_code == 422  # past auth, then validation


def test_bad_inputs_are_clear_4xx(api_url):
    assert httpx.post(f"{api_url}/v1/attack/extract", json={"text": ""}, headers=KEY).status_code == 422
    assert httpx.post(f"{api_url}/v1/attack/extract", content=b"{not json", headers={**KEY, "content-type": "application/json"}).status_code == 422
    assert httpx.post(f"{api_url}/v1/summarize", json={"text": "x", "audience": "board"}, headers=KEY).status_code == 422
    big = httpx.post(f"{api_url}/v1/attack/extract", json={"text": "a" * 60_000}, headers=KEY)
    assert big.status_code == 413 and "over" in big.json()["error"]


@pytest.mark.slow
def test_attack_extract_and_cwe_map(api_url):
    text = ("The actor sent spearphishing emails with malicious Word attachments. Once opened, a macro ran "
            "PowerShell with an encoded command to download a backdoor, and the operators dumped LSASS memory.")
    r = httpx.post(f"{api_url}/v1/attack/extract", json={"text": text}, headers=KEY, timeout=300)
    assert r.status_code == 200, r.text
    techniques = r.json()["techniques"]
    assert techniques and all(t["id"].startswith("T") for t in techniques)
    assert all(ev["text"] in text for t in techniques for ev in t["evidence"])
    r = httpx.post(f"{api_url}/v1/cwe/map", json={"text": "SQL injection in the login form allows attackers to run arbitrary SQL commands.", "top_k": 3},
                   headers=KEY, timeout=300)
    assert r.status_code == 200, r.text
    weaknesses = r.json()["weaknesses"]
    assert len(weaknesses) == 3


@pytest.mark.slow
def test_triage_summarize_and_review_config(api_url):
    alert = {"EventID": 4625, "TargetUserName": "administrator", "IpAddress": "185.220.101.4", "LogonType": 10}
    r = httpx.post(f"{api_url}/v1/triage", json={"alerts": [alert]}, headers=KEY, timeout=300)
    assert r.status_code == 200, r.text
    assert "severity" in str(r.json())
    r = httpx.post(f"{api_url}/v1/review-config", json={"text": "PermitRootLogin yes\nPasswordAuthentication yes\n", "kind": "sshd"},
                   headers=KEY, timeout=300)
    assert r.status_code == 200, r.text
    assert "PermitRootLogin" in str(r.json())
    report = "On 3 May the attacker logged in from 203.0.113.7 and ran mimikatz (T1003.001) before exfiltrating data to evil.example.com."
    r = httpx.post(f"{api_url}/v1/summarize", json={"text": report, "audience": "executive", "use_model": False}, headers=KEY, timeout=300)
    assert r.status_code == 200, r.text
    assert "203.0.113.7" in str(r.json())

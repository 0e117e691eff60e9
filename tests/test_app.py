"""The analyst app (`secfm app`).

Fast tests check the pieces without a model or a browser (exposure rules, history trimming,
stop, private sessions, the views the tabs render). Slow tests run the real app on 127.0.0.1
with the real gemma-3-270m and drive it in Debian's headless Chromium through Playwright:
streamed chat, triage, ATT&CK extraction with the Navigator download, two analysts who do not
see each other, the stop button, sign-in, and a small run of the concurrency benchmark.
Screenshots go to ``$SECFM_TEST_ARTIFACTS`` (or a tmp folder).
"""

from __future__ import annotations

import json
import threading
import time
from copy import deepcopy
from pathlib import Path

import pytest

from secfm.errors import SecfmError
from tests.browser_helpers import artifacts_dir, browser, chromium_path, free_port  # noqa: F401 - fixtures

SAMPLES = Path(__file__).resolve().parents[1] / "app" / "assets" / "samples"
CHAT_TOKENS = 12  # the app's default max_new_tokens in these tests (a base model, a busy CPU)
LSASS_ALERT = next(line for line in (SAMPLES / "alerts.jsonl").read_text().splitlines() if "LSASS" in line)
NVD_FIXTURE = Path(__file__).resolve().parents[1] / "workflows" / "gold" / "chat-nvd-feed.json"


# =============================================================================================
# fast: no model, no browser
# =============================================================================================
def test_binding_beyond_loopback_requires_auth():
    from secfm.app.ui import check_exposure, is_loopback, parse_auth

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", ("analyst", "s3cret"))
    with pytest.raises(SecfmError, match="--auth"):
        check_exposure("0.0.0.0", None)
    assert parse_auth("analyst:pa:ss") == ("analyst", "pa:ss")
    assert parse_auth(None) is None
    for bad in ("analyst", ":x", "x:"):
        with pytest.raises(SecfmError):
            parse_auth(bad)


def test_launch_refuses_open_bind_before_loading_a_model():
    from secfm.app.ui import launch_app

    with pytest.raises(SecfmError, match="--auth"):
        launch_app(model="no-such-model", host="0.0.0.0", port=free_port(), auth=None, block=False)


def _count(text: str) -> int:  # a stand-in tokenizer: one token per word
    return len(text.split())


def test_history_is_trimmed_to_the_context_oldest_turns_first():
    from secfm.app.chat import SYSTEM_PROMPT, build_prompt

    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"question {i} " + "word " * 20},
                    {"role": "assistant", "content": f"answer {i} " + "word " * 20}]
    p = build_prompt(history, "the new question", _count, max_context=300, max_new_tokens=64)
    assert p.messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert p.messages[-1] == {"role": "user", "content": "the new question"}
    kept = p.messages[1:-1]
    assert kept and kept[0]["role"] == "user"  # a kept answer always has its question
    assert kept[-1]["content"].startswith("answer 29")  # the newest turns stay
    assert p.dropped_messages == len(history) - len(kept) > 0
    assert sum(_count(m["content"]) + 8 for m in p.messages) <= 300 - 64
    assert "earlier message" in p.note
    # an exact renderer (the chat template) is honoured when it is longer than the estimate
    p2 = build_prompt(history, "q", _count, 300, 64, render=lambda ms: " ".join(m["content"] for m in ms) + " x" * 60)
    assert len(p2.messages) < len(p.messages) + 1
    assert _count(" ".join(m["content"] for m in p2.messages) + " x" * 60) <= 300 - 64 - 16


def test_a_message_longer_than_the_context_is_cut_in_the_middle():
    from secfm.app.chat import build_prompt

    text = "START " + "log line " * 2000 + "END question?"
    p = build_prompt([], text, _count, max_context=256, max_new_tokens=32)
    user = p.messages[-1]["content"]
    assert user.startswith("START") and user.endswith("END question?") and "characters cut" in user
    assert p.truncated_chars > 0
    assert sum(_count(m["content"]) + 8 for m in p.messages) <= 256 - 32


def test_stream_answer_stops_and_closes_the_engine_stream():
    from secfm.app.chat import StreamStats, stream_answer

    closed = threading.Event()
    stop = threading.Event()

    def pieces():
        try:
            for i in range(100):
                yield f"t{i} "
        finally:
            closed.set()

    stats = StreamStats()
    got = []
    for piece in stream_answer(pieces(), stop, stats):
        got.append(piece)
        if len(got) == 3:
            stop.set()
    assert got == ["t0 ", "t1 ", "t2 "] and stats.stopped and closed.is_set()
    assert stats.ttft_s is not None and stats.pieces == 3


def test_sessions_are_private_copies():
    from secfm.app.sessions import SessionError, new_state

    state = new_state()
    a, b = deepcopy(state.value), deepcopy(state.value)  # what Gradio does for each browser session

    class Req:
        def __init__(self, username):
            self.username = username

    a.claim(Req("alice"))
    b.claim(Req("bob"))
    assert a.id and b.id and a.id != b.id
    a.add_user("alice's alert")
    assert b.history == [] and state.value.history == []
    with pytest.raises(SessionError):
        a.claim(Req("bob"))
    path = Path(a.write_json("x.json", {"k": 1}))
    assert path.parent != b.folder and json.loads(path.read_text()) == {"k": 1}
    a.close()
    assert not path.exists()


def test_views_render_workflow_results_safely():
    from secfm.app.backend import review_view, summary_view, triage_view
    from secfm.app.ui_attack import heatmap_html, highlighted
    from secfm.app.ui_config import annotated_config
    from secfm.app.ui_triage import detail_html

    result = {"alerts": [
        {"index": 0, "line": 1, "format": "json", "title": "low one", "severity": "low", "score": 20,
         "techniques": [], "evidence": [], "next_steps": []},
        {"index": 1, "line": 2, "format": "json", "title": "<script>x</script>", "severity": "critical", "score": 95,
         "techniques": [{"id": "T1003.001", "name": "LSASS Memory", "tactics": ["credential-access"],
                         "source": "rule"}],
         "evidence": [{"field": "command_line", "value": "rundll32 comsvcs.dll MiniDump", "verified": True}],
         "next_steps": [{"action": "Isolate the host", "reason": "credential dumping"}],
         "warnings": [{"kind": "prompt-injection", "detail": "ignore previous instructions", "location": "alert 2"}]}],
        "queue": [{"rank": 1, "index": 1}, {"rank": 2, "index": 0}], "counts": {"critical": 1, "low": 1}}
    view = triage_view(result)
    assert view["queue"] == ["#2", "#1"] and view["alerts"][1]["severity"] == "critical"
    html = detail_html(view["alerts"][1])
    assert "<script>" not in html and "CRITICAL" in html and "T1003.001" in html and "prompt-injection" in html

    s = summary_view({"audience": "executive", "headline": "H", "summary": "S <img src=x>", "extractive": "E",
                      "summary_source": "model", "iocs": {"ipv4": ["198.51.100.47"]}})
    assert "### H" in s["markdown"] and "<img" not in s["markdown"] and "198.51.100.47" in s["markdown"]

    r = review_view({"kind": "sshd", "findings": [
        {"rule_id": "SSH-ROOT", "title": "root login", "severity": "high", "line_start": 2, "line_end": 2,
         "evidence": "PermitRootLogin yes", "why": "w", "fix": "PermitRootLogin no"}]})
    assert r["findings"][0]["line_start"] == 2 and r["kind"] == "sshd"
    cfg = annotated_config("Port 22\nPermitRootLogin yes\n<b>", r["findings"])
    assert 'data-line="2"' in cfg and "flagged" in cfg and "<b>" not in cfg

    text = "First sentence here. Dumped LSASS <memory> now."
    hits = [{"id": "T1003.001", "name": "LSASS <Memory>", "tactics": ["credential-access"], "score": 0.9,
             "evidence": [{"start": 21, "end": len(text), "text": text[21:]}]}]
    marked = highlighted(text, hits)
    assert "".join(t for t, _ in marked) == text and marked[-1][1] == "T1003.001"
    heat = heatmap_html(hits)
    assert "Credential Access" in heat and "&lt;Memory&gt;" in heat and "<Memory>" not in heat


def test_oversized_pastes_and_bodies_are_refused_with_a_message_and_the_text_stays(browser):  # noqa: F811
    """The app in a real browser, no model (every refusal comes before any model call): a chunked
    body over the limit gets 413 with the message (never parsed); a paste over 200,000 characters
    and a body over the limit show a toast in the page, the chat refuses a long message before it
    joins the history, and each text stays in its box; the app keeps answering after all of it."""
    import httpx

    from secfm.app.backend import Backend
    from secfm.app.ui import launch_app

    backend = Backend.from_options(endpoint="http://127.0.0.1:9", model="gemma-3-270m")  # never called
    port = free_port()
    demo = launch_app(host="127.0.0.1", port=port, backend=backend, block=False, quiet=True, warm=False,
                      max_body_bytes=2**19)
    url = f"http://127.0.0.1:{port}/"
    ctx = browser.new_context()
    try:
        chunks = (b"[" + b"1," * 50_000 for _ in range(10))  # ~1 MB, chunked: no Content-Length to trust
        r = httpx.post(url + "gradio_api/queue/join", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over 0.5 MB" in r.json()["error"] and "1,1," not in r.text

        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_role("tab", name="Config review").click()
        box = page.locator("#config-input textarea")
        page.locator("#config-use-model input").uncheck()
        for size, says in ((200_001, "200,001 characters; the app takes at most 200,000"),
                           (600_000, "over 0.5 MB and was refused before it was read")):
            text = "PermitRootLogin yes\n" + "#" * (size - 20)
            box.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", text)
            page.locator("#config-run").click()
            page.locator(".toast-body", has_text=says).wait_for()
            assert box.evaluate("el => el.value.length") == size  # nothing the analyst pasted is lost

        page.get_by_role("tab", name="Chat").click()
        chat_box = page.locator("#chat-input textarea")
        chat_box.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                          "why " + "x" * 200_001)
        page.locator("#chat-send").click()
        page.locator("#chat-status", has_text="200,005 characters; the chat takes at most 200,000").wait_for()
        assert chat_box.evaluate("el => el.value.length") == 200_005
        assert page.locator('#chatbot [data-testid="user"]').count() == 0  # not in the history either

        page.get_by_role("tab", name="Config review").click()  # and the app still works
        box.fill("PermitRootLogin yes\n")
        page.locator("#config-run").click()
        page.locator("#config-summary", has_text="finding(s)").wait_for()
    finally:
        ctx.close()
        demo.close()


# =============================================================================================
# slow: the real app, the real model, a real browser
# =============================================================================================
@pytest.fixture(scope="module")
def app_backend(engine, tmp_path_factory):
    """The app's backend on the session engine; its chat reads a CVE store that `secfm kb add-nvd`
    filled from the chat gold set's small NVD fixture feed (when the CVE knowledge is installed)."""
    import os
    import subprocess
    import sys

    from secfm.app.backend import Backend

    backend = Backend(engine)
    home = tmp_path_factory.mktemp("secfm-home")
    added = subprocess.run([sys.executable, "-m", "secfm.cli", "kb", "add-nvd", str(NVD_FIXTURE)], capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, SECFM_HOME=str(home)))
    if added.returncode == 0:
        from secfm.knowledge import nvd

        backend.chat_pipeline().cve_store = nvd.open_store(home / "nvd" / "cves.sqlite", create=False)
    return backend


@pytest.fixture(scope="module")
def app_url(app_backend):
    from secfm.app.ui import launch_app

    port = free_port()
    demo = launch_app(host="127.0.0.1", port=port, backend=app_backend, block=False, quiet=True,
                      max_new_tokens=CHAT_TOKENS, concurrency=2)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def new_page(browser, artifacts_dir, request):  # noqa: F811
    """Pages in fresh browser contexts (each its own analyst); a screenshot of each at the end."""
    contexts = []

    def make():
        ctx = browser.new_context(viewport={"width": 1360, "height": 960}, accept_downloads=True)
        ctx.set_default_timeout(60_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for n, ctx in enumerate(contexts):
        for page in ctx.pages:
            try:
                page.screenshot(path=str(artifacts_dir / f"{request.node.name}-{n}.png"), full_page=True)
            except Exception:  # noqa: BLE001 - a screenshot is a by-product
                pass
        ctx.close()


def _open(page, url):
    page.goto(url)
    page.wait_for_selector("#chatbot")
    page.wait_for_function("document.querySelector('#app-header').innerText.includes('gemma-3-270m')")


def _bot_text(page) -> str:
    return page.evaluate(
        "() => { const m = document.querySelectorAll('#chatbot [data-testid=\"bot\"]');"
        " return m.length ? m[m.length - 1].innerText : ''; }")


def _status(page) -> str:
    return page.locator("#chat-status").inner_text()


def _send(page, text):
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-send").click()


def _set_max_tokens(page, n: int):
    settings = page.locator("#chat-settings")
    if not page.locator("#chat-max-new-tokens").is_visible():
        settings.get_by_text("Settings and transcript").click()
    box = page.locator("#chat-max-new-tokens input[type=number]")
    box.fill(str(n))
    box.press("Enter")


def _transcript(page) -> dict:
    page.locator("#chat-export").click()
    page.wait_for_function("document.querySelector('#chat-transcript .cm-content')?.innerText.includes('messages')")
    # the code view renders only the lines in sight (answers with tool cards are long): read the download
    with page.expect_download() as info:
        page.locator("#chat-transcript").get_by_role("button", name="Download").click()
    return json.loads(Path(info.value.path()).read_text(encoding="utf-8"))


@pytest.mark.slow
def test_chat_streams_tokens_into_the_page(app_url, new_page, artifacts_dir):  # noqa: F811
    page = new_page()
    _open(page, app_url)
    _send(page, "What is lateral movement in an intrusion?")
    snapshots: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = _bot_text(page)
        if text and (not snapshots or snapshots[-1] != text):
            snapshots.append(text)
            if len(snapshots) == 2:
                page.screenshot(path=str(artifacts_dir / "chat-mid-stream.png"), full_page=True)
        if _status(page).startswith(("Done", "Error")):
            break
        time.sleep(0.05)
    status = _status(page)
    assert status.startswith("Done"), status
    final = _bot_text(page)
    assert "TA0008" in final and "Lateral Movement" in final and "Sources" in final
    # the tool card came first, then the model's phrasing arrived piece by piece
    assert "TA0008" in snapshots[0] and len(snapshots) >= 2, snapshots
    answers = [s.split("Answer —", 1)[1].split("Facts", 1)[0].strip(" ▌\n") for s in snapshots if "Answer —" in s]
    if "Answer —" in final:  # the model's text passed the checks
        assert len(answers) >= 2 and len(set(answers)) >= 2, answers
    assert page.locator("#chatbot [data-testid='user']").last.inner_text().startswith("What is lateral movement")


def _ask(page, text: str, timeout: float = 180_000) -> str:
    """Send a chat message and wait for its answer to be complete; returns the bot message's text."""
    before = page.locator("#chatbot [data-testid='bot']").count()
    _send(page, text)
    page.wait_for_function(
        f"document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length > {before}"
        " && document.querySelector('#chat-status').innerText.startsWith('Done')", timeout=timeout)
    return _bot_text(page)


def _links(page) -> set[str]:
    return set(page.locator("#chatbot [data-testid='bot']").last.locator("a").evaluate_all(
        "els => els.map(e => e.href)"))


@pytest.mark.slow
def test_grounded_chat_answers_with_sources_and_links(app_url, app_backend, new_page):  # noqa: F811
    page = new_page()
    _open(page, app_url)
    log4shell = _ask(page, "What is CVE-2021-44228 and which ATT&CK technique does exploiting it map to?")
    for fact in ("CWE-917", "CWE-74", "T1190", "Exploit Public-Facing Application"):
        assert fact in log4shell, fact
    links = _links(page)
    assert {"https://cwe.mitre.org/data/definitions/917.html", "https://cwe.mitre.org/data/definitions/74.html",
            "https://attack.mitre.org/techniques/T1190"} <= links
    assert page.locator("#chatbot .chat-card.card-cve").count() >= 1
    vss = _ask(page, "vssadmin delete shadows /all /quiet on a file server")
    assert "T1490" in vss and "Inhibit System Recovery" in vss and "CRITICAL" in vss
    assert "https://attack.mitre.org/techniques/T1490" in _links(page)
    card = page.locator("#chatbot [data-testid='bot']").last.locator(".chat-card.card-technique").inner_text()
    assert "Impact" in card and "Data Backup" in card and "vssadmin" in card  # tactics, mitigations, detection
    page.locator("#chat-to-triage").click()  # the pasted alert goes to the Triage tab
    page.wait_for_function("document.querySelector('#triage-input textarea').value.includes('vssadmin delete shadows')")
    page.get_by_role("tab", name="Chat").click()
    if app_backend.chat_pipeline().cve_store is None:
        pytest.skip("`secfm kb add-nvd` is not available in this build: the NVD question is not asked")
    shellshock = _ask(page, "What is CVE-2014-6271?")
    assert "CWE-78" in shellshock and "9.8" in shellshock
    assert "https://nvd.nist.gov/vuln/detail/CVE-2014-6271" in _links(page)


@pytest.mark.slow
def test_triage_a_sample_alert_shows_its_severity(app_url, new_page):  # noqa: F811
    page = new_page()
    _open(page, app_url)
    page.get_by_role("tab", name="Triage").click()
    page.locator("#triage-input textarea").fill(LSASS_ALERT)
    page.locator("#triage-run").click()
    page.wait_for_function("document.querySelector('#triage-table').innerText.includes('EDR-1043')", timeout=120_000)
    assert "CRITICAL" in page.locator("#triage-table").inner_text()
    detail = page.locator("#triage-detail").inner_text()
    assert "CRITICAL" in detail and "EDR-1043" in detail and "T1003.001" in detail
    assert "1 alert(s)" in page.locator("#triage-summary").inner_text()
    # the whole sample: a ranked queue; picking a row shows that alert
    page.locator("#triage-sample").click()
    page.wait_for_function("document.querySelector('#triage-input textarea').value.includes('IDS-7781')")
    page.locator("#triage-run").click()
    page.wait_for_function("document.querySelector('#triage-summary').innerText.includes('4 alert(s)')",
                           timeout=120_000)
    rows = page.locator("#triage-table").inner_text()
    assert rows.index("EDR-1043") < rows.index("EDR-1042")  # most urgent first
    page.locator("#triage-table").get_by_text("EDR-1042", exact=True).first.click()
    page.wait_for_function("document.querySelector('#triage-detail').innerText.includes('EDR-1042')")
    assert "HIGH" in page.locator("#triage-detail").inner_text()
    page.locator("#triage-json-box").get_by_text("JSON").click()
    page.wait_for_function("document.querySelector('#triage-json .cm-content')?.innerText.includes('alerts')")


@pytest.mark.slow
def test_extract_techniques_and_download_the_navigator_layer(app_url, new_page, tmp_path):  # noqa: F811
    from secfm.workflows.navigator import validate_layer

    page = new_page()
    _open(page, app_url)
    page.get_by_role("tab", name="ATT&CK").click()
    page.locator("#attack-sample").click()
    page.wait_for_function("document.querySelector('#attack-input textarea').value.includes('LSASS')")
    page.locator("#attack-run").click()
    page.wait_for_function("document.querySelector('#attack-table').innerText.includes('T1')", timeout=180_000)
    note = page.locator("#attack-note").inner_text()
    assert "technique(s)" in note
    table = page.locator("#attack-table").inner_text()
    shown = {t for t in table.split() if t.startswith("T1") and t[1:5].isdigit()}
    assert shown
    assert page.locator("#attack-highlight").get_by_text(sorted(shown)[0]).count() >= 1  # evidence is marked
    assert page.locator("#attack-heatmap .hm-cell").count() >= 1
    with page.expect_download() as info:
        page.locator("#attack-navigator").click()
    layer_path = tmp_path / info.value.suggested_filename
    info.value.save_as(layer_path)
    layer = json.loads(layer_path.read_text())
    assert info.value.suggested_filename.endswith(".json")
    assert layer["domain"] == "enterprise-attack" and validate_layer(layer) == []
    assert shown <= {t["techniqueID"] for t in layer["techniques"]}  # the table may render only its top rows
    with page.expect_download() as info:
        page.locator("#attack-stix").click()
    bundle = json.loads(Path(info.value.path()).read_text())
    assert bundle["type"] == "bundle"
    assert {o["type"] for o in bundle["objects"]} >= {"report", "attack-pattern", "identity"}


@pytest.mark.slow
def test_summary_and_config_review_tabs(app_url, new_page):  # noqa: F811
    page = new_page()
    _open(page, app_url)
    page.get_by_role("tab", name="Summarize").click()
    page.locator("#summary-sample").click()
    page.locator("#summary-use-model input").uncheck()  # the extractive summary: no model time
    page.wait_for_function("document.querySelector('#summary-input textarea').value.includes('INC-2026-1120')")
    page.locator("#summary-run").click()
    page.wait_for_function("document.querySelector('#summary-output').innerText.includes('Timeline')", timeout=120_000)
    assert "198.51.100.47" in page.locator("#summary-output").inner_text()
    page.get_by_role("tab", name="Config review").click()
    page.locator("#config-sample").click()
    page.wait_for_function("document.querySelector('#config-input textarea').value.includes('PermitRootLogin')")
    page.locator("#config-run").click()
    page.wait_for_function("document.querySelector('#config-table').innerText.includes('SSHD')", timeout=120_000)
    assert "finding(s)" in page.locator("#config-summary").inner_text()
    flagged = page.locator("#config-view .cfg-line.flagged")
    assert flagged.count() >= 1
    lines = {int(x) for x in flagged.evaluate_all("els => els.map(e => e.dataset.line)")}
    assert 4 in lines  # PermitRootLogin yes, flagged on its own line number


@pytest.mark.slow
def test_cve_tab_analyses_a_description(app_url, new_page):  # noqa: F811
    from secfm.heads import shipped_head_path

    if not (shipped_head_path("cvss", "gemma-3-270m") / "head.json").is_file():
        pytest.skip("no CVSS head shipped yet")
    page = new_page()
    _open(page, app_url)
    page.get_by_role("tab", name="CVE").click()
    page.locator("#cve-sample").click()
    page.wait_for_function("document.querySelector('#cve-input textarea').value.includes('SQL injection')")
    page.locator("#cve-run").click()
    page.wait_for_function("document.querySelector('#cve-output').innerText.includes('Predicted CVSS')", timeout=120_000)
    out = page.locator("#cve-output").inner_text()
    assert "CWE-89" in out.split("Predicted CVSS")[0] and "Network (N)" in out
    assert page.locator("#cve-output a[href*='cwe.mitre.org/data/definitions/89']").count() >= 1


@pytest.mark.slow
def test_two_analysts_never_see_each_other(app_url, new_page):  # noqa: F811
    alice, bob = new_page(), new_page()
    for page in (alice, bob):
        _open(page, app_url)
        _set_max_tokens(page, 3)
    _send(alice, "ALICE-7Q2 wants to know what T1566 is")
    _send(bob, "BOB-4K9 asks about CVE-2021-44228")
    for page in (alice, bob):
        page.wait_for_function("document.querySelector('#chat-status').innerText.startsWith('Done')", timeout=180_000)
    a, b = _transcript(alice), _transcript(bob)
    assert a["session"] != b["session"]
    assert [m["role"] for m in a["messages"]] == ["user", "assistant"] == [m["role"] for m in b["messages"]]
    assert "ALICE-7Q2" in json.dumps(a) and "BOB-4K9" not in json.dumps(a)
    assert "BOB-4K9" in json.dumps(b) and "ALICE-7Q2" not in json.dumps(b)
    assert "BOB-4K9" not in alice.locator("#chatbot").inner_text()
    # a reload is a new session: nothing of the old one comes back
    alice.reload()
    _open(alice, app_url)
    assert "ALICE-7Q2" not in alice.locator("#chatbot").inner_text()


@pytest.mark.slow
def test_concurrent_sessions_benchmark_smoke(app_url, tmp_path):
    from secfm.app.bench_app import run_app_bench

    out = tmp_path / "bench-app.json"
    result = run_app_bench(app_url, sessions=3, out=out, max_new_tokens=2, timeout=300)
    assert result["all_answered"] and result["no_mixed_histories"], result["errors"] + result["history_problems"]
    assert result["distinct_session_ids"] == 3 and result["latency_s"]["p50"] is not None
    assert json.loads(out.read_text())["sessions"] == 3
    assert result["processes"]["bench_and_app"]["cpu_s"] > 0  # the app runs in this process: one CPU figure
    assert all(r["updates"] > 1 for r in result["per_session"])  # the streamed updates came through queue/data
    assert result["phrasing_failed_turns"] == len(result["phrasing_failures"])


def test_bench_reads_a_failed_phrasing_from_the_status_line():
    from secfm.app.bench_app import _phrasing_failure

    status = ('<div class="chat-status done">Done: 2 fact(s) from 1 source(s), tools 0.3 s · total 2.1 s · model failed'
              " (SecfmError: model server at http://127.0.0.1:8011/v1 answered 404: the model 'gemma-3-270m' does not"
              " exist)</div>")
    assert _phrasing_failure(status).startswith("SecfmError: model server") and _phrasing_failure(status).endswith("exist")
    assert _phrasing_failure('<div class="chat-status done">Done: 1 fact(s) · model ok</div>') is None


@pytest.mark.slow
def test_sign_in_is_required_when_auth_is_set(engine, new_page):
    from secfm.app.backend import Backend
    from secfm.app.ui import launch_app

    port = free_port()
    demo = launch_app(host="127.0.0.1", port=port, auth=("analyst", "c0rrect-h0rse"), backend=Backend(engine),
                      block=False, quiet=True, warm=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        import httpx

        assert httpx.get(url + "config", timeout=10).status_code in (401, 403)  # nothing without a login
        page = new_page()
        page.goto(url)
        page.locator("input[type=password]").wait_for()
        assert page.locator("#chatbot").count() == 0

        def sign_in(password):
            page.get_by_label("username").fill("analyst")
            page.get_by_label("password").fill(password)
            page.get_by_role("button", name="Login").click()

        sign_in("wrong")
        page.get_by_text("Incorrect Credentials").wait_for()
        assert page.locator("#chatbot").count() == 0
        sign_in("c0rrect-h0rse")
        page.wait_for_selector("#chatbot")
        page.wait_for_function("document.querySelector('#app-header').innerText.includes('signed in as analyst')")
    finally:
        demo.close()


@pytest.mark.slow
def test_stop_button_ends_the_answer(app_url, new_page):  # noqa: F811
    # last on purpose: without engine-side cancellation the model finishes these tokens in the background
    page = new_page()
    _open(page, app_url)
    _set_max_tokens(page, 48)
    _send(page, "What is T1566?")  # the tools answer at once, then the model phrases (what Stop ends)
    page.wait_for_function("document.querySelector('#chat-status').innerText.startsWith('Tools done')"
                           " || document.querySelector('#chat-status').innerText.startsWith('Phrasing')", timeout=180_000)
    page.locator("#chat-stop").click()
    page.wait_for_function("document.querySelector('#chat-status').innerText.startsWith('Stopped')")
    frozen = _bot_text(page)
    time.sleep(3)
    assert _bot_text(page) == frozen
    # the conversation goes on after a stop
    _set_max_tokens(page, 1)
    _send(page, "Thanks.")
    page.wait_for_function("document.querySelector('#chat-status').innerText.startsWith('Done')", timeout=240_000)
    assert page.locator("#chatbot [data-testid='user']").count() == 2


def test_endpoint_mode_streams_from_an_openai_compatible_server():
    """`secfm app --endpoint URL`: the header names the endpoint; chat streams from the server
    with the fixed system prompt first and the analyst's text last."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from secfm.app.backend import Backend
    from secfm.app.chat import SYSTEM_PROMPT

    seen: list[dict] = []

    async def models(request):
        return JSONResponse({"object": "list",
                             "data": [{"id": "gemma-3-270m", "object": "model", "created": 0, "owned_by": "t"}]})

    async def chat(request):
        body = await request.json()
        seen.append(body)

        def events():
            for word in ("Lateral ", "movement ", "is ..."):
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    api = Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        backend = Backend.from_options(endpoint=f"http://127.0.0.1:{port}", model="gemma-3-270m")
        assert f"127.0.0.1:{port}" in backend.info_html() and "gemma-3-270m" in backend.info_html()
        prompt = backend.chat_prompt([], "what is lateral movement?", max_new_tokens=8)
        pieces = list(backend.stream_chat(prompt.messages, max_new_tokens=8))
        assert "".join(pieces) == "Lateral movement is ..." and len(pieces) == 3
        sent = seen[-1]["messages"]
        assert sent[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert sent[-1] == {"role": "user", "content": "what is lateral movement?"}
        assert seen[-1]["max_tokens"] == 8 and seen[-1]["stream"] is True
    finally:
        server.should_exit = True
        thread.join(timeout=10)

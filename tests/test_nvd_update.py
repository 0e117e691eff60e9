"""`secfm kb update nvd` against a local HTTP server serving API 2.0 fixture pages."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from secfm.errors import SecfmError
from secfm.knowledge.nvd import CveStore
from secfm.knowledge.nvd_update import NvdClient, RateLimit, update_store, windows
from tests.nvd_fixtures import make_cves, v20_page


class FakeNvd:
    """CVEs by last-modified date; answers startIndex/resultsPerPage and lastMod ranges."""

    def __init__(self, cves):
        self.cves = cves
        self.requests: list[dict] = []
        self.fail_next = 0

    def answer(self, query: dict) -> tuple[int, bytes]:
        self.requests.append(query)
        if self.fail_next:
            self.fail_next -= 1
            return 503, b"busy"
        rows = self.cves
        if "lastModStartDate" in query:
            lo, hi = query["lastModStartDate"][:19], query["lastModEndDate"][:19]
            rows = [c for c in rows if lo <= c["modified"].replace("Z", ":00")[:19] <= hi]
        start, per = int(query.get("startIndex", 0)), int(query.get("resultsPerPage", 2000))
        page = v20_page(rows[start : start + per], start=start, total=len(rows), per_page=per)
        return 200, json.dumps(page).encode()


@pytest.fixture()
def server():
    state = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
            code, body = state["nvd"].answer(query)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/rest/json/cves/2.0"
    httpd.shutdown()
    httpd.server_close()


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(round(s, 3))
        self.t += s


def client(url, clock=None):
    clock = clock or FakeClock()
    limit = RateLimit.for_key(None, clock=clock, sleep=clock.sleep)
    return NvdClient(url, api_key="", limit=limit, sleep=clock.sleep), clock


def test_full_then_resumed_then_incremental(server, tmp_path):
    state, url = server
    cves = make_cves(2024, 5, month=1)
    state["nvd"] = FakeNvd(cves)
    store = CveStore(tmp_path / "cves.sqlite")
    c, clock = client(url)
    t0 = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    # interrupted after one page: the position is saved
    rep = update_store(store, c, now=t0, page_size=2, max_pages=1)
    assert rep.mode == "full" and rep.pages == 1 and store.count() == 2
    assert store.get_meta("update_progress")["start_index"] == 2 and store.get_meta("last_update") is None
    # the next run carries on from index 2
    rep = update_store(store, c, now=t0, page_size=2)
    assert rep.resumed and rep.pages == 2 and store.count() == 5
    assert [int(q["startIndex"]) for q in state["nvd"].requests] == [0, 2, 4]
    assert store.get_meta("update_progress") is None and store.get_meta("last_update")["until"].startswith("2024-06-01")
    # rate limit: NVD's 6 s pause between requests without a key (fake clock: no real waiting)
    assert clock.sleeps == [6.0, 6.0]
    # incremental: only what changed since the last update, in windows of at most 120 days
    changed = dict(cves[0], modified="2024-07-01T00:00Z", cwes=["CWE-78"])
    state["nvd"] = FakeNvd([changed, *cves[1:]])
    rep = update_store(store, c, now=dt.datetime(2024, 12, 1, tzinfo=dt.UTC), page_size=2)
    assert rep.mode == "incremental" and rep.windows == 2 and rep.store.updated == 1
    first = state["nvd"].requests[0]
    assert first["lastModStartDate"].startswith("2024-06-01") and first["lastModEndDate"].startswith("2024-09-29")
    assert store.lookup(cves[0]["id"]).cwes == ("CWE-78",)


def test_retries_busy_answers_and_errors_clearly(server, tmp_path):
    state, url = server
    state["nvd"] = FakeNvd(make_cves(2024, 3))
    state["nvd"].fail_next = 2
    store = CveStore(tmp_path / "cves.sqlite")
    c, clock = client(url)
    update_store(store, c, now=dt.datetime(2024, 6, 1, tzinfo=dt.UTC))
    assert store.count() == 3 and len(state["nvd"].requests) == 3
    state["nvd"].fail_next = 99
    c.retries = 1
    with pytest.raises(SecfmError, match="HTTP 503"):
        update_store(store, c, full=True)
    dead, _ = client("http://127.0.0.1:9/none")
    dead.retries = 0
    with pytest.raises(SecfmError, match="cannot reach the NVD API"):
        update_store(CveStore(tmp_path / "other.sqlite"), dead)


def test_rate_limit_window_with_a_key():
    clock = FakeClock()
    limit = RateLimit(requests=3, window=30.0, pause=0.0, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limit.wait()
    assert clock.sleeps == [30.0]  # the 4th request waits for the first to leave the window
    assert RateLimit.for_key("k").requests == 50 and RateLimit.for_key(None).requests == 5


def test_windows_cover_the_range():
    a = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    w = windows(a, a + dt.timedelta(days=250))
    assert len(w) == 3 and w[0][0].startswith("2024-01-01") and w[-1][1].startswith("2024-09-07")


def test_kb_update_nvd_command_against_the_local_server(server, tmp_path):
    from typer.testing import CliRunner

    from secfm.cli import app

    state, url = server
    state["nvd"] = FakeNvd(make_cves(2024, 3))
    store = tmp_path / "cves.sqlite"
    res = CliRunner().invoke(app, ["kb", "update", "nvd", "--url", url, "--store", str(store), "--pause", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"): res.output.rindex("}") + 1])
    assert out["mode"] == "full" and out["added"] == 3 and out["total_cves"] == 3
    res = CliRunner().invoke(app, ["kb", "update", "nvd", "--url", url, "--store", str(store), "--pause", "0"])
    assert json.loads(res.output[res.output.index("{"): res.output.rindex("}") + 1])["mode"] == "incremental"

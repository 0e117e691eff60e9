"""`secfm kb update nvd`: download NVD's CVE API 2.0 into the local CVE store.

* Incremental: after the first full download, each update asks only for CVEs modified since the
  last successful one (``lastModStartDate``/``lastModEndDate``, in windows of at most 120 days
  as the API requires).
* Resumable: after every page is stored, the position (window and ``startIndex``) is saved in
  the store; an interrupted update carries on from the next page.
* Rate-limited as NVD asks: at most 5 requests in a rolling 30 seconds without an API key, 50
  with one (``--api-key`` or ``$NVD_API_KEY``), and a pause between requests (NVD suggests
  6 seconds); HTTP 403/429/503 answers are retried after a back-off.

The base URL is ``$SECFM_NVD_API_URL`` or NVD's own; tests point it at a local server.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from secfm.errors import SecfmError
from secfm.knowledge.nvd import AddReport, CveStore, parse_document

NVD_API_URL = "https://services.nvd.nist.gov/rest/json/cves/2.0"
PAGE_SIZE = 2000  # NVD's largest page
MAX_WINDOW_DAYS = 120  # NVD's largest lastMod range
PROGRESS_KEY = "update_progress"
LAST_UPDATE_KEY = "last_update"
RETRY_STATUSES = (403, 429, 500, 502, 503, 504)


@dataclass
class RateLimit:
    """At most ``requests`` in any ``window`` seconds, and ``pause`` seconds between two."""

    requests: int = 5
    window: float = 30.0
    pause: float = 6.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _sent: collections.deque = field(default_factory=collections.deque)

    @classmethod
    def for_key(cls, api_key: str | None, pause: float | None = None, **kw) -> RateLimit:
        if api_key:
            return cls(requests=50, window=30.0, pause=0.6 if pause is None else pause, **kw)
        return cls(requests=5, window=30.0, pause=6.0 if pause is None else pause, **kw)

    def wait(self) -> None:
        now = self.clock()
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        delay = 0.0
        if self._sent:
            delay = max(delay, self.pause - (now - self._sent[-1]))
        if len(self._sent) >= self.requests:
            delay = max(delay, self.window - (now - self._sent[0]))
        if delay > 0:
            self.sleep(delay)
            now = self.clock()
            while self._sent and now - self._sent[0] >= self.window:
                self._sent.popleft()
        self._sent.append(now)


@dataclass
class UpdateReport:
    pages: int = 0
    cves_received: int = 0
    store: AddReport = field(default_factory=AddReport)
    windows: int = 0
    resumed: bool = False
    mode: str = "full"  # full or incremental
    since: str | None = None
    until: str | None = None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "since": self.since, "until": self.until, "pages": self.pages,
                "windows": self.windows, "cves_received": self.cves_received, "resumed": self.resumed,
                **{k: v for k, v in self.store.to_dict().items() if k not in ("files", "problems")}}


def _iso(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_iso(value: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(_dt.UTC)


def windows(since: _dt.datetime, until: _dt.datetime, days: int = MAX_WINDOW_DAYS) -> list[tuple[str, str]]:
    """``[(start, end), ...]`` covering since..until in ranges of at most ``days``."""
    out = []
    start = since
    while start < until:
        end = min(start + _dt.timedelta(days=days), until)
        out.append((_iso(start), _iso(end)))
        start = end
    return out


class NvdClient:
    """GET pages of the CVE API with the rate limit, retries and one clear error."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, limit: RateLimit | None = None,
                 timeout: float = 60.0, retries: int = 4, sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url or os.environ.get("SECFM_NVD_API_URL") or NVD_API_URL
        self.api_key = api_key if api_key is not None else os.environ.get("NVD_API_KEY")
        self.limit = limit or RateLimit.for_key(self.api_key)
        self.timeout = timeout
        self.retries = retries
        self.sleep = sleep
        self.requests = 0

    def page(self, params: dict) -> dict:
        url = self.base_url + ("&" if "?" in self.base_url else "?") + urllib.parse.urlencode(params)
        headers = {"User-Agent": "secfm (kb update nvd)", "Accept": "application/json"}
        if self.api_key:
            headers["apiKey"] = self.api_key
        for attempt in range(self.retries + 1):
            self.limit.wait()
            self.requests += 1
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout) as r:
                    data = r.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code in RETRY_STATUSES and attempt < self.retries:
                    self.sleep(min(60.0, 6.0 * 2**attempt))
                    continue
                hint = " (an API key may be wrong: check --api-key / $NVD_API_KEY)" if exc.code in (401, 403) else ""
                raise SecfmError(f"NVD API answered HTTP {exc.code} for {url}{hint}") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                if attempt < self.retries:
                    self.sleep(min(60.0, 6.0 * 2**attempt))
                    continue
                reason = getattr(exc, "reason", exc)
                raise SecfmError(f"cannot reach the NVD API at {self.base_url} ({reason}); no network? "
                                 "Load downloaded feeds with `secfm kb add-nvd PATH` instead") from None
        try:
            doc = json.loads(data)
        except ValueError:
            raise SecfmError(f"the NVD API sent a page that is not JSON ({url})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
            raise SecfmError(f"the NVD API sent a page without 'vulnerabilities' ({url})")
        return doc


def update_store(store: CveStore, client: NvdClient | None = None, *, full: bool = False,
                 now: _dt.datetime | None = None, page_size: int = PAGE_SIZE,
                 progress: Callable[[str], None] | None = None, max_pages: int | None = None) -> UpdateReport:
    """Bring ``store`` up to date from the API (see the module docstring). ``max_pages`` stops
    early (the saved position lets the next call carry on)."""
    say = progress or (lambda s: None)
    client = client or NvdClient()
    report = UpdateReport()
    saved = store.get_meta(PROGRESS_KEY)
    last = store.get_meta(LAST_UPDATE_KEY)
    if saved and not full:
        report.resumed = True
        plan = saved
        say(f"resuming the {plan['mode']} update from window {plan['window'] + 1}/{len(plan['windows']) or 1}, "
            f"index {plan['start_index']}")
    else:
        until = now or _dt.datetime.now(_dt.UTC)
        if last and not full:
            since = _parse_iso(last["until"])
            plan = {"mode": "incremental", "since": last["until"], "until": _iso(until),
                    "windows": windows(since, until), "window": 0, "start_index": 0}
        else:
            plan = {"mode": "full", "since": None, "until": _iso(until), "windows": [], "window": 0, "start_index": 0}
        store.set_meta(PROGRESS_KEY, plan)
    report.mode, report.since, report.until = plan["mode"], plan["since"], plan["until"]
    todo = plan["windows"] if plan["mode"] == "incremental" else [None]
    report.windows = len(todo)
    while plan["window"] < len(todo):
        window = todo[plan["window"]]
        while True:
            params = {"startIndex": plan["start_index"], "resultsPerPage": page_size}
            if window is not None:
                params.update(lastModStartDate=window[0], lastModEndDate=window[1])
            doc = client.page(params)
            _, records = parse_document(doc, "nvd-api-2.0")
            store.add(records, report.store)
            report.pages += 1
            report.cves_received += len(records)
            total = int(doc.get("totalResults") or 0)
            got = len(doc["vulnerabilities"])
            plan["start_index"] += got
            store.set_meta(PROGRESS_KEY, plan)  # the page is stored: a restart carries on after it
            say(f"{plan['start_index']:,}/{total:,} CVEs" + (f" (window {plan['window'] + 1}/{len(todo)})" if window else ""))
            if got == 0 or plan["start_index"] >= total:
                break
            if max_pages is not None and report.pages >= max_pages:
                return report
        plan["window"] += 1
        plan["start_index"] = 0
        store.set_meta(PROGRESS_KEY, plan)
    store.set_meta(LAST_UPDATE_KEY, {"until": plan["until"], "mode": plan["mode"],
                                     "finished": _iso(_dt.datetime.now(_dt.UTC)), "source": client.base_url})
    store.delete_meta(PROGRESS_KEY)
    return report


__all__ = ["NVD_API_URL", "NvdClient", "RateLimit", "UpdateReport", "update_store", "windows"]

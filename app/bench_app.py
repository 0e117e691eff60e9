"""`secfm bench app`: concurrent analyst chat sessions against the running app.

Each session is its own browser-like client (its own ``session_hash`` and cookies) that speaks
Gradio's own HTTP protocol with httpx, as the page's JavaScript does: ``POST queue/join`` with
the event's inputs, then the ``queue/data`` server-sent-event stream of that session, its
streamed outputs sent as diffs (:class:`GradioSession`). All sessions run as asyncio tasks on
one thread, so the benchmark's clients take little of the machine they measure (20
``gradio_client`` instances took 0.5-1.2 of 2 cores, issue #17). All sessions send their first
message at the same moment; every message carries a code word unique to its session. The benchmark records, per session, the time to the first streamed
token and to the full answer, then asks the app for that session's transcript and checks that
the history is exactly the session's own turns (no code word of another session, the streamed
answer equal to the stored one). Results go to ``app/results/bench-app.json``.

``run_app_bench(url, ...)`` measures an app that is already running (``app_pid``: its process,
whose CPU use is recorded beside the benchmark's own); ``bench_app(...)`` starts one in process
on a free port, measures it and stops it; ``bench_separate_app(...)`` starts one in a process of
its own (so the benchmark's client threads do not compete with the app's for its interpreter),
measures it and stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from secfm.evals.bench import latency_stats

DEFAULT_OUT = Path("app/results/bench-app.json")  # relative to the working directory, like every bench's --out
QUESTIONS = [
    "What is lateral movement?",
    "What does an EDR alert for encoded PowerShell usually mean?",
    "How should I triage repeated failed SSH logins?",
    "What is credential dumping?",
    "Why is PermitRootLogin yes risky?",
]


@dataclass
class SessionRun:
    session: int
    code: str
    ok: bool = False
    error: str = ""
    turns: int = 0
    queued_s: float | None = None  # submit -> the app started the answer (first update)
    ttft_s: list[float] = field(default_factory=list)  # per turn: submit -> first answer text on screen (the tools' facts)
    model_ttft_s: list[float] = field(default_factory=list)  # per phrased turn: submit -> the model's first piece
    phrased: int = 0  # turns the model phrased (the tools found facts)
    phrasing_failures: list[str] = field(default_factory=list)  # turns whose status says "model failed (why)"
    total_s: list[float] = field(default_factory=list)  # per turn: submit -> answer complete
    updates: int = 0  # streamed updates received
    chars: int = 0
    history_ok: bool = False
    history_problem: str = ""
    session_id: str = ""


def _stats(values: list[float]) -> dict:
    return latency_stats(values, unit="", digits=3, extra=("mean", "max"), n_key="n")


def _last_assistant(chat) -> str:
    for msg in reversed(chat or []):
        if isinstance(msg, dict) and msg.get("role") == "assistant":
            content = msg.get("content")
            if isinstance(content, list):  # gradio may send [{"type": "text", "text": ...}]
                return "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
            return str(content or "")
    return ""


def _text(content) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
    return str(content or "")


class AppError(RuntimeError):
    """The app answered an event with an error (or the stream ended without its result)."""


@dataclass
class AppUpdate:
    """One streamed update of the chat event: the bot's last message and the status line."""

    answer: str
    status: str
    phrasing: bool  # the status says the model is phrasing


class GradioSession:
    """One analyst's session over Gradio's HTTP protocol (what the page's JavaScript speaks).

    ``POST {api}/queue/join`` with ``{data, fn_index, session_hash}`` queues an event and
    returns its id; ``GET {api}/queue/data?session_hash=`` streams the session's messages as
    server-sent events (``estimation``, ``process_starts``, ``process_generating``: the outputs,
    in full first and then as diffs, ``process_completed``: the final outputs, ``heartbeat``,
    ``close_stream``). State inputs are sent as None: the server keeps them per session hash.
    No heartbeat connection is opened (the server would drop the session's state when it closes).
    """

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, timeout: float = 1800.0):
        import httpx

        self.url = url if url.endswith("/") else url + "/"
        self.auth = auth
        self.session_hash = secrets.token_hex(6)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=30.0))
        self.api = self.url
        self._deps: dict[str, dict] = {}
        self._types: dict[int, str] = {}
        self._elem_ids: dict[int, str] = {}

    async def __aenter__(self) -> GradioSession:
        try:
            await self.connect()
        except BaseException:
            await self.http.aclose()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()

    async def connect(self) -> None:
        """Sign in (with ``auth``) and read the app's config: its API prefix and events."""
        if self.auth:
            resp = await self.http.post(self.url + "login", data={"username": self.auth[0], "password": self.auth[1]})
            if resp.status_code >= 400:
                raise AppError(f"sign-in refused ({resp.status_code})")
        resp = await self.http.get(self.url + "config")
        resp.raise_for_status()
        config = resp.json()
        self.api = self.url + (config.get("api_prefix") or "").strip("/") + "/"
        self._deps = {d["api_name"]: d for d in config.get("dependencies", []) if isinstance(d.get("api_name"), str)}
        for c in config.get("components", []):
            self._types[c["id"]] = c.get("type", "")
            self._elem_ids[c["id"]] = (c.get("props") or {}).get("elem_id") or ""

    def _event(self, api_name: str) -> dict:
        dep = self._deps.get(api_name)
        if dep is None:
            raise AppError(f"the app has no /{api_name} event")
        return dep

    def _data(self, dep: dict, values: list) -> list:
        """The event's inputs: ``values`` in order for its components, None for its State inputs."""
        values, data = list(values), []
        for cid in dep.get("inputs", []):
            data.append(None if self._types.get(cid) == "state" else values.pop(0))
        return data

    async def events(self, api_name: str, values: list):
        """Queue one event; yield its outputs at each streamed update, then its final outputs."""
        from gradio_client.utils import apply_diff

        dep = self._event(api_name)
        resp = await self.http.post(self.api + "queue/join", json={
            "data": self._data(dep, values), "fn_index": dep.get("id"), "session_hash": self.session_hash,
            "event_data": None})
        if resp.status_code >= 400:
            raise AppError(f"queue/join answered {resp.status_code}: {resp.text[:200]}")
        event_id = resp.json()["event_id"]
        outputs: list | None = None
        async with self.http.stream("GET", self.api + "queue/data", params={"session_hash": self.session_hash}) as stream:
            if stream.status_code != 200:
                raise AppError(f"queue/data answered {stream.status_code}")
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                kind = msg.get("msg")
                if kind == "close_stream":
                    break
                if kind in ("unexpected_error", "server_stopped"):
                    raise AppError(str(msg.get("message") or kind))
                if msg.get("event_id") != event_id:
                    continue
                if kind == "process_generating":
                    data = (msg.get("output") or {}).get("data") or []
                    if outputs is None:
                        outputs = list(data)
                    else:
                        outputs = [apply_diff(outputs[i] if i < len(outputs) else None, d) for i, d in enumerate(data)]
                    yield outputs, False
                elif kind == "process_completed":
                    output = msg.get("output") or {}
                    if not msg.get("success", True) or "error" in output:
                        raise AppError(str(output.get("error") or "the event failed"))
                    yield list(output.get("data") or []), True
                    return
        raise AppError("the event stream closed before its result")

    async def chat(self, message: str, max_new_tokens: int, temperature: float = 0.0):
        """The chat event: yields an :class:`AppUpdate` per streamed update, the final one last."""
        dep = self._event("chat")
        outputs = dep.get("outputs", [])
        chatbot = next((i for i, c in enumerate(outputs) if self._types.get(c) == "chatbot"), 0)
        status = next((i for i, c in enumerate(outputs) if self._elem_ids.get(c) == "chat-status"), None)
        async for values, _final in self.events("chat", [message, max_new_tokens, temperature]):
            text = status_text = ""
            if chatbot < len(values) and isinstance(values[chatbot], list):
                text = _last_assistant(values[chatbot])
            if status is not None and status < len(values) and isinstance(values[status], str):
                status_text = values[status]
            yield AppUpdate(text, status_text, _phrasing(values))

    async def transcript(self) -> dict:
        final = None
        async for values, _final in self.events("transcript", []):
            final = values
        return json.loads(final[0]) if final else {}


def _phrasing(outputs) -> bool:
    """Whether this update shows the model's phrasing arriving (the chat's status line)."""
    return any(isinstance(o, str) and "Phrasing" in o for o in outputs)


_MODEL_FAILED = re.compile(r"model failed(?: \(([^<]*)\))?")


def _phrasing_failure(status: str) -> str | None:
    """The final status's "model failed (why)", when the model's phrasing failed."""
    m = _MODEL_FAILED.search(status or "")
    return None if m is None else (m.group(1) or "no detail")[:200]


async def _one_session(url: str, i: int, barrier: asyncio.Barrier, turns: int, max_new_tokens: int,
                       auth, timeout: float) -> SessionRun:
    run = SessionRun(session=i, code=f"CODE-{i:02d}-{secrets.token_hex(3).upper()}")
    answers: list[str] = []
    sent: list[str] = []
    waited = False
    try:
        async with GradioSession(url, auth=auth, timeout=timeout) as session:
            waited = True
            await asyncio.wait_for(barrier.wait(), timeout)
            for turn in range(turns):
                question = QUESTIONS[(i + turn) % len(QUESTIONS)]
                message = f"[{run.code}] {question}" if turn == 0 else f"{question} (session {run.code})"
                sent.append(message)
                t0 = time.monotonic()
                first_update = first_token = first_piece = None
                last, status = "", ""
                try:
                    async with asyncio.timeout(timeout):
                        async for update in session.chat(message, max_new_tokens, 0.0):
                            now = time.monotonic()
                            run.updates += 1
                            if first_update is None:
                                first_update = now
                            if update.answer and first_token is None:
                                first_token = now
                            if first_piece is None and update.phrasing:
                                first_piece = now
                            last, status = update.answer or last, update.status or status
                except TimeoutError:
                    raise TimeoutError(f"turn {turn + 1} took more than {timeout:.0f}s") from None
                done = time.monotonic()
                if turn == 0 and first_update is not None:
                    run.queued_s = first_update - t0
                run.ttft_s.append((first_token or done) - t0)
                run.total_s.append(done - t0)
                if first_piece is not None:
                    run.phrased += 1
                    run.model_ttft_s.append(first_piece - t0)
                failure = _phrasing_failure(status)
                if failure is not None:
                    run.phrasing_failures.append(f"turn {turn + 1}: {failure}")
                run.chars += len(last)
                answers.append(last)
                run.turns += 1
            transcript = await session.transcript()
        run.session_id = str(transcript.get("session") or "")
        run.history_ok, run.history_problem = _check_history(transcript.get("messages") or [], sent, answers, run.code)
        run.ok = run.turns == turns and run.history_ok
    except Exception as exc:  # noqa: BLE001
        run.error = f"{'' if waited else 'connect: '}{type(exc).__name__}: {exc}"
        if not waited:  # the others wait for every session at the barrier
            try:
                await asyncio.wait_for(barrier.wait(), timeout)
            except (TimeoutError, asyncio.BrokenBarrierError):
                pass
    return run


async def _all_sessions(url: str, sessions: int, turns: int, max_new_tokens: int, auth, timeout: float) -> list[SessionRun]:
    barrier = asyncio.Barrier(sessions)
    return list(await asyncio.gather(*(_one_session(url, i, barrier, turns, max_new_tokens, auth, timeout)
                                      for i in range(sessions))))


_CODE = re.compile(r"CODE-\d{2}-[0-9A-F]{6}")


def _check_history(messages: list[dict], sent: list[str], answers: list[str], code: str) -> tuple[bool, str]:
    """The session's stored history must be exactly its own user turns and streamed answers."""
    expected = []
    for q, a in zip(sent, answers):
        expected += [("user", q.strip()), ("assistant", a)]
    got = [(m.get("role"), _text(m.get("content"))) for m in messages]
    if len(got) != len(expected):
        return False, f"{len(got)} messages stored, {len(expected)} expected"
    for n, ((role, text), (erole, etext)) in enumerate(zip(got, expected)):
        if role != erole:
            return False, f"message {n}: role {role}, expected {erole}"
        if erole == "user" and text != etext:
            return False, f"message {n}: another user text is stored"
        if erole == "assistant" and text.strip() != etext.strip() and etext.strip() != "(no answer)":
            return False, f"message {n}: the stored answer differs from the streamed one"
    foreign = {c for _, t in got for c in _CODE.findall(t)} - {code}
    if foreign:
        return False, f"code words of other sessions in the history: {sorted(foreign)}"
    return True, ""


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of process ``pid`` (None: this one) so far; None when unknown."""
    if pid is None or pid == os.getpid():
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def thread_count(pid: int | None = None) -> int | None:
    """Threads of process ``pid`` (None: this one) now; None when unknown."""
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return threading.active_count() if pid in (None, os.getpid()) else None


class _ProcessLoad:
    """CPU use (cores busy on average) and the most threads of some processes while a block runs."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids, self.max_threads = pids, {name: thread_count(pid) for name, pid in pids.items()}
        self._stop = threading.Event()

    def __enter__(self):
        self._t0, self._cpu0 = time.monotonic(), {n: cpu_seconds(p) for n, p in self.pids.items()}
        self._sampler = threading.Thread(target=self._sample, name="bench-app-load", daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            for name, pid in self.pids.items():
                n = thread_count(pid)
                if n is not None and (self.max_threads[name] or 0) < n:
                    self.max_threads[name] = n

    def __exit__(self, *exc):
        self._stop.set()
        self._sampler.join()
        wall = time.monotonic() - self._t0
        self.result = {}
        for name, pid in self.pids.items():
            before, after = self._cpu0[name], cpu_seconds(pid)
            used = None if before is None or after is None else after - before
            self.result[name] = {"pid": pid or os.getpid(), "cpu_s": None if used is None else round(used, 2),
                                 "cores": None if used is None or not wall else round(used / wall, 2),
                                 "max_threads": self.max_threads[name]}
        return False


def _run_async(coroutine):
    """Run ``coroutine`` to its end on an event loop of its own thread: the caller's thread may
    already run one (a test runner, a notebook), where asyncio.run() refuses to start."""
    with ThreadPoolExecutor(1, thread_name_prefix="bench-app-client") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_app_bench(url: str, sessions: int = 20, out: Path | str | None = DEFAULT_OUT, *, turns: int = 1,
                  max_new_tokens: int = 16, auth: tuple[str, str] | None = None, timeout: float = 1800.0,
                  extra: dict | None = None, app_pid: int | None = None, server_pid: int | None = None) -> dict:
    """``sessions`` concurrent chat sessions against the app at ``url``; returns (and writes to
    ``out``) latency percentiles, throughput and the isolation check, and the CPU use of this
    process, (``app_pid``) of the app's process and (``server_pid``) of the model server behind
    the app's ``--endpoint`` while the sessions ran."""
    if sessions < 1:
        raise ValueError("sessions must be at least 1")
    started = time.monotonic()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    same = app_pid is None or app_pid == os.getpid()
    watched = {"bench_and_app" if same else "bench": None}
    if not same:
        watched["app"] = app_pid
    if server_pid:
        watched["model_server"] = server_pid
    with _ProcessLoad(watched) as load:
        runs = _run_async(_all_sessions(url, sessions, turns, max_new_tokens, auth, timeout))
    wall = time.monotonic() - started
    ttft = [t for r in runs for t in r.ttft_s]
    model_ttft = [t for r in runs for t in r.model_ttft_s]
    total = [t for r in runs for t in r.total_s]
    first_total = [r.total_s[0] for r in runs if r.total_s]
    ids = [r.session_id for r in runs if r.session_id]
    answered = sum(1 for r in runs if r.turns == turns)
    isolated = sum(1 for r in runs if r.history_ok)
    result = {
        "benchmark": "app",
        "url": url,
        "sessions": sessions,
        "turns_per_session": turns,
        "max_new_tokens": max_new_tokens,
        "answered": answered,
        "all_answered": answered == sessions,
        "isolated": isolated,
        "no_mixed_histories": isolated == sessions and len(set(ids)) == len(ids) == sessions,
        "distinct_session_ids": len(set(ids)),
        "wall_s": round(wall, 3),
        "ttft_s": _stats(ttft),
        "ttft_means": "submit -> the first answer text on screen (the tools' facts and sources, before the model)",
        "model_ttft_s": _stats(model_ttft),
        "model_ttft_means": "submit -> the model's first phrasing piece, over the turns the model phrased",
        "phrased_turns": sum(r.phrased for r in runs),
        "phrasing_failed_turns": sum(len(r.phrasing_failures) for r in runs),
        "phrasing_failures": [f"session {r.session} {f}" for r in runs for f in r.phrasing_failures][:20],
        "client": "httpx over Gradio's queue/join + queue/data protocol (asyncio, one thread)",
        "latency_s": _stats(total),
        "first_turn_latency_s": _stats(first_total),
        "queued_s": _stats([r.queued_s for r in runs if r.queued_s is not None]),
        "answers_per_minute": round(60.0 * sum(r.turns for r in runs) / wall, 2) if wall else None,
        "chars_per_s": round(sum(r.chars for r in runs) / wall, 2) if wall else None,
        "errors": [f"session {r.session}: {r.error}" for r in runs if r.error],
        "history_problems": [f"session {r.session}: {r.history_problem}" for r in runs if r.history_problem],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before] if load_before else None,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None},
        "processes": load.result,
        "processes_means": ("CPU seconds and cores busy (CPU seconds / wall) of each process while the sessions ran, "
                            "and its most threads; bench_and_app: the app runs in the benchmark's process"),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "per_session": [asdict(r) for r in runs],
    }
    result["headline"] = {"sessions": sessions, "ttft_p95_s": result["ttft_s"]["p95"],
                          "model_ttft_p95_s": result["model_ttft_s"]["p95"], "latency_p95_s": result["latency_s"]["p95"],
                          "all_answered": result["all_answered"], "no_mixed_histories": result["no_mixed_histories"],
                          "ttft_p95_under_10s": result["ttft_s"]["p95"] is not None and result["ttft_s"]["p95"] < 10}
    if extra:
        result.update(extra)
    result["headline"]["app_process"] = (result.get("app") or {}).get("process", "separate" if not same else "in-process")
    result["headline"]["quantization"] = (result.get("app") or {}).get("quantization")
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _warm_turn(url: str, max_new_tokens: int, timeout: float) -> float:
    """One untimed turn through Gradio before measuring (the server's first-request costs: lazy
    imports and schema building on its event loop); its seconds."""
    async def turn() -> None:
        async with GradioSession(url, timeout=timeout) as session:
            async with asyncio.timeout(timeout):
                async for _ in session.chat("What is T1003?", max_new_tokens, 0.0):
                    pass

    t0 = time.monotonic()
    _run_async(turn())
    return round(time.monotonic() - t0, 3)


def bench_app(model: str | None = None, endpoint: str | None = None, sessions: int = 20,
              out: Path | str | None = DEFAULT_OUT, *, turns: int = 1, max_new_tokens: int = 16,
              concurrency: int = 32, engine: str = "transformers", backend=None, timeout: float = 1800.0,
              quantization: str | None = None) -> dict:
    """Start the app in process on a free loopback port, run :func:`run_app_bench`, stop it."""
    from secfm.app.backend import Backend
    from secfm.app.ui import launch_app

    if backend is None:
        backend = Backend.from_options(model, endpoint, engine=engine, quantization=quantization)
    port = _free_port()
    demo = launch_app(host="127.0.0.1", port=port, concurrency=concurrency, backend=backend, block=False,
                      quiet=True, queue_size=max(64, 2 * sessions), max_new_tokens=max_new_tokens)
    try:
        # analysts arrive at a started app: the knowledge base, retrieval store and name index are loaded
        warm_started = time.monotonic()
        backend.wait_warm(timeout)
        warm_s = round(time.monotonic() - warm_started, 3)
        url = f"http://127.0.0.1:{port}/"
        first_turn_s = _warm_turn(url, max_new_tokens, timeout)
        extra = {"app": {"model": backend.describe(), "quantization": quantization, "concurrency": concurrency,
                         "process": "in-process",
                         "warm_up_wait_s": warm_s, "untimed_first_turn_s": first_turn_s}}
        return run_app_bench(url, sessions, out, turns=turns, max_new_tokens=max_new_tokens, timeout=timeout,
                             extra=extra)
    finally:
        demo.close()


def _wait_page(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    from secfm.errors import SecfmError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SecfmError(f"the app exited with status {proc.returncode} before its page answered")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise SecfmError(f"the app at {url} did not answer within {timeout:.0f}s")


def _wait_idle(pid: int, cores: float = 0.2, timeout: float = 180.0) -> float:
    """Wait until process ``pid`` uses under ``cores`` over a second (its background warm-up is
    done); the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        after = cpu_seconds(pid)
        if before is None or after is None or after - before < cores:
            break
    return round(time.monotonic() - t0, 3)


def bench_separate_app(model: str | None = None, endpoint: str | None = None, sessions: int = 20,
                       out: Path | str | None = DEFAULT_OUT, *, turns: int = 1, max_new_tokens: int = 16,
                       concurrency: int = 32, timeout: float = 1800.0, start_timeout: float = 600.0,
                       server_pid: int | None = None, quantization: str | None = None) -> dict:
    """Start the app in a process of its own (this interpreter, the same settings as
    :func:`bench_app`), wait for its page and its warm-up, send one untimed turn, run
    :func:`run_app_bench` with its pid, stop it."""
    from secfm.serving import stop_server

    port = _free_port()
    settings = {"model": model, "endpoint": endpoint, "quantization": quantization, "host": "127.0.0.1", "port": port,
                "concurrency": concurrency, "quiet": True, "queue_size": max(64, 2 * sessions), "max_new_tokens": max_new_tokens}
    code = f"from secfm.app.ui import launch_app; launch_app(**{settings!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        started = time.monotonic()
        _wait_page(url, proc, start_timeout)
        page_s = round(time.monotonic() - started, 3)
        first_turn_s = _warm_turn(url, max_new_tokens, timeout)
        idle_s = _wait_idle(proc.pid)
        extra = {"app": {"model": model or "default", "endpoint": endpoint, "quantization": quantization,
                         "concurrency": concurrency,
                         "process": "separate", "page_up_s": page_s, "untimed_first_turn_s": first_turn_s,
                         "idle_wait_s": idle_s}}
        return run_app_bench(url, sessions, out, turns=turns, max_new_tokens=max_new_tokens, timeout=timeout,
                             extra=extra, app_pid=proc.pid, server_pid=server_pid)
    finally:
        stop_server(proc)  # its own process group: SIGTERM, then SIGKILL after 30 s


__all__ = ["DEFAULT_OUT", "AppError", "GradioSession", "bench_app", "bench_separate_app", "cpu_seconds",
           "run_app_bench"]

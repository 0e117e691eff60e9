"""Provenance for every results file: the command, the commit, the data, the machine, the time.

A figure a reader can trust says how it was made. :func:`recording` wraps a measurement::

    with recording(data_files=[feeds_dir], allow_busy=allow_busy) as rec:
        payload = run_the_measurement()
        rec.write_json(out, payload)              # adds payload["provenance"]
        rec.write_text(out.with_suffix(".md"), table_markdown)

It checks the machine's load average when it starts and again when it writes: a load above the
number of cores makes the figure noise, so the write is refused (one clear line) unless the caller
passed ``allow_busy`` (the user's ``--allow-busy``), which is then recorded beside the loads.
Outputs are written to a temporary name and moved into place, so an interrupted run never leaves a
half-written results file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from secfm.errors import SecfmError

PROVENANCE_KEY = "provenance"


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded; None where the platform has none."""
    if not hasattr(os, "getloadavg"):
        return None  # pragma: no cover
    return [round(x, 2) for x in os.getloadavg()]


def machine_busy(load: list[float] | None = None) -> bool:
    """True when the 1-minute load average is above the number of cores."""
    load = load if load is not None else load_average()
    return bool(load) and load[0] > cores()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_digest(path: str | os.PathLike) -> dict:
    """``{path, sha256, bytes}`` of a file, or of a folder (sha256 over its files' relative paths
    and digests, in sorted order; ``files`` counts them)."""
    p = Path(path)
    if p.is_file():
        return {"path": str(path), "sha256": file_sha256(p), "bytes": p.stat().st_size}
    if p.is_dir():
        digest = hashlib.sha256()
        total = count = 0
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            digest.update(f"{f.relative_to(p).as_posix()}\0{file_sha256(f)}\n".encode())
            total += f.stat().st_size
            count += 1
        return {"path": str(path), "sha256": digest.hexdigest(), "bytes": total, "files": count}
    raise SecfmError(f"data file not found: {path}")


def git_commit(cwd: Path | None = None) -> dict:
    """The commit of the checkout this code runs from, and whether its tracked files differ from it."""
    where = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def command_line(argv: Iterable[str] | None = None) -> str:
    """The command as the user typed it: ``secfm bench serve --concurrency 8`` (the program's
    path shortened to its name)."""
    args = list(sys.argv if argv is None else argv)
    if args:
        name = Path(args[0]).name
        args[0] = "secfm" if name in ("secfm", "__main__.py", "cli.py") else name
    return shlex.join(args)


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "transformers"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {"cores": cores(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), **versions}


@dataclass
class Provenance:
    command: str
    git: dict
    data: list[dict]
    machine: dict
    started_at: str
    load_average_start: list[float] | None
    load_average_end: list[float] | None = None
    wall_s: float | None = None
    allow_busy: bool = False
    busy: bool = False
    notes: dict = field(default_factory=dict)


class Recorder:
    """What :func:`recording` yields: it stamps and writes the results of one measurement."""

    def __init__(self, data_files: Iterable[str | os.PathLike], allow_busy: bool, command: str | None):
        load = load_average()
        if machine_busy(load) and not allow_busy:
            raise SecfmError(f"machine busy: load average {load[0]} is above the {cores()} cores, so timings "
                             "would be noise; rerun on a quiet machine or pass --allow-busy (recorded in the results)")
        self._t0 = time.perf_counter()
        data_files = list(data_files)
        self._inputs = list(data_files)
        self.provenance = Provenance(
            command=command or command_line(), git=git_commit(), data=[data_digest(p) for p in data_files],
            machine=machine(), started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            load_average_start=load, allow_busy=allow_busy, busy=machine_busy(load))

    def add_data(self, path: str | os.PathLike) -> None:
        self._inputs.append(path)
        self.provenance.data.append(data_digest(path))

    def note(self, **notes) -> None:
        """Free-form facts about the run (seed, threads, what was skipped and why)."""
        self.provenance.notes.update(notes)

    def stamp(self) -> dict:
        """The provenance as of now (end load and wall time filled in); refuses a busy end."""
        load = load_average()
        self.provenance.load_average_end = load
        self.provenance.wall_s = round(time.perf_counter() - self._t0, 2)
        if machine_busy(load):
            if not self.provenance.allow_busy:
                raise SecfmError(f"machine busy: load average rose to {load[0]} (above the {cores()} cores) during "
                                 "the run; the results were not written. Rerun on a quiet machine or pass --allow-busy")
            self.provenance.busy = True
        return asdict(self.provenance)

    def write_json(self, path: str | os.PathLike, payload: dict) -> dict:
        """Write ``payload`` plus its provenance as JSON (atomically); returns what was written."""
        stamped = {**payload, PROVENANCE_KEY: self.stamp()}
        atomic_write_text(Path(path), json.dumps(stamped, indent=2, default=str) + "\n", inputs=self._inputs)
        return stamped

    def write_text(self, path: str | os.PathLike, text: str) -> None:
        """A companion file (a markdown table) with the command and commit in a footer."""
        p = self.provenance
        footer = (f"\n\n<!-- made by `{p.command}` at commit {p.git.get('commit')}; load average "
                  f"{p.load_average_start} -> {p.load_average_end} on {p.machine['cores']} cores -->\n")
        atomic_write_text(Path(path), text.rstrip("\n") + footer, inputs=self._inputs)


def atomic_write_text(path: Path, text: str, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Write to a temporary name then move it into place (never a half-written file, never over
    an input): :func:`secfm.outputs.write_text`."""
    from secfm.outputs import write_text

    write_text(path, text, inputs=inputs)


@contextmanager
def recording(data_files: Iterable[str | os.PathLike] = (), allow_busy: bool = False,
              command: str | None = None) -> Iterator[Recorder]:
    """Measure under provenance: refuses to start (or to write) on a machine busier than its cores."""
    yield Recorder(data_files, allow_busy, command)


def provenance_of(results: dict) -> dict | None:
    """The provenance block of a results payload read back from disk (None for older files)."""
    return results.get(PROVENANCE_KEY)

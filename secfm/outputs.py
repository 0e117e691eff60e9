"""Writing what a command produces without destroying what the user has.

Rules (every command that writes goes through here):

* a file is written to a temporary name in its folder and moved into place (``os.replace``), so
  an interrupted run leaves the old file or the new one, never half of one;
* an output never replaces one of the command's inputs, with or without ``--force``;
* ``-o``/``--out`` naming an existing folder where a file is expected (or a file where a folder is
  expected) is one clear error;
* an output folder is built under a fresh temporary name (never a fixed ``OUT.tmp`` that could be
  the user's) and moved into place; a folder that exists and is not empty is reused only when
  secfm made it (it holds :data:`MARKER`), or with ``--force``; then the new entries are moved in
  beside what is there and nothing else in it is deleted. A folder secfm made is replaced whole,
  unless an input lives inside it (then entries are replaced one by one and inputs stay).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from secfm.errors import SecfmError

#: the file that marks a folder as written by secfm
MARKER = ".secfm-output"

PathLike = str | os.PathLike


def _resolved(paths: Iterable[PathLike | None]) -> list[Path]:
    out = []
    for p in paths:
        if p is None or str(p) in ("", "-"):
            continue
        s = str(p)
        if s.startswith("@"):
            s = s[1:]
        try:
            candidate = Path(s).expanduser()
            if candidate.exists():
                out.append(candidate.resolve())
        except (OSError, ValueError):  # a literal text argument, not a path
            continue
    return out


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_file(path: PathLike, inputs: Iterable[PathLike | None] = (), option: str = "--out") -> Path:
    """``path`` as a file to write: not a folder, not one of ``inputs``, its folder not a file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SecfmError(f"{option} {path} is a folder; give a file name (e.g. {path / 'result.json'})")
    resolved = path.resolve()
    for source in _resolved(inputs):
        if source.is_file() and source == resolved:
            raise SecfmError(f"{option} {path} is one of the inputs; secfm never overwrites its input (choose another file)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SecfmError(f"{option} {path}: {parent} is a file, not a folder")
            break
    return path


def write_text(path: PathLike, text: str, *, inputs: Iterable[PathLike | None] = (), option: str = "--out",
               encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary name, then moved into place)."""
    return write_bytes(path, text.encode(encoding), inputs=inputs, option=option)


def write_bytes(path: PathLike, data: bytes, *, inputs: Iterable[PathLike | None] = (), option: str = "--out") -> Path:
    path = check_output_file(path, inputs, option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".secfm-tmp", dir=path.parent)
    except OSError as exc:
        raise SecfmError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if path.exists():
            with suppress(OSError):
                shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise SecfmError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return path


def write_json(path: PathLike, value, *, inputs: Iterable[PathLike | None] = (), option: str = "--out", indent: int = 2) -> Path:
    return write_text(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n", inputs=inputs, option=option)


def is_ours(folder: PathLike) -> bool:
    return (Path(folder) / MARKER).is_file()


def check_output_folder(path: PathLike, *, inputs: Iterable[PathLike | None] = (), force: bool = False,
                        option: str = "--out", ours_if: Iterable[str] = (), reuse_ours: bool = False) -> Path:
    """``path`` as a folder to write into: not a file, not an input; when it exists and is not
    empty, ``force`` is given, or ``reuse_ours`` and secfm made it (:data:`MARKER`, or one of the
    file names in ``ours_if``, e.g. an older run's ``run.json``)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise SecfmError(f"{option} {path} is a file; give a folder")
    resolved = path.resolve()
    for source in _resolved(inputs):
        if source == resolved:
            raise SecfmError(f"{option} {path} is one of the inputs; choose another folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        ours = is_ours(path) or any((path / name).exists() for name in ours_if)
        if not ours:
            raise SecfmError(f"{option} {path} exists and holds files secfm did not write; choose another folder, "
                             "or pass --force to write into it (nothing already there is deleted)")
        if not reuse_ours:
            raise SecfmError(f"{option} {path} exists and is not empty: pass --force to replace it")
    return path


def claim_folder(path: PathLike, *, inputs: Iterable[PathLike | None] = (), force: bool = False,
                 option: str = "--out", ours_if: Iterable[str] = ()) -> Path:
    """Check ``path`` (:func:`check_output_folder`), create it and mark it as secfm's (for
    commands that write into their folder as they go, and resume)."""
    path = check_output_folder(path, inputs=inputs, force=force, option=option, ours_if=ours_if, reuse_ours=True)
    try:
        fresh = not path.exists() or not any(path.iterdir())
        path.mkdir(parents=True, exist_ok=True)
        if fresh or is_ours(path) or any((path / name).exists() for name in ours_if):
            (path / MARKER).write_text("written by secfm\n", encoding="utf-8")
    except OSError as exc:
        raise SecfmError(f"cannot create {path}: {exc.strerror or exc}") from exc
    return path


@contextmanager
def output_folder(path: PathLike, *, inputs: Iterable[PathLike | None] = (), force: bool = False,
                  option: str = "--out") -> Iterator[Path]:
    """Build a folder under a fresh temporary name and move it into place when the block ends
    without an error (module docstring); on an error the temporary folder is removed."""
    inputs = list(inputs)
    path = check_output_folder(path, inputs=inputs, force=force, option=option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".secfm-tmp", dir=path.parent))
    except OSError as exc:
        raise SecfmError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        (tmp / MARKER).write_text("written by secfm\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _move_into_place(tmp, path, _resolved(inputs))


def _move_into_place(tmp: Path, path: Path, inputs: list[Path]) -> None:
    resolved = path.resolve()
    holds_input = any(_inside(p, resolved) for p in inputs)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        if path.exists():
            path.rmdir()
        tmp.rename(path)
        return
    if is_ours(path) and not holds_input:  # our own earlier output: replace it whole
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".secfm-old", dir=path.parent))
        aside.rmdir()
        path.rename(aside)
        tmp.rename(path)
        shutil.rmtree(aside, ignore_errors=True)
        return
    # a folder that is not ours (--force), or one holding an input: entry by entry, inputs kept
    for entry in sorted(tmp.iterdir()):
        dest = path / entry.name
        if any(_inside(p, dest.resolve()) for p in inputs):
            raise SecfmError(f"{dest} holds an input; secfm does not overwrite it (its output stays in {tmp})")
    for entry in sorted(tmp.iterdir()):
        dest = path / entry.name
        if dest.is_dir() and not dest.is_symlink() and entry.is_dir():
            aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".secfm-old", dir=path))
            aside.rmdir()
            dest.rename(aside)
            entry.rename(dest)
            shutil.rmtree(aside, ignore_errors=True)
        elif dest.is_dir() and not dest.is_symlink():
            raise SecfmError(f"{dest} is a folder where secfm writes a file (its output stays in {tmp})")
        else:
            os.replace(entry, dest)
    tmp.rmdir()

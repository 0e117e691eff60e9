"""The compact form of SigmaHQ's rule set the repo ships, and ``secfm kb update sigma``.

A pack is gzip'd JSON lines: a header (``format``, ``snapshot`` date, ``source``, ``license``,
``rules``), then one line per rule file with its path in SigmaHQ's repository and its YAML
documents as parsed (references and the other fields triage never shows are dropped; the title, id,
level, tags, logsource, detection, false positives, description and author are kept, the author as
the Detection Rule License asks). pySigma parses the documents exactly as it parses the YAML.

``kb update sigma`` downloads an archive of SigmaHQ's repository or of a release's rule package
(zip or tar.gz), builds a pack from its ``rules*/`` folders and keeps it under
``$SECFM_HOME/sigma/``, where triage prefers it to the shipped one.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import yaml

from secfm.errors import SecfmError

PACK_FORMAT = "secfm-sigma-pack"
LICENSE = "Detection Rule License (DRL) 1.1, https://github.com/SigmaHQ/Detection-Rule-License"
#: what kb update sigma fetches when no --url is given: SigmaHQ's newest release, all rules
DEFAULT_URL = "https://github.com/SigmaHQ/sigma/releases/latest/download/sigma_all_rules.zip"
RULE_FOLDERS = ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance", "rules-dfir", "rules-placeholder")
SKIP_FOLDERS = ("deprecated", "unsupported", "regression_data", "tests")
KEEP_KEYS = ("title", "id", "name", "related", "status", "description", "author", "date", "modified", "tags", "logsource",
             "detection", "falsepositives", "level", "correlation", "filter", "action", "scope", "fields", "taxonomy")
MAX_DESCRIPTION = 400


def _compact(doc: dict) -> dict:
    out = {k: doc[k] for k in KEEP_KEYS if k in doc}
    if isinstance(out.get("description"), str) and len(out["description"]) > MAX_DESCRIPTION:
        out["description"] = out["description"][:MAX_DESCRIPTION - 3].rstrip() + "..."
    for k in ("date", "modified"):
        if isinstance(out.get(k), date):
            out[k] = out[k].isoformat()
    return out


def _rule_path(name: str) -> str | None:
    """The path of a rule file inside SigmaHQ's layout (``rules/windows/...yml``), or None."""
    parts = Path(name).parts
    for i, p in enumerate(parts):
        if p in RULE_FOLDERS:
            rel = parts[i:]
            if any(s in SKIP_FOLDERS for s in rel) or not rel[-1].lower().endswith((".yml", ".yaml")):
                return None
            return "/".join(rel)
    return None


def _docs(text: str, where: str) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SecfmError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return [_compact(d) for d in docs if isinstance(d, dict)]


def iter_folder(root: Path) -> Iterable[tuple[str, str]]:
    """(path in the layout, YAML text) of every rule file under a SigmaHQ checkout or rule folder."""
    for f in sorted(root.rglob("*")):
        if f.is_file():
            rel = _rule_path(str(f.relative_to(root.parent)))
            if rel:
                yield rel, f.read_text(encoding="utf-8")


def iter_archive(data: bytes, where: str) -> Iterable[tuple[str, str]]:
    """(path in the layout, YAML text) of every rule file in a zip or tar.gz archive."""
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    rel = _rule_path(info.filename)
                    if rel and not info.is_dir():
                        yield rel, zf.read(info).decode("utf-8")
        except zipfile.BadZipFile as exc:
            raise SecfmError(f"{where}: not a valid zip archive ({exc})") from exc
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            for member in sorted(tf.getmembers(), key=lambda m: m.name):
                rel = _rule_path(member.name)
                if rel and member.isfile():
                    handle = tf.extractfile(member)
                    if handle is not None:
                        yield rel, handle.read().decode("utf-8")
    except tarfile.TarError as exc:
        raise SecfmError(f"{where}: not a zip or tar archive ({exc})") from exc


def write_pack(files: Iterable[tuple[str, str]], out: Path, *, snapshot: str, source: str) -> dict:
    """Write a pack from (path, YAML text) pairs; returns its header."""
    rows = []
    for path, text in files:
        docs = _docs(text, path)
        if docs:
            rows.append({"path": path, "docs": docs})
    if not rows:
        raise SecfmError(f"{source}: no Sigma rules found (expected rules*/ folders of SigmaHQ's layout)")
    header = {"format": PACK_FORMAT, "version": 1, "snapshot": snapshot, "source": source, "license": LICENSE,
              "rules": sum(len(r["docs"]) for r in rows), "files": len(rows)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
        handle.write(json.dumps(header, sort_keys=True) + "\n")
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return header


def updated_dir() -> Path:
    from secfm.settings import cache_dir

    return cache_dir("sigma")


def updated_pack() -> Path | None:
    """The pack ``kb update sigma`` wrote, when there is one."""
    from secfm.settings import secfm_home

    p = secfm_home() / "sigma" / "sigmahq.jsonl.gz"
    return p if p.is_file() else None


def _snapshot_of(files: list[tuple[str, str]]) -> str:
    """The newest ``modified``/``date`` among the rules (what the snapshot is as of)."""
    best = ""
    for _, text in files:
        for m in re.finditer(r"^(?:modified|date):\s*'?(\d{4}-\d\d-\d\d)", text, re.MULTILINE):
            best = max(best, m.group(1))
    return best or date.today().isoformat()


def update_from_url(url: str = DEFAULT_URL, timeout: float = 60.0, out: Path | None = None) -> dict:
    """Download SigmaHQ's rules and keep them as the pack triage uses; one clear error offline."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise SecfmError(f"cannot update the Sigma rules: {url} answered HTTP {exc.response.status_code}") from exc
    except httpx.HTTPError as exc:
        raise SecfmError(f"cannot update the Sigma rules: {url} is unreachable ({type(exc).__name__}); "
                         "the shipped rule set stays in use") from exc
    files = list(iter_archive(response.content, url))
    target = out or (updated_dir() / "sigmahq.jsonl.gz")
    header = write_pack(files, target, snapshot=_snapshot_of(files), source=url)
    return {**header, "path": str(target)}

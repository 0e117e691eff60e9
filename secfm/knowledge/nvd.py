"""NVD CVE data: a reader for NVD's feeds and a local CVE store under ``$SECFM_HOME``.

Formats read (as users download them):

* NVD JSON 1.1 yearly feeds (``CVE_Items[].cve`` with ``description``, ``problemtype`` and
  ``impact.baseMetricV3``; ``publishedDate``, ``lastModifiedDate``);
* NVD API 2.0 JSON (``vulnerabilities[].cve`` with ``descriptions``, ``weaknesses``,
  ``metrics.cvssMetricV31`` / ``cvssMetricV30``, ``published``, ``lastModified``, ``vulnStatus``);

each as ``.json``, ``.json.gz`` or ``.json.zip`` (a zip holding one JSON file). A folder is read
file by file in name order. A bad or truncated file gives one :class:`FeedProblem` (one line
naming the file and what is wrong) and the other files are still read.

One :class:`CveRecord` per CVE: the English description, NVD's CWE ids without the
``NVD-CWE-Other`` / ``NVD-CWE-noinfo`` placeholders, the CVSS v3 vector and base score, who
assigned them (``source``), and the file it came from. When a CVE appears in several files the
newest copy (by last-modified date, then by reading order) wins; rejected CVEs are marked and
dropped by :func:`read_feeds` unless asked for.

:class:`CveStore` is the local store (SQLite, ``$SECFM_HOME/nvd/cves.sqlite``) that
``secfm kb add-nvd`` fills and ``secfm kb update nvd`` keeps current; :func:`lookup` reads it.

This product uses data from the NVD API but is not endorsed or certified by the NVD.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import sqlite3
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from secfm.errors import SecfmError

log = logging.getLogger(__name__)

NVD_NOTICE = "This product uses data from the NVD API but is not endorsed or certified by the NVD."
PLACEHOLDER_CWES = frozenset({"NVD-CWE-Other", "NVD-CWE-noinfo"})
FEED_SUFFIXES = (".json", ".json.gz", ".json.zip")
NVD_SOURCE = "nvd@nist.gov"
_CVE_ID = re.compile(r"^CVE-\d{4}-\d{4,7}$")
_CWE_ID = re.compile(r"^CWE-(\d+)$")
_REJECT = re.compile(r"^\s*\*\*\s*REJECT\s*\*\*", re.IGNORECASE)


@dataclass(frozen=True)
class CveRecord:
    """One CVE as NVD describes it."""

    id: str  # CVE-2021-44228
    published: str  # ISO date-time as NVD gives it (2021-12-10T10:15Z / 2021-12-10T10:15:09.143)
    last_modified: str
    description: str  # English
    cwes: tuple[str, ...] = ()  # CWE-79 ..., placeholders removed
    cvss_vector: str | None = None  # CVSS:3.1/AV:N/...
    cvss_score: float | None = None
    cvss_version: str | None = None  # 3.0 or 3.1
    cwe_source: str | None = None  # who assigned the CWEs (nvd@nist.gov, a CNA, or "NVD feed")
    cvss_source: str | None = None
    source_file: str = ""  # the feed file's name
    rejected: bool = False
    placeholder_cwe: bool = False  # NVD said NVD-CWE-Other / noinfo

    @property
    def year(self) -> int:
        return int(self.published[:4])

    @property
    def published_date(self) -> str:
        return self.published[:10]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cwes"] = list(self.cwes)
        return d


@dataclass(frozen=True)
class FeedProblem:
    path: str
    message: str

    def line(self) -> str:
        return f"{self.path}: {self.message}; skipped (the other files are still read)"


@dataclass
class FeedReport:
    """What reading a set of feed files gave."""

    files: list[dict] = field(default_factory=list)  # {path, format, cves, rejected}
    problems: list[FeedProblem] = field(default_factory=list)
    duplicates: int = 0  # copies of a CVE replaced by a newer (or later-read) one
    rejected: int = 0


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def feed_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The feed files named by ``paths`` (files as given; folders: their ``.json``, ``.json.gz``
    and ``.json.zip`` files in name order). A path that does not exist is an error."""
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.name.lower().endswith(FEED_SUFFIXES))
            if not found:
                raise SecfmError(f"{path} holds no NVD feed files (.json, .json.gz, .json.zip)")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise SecfmError(f"feed file or folder not found: {path}")
    return out


def read_json_file(path: Path) -> object:
    """The JSON document in ``path`` (.json, .json.gz or a .zip holding one .json); SecfmError
    with what is wrong (truncated, not gzip, not JSON, ...)."""
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                members = [m for m in z.namelist() if m.lower().endswith(".json")]
                if len(members) != 1:
                    raise SecfmError(f"the zip holds {len(members)} .json files; expected one")
                data = z.read(members[0])
        else:
            data = path.read_bytes()
    except EOFError:
        raise SecfmError("truncated gzip file (it ends before its data does)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise SecfmError(f"not a valid gzip file ({exc})") from None
    except zipfile.BadZipFile as exc:
        raise SecfmError(f"not a valid zip file ({exc})") from None
    except OSError as exc:
        raise SecfmError(f"cannot read it ({exc.strerror or exc})") from None
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise SecfmError(f"not UTF-8 JSON (byte {exc.start})") from None
    except ValueError as exc:
        raise SecfmError(f"not valid JSON, truncated or damaged ({exc})") from None


def feed_format(doc: object) -> str:
    """``nvd-1.1`` (yearly feed), ``nvd-api-2.0`` or SecfmError."""
    if isinstance(doc, dict):
        if isinstance(doc.get("CVE_Items"), list):
            return "nvd-1.1"
        if isinstance(doc.get("vulnerabilities"), list):
            return "nvd-api-2.0"
    raise SecfmError("not an NVD feed (neither JSON 1.1 CVE_Items nor API 2.0 vulnerabilities)")


def parse_document(doc: object, source_file: str = "") -> tuple[str, list[CveRecord]]:
    """(format, records) of one parsed feed document; entries that are not CVEs are skipped."""
    fmt = feed_format(doc)
    parse = _parse_v11 if fmt == "nvd-1.1" else _parse_v20
    items = doc["CVE_Items"] if fmt == "nvd-1.1" else doc["vulnerabilities"]
    records = []
    for item in items:
        try:
            rec = parse(item, source_file)
        except (KeyError, TypeError, ValueError, AttributeError):
            rec = None
        if rec is not None:
            records.append(rec)
    return fmt, records


def read_feed(path: str | os.PathLike) -> tuple[str, list[CveRecord]]:
    """(format, records) of one feed file; SecfmError naming the file when it is unreadable."""
    path = Path(path)
    try:
        return parse_document(read_json_file(path), path.name)
    except SecfmError as exc:
        raise SecfmError(f"{path}: {exc}") from None


def iter_feed_records(paths: Iterable[str | os.PathLike], report: FeedReport | None = None,
                      on_problem: Callable[[FeedProblem], None] | None = None) -> Iterator[CveRecord]:
    """Every record of every readable file, file by file (bad files reported and skipped)."""
    report = report if report is not None else FeedReport()
    for path in feed_files(paths):
        try:
            fmt, records = parse_document(read_json_file(path), path.name)
        except SecfmError as exc:
            problem = FeedProblem(str(path), str(exc))
            report.problems.append(problem)
            log.warning("%s", problem.line())
            if on_problem is not None:
                on_problem(problem)
            continue
        report.files.append({"path": str(path), "format": fmt, "cves": len(records),
                             "rejected": sum(r.rejected for r in records)})
        yield from records


def newer(a: CveRecord, b: CveRecord) -> bool:
    """True when ``a`` is at least as new as ``b`` (last-modified; ties: ``a`` read later wins)."""
    return _time_key(a.last_modified) >= _time_key(b.last_modified)


def read_feeds(paths: Iterable[str | os.PathLike], include_rejected: bool = False,
               on_problem: Callable[[FeedProblem], None] | None = None) -> tuple[dict[str, CveRecord], FeedReport]:
    """Records by CVE id over all files (the newest copy wins), and what was read."""
    report = FeedReport()
    by_id: dict[str, CveRecord] = {}
    for rec in iter_feed_records(paths, report, on_problem):
        old = by_id.get(rec.id)
        if old is not None:
            report.duplicates += 1
            if not newer(rec, old):
                continue
        by_id[rec.id] = rec
    report.rejected = sum(r.rejected for r in by_id.values())
    if not include_rejected:
        by_id = {k: v for k, v in by_id.items() if not v.rejected}
    return by_id, report


# ---------------------------------------------------------------------------------------------
# the two formats
# ---------------------------------------------------------------------------------------------
def _english(entries: list[dict] | None) -> str:
    entries = entries or []
    for e in entries:
        if (e.get("lang") or "").lower().startswith("en") and (e.get("value") or "").strip():
            return " ".join(e["value"].split())
    return ""


def _cwe_values(values: Iterable[str]) -> tuple[tuple[str, ...], bool]:
    """(CWE ids in order, unique; whether a placeholder was among them)."""
    out: dict[str, None] = {}
    placeholder = False
    for v in values:
        v = (v or "").strip()
        if v in PLACEHOLDER_CWES:
            placeholder = True
            continue
        m = _CWE_ID.match(v.upper())
        if m:
            out.setdefault(f"CWE-{int(m.group(1))}")
    return tuple(out), placeholder


def _cvss(vector: str | None, score) -> tuple[str | None, float | None, str | None]:
    if not vector or not vector.startswith("CVSS:3."):
        return None, None, None
    version = vector.split("/", 1)[0].split(":", 1)[1]
    try:
        value = float(score) if score is not None else None
    except (TypeError, ValueError):
        value = None
    return vector, value, version


def _parse_v11(item: dict, source_file: str) -> CveRecord | None:
    cve = item["cve"]
    cve_id = (cve.get("CVE_data_meta") or {}).get("ID", "").strip().upper()
    if not _CVE_ID.match(cve_id):
        return None
    description = _english((cve.get("description") or {}).get("description_data"))
    values = [d.get("value", "") for pt in (cve.get("problemtype") or {}).get("problemtype_data") or []
              for d in pt.get("description") or []]
    cwes, placeholder = _cwe_values(values)
    v3 = ((item.get("impact") or {}).get("baseMetricV3") or {}).get("cvssV3") or {}
    vector, score, version = _cvss(v3.get("vectorString"), v3.get("baseScore"))
    return CveRecord(
        id=cve_id, published=item.get("publishedDate") or "", last_modified=item.get("lastModifiedDate") or "",
        description=description, cwes=cwes, cvss_vector=vector, cvss_score=score, cvss_version=version,
        cwe_source="NVD JSON 1.1 feed" if cwes else None, cvss_source="NVD JSON 1.1 feed" if vector else None,
        source_file=source_file, rejected=bool(_REJECT.match(description)) or not description,
        placeholder_cwe=placeholder and not cwes,
    )


def _pick_metric(entries: list[dict]) -> dict | None:
    """NVD's own (Primary) metric first, then the first other."""
    if not entries:
        return None
    for e in entries:
        if e.get("type") == "Primary" or e.get("source") == NVD_SOURCE:
            return e
    return entries[0]


def _parse_v20(item: dict, source_file: str) -> CveRecord | None:
    cve = item["cve"]
    cve_id = (cve.get("id") or "").strip().upper()
    if not _CVE_ID.match(cve_id):
        return None
    description = _english(cve.get("descriptions"))
    weaknesses = cve.get("weaknesses") or []
    # NVD's own weaknesses (Primary / nvd@nist.gov) first; the CNA's when NVD gave none
    ordered = sorted(weaknesses, key=lambda w: 0 if (w.get("type") == "Primary" or w.get("source") == NVD_SOURCE) else 1)
    cwes: tuple[str, ...] = ()
    cwe_source = None
    placeholder = False
    for w in ordered:
        got, ph = _cwe_values(d.get("value", "") for d in w.get("description") or [])
        placeholder = placeholder or ph
        if got:
            cwes, cwe_source = got, w.get("source") or ("Primary" if w.get("type") == "Primary" else "Secondary")
            break
    metrics = cve.get("metrics") or {}
    chosen = _pick_metric(metrics.get("cvssMetricV31") or []) or _pick_metric(metrics.get("cvssMetricV30") or [])
    vector = score = version = None
    cvss_source = None
    if chosen:
        data = chosen.get("cvssData") or {}
        vector, score, version = _cvss(data.get("vectorString"), data.get("baseScore"))
        cvss_source = chosen.get("source") if vector else None
    status = (cve.get("vulnStatus") or "").lower()
    return CveRecord(
        id=cve_id, published=cve.get("published") or "", last_modified=cve.get("lastModified") or "",
        description=description, cwes=cwes, cvss_vector=vector, cvss_score=score, cvss_version=version,
        cwe_source=cwe_source, cvss_source=cvss_source, source_file=source_file,
        rejected=status == "rejected" or bool(_REJECT.match(description)) or not description,
        placeholder_cwe=placeholder and not cwes,
    )


def _time_key(value: str) -> str:
    """A sortable form of NVD's timestamps (``2021-12-10T10:15Z`` and ``2021-12-10T10:15:09.143``)."""
    v = (value or "").rstrip("Z")
    if len(v) == 16:  # no seconds
        v += ":00"
    return v


# ---------------------------------------------------------------------------------------------
# CVE id lists (--exclude-cves)
# ---------------------------------------------------------------------------------------------
_FIND_CVE = re.compile(r"CVE-\d{4}-\d{4,7}", re.IGNORECASE)


def parse_cve_ids(value: str | Iterable[str] | None, what: str = "--exclude-cves") -> set[str]:
    """CVE ids from ``"CVE-2021-44228,CVE-2014-6271"``, ``"@FILE"`` (ids anywhere in the file:
    one per line, a TSV's URL column, ... ``#`` comments skipped) or an iterable of those."""
    from secfm.inputs import id_list_pieces

    ids: set[str] = set()
    for piece, from_file in id_list_pieces(value, what):
        if from_file:
            ids |= {m.upper() for m in _FIND_CVE.findall(piece)}
        elif _CVE_ID.match(piece.upper()):
            ids.add(piece.upper())
        else:
            raise SecfmError(f"{what}: not a CVE id: {piece!r} (expected CVE-YYYY-NNNN, or @FILE)")
    return ids


def cve_ids_in(text: str) -> list[str]:
    """CVE ids in free text, upper-cased, unique, in order."""
    return list(dict.fromkeys(m.upper() for m in _FIND_CVE.findall(text or "")))


# ---------------------------------------------------------------------------------------------
# the local store
# ---------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cves (
    id TEXT PRIMARY KEY,
    published TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    sort_modified TEXT NOT NULL,
    description TEXT NOT NULL,
    cwes TEXT NOT NULL,
    cvss_vector TEXT,
    cvss_score REAL,
    cvss_version TEXT,
    cwe_source TEXT,
    cvss_source TEXT,
    source_file TEXT NOT NULL,
    placeholder_cwe INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def default_store_path() -> Path:
    """``$SECFM_HOME/nvd/cves.sqlite``."""
    from secfm.settings import cache_dir

    return cache_dir("nvd") / "cves.sqlite"


@dataclass
class AddReport:
    added: int = 0  # new CVEs
    updated: int = 0  # replaced by a newer copy
    unchanged: int = 0  # the store's copy was as new or newer
    removed: int = 0  # rejected since
    files: list[dict] = field(default_factory=list)
    problems: list[FeedProblem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged, "removed": self.removed,
                "files": self.files, "problems": [p.line() for p in self.problems]}


class CveStore:
    """CVE records in SQLite; writes keep the newest copy of each CVE."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise SecfmError(f"{self.path} is not a secfm CVE store ({exc}); move it away and run `secfm kb add-nvd` again") from exc

    def close(self) -> None:
        self._db.close()

    # -- writing -------------------------------------------------------------------------------
    def add(self, records: Iterable[CveRecord], report: AddReport | None = None, batch: int = 5000) -> AddReport:
        """Insert or update ``records`` (newest last-modified wins; a rejected one removes the CVE)."""
        report = report if report is not None else AddReport()
        pending: list[CveRecord] = []

        def flush() -> None:
            with self._lock, self._db:
                ids = [r.id for r in pending]
                have = {}
                for start in range(0, len(ids), 900):
                    part = ids[start : start + 900]
                    rows = self._db.execute(f"SELECT id, sort_modified FROM cves WHERE id IN ({','.join('?' * len(part))})", part)
                    have.update(dict(rows.fetchall()))
                latest: dict[str, CveRecord] = {}
                for r in pending:  # within a batch too, the newest copy wins
                    if r.id not in latest or newer(r, latest[r.id]):
                        latest[r.id] = r
                for r in latest.values():
                    old = have.get(r.id)
                    if old is not None and _time_key(r.last_modified) < old:
                        report.unchanged += 1
                        continue
                    if r.rejected:
                        if old is not None:
                            self._db.execute("DELETE FROM cves WHERE id = ?", (r.id,))
                            report.removed += 1
                        continue
                    self._db.execute(
                        "INSERT OR REPLACE INTO cves VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (r.id, r.published, r.last_modified, _time_key(r.last_modified), r.description,
                         json.dumps(list(r.cwes)), r.cvss_vector, r.cvss_score, r.cvss_version, r.cwe_source,
                         r.cvss_source, r.source_file, int(r.placeholder_cwe)))
                    if old is None:
                        report.added += 1
                    else:
                        report.updated += 1
            pending.clear()

        for rec in records:
            pending.append(rec)
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return report

    def add_feeds(self, paths: Iterable[str | os.PathLike], on_problem: Callable[[FeedProblem], None] | None = None) -> AddReport:
        """Load feed files (both formats, any compression) into the store."""
        feed_report = FeedReport()
        report = self.add(iter_feed_records(paths, feed_report, on_problem))
        report.files, report.problems = feed_report.files, feed_report.problems
        return report

    def set_meta(self, key: str, value) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def delete_meta(self, key: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- reading -------------------------------------------------------------------------------
    def lookup(self, cve_id: str) -> CveRecord | None:
        """The stored record of ``cve_id`` (any case), or None."""
        key = (cve_id or "").strip().upper()
        with self._lock:
            row = self._db.execute("SELECT * FROM cves WHERE id = ?", (key,)).fetchone()
        return _row_record(row) if row else None

    def lookup_many(self, cve_ids: Iterable[str]) -> dict[str, CveRecord]:
        ids = list(dict.fromkeys((c or "").strip().upper() for c in cve_ids))
        out: dict[str, CveRecord] = {}
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            with self._lock:
                rows = self._db.execute(f"SELECT * FROM cves WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
            out.update({r[0]: _row_record(r) for r in rows})
        return out

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM cves").fetchone()[0])

    def latest_modified(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT MAX(sort_modified) FROM cves").fetchone()
        return row[0] if row and row[0] else None

    def stats(self) -> dict:
        with self._lock:
            n, with_cwe, with_cvss = self._db.execute(
                "SELECT COUNT(*), SUM(cwes != '[]'), SUM(cvss_vector IS NOT NULL) FROM cves").fetchone()
            first, last = self._db.execute("SELECT MIN(published), MAX(published) FROM cves").fetchone()
        return {"path": str(self.path), "cves": int(n or 0), "with_cwe": int(with_cwe or 0),
                "with_cvss_v3": int(with_cvss or 0), "published_first": first, "published_last": last,
                "latest_modified": self.latest_modified(), "last_update": self.get_meta("last_update")}

    def __len__(self) -> int:
        return self.count()


def _row_record(row) -> CveRecord:
    (cid, published, last_modified, _sort, description, cwes, vector, score, version, cwe_source, cvss_source,
     source_file, placeholder) = row
    return CveRecord(id=cid, published=published, last_modified=last_modified, description=description,
                     cwes=tuple(json.loads(cwes)), cvss_vector=vector, cvss_score=score, cvss_version=version,
                     cwe_source=cwe_source, cvss_source=cvss_source, source_file=source_file,
                     placeholder_cwe=bool(placeholder))


_STORES: dict[str, CveStore] = {}


def open_store(path: str | os.PathLike | None = None, create: bool = True) -> CveStore | None:
    """The CVE store at ``path`` (default ``$SECFM_HOME/nvd/cves.sqlite``), shared per process;
    None when it does not exist and ``create`` is false."""
    target = Path(path) if path is not None else default_store_path()
    key = str(target.resolve())
    store = _STORES.get(key)
    if store is not None and target.exists():
        return store
    if not create and not target.exists():
        return None
    store = CveStore(target)
    _STORES[key] = store
    return store


def lookup(cve_id: str, store: CveStore | None = None) -> CveRecord | None:
    """The record of ``cve_id`` in the local CVE store, or None (also when no store exists yet)."""
    store = store or open_store(create=False)
    return store.lookup(cve_id) if store is not None else None


def how_to_add() -> str:
    """One line telling the user how to fill the CVE store."""
    return ("no CVE data in the local store yet: load NVD feeds with `secfm kb add-nvd PATH...` "
            "(JSON 1.1 or API 2.0, .json/.json.gz/.json.zip) or download them with `secfm kb update nvd`")


__all__ = [
    "AddReport", "CveRecord", "CveStore", "FeedProblem", "FeedReport", "NVD_NOTICE", "PLACEHOLDER_CWES",
    "cve_ids_in", "default_store_path", "feed_files", "feed_format", "how_to_add", "lookup", "open_store",
    "parse_cve_ids", "parse_document", "read_feed", "read_feeds",
]

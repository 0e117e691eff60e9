"""CTIBench data: the official tab-separated files (--data) or the Hugging Face dataset ``AI4Sec/cti-bench``.

A data file is UTF-8 text, one row per line, fields separated by tabs, the first line the
header (``URL  Question  Option A ... Prompt  GT``). Fields are taken as they are (quotes and
Markdown inside a field are kept); a field wholly wrapped in double quotes is unwrapped the way
pandas reads it. Items are numbered by their data row (1-based), as the official notebook
reports them.

CTI-TAA ships without a GT column: its labels come from a separate file (``--labels``: a
TSV/CSV with columns ``URL`` and ``GT``, or a JSON object ``{URL: actor}``), or from a GT
column when the data file has one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from secfm.errors import SecfmError
from secfm.evals.specs import TaskSpec
from secfm.inputs import read_file_text

LABEL_KEYS = ("URL", "id")
LABEL_VALUES = ("GT", "Label", "Actor")


@dataclass(frozen=True)
class Item:
    id: str  # the data row number, 1-based, as text
    fields: dict[str, str] = field(repr=False)
    gold: str | None = None

    @property
    def url(self) -> str:
        return self.fields.get("URL", "")


@dataclass
class Dataset:
    task: str
    config: str
    source: str  # a file path or hf://repo/config/split
    sha256: str
    items: list[Item]
    labels_source: str | None = None
    labels_sha256: str | None = None

    def by_id(self) -> dict[str, Item]:
        return {i.id: i for i in self.items}


# ---------------------------------------------------------------------------------------------
# reading tables
# ---------------------------------------------------------------------------------------------
def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('""', '"')
    return value


def parse_tsv(text: str, where: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and rows ``(line number, {column: value})`` of a tab-separated text."""
    lines = text.lstrip("\ufeff").split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    header_at = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if header_at is None:
        raise SecfmError(f"{where} is empty")
    header = [_unquote(h.strip()) for h in lines[header_at].split("\t")]
    while header and not header[-1]:
        header.pop()
    if len(set(header)) != len(header):
        raise SecfmError(f"{where}: the header repeats a column name ({', '.join(header)})")
    rows = []
    for number, line in enumerate(lines[header_at + 1 :], start=header_at + 2):
        if not line.strip():
            continue
        values = line.split("\t")
        while len(values) > len(header) and not values[-1].strip():
            values.pop()
        if len(values) != len(header):
            raise SecfmError(
                f"{where}: line {number} has {len(values)} tab-separated fields, the header has {len(header)}"
            )
        rows.append((number, {h: _unquote(v) for h, v in zip(header, values)}))
    return header, rows


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]], str]:
    """Header, rows and sha256 of a TSV (or, by extension, CSV) file; one clear error on bad input."""
    text = read_file_text(path)  # not found, folder, not UTF-8 (with its line), empty
    digest = _sha256_bytes(Path(path).expanduser().read_bytes())
    if Path(path).suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
        table = [r for r in reader if any(c.strip() for c in r)]
        header = [h.strip() for h in table[0]]
        rows = [(n + 2, dict(zip(header, r))) for n, r in enumerate(table[1:])]
        return header, rows, digest
    header, rows = parse_tsv(text, str(path))
    return header, rows, digest


# ---------------------------------------------------------------------------------------------
# the Hugging Face dataset
# ---------------------------------------------------------------------------------------------
def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_hf_rows(repo: str, config: str, split: str) -> tuple[list[str], list[tuple[int, dict[str, str]]], str]:
    """Rows of one config of a Hugging Face dataset (the hub, or the local cache with HF_HUB_OFFLINE=1)."""
    where = f"{repo} (config {config}) from the Hugging Face hub"
    if not _offline() and not _hub_reachable():
        raise SecfmError(
            f"cannot load {where}: the hub is unreachable; pass --data PATH to a local TSV "
            "(or set HF_HUB_OFFLINE=1 to use a cached copy)"
        )
    try:
        import datasets

        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure becomes one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SecfmError(f"cannot load {where}: {first}; pass --data PATH to a local TSV") from exc
    header = list(ds.column_names)
    rows = [(n + 2, {k: "" if v is None else str(v) for k, v in row.items()}) for n, row in enumerate(ds)]
    canonical = "\n".join(["\t".join(header)] + ["\t".join(r[h] for h in header) for _, r in rows])
    return header, rows, _sha256_bytes(canonical.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# labels (CTI-TAA)
# ---------------------------------------------------------------------------------------------
def read_labels(path: Path) -> tuple[dict[str, str], str]:
    """``{URL or row id: label}`` from a TSV/CSV (columns URL or id, and GT) or a JSON object."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".json":
        text = read_file_text(path)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SecfmError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise SecfmError(f"{path} must be a JSON object mapping URL (or row id) to the actor name")
        return {str(k).strip(): v.strip() for k, v in data.items()}, _sha256_bytes(path.read_bytes())
    header, rows, digest = read_table(path)
    key = next((k for k in LABEL_KEYS if k in header), None)
    value = next((v for v in LABEL_VALUES if v in header), None)
    if key is None or value is None:
        raise SecfmError(
            f"labels file {path} needs a key column ({' or '.join(LABEL_KEYS)}) and a label column "
            f"({' or '.join(LABEL_VALUES)}); it has: {', '.join(header)}"
        )
    return {r[key].strip(): r[value].strip() for _, r in rows if r[key].strip()}, digest


# ---------------------------------------------------------------------------------------------
# a task's dataset
# ---------------------------------------------------------------------------------------------
def load_dataset(
    spec: TaskSpec,
    data: str | Path | None = None,
    config: str | None = None,
    labels: str | Path | None = None,
) -> Dataset:
    """The items of a task, from a local file (``data``) or from the Hugging Face dataset."""
    file_name, hf_config = spec.variant(config)
    if data is not None:
        path = Path(data).expanduser()
        header, rows, digest = read_table(path)
        source, where = str(path), path.name
    else:
        header, rows, digest = load_hf_rows(spec.hf.repo, hf_config, spec.hf.split)
        source, where = f"hf://{spec.hf.repo}/{hf_config}/{spec.hf.split}", f"{spec.hf.repo}/{hf_config}"
    missing = [c for c in spec.columns if c not in header]
    if missing:
        raise SecfmError(
            f"{where} lacks column(s) {', '.join(missing)} for {spec.name} "
            f"(has: {', '.join(header)}; expected the official {file_name} layout)"
        )
    label_map, labels_sha = (None, None)
    if labels is not None:
        label_map, labels_sha = read_labels(Path(labels))
    items = []
    has_gold = spec.gold_column in header
    for n, (line, row) in enumerate(rows, start=1):
        gold = row.get(spec.gold_column, "").strip() if has_gold else None
        if label_map is not None:
            gold = label_map.get(row.get("URL", "").strip()) or label_map.get(str(n)) or gold
        if has_gold and not gold and label_map is None:
            raise SecfmError(f"{where}: line {line} has an empty {spec.gold_column}")
        items.append(Item(id=str(n), fields=row, gold=gold or None))
    if not items:
        raise SecfmError(f"{where} has a header but no data rows")
    unlabeled = [i for i in items if i.gold is None]
    if unlabeled:
        if spec.labels_required and label_map is None:
            raise SecfmError(
                f"{where} has no {spec.gold_column} column: pass --labels FILE (a TSV with columns URL and GT, "
                f"one row per {spec.name} item)"
            )
        raise SecfmError(
            f"{len(unlabeled)} item(s) of {where} have no label (first: row {unlabeled[0].id}, "
            f"{unlabeled[0].url or 'no URL'})"
        )
    return Dataset(
        task=spec.name,
        config=hf_config,
        source=source,
        sha256=digest,
        items=items,
        labels_source=str(labels) if labels is not None else None,
        labels_sha256=labels_sha,
    )


# ---------------------------------------------------------------------------------------------
# which items are scored, which serve as few-shot examples
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    scored: list[Item]
    shots: list[Item]
    shot_source: str  # "held-out rows of the data file" or the pool file


def select_items(
    items: list[Item],
    limit: int | None = None,
    seed: int = 0,
    shots: int = 0,
    pool: list[Item] | None = None,
    pool_source: str | None = None,
) -> Selection:
    """A seeded subset of ``limit`` items to score, and ``shots`` examples disjoint from it.

    The items are put in one seeded order; the scored items are its head, the shots come from
    its tail (or from ``pool``, a separate file), so a k-shot run at a given ``--limit`` scores
    the same items as the zero-shot run, as long as ``limit + shots`` fits in the data.
    """
    if limit is not None and limit < 1:
        raise SecfmError("--limit must be at least 1")
    if shots < 0:
        raise SecfmError("--shots must be 0 or more")
    order = list(items)
    random.Random(seed).shuffle(order)
    shot_items: list[Item] = []
    source = ""
    if shots:
        if pool is not None:
            if len(pool) < shots:
                raise SecfmError(f"the shot pool has {len(pool)} items, fewer than --shots {shots}")
            pool_order = list(pool)
            random.Random(seed + 1).shuffle(pool_order)
            shot_items, source = pool_order[:shots], pool_source or "pool"
        else:
            if len(order) <= shots:
                raise SecfmError(f"{len(order)} items cannot give {shots} shots and still leave items to score")
            shot_items, order = order[-shots:], order[:-shots]
            source = "held-out rows of the data file"
    scored = order if limit is None else order[:limit]
    if pool is not None and shots:
        scored_ids = {(i.url, i.fields.get("Prompt")) for i in scored}
        if any((s.url, s.fields.get("Prompt")) in scored_ids for s in shot_items):
            raise SecfmError("the shot pool shares items with the scored data; use a disjoint pool")
    scored = sorted(scored, key=lambda i: int(i.id))
    return Selection(scored=scored, shots=shot_items, shot_source=source)

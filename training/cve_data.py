"""`secfm data cve`: NVD feeds -> one record per CVE, near-duplicate groups, date splits, a data card.

Steps (each counted in the data card):

1. read the feeds (:mod:`secfm.knowledge.nvd`: JSON 1.1 and API 2.0, .json/.gz/.zip); a bad or
   truncated file is one line naming it, the others are still read; the newest copy of a CVE
   wins; rejected CVEs are dropped;
2. ``--published-after`` / ``--published-before`` keep a date range;
3. near-duplicate descriptions are grouped (MinHash LSH over word 3-gram shingles, datasketch;
   groups are the connected components of the "near duplicate" pairs);
4. ``--exclude-cves`` drops the listed CVEs and every member of their groups;
5. splits by publication date: ``train`` up to ``train_end``, ``validation`` up to
   ``validation_end``, ``test`` up to ``test_end``, ``later_test`` after it. No group straddles
   splits: a group belongs to its most held-out split (test, then validation, then later_test,
   then train) and its members published in another split are dropped (counted as
   ``near_duplicate_drops``).

The output folder holds ``data/SPLIT.parquet`` (a Hugging Face ``datasets`` layout:
``datasets.load_dataset(OUT)`` gives train/validation/test/later_test), ``README.md`` (the data
card with counts, and the ``configs`` metadata the loader reads), ``data_card.json`` and
``excluded_cves.txt``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from secfm.errors import SecfmError
from secfm.knowledge.nvd import NVD_NOTICE, CveRecord, read_feeds

SPLITS = ("train", "validation", "test", "later_test")
#: a group goes to its most held-out split, in this order
SPLIT_PRIORITY = ("test", "validation", "later_test", "train")
COLUMNS = ("id", "published", "year", "description", "cwes", "cvss_vector", "cvss_score", "cvss_version",
           "last_modified", "source_file", "group", "group_size")
_WORD = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


@dataclass
class CveDataConfig:
    feeds: list[str]
    train_end: str = "2020-12-31"
    validation_end: str = "2021-12-31"
    test_end: str = "2022-12-31"
    published_after: str | None = None  # keep CVEs published on or after this date
    published_before: str | None = None  # keep CVEs published before this date
    exclude_cves: list[str] = field(default_factory=list)
    exclude_source: str | None = None  # how the exclusion was given (IDS or @FILE), for the card
    near_dup_threshold: float = 0.8
    num_perm: int = 64
    shingle: int = 3

    def check(self) -> None:
        for name in ("train_end", "validation_end", "test_end", "published_after", "published_before"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, parse_date(value, "--" + name.replace("_", "-")))
        if not (self.train_end < self.validation_end < self.test_end):
            raise SecfmError(f"split dates must increase: train-end {self.train_end} < validation-end "
                             f"{self.validation_end} < test-end {self.test_end}")
        if self.published_after and self.published_before and self.published_after >= self.published_before:
            raise SecfmError(f"--published-after {self.published_after} is not before --published-before {self.published_before}")
        if not 0.1 <= self.near_dup_threshold <= 1.0:
            raise SecfmError("--near-dup-threshold must be between 0.1 and 1")


def parse_date(value: str, what: str) -> str:
    """``YYYY`` (its first day), ``YYYY-MM-DD`` or an ISO date-time -> ``YYYY-MM-DD``."""
    v = str(value).strip()
    if re.fullmatch(r"\d{4}", v):
        v = f"{v}-01-01"
    try:
        return _dt.date.fromisoformat(v[:10]).isoformat()
    except ValueError:
        raise SecfmError(f"{what}: not a date: {value!r} (expected YYYY-MM-DD)") from None


def split_of_date(published: str, cfg: CveDataConfig) -> str:
    day = published[:10]
    if day <= cfg.train_end:
        return "train"
    if day <= cfg.validation_end:
        return "validation"
    if day <= cfg.test_end:
        return "test"
    return "later_test"


# ---------------------------------------------------------------------------------------------
# near duplicates
# ---------------------------------------------------------------------------------------------
def shingles(text: str, n: int = 3) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words).encode()} if words else {b""}
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def near_duplicate_groups(texts: Sequence[str], threshold: float = 0.8, num_perm: int = 64, n: int = 3,
                          progress: Callable[[str], None] | None = None) -> list[int]:
    """For each text, the index of its group's first text (connected components of MinHash LSH
    candidate pairs whose estimated Jaccard similarity is at least ``threshold``)."""
    from datasketch import MinHash, MinHashLSH

    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    exact_only = threshold >= 0.999  # 1.0: identical descriptions only (LSH needs a threshold below 1)
    lsh = None if exact_only else MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes: list = []
    exact: dict[str, int] = {}
    for i, text in enumerate(texts):
        key = " ".join(text.lower().split())
        if key in exact:  # identical text: same group, no MinHash needed
            parent[find(i)] = find(exact[key])
            hashes.append(None)
            continue
        exact[key] = i
        if exact_only:
            hashes.append(None)
            continue
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingles(text, n)))
        hashes.append(m)
        for j in lsh.query(m):
            if hashes[j].jaccard(m) >= threshold:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        lsh.insert(i, m)
        if progress is not None and i and i % 20000 == 0:
            progress(f"near duplicates: {i:,}/{len(texts):,} descriptions")
    return [find(i) for i in range(len(texts))]


# ---------------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------------
def _counts(records: Iterable[CveRecord]) -> dict:
    records = list(records)
    return {"cves": len(records), "with_cwe": sum(bool(r.cwes) for r in records),
            "with_cvss_v3": sum(r.cvss_vector is not None for r in records),
            "published_first": min((r.published_date for r in records), default=None),
            "published_last": max((r.published_date for r in records), default=None)}


def build_cve_dataset(out: str | Path, cfg: CveDataConfig, force: bool = False,
                      progress: Callable[[str], None] | None = None,
                      on_problem: Callable[[str], None] | None = None) -> dict:
    """Write the dataset and its card into ``out``; returns the card."""
    say = progress or (lambda s: None)
    cfg.check()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SecfmError(f"{out} exists and is not empty; use --force to replace it or another --out")
        if not (out / "data_card.json").is_file():
            raise SecfmError(f"{out} is not a folder `secfm data cve` wrote (no data_card.json); refusing to replace it")
    started = time.time()
    say("reading feeds")
    by_id, report = read_feeds(cfg.feeds, on_problem=(lambda p: on_problem(p.line())) if on_problem else None)
    if not by_id:
        raise SecfmError("no CVE was read from " + ", ".join(cfg.feeds)
                         + (f" ({len(report.problems)} unreadable files)" if report.problems else ""))
    steps: dict[str, int] = {"read_unique_not_rejected": len(by_id), "rejected": report.rejected,
                             "older_copies_replaced": report.duplicates}
    records = sorted(by_id.values(), key=lambda r: (r.published, r.id))
    kept = [r for r in records if (not cfg.published_after or r.published_date >= cfg.published_after)
            and (not cfg.published_before or r.published_date < cfg.published_before)]
    steps["outside_published_range"] = len(records) - len(kept)
    records = kept
    say(f"grouping near-duplicate descriptions of {len(records):,} CVEs")
    roots = near_duplicate_groups([r.description for r in records], cfg.near_dup_threshold, cfg.num_perm,
                                  cfg.shingle, progress=say)
    group_id = {i: records[root].id for i, root in enumerate(roots)}
    members: dict[str, list[int]] = {}
    for i in range(len(records)):
        members.setdefault(group_id[i], []).append(i)
    excluded = {c.upper() for c in cfg.exclude_cves}
    excluded_groups = {group_id[i] for i, r in enumerate(records) if r.id in excluded}
    excluded_listed = sum(r.id in excluded for r in records)
    drop = {i for g in excluded_groups for i in members[g]}
    steps["excluded_listed"] = excluded_listed
    steps["excluded_near_duplicates"] = len(drop) - excluded_listed
    split_of = [split_of_date(r.published, cfg) for r in records]
    group_split: dict[str, str] = {}
    for g, idx in members.items():
        present = {split_of[i] for i in idx}
        group_split[g] = next(s for s in SPLIT_PRIORITY if s in present)
    near_dup_drops = Counter()
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for i, r in enumerate(records):
        if i in drop:
            continue
        g = group_id[i]
        if split_of[i] != group_split[g]:
            near_dup_drops[split_of[i]] += 1
            continue
        rows[split_of[i]].append({
            "id": r.id, "published": r.published, "year": r.year, "description": r.description, "cwes": list(r.cwes),
            "cvss_vector": r.cvss_vector, "cvss_score": r.cvss_score, "cvss_version": r.cvss_version,
            "last_modified": r.last_modified, "source_file": r.source_file, "group": g, "group_size": len(members[g]),
        })
    steps["near_duplicate_drops"] = sum(near_dup_drops.values())
    sizes = Counter(len(v) for v in members.values())
    card = {
        "name": "secfm NVD CVE dataset",
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("exclude_cves",)},
        "excluded_cves": len(excluded),
        "feeds": report.files,
        "unreadable_feeds": [p.line() for p in report.problems],
        "steps": steps,
        "near_duplicates": {"groups": len(members), "groups_with_2_or_more": sum(v for k, v in sizes.items() if k > 1),
                            "cves_in_such_groups": sum(k * v for k, v in sizes.items() if k > 1),
                            "largest_group": max(sizes) if sizes else 0,
                            "dropped_by_split": dict(near_dup_drops)},
        "splits": {s: {**_counts_rows(rows[s]), "rule": _rule(s, cfg)} for s in SPLITS},
        "cwe_labels_in_train": len({c for row in rows["train"] for c in row["cwes"]}),
        "notice": NVD_NOTICE,
        "seconds": round(time.time() - started, 1),
    }
    say("writing the dataset")
    _write(out, rows, card, sorted(excluded), force)
    return card


def _counts_rows(rows: list[dict]) -> dict:
    return {"cves": len(rows), "with_cwe": sum(bool(r["cwes"]) for r in rows),
            "with_cvss_v3": sum(r["cvss_vector"] is not None for r in rows),
            "published_first": min((r["published"][:10] for r in rows), default=None),
            "published_last": max((r["published"][:10] for r in rows), default=None)}


def _rule(split: str, cfg: CveDataConfig) -> str:
    return {"train": f"published up to {cfg.train_end}",
            "validation": f"published after {cfg.train_end}, up to {cfg.validation_end}",
            "test": f"published after {cfg.validation_end}, up to {cfg.test_end}",
            "later_test": f"published after {cfg.test_end}"}[split]


def _write(out: Path, rows: dict[str, list[dict]], card: dict, excluded: list[str], force: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = out.with_name(f".{out.name}.tmp-{int(time.time())}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "data").mkdir(parents=True)
    schema = pa.schema([("id", pa.string()), ("published", pa.string()), ("year", pa.int32()),
                        ("description", pa.string()), ("cwes", pa.list_(pa.string())), ("cvss_vector", pa.string()),
                        ("cvss_score", pa.float64()), ("cvss_version", pa.string()), ("last_modified", pa.string()),
                        ("source_file", pa.string()), ("group", pa.string()), ("group_size", pa.int32())])
    for split, split_rows in rows.items():
        table = pa.Table.from_pylist(split_rows, schema=schema)
        pq.write_table(table, tmp / "data" / f"{split}.parquet")
    (tmp / "data_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(card_markdown(card), encoding="utf-8")
    (tmp / "excluded_cves.txt").write_text("".join(f"{c}\n" for c in excluded), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)


def card_markdown(card: dict) -> str:
    # an empty split has no parquet rows the loader can read: only the others are listed
    present = [s for s in SPLITS if card["splits"][s]["cves"]]
    configs = "\n".join(f"  - split: {s}\n    path: data/{s}.parquet" for s in present)
    s = card["settings"]
    lines = [
        "---", "configs:", "- config_name: default", "  data_files:", configs, "license: other",
        "license_name: public-domain-nvd", "task_categories:", "- text-classification", "---", "",
        f"# {card['name']}", "",
        "One record per CVE from NVD's feeds: id, publication date, English description, NVD's CWE ids "
        "(without NVD-CWE-Other / NVD-CWE-noinfo), CVSS v3 vector and base score, source file, near-duplicate group.",
        "", f"Made by `secfm data cve` on {card['created']}. {card['notice']}", "",
        "## Splits (by publication date; no near-duplicate group straddles them)", "",
        "| split | rule | CVEs | with CWE | with CVSS v3 | first | last |", "|---|---|---:|---:|---:|---|---|",
    ]
    for name, c in card["splits"].items():
        lines.append(f"| {name} | {c['rule']} | {c['cves']:,} | {c['with_cwe']:,} | {c['with_cvss_v3']:,} | "
                     f"{c['published_first'] or '-'} | {c['published_last'] or '-'} |")
    st = card["steps"]
    nd = card["near_duplicates"]
    lines += ["", "## What was read and dropped", "",
              "| step | CVEs |", "|---|---:|",
              f"| unique, not rejected, read | {st['read_unique_not_rejected']:,} |",
              f"| rejected (dropped) | {st['rejected']:,} |",
              f"| older copies replaced by a newer one | {st['older_copies_replaced']:,} |",
              f"| outside --published-after/--published-before | {st['outside_published_range']:,} |",
              f"| --exclude-cves: listed CVEs found | {st['excluded_listed']:,} (of {card['excluded_cves']:,} listed) |",
              f"| --exclude-cves: their near duplicates | {st['excluded_near_duplicates']:,} |",
              f"| near duplicates of a more held-out split | {st['near_duplicate_drops']:,} "
              f"({', '.join(f'{k} {v:,}' for k, v in nd['dropped_by_split'].items()) or 'none'}) |",
              "", f"Near-duplicate groups: {nd['groups']:,} ({nd['groups_with_2_or_more']:,} with two or more "
              f"descriptions, {nd['cves_in_such_groups']:,} CVEs in them; largest {nd['largest_group']}), MinHash LSH "
              f"(datasketch, {s['num_perm']} permutations, word {s['shingle']}-grams, Jaccard >= {s['near_dup_threshold']}).",
              f"CWE ids in train: {card['cwe_labels_in_train']:,}.", "",
              "## Feeds", "", "| file | format | CVEs | rejected |", "|---|---|---:|---:|"]
    for f in card["feeds"]:
        lines.append(f"| {Path(f['path']).name} | {f['format']} | {f['cves']:,} | {f['rejected']:,} |")
    if card["unreadable_feeds"]:
        lines += ["", "Unreadable files (skipped):", ""] + [f"- {p}" for p in card["unreadable_feeds"]]
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "feeds"), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# reading it back
# ---------------------------------------------------------------------------------------------
def load_cve_splits(path: str | Path) -> dict[str, list[dict]]:
    """The rows of each split of a `secfm data cve` folder (plain dicts)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not (path / "data_card.json").is_file():
        raise SecfmError(f"{path} is not a `secfm data cve` folder (no data_card.json); build one with "
                         "`secfm data cve --feeds FEEDS --out DIR`")
    out = {}
    for split in SPLITS:
        f = path / "data" / f"{split}.parquet"
        out[split] = pq.read_table(f).to_pylist() if f.is_file() else []
    return out


def read_card(path: str | Path) -> dict:
    return json.loads((Path(path) / "data_card.json").read_text(encoding="utf-8"))


__all__ = ["CveDataConfig", "SPLITS", "build_cve_dataset", "card_markdown", "load_cve_splits",
           "near_duplicate_groups", "parse_date", "read_card"]

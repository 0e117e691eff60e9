"""Dataset folders that load both ways: ``datasets.load_from_disk(DIR)`` and ``datasets.load_dataset(DIR)``.

``save_to_disk`` writes one folder per split (Arrow files, ``state.json``) and a
``dataset_dict.json``; ``load_dataset(DIR)`` ignores both and guesses splits from file names,
so it used to drop every split whose name it does not know. :func:`save_dataset_folder` writes
the ``save_to_disk`` layout *and* a ``README.md`` whose YAML ``configs`` list the data files:
the default config has the standard split names (``train``, ``validation``, ``test``) and each
extra split is a named config of its own (``load_dataset(DIR, "qa")``); an extra config may
have several splits (``mcq``: ``validation`` and ``test``, saved as the splits ``mcq_validation``
and ``mcq_test`` of the ``load_from_disk`` view).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml

STANDARD_SPLITS = ("train", "validation", "test")


def _config(name: str, files: Mapping[str, str], default: bool = False) -> dict:
    entry: dict = {"config_name": name}
    if default:
        entry["default"] = True
    entry["data_files"] = [{"split": split, "path": path} for split, path in files.items()]
    return entry


def _extra_dirs(name: str, value) -> dict[str, tuple[str, object]]:
    """{folder: (split, dataset)} of one extra config (one dataset = its ``train`` split)."""
    if isinstance(value, Mapping):
        return {f"{name}_{split}": (split, ds) for split, ds in value.items()}
    return {name: ("train", value)}


def dataset_readme(title: str, splits: Mapping[str, int], extra: Mapping[str, Mapping[str, tuple[str, int]]],
                   body: str = "") -> str:
    """The README.md (YAML ``configs`` front matter + a short description) of a dataset folder;
    ``extra``: config -> {folder: (split, rows)}."""
    # load_dataset refuses a split without rows: an empty split is listed by load_from_disk only
    configs = [_config("default", {s: f"{s}/*.arrow" for s in STANDARD_SPLITS if splits.get(s)}, default=True)]
    configs += [_config(name, {split: f"{folder}/*.arrow" for folder, (split, _) in dirs.items()})
                for name, dirs in extra.items()]
    front = yaml.safe_dump({"configs": configs}, sort_keys=False).strip()
    rows = [f"| default | {s} | {n:,} |" for s, n in splits.items()]
    rows += [f"| {name} | {split} | {n:,} |" for name, dirs in extra.items() for split, n in dirs.values()]
    lines = [
        "---", front, "---", "", f"# {title}", "",
        "Loads with `datasets.load_from_disk(DIR)` (every split, `dict` keys as below) and with",
        "`datasets.load_dataset(DIR)` (the default config) or `datasets.load_dataset(DIR, NAME)` (a named config).",
        "", "| config | split | rows |", "|---|---|---:|", *rows,
    ]
    if body:
        lines += ["", body.strip()]
    return "\n".join(lines) + "\n"


def save_dataset_folder(path: str | Path, splits: Mapping, extra: Mapping | None = None, title: str = "secfm dataset",
                        body: str = "") -> Path:
    """Save ``splits`` (standard names) and ``extra`` configs (a dataset, or {split: dataset})
    as one ``DatasetDict`` to ``path`` with the README that ``load_dataset`` reads. Empty extra
    splits are left out; an empty standard split is saved (one empty shard, so
    ``load_from_disk`` reads it) but not listed for ``load_dataset``, which refuses splits
    without rows."""
    from datasets import DatasetDict

    unknown = [s for s in splits if s not in STANDARD_SPLITS]
    if unknown:
        raise ValueError(f"non-standard split names {unknown}: pass them as extra splits (named configs)")
    dirs = {name: {f: (split, ds) for f, (split, ds) in _extra_dirs(name, value).items() if len(ds)}
            for name, value in (extra or {}).items()}
    dirs = {name: d for name, d in dirs.items() if d}
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    everything = {**splits, **{f: ds for d in dirs.values() for f, (_, ds) in d.items()}}
    DatasetDict(everything).save_to_disk(str(path), num_shards={k: 1 for k, v in everything.items() if not len(v)} or None)
    readme = dataset_readme(title, {s: len(d) for s, d in splits.items()},
                            {name: {f: (split, len(ds)) for f, (split, ds) in d.items()} for name, d in dirs.items()}, body)
    (path / "README.md").write_text(readme, encoding="utf-8")
    return path


__all__ = ["STANDARD_SPLITS", "dataset_readme", "save_dataset_folder"]

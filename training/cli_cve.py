"""`secfm data cve`: the NVD CVE dataset (splits by date, near-duplicate groups, data card)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    from secfm.cli_groups import command_group

    data = command_group(app, "data", "Training data: corpus curation and instruction data.")

    @data.command("cve")
    def data_cve(
        feeds: Annotated[list[Path], typer.Option("--feeds", help="NVD feed files or folders (JSON 1.1 or API 2.0; .json, .json.gz, .json.zip); repeatable.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: data/SPLIT.parquet (datasets.load_dataset(OUT)), README.md data card, data_card.json.")],
        exclude_cves: Annotated[Optional[str], typer.Option("--exclude-cves", help="CVE ids to leave out with their near duplicates: CVE-2021-44228,... or @FILE (ids anywhere in it, e.g. a CTIBench TSV).")] = None,
        published_after: Annotated[Optional[str], typer.Option("--published-after", help="Keep CVEs published on or after this date (YYYY-MM-DD).")] = None,
        published_before: Annotated[Optional[str], typer.Option("--published-before", help="Keep CVEs published before this date (YYYY-MM-DD).")] = None,
        train_end: Annotated[str, typer.Option("--train-end", help="Last publication date of the train split.")] = "2020-12-31",
        validation_end: Annotated[str, typer.Option("--validation-end", help="Last publication date of the validation split.")] = "2021-12-31",
        test_end: Annotated[str, typer.Option("--test-end", help="Last publication date of the test split (later CVEs: later_test).")] = "2022-12-31",
        near_dup: Annotated[float, typer.Option("--near-dup-threshold", min=0.1, max=1.0, help="MinHash LSH Jaccard threshold for near-duplicate descriptions.")] = 0.8,
        force: Annotated[bool, typer.Option("--force", help="Replace OUT when it holds an earlier `secfm data cve` output.")] = False,
    ) -> None:
        """Build the CVE dataset from NVD feeds: one record per CVE, date splits without near-duplicate leaks, a data card with the counts."""
        from rich.console import Console

        from secfm.knowledge.nvd import parse_cve_ids
        from secfm.training.cve_data import CveDataConfig, build_cve_dataset

        err = Console(stderr=True)
        cfg = CveDataConfig(feeds=[str(f) for f in feeds], train_end=train_end, validation_end=validation_end,
                            test_end=test_end, published_after=published_after, published_before=published_before,
                            exclude_cves=sorted(parse_cve_ids(exclude_cves)), exclude_source=exclude_cves,
                            near_dup_threshold=near_dup)
        with err.status("building the CVE dataset") as status:
            build_cve_dataset(out, cfg, force=force, progress=lambda s: status.update(s),
                              on_problem=lambda line: err.print(f"[yellow]warning:[/] {line}", highlight=False))
        print((out / "README.md").read_text(encoding="utf-8").split("---\n", 2)[-1].strip())
        err.print(f"dataset: {out} (datasets.load_dataset('{out}'))")

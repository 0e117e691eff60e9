"""`secfm cve` (CWE and CVSS of a CVE or a description), `secfm kb add-nvd`, `secfm kb update nvd`,
`secfm kb nvd-stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.errors import SecfmError

FORMATS = ("table", "json")


def register(app: typer.Typer) -> None:
    from secfm.cli_groups import command_group

    kb = command_group(app, "kb", "The knowledge base: ATT&CK Enterprise and CWE (and the retrieval index).")
    update = command_group(kb, "update", "Download newer knowledge (nvd: NVD's CVE API 2.0).")

    @app.command("cve")
    def cve(
        what: Annotated[str, typer.Argument(help="A CVE id (CVE-2021-44228), a vulnerability description, a file path, @FILE, or '-' for standard input.")],
        fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
        top_k: Annotated[int, typer.Option("--top-k", min=1, max=20, help="How many CWE ids to show.")] = 5,
        cwe_head: Annotated[Optional[Path], typer.Option("--cwe-head", help="CWE head folder; default: the shipped one.")] = None,
        cvss_head: Annotated[Optional[Path], typer.Option("--cvss-head", help="CVSS head folder; default: the shipped one.")] = None,
        store: Annotated[Optional[Path], typer.Option("--store", help="CVE store (default: $SECFM_HOME/nvd/cves.sqlite).")] = None,
    ) -> None:
        """Analyse a CVE or a vulnerability description: the likely CWE ids with names and scores, the predicted CVSS v3.1 vector and base score, and for a known CVE id NVD's own CWE/CVSS with their source."""
        from secfm.inputs import text_or_file
        from secfm.knowledge.nvd import CveStore, open_store
        from secfm.workflows.cve_analysis import CveAnalyzer, analyze_cve, as_request

        if fmt not in FORMATS:
            raise SecfmError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        value = what.strip()
        request = as_request(value, top_k) if len(value) < 40 and value.upper().startswith("CVE-") else None
        if request is None or request.cve_id is None:
            request = as_request(text_or_file(what, "description"), top_k)
        if store is not None and not store.is_file():
            raise SecfmError(f"CVE store not found: {store}")
        cve_store = CveStore(store) if store is not None else open_store(create=False)
        analyzer = CveAnalyzer.load(cwe_head, cvss_head)
        result = analyze_cve(request, analyzer=analyzer, store=cve_store)
        if fmt == "json":
            print(result.model_dump_json(indent=2))
        else:
            print_analysis(result)

    @kb.command("add-nvd")
    def kb_add_nvd(
        paths: Annotated[list[Path], typer.Argument(help="NVD feed files or folders: JSON 1.1 yearly feeds or API 2.0 JSON, .json/.json.gz/.json.zip.")],
        store: Annotated[Optional[Path], typer.Option("--store", help="CVE store (default: $SECFM_HOME/nvd/cves.sqlite).")] = None,
    ) -> None:
        """Load NVD feeds into the local CVE store (the newest copy of each CVE wins; rejected CVEs are removed)."""
        from rich.console import Console

        from secfm.knowledge.nvd import CveStore, feed_files, open_store

        err = Console(stderr=True)
        files = feed_files(paths)  # a missing path: one clear error before anything is written
        target = CveStore(store) if store is not None else open_store()
        with err.status(f"loading {len(files)} feed file(s) into {target.path}"):
            report = target.add_feeds(files, on_problem=lambda p: err.print(f"[yellow]warning:[/] {p.line()}", highlight=False))
        stats = target.stats()
        print(json.dumps({"store": str(target.path), **report.to_dict(), "total_cves": stats["cves"]}, indent=2))
        if not report.files:
            raise SecfmError("no feed file could be read (see the warnings above)")

    @update.command("nvd")
    def kb_update_nvd(
        store: Annotated[Optional[Path], typer.Option("--store", help="CVE store (default: $SECFM_HOME/nvd/cves.sqlite).")] = None,
        api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="NVD_API_KEY", help="NVD API key (50 requests per 30 s instead of 5).")] = None,
        url: Annotated[Optional[str], typer.Option("--url", envvar="SECFM_NVD_API_URL", help="CVE API 2.0 base URL (default: NVD's).")] = None,
        full: Annotated[bool, typer.Option("--full", help="Download everything again instead of what changed since the last update.")] = False,
        pause: Annotated[Optional[float], typer.Option("--pause", min=0.0, help="Seconds between requests (default: 6 without a key, 0.6 with one, as NVD asks).")] = None,
        max_pages: Annotated[Optional[int], typer.Option("--max-pages", min=1, help="Stop after this many pages (the next run carries on).")] = None,
    ) -> None:
        """Download NVD's CVE API 2.0 into the local store: incremental by last-modified date, resumable, rate-limited as NVD asks."""
        from rich.console import Console

        from secfm.knowledge.nvd import NVD_NOTICE, CveStore, open_store
        from secfm.knowledge.nvd_update import NvdClient, RateLimit, update_store

        err = Console(stderr=True)
        target = CveStore(store) if store is not None else open_store()
        client = NvdClient(url, api_key=api_key or "", limit=RateLimit.for_key(api_key, pause))
        with err.status("asking the NVD API") as status:
            report = update_store(target, client, full=full, max_pages=max_pages, progress=lambda s: status.update(s))
        print(json.dumps({"store": str(target.path), **report.to_dict(), "total_cves": target.count()}, indent=2))
        err.print(NVD_NOTICE)

    @kb.command("nvd-stats")
    def kb_nvd_stats(
        store: Annotated[Optional[Path], typer.Option("--store", help="CVE store (default: $SECFM_HOME/nvd/cves.sqlite).")] = None,
    ) -> None:
        """Counts of the local CVE store (CVEs, with CWE, with CVSS v3, dates, last update)."""
        from secfm.knowledge.nvd import CveStore, how_to_add, open_store

        target = CveStore(store) if store is not None else open_store(create=False)
        if target is None or not target.count():
            raise SecfmError(how_to_add())
        print(json.dumps(target.stats(), indent=2))


def print_analysis(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.cve_id:
        console.print(f"[bold]{result.cve_id}[/]" + ("" if result.found else " (not in the local CVE store)"), highlight=False)
    if result.nvd is not None:
        n = result.nvd
        console.print(f"NVD: {n.description}", highlight=False)
        cwes = ", ".join(f"{c.id} {c.name or ''}".strip() for c in n.cwes) or "none"
        console.print(f"NVD CWE: {cwes}" + (f" (source: {n.cwe_source})" if n.cwe_source else ""), highlight=False)
        if n.cvss_vector:
            console.print(f"NVD CVSS: {n.cvss_score} {n.cvss_severity} {n.cvss_vector} (source: {n.cvss_source})", highlight=False)
        console.print(f"{n.url} (published {n.published[:10]}; {n.source_file})", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
    if result.cwe:
        table = Table(title="Predicted CWE (CWE head)")
        for col in ("rank", "id", "name", "score"):
            table.add_column(col, overflow="fold")
        for h in result.cwe:
            table.add_row(str(h.rank), h.id, h.name, f"{h.score:.3f}")
        console.print(table)
    if result.cvss is not None:
        c = result.cvss
        table = Table(title=f"Predicted CVSS v3.1: {c.base_score} {c.severity}  {c.vector}")
        for col in ("metric", "value", "probability"):
            table.add_column(col)
        for m in c.metrics:
            table.add_row(f"{m.name} ({m.metric})", f"{m.value_name} ({m.value})", f"{m.score:.3f}")
        console.print(table)

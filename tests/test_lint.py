"""ruff passes on the whole tree with pyproject.toml's [tool.ruff] rules (CI runs it with the suite;
well under a second)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes_on_the_tree():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ruff check found problems (fix them, or `ruff check --fix`):\n{done.stdout[-6000:]}{done.stderr[-2000:]}"


def test_shared_cli_options_are_declared_once():
    """--model/--adapter/--engine/--endpoint/--allow-busy live in secfm/cli_options.py; commands import them."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shared = re.compile(r'typer\.Option\("(--allow-busy|--endpoint|--engine)"|^(ModelOpt|AdapterOpt) = ', re.M)
    packages = ("secfm", "app", "evals", "training", "workflows", "cookbook")
    copies = [str(p.relative_to(root)) for package in packages for p in (root / package).rglob("*.py")
              if p.name != "cli_options.py" and shared.search(p.read_text(encoding="utf-8", errors="replace"))]
    assert not copies, copies

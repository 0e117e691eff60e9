"""CI runs exactly the README's two commands; keep them in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    install, tests = readme_commands()
    assert install.strip() in ci
    assert tests.strip() in ci
    assert "secfm" in install and "pytest" in tests

"""A non-editable install works: the wheel carries every file secfm reads at run time, and
pyproject.toml declares every package secfm's shipped modules import.

The wheel's file list is setuptools' own (the ``build_py`` step that fills the wheel, run without
copying or zipping anything), so a data folder missing from ``[tool.setuptools.package-data]``
fails here, which an editable install never shows.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import warnings
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the modules that locate run-time data beside their own file (``Path(__file__)``), each with the
#: data it reads; a new reader must be added here (and its data to package-data)
DATA_READERS = {
    "secfm/heads.py": lambda: [__import__("secfm.heads", fromlist=["x"]).assets_dir()],
    "secfm/knowledge/attack.py": lambda: [__import__("secfm.knowledge.attack", fromlist=["x"]).compact_data_dir()],
    "secfm/provenance.py": lambda: [],  # the checkout's git commit, no data
    "training/recipes.py": lambda: [__import__("secfm.training.recipes", fromlist=["x"]).RECIPES_DIR],
    "training/redaction_eval.py": lambda: [__import__("secfm.training.redaction_eval", fromlist=["x"]).DEFAULT_DATA],
    "app/ui_common.py": lambda: [__import__("secfm.app.ui_common", fromlist=["x"]).ASSETS],
    "app/ui.py": lambda: [ROOT / "app" / "assets"],  # same folder as ui_common.ASSETS (importing ui loads Gradio)
    "workflows/sigma_fields.py": lambda: [__import__("secfm.workflows.sigma_fields", fromlist=["x"]).FIELDS_YAML],
    "workflows/config_rules.py": lambda: [__import__("secfm.workflows.config_rules", fromlist=["x"]).RULES_FILE],
    "workflows/chat_eval.py": lambda: [__import__("secfm.workflows.chat_eval", fromlist=["x"]).GOLD_DIR],
    "workflows/sigma_rules.py": lambda: [__import__("secfm.workflows.sigma_rules", fromlist=["x"]).SIGMA_DIR],
    "workflows/evaluate.py": lambda: [__import__("secfm.workflows.evaluate", fromlist=["x"]).GOLD_DIR],
    "workflows/config_eval.py": lambda: [__import__("secfm.workflows.config_eval", fromlist=["x"]).DEFAULT_DATA],
    "evals/specs.py": lambda: [__import__("secfm.evals.specs", fromlist=["x"]).TASKS_DIR],
    "evals/results_index.py": lambda: [],  # the checkout's results folders (a repository tool, not package data)
}

#: data found through ``importlib.resources`` (registry.py's PACKAGE_DIR, evals/card.py) rather than __file__
RESOURCE_DATA = ["secfm/registry.yaml", "secfm/chat_templates", "secfm/adapters", "secfm/knowledge/data",
                 "model_card/card.yaml", "model_card/template.md"]

#: import names of packages that are not installed on the CPU machine (GPU and optional extras)
NOT_INSTALLED = {"vllm": "vllm", "bitsandbytes": "bitsandbytes", "deepspeed": "deepspeed",
                 "llama_cpp": "llama-cpp-python", "pypdf": "pypdf"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def wheel_sources() -> set[str]:
    """Every source file (repository-relative) that setuptools puts into the wheel."""
    import setuptools

    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip(f"setuptools {setuptools.__version__} cannot read this pyproject (license expression): "
                    f"install the test extra (setuptools>=77)")
    import os
    import tempfile

    from setuptools.dist import Distribution

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools warns that data folders are not packages
        os.chdir(ROOT)
        try:
            dist = Distribution()
            dist.script_name = "setup.py"
            dist.parse_config_files()
            dist.get_command_obj("egg_info").egg_base = tmp  # keep the source tree clean
            build_py = dist.get_command_obj("build_py")
            build_py.build_lib = str(Path(tmp) / "lib")
            build_py.ensure_finalized()
            files = {Path(src_dir, name).as_posix() for _pkg, src_dir, _build, names in build_py.data_files
                     for name in names}
            files |= {Path(path).as_posix() for _pkg, _mod, path in build_py.find_all_modules()}
        finally:
            os.chdir(here)
    return files


def _tracked(path: Path) -> list[str]:
    rel = path.resolve().relative_to(ROOT).as_posix()
    out = subprocess.run(["git", "ls-files", "--", rel], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "__pycache__" not in line]


def test_every_data_reader_is_known(wheel_sources):
    readers = sorted(p for p in wheel_sources if p.endswith(".py") and "__file__" in (ROOT / p).read_text(encoding="utf-8")
                     and re.search(r"Path\(__file__\)", (ROOT / p).read_text(encoding="utf-8")))
    unknown = [p for p in readers if p not in DATA_READERS]
    assert not unknown, f"modules locating data beside themselves, not checked here (add them to DATA_READERS): {unknown}"


def test_wheel_carries_runtime_data(wheel_sources):
    wanted = [ROOT / p for p in RESOURCE_DATA] + [Path(p) for reader in DATA_READERS.values() for p in reader()]
    missing, empty = [], []
    for path in wanted:
        files = _tracked(path)
        if not files:
            empty.append(str(path))
        missing += [f for f in files if f not in wheel_sources]
    assert not empty, f"run-time data with no tracked files: {empty}"
    assert not missing, f"read at run time but not in the wheel (add to [tool.setuptools.package-data]): {missing}"
    # the card and the workflow gold sets, which a non-editable install once lacked
    assert {"model_card/card.yaml", "model_card/template.md"} <= wheel_sources
    assert any(f.startswith("workflows/gold/") for f in wheel_sources)


def test_imports_are_declared(wheel_sources):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {_norm(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}
    dists = packages_distributions()
    undeclared = {}
    import_line = re.compile(r"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)[\w.]*[ \t]+import\b|import[ \t]+([A-Za-z_]\w*))", re.M)
    for path in sorted(p for p in wheel_sources if p.endswith(".py")):
        for match in import_line.finditer((ROOT / path).read_text(encoding="utf-8")):
            top = match.group(1) or match.group(2)
            if top in sys.stdlib_module_names or top == "secfm":
                continue
            candidates = dists.get(top) or [NOT_INSTALLED.get(top, top)]
            if not any(_norm(d) in declared for d in candidates):
                undeclared.setdefault(top, []).append(path)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"

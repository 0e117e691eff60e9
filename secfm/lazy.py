"""Public names of a package that live in its submodules, imported on first use (so `import secfm.training`
stays cheap: torch, transformers and Chroma load when a name that needs them is first read)."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def resolve_target(target: str):
    """The object a ``"module:name"`` entry names (a registry's lazy entry), imported now."""
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def lazy_exports(package: str, exports: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to the module that
    defines it; a name read once is kept in the package's ``namespace``."""

    def __getattr__(name: str):
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__

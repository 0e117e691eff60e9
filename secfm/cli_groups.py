"""Sharing command groups between packages (kept apart from cli.py so `python -m secfm.cli` works)."""

from __future__ import annotations

import typer


def command_group(parent: typer.Typer, name: str, help: str) -> typer.Typer:
    """The sub-app ``name`` of ``parent``, created on first use (packages share groups like `train`)."""
    for group in parent.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    group_app = typer.Typer(help=help, no_args_is_help=True)
    parent.add_typer(group_app, name=name)
    return group_app

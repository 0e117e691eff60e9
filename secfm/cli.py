"""`secfm`: the front door. Thin commands over the library; every package's commands meet here."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Annotated, Optional

import typer
from typer._click import exceptions as click_exceptions  # typer >= 0.26 vendors click

from secfm.cli_options import AdapterOpt, EndpointOpt, EngineOpt, ModelOpt
from secfm.errors import SecfmError
from secfm.formats import FormatOpt, JsonAlias

app = typer.Typer(
    name="secfm",
    help="secfm: an open security-domain language-model stack (train, evaluate, serve, extract, triage).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
models_app = typer.Typer(help="The model registry: list registered models, pull weights into the cache.", no_args_is_help=True)
kb_app = typer.Typer(help="The knowledge base: ATT&CK Enterprise, Mobile and ICS, CWE (and the retrieval index).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(kb_app, name="kb")



def console():
    from rich.console import Console

    return Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=console(), show_path=False)], format="%(message)s")
    logging.getLogger("secfm").setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _print_version(value: bool) -> None:
    if value:
        from secfm import __version__

        print(f"secfm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More log output.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    setup_logging(verbose)


def build_engine(model: str | None, adapter: str | None = None, engine: str = "transformers", endpoint: str | None = None):
    from secfm.engines import engine_name, get_engine

    with console().status(f"loading {model or 'the default model'} ({engine_name(engine, endpoint)} engine)"):
        return get_engine(engine, model=model, adapter=adapter, endpoint=endpoint)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
@models_app.command("list")
def models_list(fmt: FormatOpt = None, as_json: JsonAlias = False) -> None:
    """Show every registered model, where its weights come from, and whether they are present."""
    from dataclasses import asdict

    from secfm.formats import print_table, resolve_format
    from secfm.models import list_models

    fmt = resolve_format(fmt, as_json, default="table")
    rows = list_models()
    if fmt == "json":
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    print_table("secfm models", ("name", "present", "source", "location"),
                [(r.name, "yes" if r.present else "no", r.source, r.location) for r in rows], fmt)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. gemma-3-270m.")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild the cache even when it is valid.")] = False,
) -> None:
    """Make a model's weights present: assemble, convert once to safetensors, check, time a warm load."""
    from secfm.engines.transformers_engine import load_causal_lm
    from secfm.models import MANIFEST, model_cache_dir, pull

    started = time.time()
    with console().status(f"pulling {name} (the first conversion takes about a minute)"):
        resolved = pull(name, force=force)
    cold = time.time() - started
    started = time.time()
    load_causal_lm(resolved, "cpu")
    warm = time.time() - started
    manifest_path = model_cache_dir(name) / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        manifest["last_pull"] = {"pull_seconds": round(cold, 2), "warm_load_seconds": round(warm, 2)}
        manifest_path.write_text(json.dumps(manifest, indent=2))
    print(f"{name}: present at {resolved.weights_dir} (pull {cold:.1f}s, warm load {warm:.2f}s)")


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------
@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads standard input, @FILE reads a file.")],
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    engine: EngineOpt = "transformers",
    endpoint: EndpointOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: Annotated[Optional[int], typer.Option(help="Seed for sampling.")] = None,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="Stop string (repeatable).")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Wrap the prompt as a user turn with the chat template.")] = False,
    system: Annotated[Optional[str], typer.Option(help="System prompt (with --chat).")] = None,
) -> None:
    """Stream a completion of PROMPT to the terminal."""
    from secfm.engines import SamplingParams
    from secfm.inputs import text_or_file

    text = text_or_file(prompt, "prompt")
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=tuple(stop or ()))
    eng = build_engine(model, adapter, engine, endpoint)
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        pieces = eng.stream_chat(messages, params)
    else:
        pieces = eng.stream(text, params)
        sys.stdout.write(text)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


# ---------------------------------------------------------------------------------------------
# knowledge base
# ---------------------------------------------------------------------------------------------
@kb_app.command("stats")
def kb_stats(
    attack_bundle: Annotated[Optional[list[str]], typer.Option("--attack-bundle", help="An official ATT&CK STIX 2.1 bundle (enterprise-attack.json, mobile-attack.json or ics-attack.json; path or http(s) URL) replacing the packaged data of its domain; repeatable.")] = None,
) -> None:
    """Counts of techniques, procedure examples, groups (all ATT&CK domains, then each), CWE weaknesses and observed examples."""
    from secfm.knowledge import summary

    print(json.dumps(summary(attack_bundle or None), indent=2))


@kb_app.command("lookup")
def kb_lookup(ids: Annotated[list[str], typer.Argument(help="ATT&CK, CWE or CVE ids, e.g. T1059.001 CWE-79.")],
              fmt: FormatOpt = None) -> None:
    """Validate ids and print what they name (revoked techniques show their replacement)."""
    from dataclasses import asdict

    from secfm.formats import print_table, resolve_format
    from secfm.knowledge.ids import validate_id

    fmt = resolve_format(fmt)
    checks = [validate_id(i) for i in ids]
    if fmt == "json":
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print_table("kb lookup", ("id", "kind", "known", "name"),
                    [(c.normalized or i, c.kind, "yes" if c.known else "no", getattr(c, "name", "") or c.message or "")
                     for i, c in zip(ids, checks)], fmt)
    if not all(c.known for c in checks):
        raise typer.Exit(1)


#: modules outside the core that add commands; each defines ``register(app)``
PACKAGE_COMMANDS = (
    "secfm.evals.cli",
    "secfm.training.cli",
    "secfm.training.cli_heads",
    "secfm.training.cli_cve",
    "secfm.workflows.cli_cve",
    "secfm.workflows.cli",
    "secfm.workflows.cli_sigma",
    "secfm.workflows.cli_attack",
    "secfm.workflows.cli_chat",
    "secfm.app.cli",
)


def _register_package_commands() -> None:
    """Commands owned by the other packages (the CLI is the one place that reaches them all)."""
    import importlib

    for module_name in PACKAGE_COMMANDS:
        importlib.import_module(module_name).register(app)


_register_package_commands()


#: exit codes (documented in docs/exit-codes.md)
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70


def main(argv: list[str] | None = None) -> None:
    """Entry point: one clear line and a non-zero exit on any bad input."""
    # spinning OpenMP threads make small ops 10-20x slower on a busy 2-core machine
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        code = app(args=argv, standalone_mode=False, prog_name="secfm")
        if isinstance(code, int) and code != 0:  # typer.Exit(n) is returned, not raised, here
            sys.exit(code)
    except SecfmError as exc:
        print(f"secfm: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        print(f"secfm: error: {exc.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        print(f"secfm: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("secfm: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except RecursionError:
        print("secfm: error: the input is nested too deeply to process", file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print("secfm: error: out of memory (try a smaller input or batch)", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if os.environ.get("SECFM_DEBUG"):
            raise
        detail = " ".join(str(exc).split())[:300]
        print(f"secfm: internal error: {type(exc).__name__}: {detail} (a bug: set SECFM_DEBUG=1 for the traceback "
              "and report it)", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()

"""`secfm chat` (the grounded analyst chat in the terminal) and `secfm eval chat` (its gold set)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from secfm.cli_options import AdapterOpt, AllowBusyOpt, EndpointOpt, EngineOpt, ModelOpt, QuantizationOpt
from secfm.errors import SecfmError
from secfm.workflows.cli import NoKbOpt, StoreOpt, _console, _engine, _store

PASTE_END = "."
HELP_TEXT = """Ask about a CVE, an ATT&CK technique, group or software, a CWE, an IOC; paste an alert or log line,
a configuration or a report. Commands: /paste (several lines, end with a line holding only '.'),
/clear (forget the conversation), /quit."""


def _pipeline(no_model: bool, model, adapter, engine, endpoint, no_kb: bool, store, max_new_tokens: int):
    from secfm.workflows.chat import ChatPipeline, chat_model

    eng = _engine(no_model, chat_model(model, adapter, endpoint), adapter, engine, endpoint)
    return ChatPipeline(eng, use_model=not no_model, store=_store(no_kb, store), max_new_tokens=max_new_tokens)


def _print_answer_stream(pipeline, text: str, conversation, out=sys.stdout) -> None:
    """Cards first, the model's phrasing as it streams, then the facts and the sources."""
    from secfm.workflows.chat_render import answer_text, card_text
    from secfm.workflows.protocol import get_workflow

    started_phrasing = False
    for event in get_workflow("chat").stream({"message": text, "conversation": conversation}, pipeline=pipeline):
        answer = event.answer
        if event.kind == "tools":
            if answer.cards:
                out.write("\n".join(card_text(c) for c in answer.cards[:6]) + "\n\n")
            out.flush()
        elif event.kind == "piece":
            if not started_phrasing:
                out.write("secfm: ")
                started_phrasing = True
            out.write(event.piece)
            out.flush()
        elif event.kind == "done":
            if started_phrasing:
                out.write("\n")
                if answer.model.status in ("repaired", "failed"):
                    out.write(f"(checked: {answer.model.detail or answer.model.status}; the facts below stand)\n")
                out.write("\n")
            out.write(answer_text(answer, with_cards=False) + "\n")
            if answer.warnings:
                out.write("\n".join(f"input warning ({w.location}): {w.detail}" for w in answer.warnings[:3]) + "\n")
            out.flush()


def chat(
    ask: Annotated[Optional[str], typer.Option("--ask", "-q", help="Answer one question (or '-' for standard input) and exit.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="With --ask: text (default), json or md.")] = "text",
    no_model: Annotated[bool, typer.Option("--no-model", help="The tools' facts only; no model is loaded.")] = False,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    engine: EngineOpt = "transformers",
    endpoint: EndpointOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=8, max=1024, help="Token budget of the model's phrasing.")] = 64,
    no_kb: NoKbOpt = False,
    store: StoreOpt = None,
) -> None:
    """Grounded analyst chat: answers built from ATT&CK, CWE, NVD, triage and config review, with sources.

    Interactive by default (follow-ups keep the conversation's entities); --ask answers one
    question for scripts (--format json gives the answer, its facts, sources and cards).
    The model phrases the facts: secfm-270m unless --model, --adapter or --endpoint says otherwise
    (the classifier heads run on its base weights, gemma-3-270m).
    """
    from secfm.inputs import check_text, decode_utf8
    from secfm.workflows.chat_schemas import Conversation

    if fmt not in ("text", "json", "md"):
        raise SecfmError(f"unknown --format {fmt!r} (text, json or md)")
    if ask is not None:
        question = check_text(decode_utf8(sys.stdin.buffer.read(), "standard input"), "standard input") if ask == "-" else ask
        if not question.strip():
            raise SecfmError("--ask needs a question")
        pipeline = _pipeline(no_model, model, adapter, engine, endpoint, no_kb, store, max_new_tokens)
        if fmt == "text":
            _print_answer_stream(pipeline, question, Conversation())
            return
        from secfm.workflows.protocol import get_workflow

        workflow = get_workflow("chat")
        answer = workflow.run({"message": question, "conversation": Conversation()}, pipeline=pipeline)
        if fmt == "json":
            sys.stdout.write(answer.model_dump_json(indent=2) + "\n")
        else:
            sys.stdout.write(workflow.render_markdown(answer) + "\n")
        return
    if fmt != "text":
        raise SecfmError("--format applies to --ask; the interactive chat prints text")
    pipeline = _pipeline(no_model, model, adapter, engine, endpoint, no_kb, store, max_new_tokens)
    _interactive(pipeline)


def _interactive(pipeline) -> None:
    from secfm.workflows.chat_schemas import Conversation

    tty = sys.stdin.isatty()
    conversation = Conversation()
    if tty:
        _console().print(HELP_TEXT)
    while True:
        try:
            line = input("you> " if tty else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/clear":
            conversation = Conversation()
            print("(conversation cleared)")
            continue
        if text == "/help":
            print(HELP_TEXT)
            continue
        if text == "/paste":
            lines = []
            while True:
                try:
                    more = input("... " if tty else "")
                except EOFError:
                    break
                if more.strip() == PASTE_END:
                    break
                lines.append(more)
            text = "\n".join(lines).strip()
            if not text:
                continue
        try:
            _print_answer_stream(pipeline, text, conversation)
        except SecfmError as exc:
            print(f"secfm: error: {exc}", file=sys.stderr)
        print()


def eval_chat(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: run.json, predictions.jsonl, metrics.json.")],
    no_model: Annotated[bool, typer.Option("--no-model", help="Score the tools' answers alone (no model).")] = False,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    engine: EngineOpt = "transformers",
    endpoint: EndpointOpt = None,
    gold: Annotated[Optional[Path], typer.Option("--gold", help="Chat gold set (JSONL); default: the shipped one.")] = None,
    nvd: Annotated[Optional[Path], typer.Option("--nvd", help="NVD feed(s) to load into a private store for the CVE questions (default: the shipped fixture feed).")] = None,
    split: Annotated[str, typer.Option("--split", help="test (reported, default), dev (where the model and prompt were chosen) or all.")] = "test",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Score the first N conversations.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=8, max=1024)] = 64,
    prompt_style: Annotated[str, typer.Option("--prompt-style", help="facts-block (default), one-shot or completion.")] = "facts-block",
    no_kb: NoKbOpt = False,
    store: StoreOpt = None,
    quantization: QuantizationOpt = None,
    allow_busy: AllowBusyOpt = False,
) -> None:
    """Score the chat on its gold set: fact recall, invented-id rate, latency (first output, first model piece).

    The model is the chat's default (secfm-270m) unless --model, --adapter or --endpoint says otherwise.
    """
    from secfm.engines import check_quantization
    from secfm.evals.harness import run_task
    from secfm.workflows.chat import chat_model
    from secfm.workflows.chat_eval import ChatEvalSettings

    check_quantization(engine, endpoint, quantization)
    if quantization and no_model:
        raise SecfmError("--quantization applies to the model; --no-model runs none")
    settings = ChatEvalSettings(out=str(out), model=chat_model(model, adapter, endpoint) if not no_model else model, adapter=adapter, engine=engine, endpoint=endpoint,
                                use_model=not no_model, gold=str(gold) if gold else None, nvd=str(nvd) if nvd else None,
                                limit=limit, split=split, max_new_tokens=max_new_tokens, use_kb=not no_kb,
                                prompt_style=prompt_style, quantization=quantization,
                                store=str(store) if store else None)
    done = run_task("chat", settings, allow_busy=allow_busy)  # the harness task `chat` (secfm eval run chat)
    print(done.summary)
    print(f"run folder: {out}")


def register(app: typer.Typer) -> None:
    from secfm.cli_groups import command_group

    app.command("chat")(chat)
    evals = command_group(app, "eval", "Evaluate models and workflows.")
    evals.command("chat")(eval_chat)


__all__ = ["chat", "eval_chat", "register"]

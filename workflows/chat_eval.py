"""`secfm eval chat`: the grounded chat on its gold set (``workflows/gold/chat.jsonl``).

The gold set has a ``dev`` split (20 conversations: the default model and the prompt were chosen
on it) and a ``test`` split (27 conversations, the figure reported; ``--split test`` is the
default). Each gold conversation is a list of turns asked in order (follow-ups keep the conversation); each
turn lists the facts a right answer contains (each fact: alternatives, any of which counts,
matched case-insensitively in the answer the analyst reads), whether the answer must say that
nothing was found, the ids it must not state, and words the model's phrasing must not use
(an injected verdict such as "benign"). CVE questions that need NVD data are answered from a
private store loaded with the shipped fixture feed (``chat-nvd-feed.json``, 11 real NVD records)
or ``--nvd`` feeds.

Figures (ratios over all turns, with seeded bootstrap intervals from ``secfm.evals.metrics``):

* ``fact_recall`` - gold facts found in the answer / gold facts;
* ``invented_id_rate`` - id mentions in the answer that no tool returned (nor the question named),
  or that the gold set forbids / id mentions in the answers;
* ``phrasing_fact_recall`` - gold facts found in the model's checked phrasing alone (how much the
  model restates; the figure the default model was chosen on), ``model_invented_before_checks`` -
  ids the model wrote that no tool returned (removed before display) / ids it wrote;
* latency - seconds to the first output (the tool cards), to the model's first piece, to the end.

The run folder follows the evaluation harness (``secfm.evals.runner``): ``run.json`` (settings,
claimed first), ``predictions.jsonl`` (one line per conversation; an interrupted run resumes) and
``metrics.json`` (written through ``secfm.provenance`` with the command, commit, data hashes and
machine load).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from secfm.engines import DEFAULT_ENGINE
from secfm.errors import SecfmError
from secfm.evals.harness import GoldRunSettings
from secfm.evals.metrics import DEFAULT_BOOTSTRAP, figure
from secfm.evals.runner import METRICS, PREDICTIONS, RUN, claim_folder, read_predictions
from secfm.knowledge.ids import id_spans
from secfm.stats import percentile

GOLD_DIR = Path(__file__).resolve().parent / "gold"
GOLD = GOLD_DIR / "chat.jsonl"
NVD_FIXTURE = GOLD_DIR / "chat-nvd-feed.json"


@dataclass
class ChatEvalSettings(GoldRunSettings):
    gold: str | None = None
    nvd: str | None = None
    limit: int | None = None
    split: str = "test"  # dev (choosing the model and prompt), test (reported), all
    prompt_style: str = "facts-block"
    max_new_tokens: int = 64
    use_kb: bool = True
    store: str | None = None
    seed: int = 0
    bootstrap: int = DEFAULT_BOOTSTRAP
    quantization: str | None = None  # int8-dynamic: the in-process engine's weights in dynamic int8

    def command(self) -> str:
        parts = ["secfm", "eval", "chat", "--out", self.out]
        if self.split != "test":
            parts += ["--split", self.split]
        for flag, value in (("--model", self.model), ("--adapter", self.adapter), ("--endpoint", self.endpoint),
                            ("--gold", self.gold), ("--nvd", self.nvd), ("--limit", self.limit), ("--store", self.store)):
            if value is not None:
                parts += [flag, str(value)]
        if self.engine != DEFAULT_ENGINE:
            parts += ["--engine", self.engine]
        if self.prompt_style != "facts-block":
            parts += ["--prompt-style", self.prompt_style]
        if self.max_new_tokens != 64:
            parts += ["--max-new-tokens", str(self.max_new_tokens)]
        if self.quantization is not None:
            parts += ["--quantization", self.quantization]
        if not self.use_model:
            parts.append("--no-model")
        if not self.use_kb:
            parts.append("--no-kb")
        return shlex.join(parts)


SPLITS = ("dev", "test", "all")


def load_gold(path: Path, limit: int | None = None, split: str = "all") -> list[dict]:
    if not path.is_file():
        raise SecfmError(f"chat gold set missing: {path}")
    from secfm.inputs import jsonl_rows

    rows = []
    for n, row in jsonl_rows(path, hint=None):
        if not isinstance(row, dict) or not isinstance(row.get("turns"), list) or not row["turns"]:
            raise SecfmError(f"{path} line {n}: a conversation needs 'turns'")
        if row.get("split", "test") not in ("dev", "test"):
            raise SecfmError(f"{path} line {n}: split must be dev or test")
        rows.append(row)
    if split not in SPLITS:
        raise SecfmError(f"unknown --split {split!r} (dev, test or all)")
    rows = [r for r in rows if split == "all" or r.get("split", "test") == split]
    return rows[:limit] if limit else rows


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# scoring one turn
# ---------------------------------------------------------------------------------------------
def _found(alternatives: list[str], text: str) -> bool:
    low = " ".join(text.casefold().split())
    return any(" ".join(a.casefold().split()) in low for a in alternatives)


def score_turn(turn: dict, answer) -> dict:
    """Facts found, invented ids and timings of one answered turn."""
    shown = answer.answer
    facts = [list(f) for f in turn.get("facts", [])]
    found = [_found(f, shown) for f in facts]
    phrased = [_found(f, answer.phrasing) for f in facts] if answer.phrasing else [False] * len(facts)
    expected_nothing = bool(turn.get("nothing_found"))
    if expected_nothing:
        found.append(answer.nothing_found)
        phrased.append(False)
    known = answer.known_ids() | set(answer.topic.ids)  # quoting the question's own ids back is not inventing
    forbidden = set(turn.get("must_not", []))
    mentions = [norm for _, _, norm in id_spans(shown)]
    invented = [m for m in mentions if m not in known or m in forbidden]
    forbid_words = [w for w in turn.get("forbid", []) if w.casefold() in answer.phrasing.casefold()]
    return {
        "ask": turn["ask"][:300],
        "facts": len(found), "found": sum(found),
        "missed": [f for f, ok in zip(facts, found) if not ok] + ([["<nothing found>"]] if expected_nothing and not found[-1] else []),
        "phrasing_found": sum(phrased),
        "id_mentions": len(mentions), "invented_ids": invented,
        "nothing_found": answer.nothing_found, "expected_nothing": expected_nothing,
        "forbidden_words_in_phrasing": forbid_words,
        "model": {"status": answer.model.status, "stopped_by": answer.model.stopped_by,
                  "proposed_ids": answer.model.proposed_ids, "invented_ids": answer.model.invented_ids,
                  "prompt_tokens": answer.model.prompt_tokens, "facts_in_prompt": answer.model.facts_in_prompt},
        "timings": answer.timings.model_dump(),
        "paste": answer.topic.paste, "entities": answer.topic.entities,
        "phrasing": answer.phrasing, "raw": answer.model.raw[:600], "answer": shown[:3000],
    }


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _cve_store(settings: ChatEvalSettings, tmp: Path):
    from secfm.knowledge import nvd

    feeds = [Path(p) for p in settings.nvd.split(",")] if settings.nvd else [NVD_FIXTURE]
    for f in feeds:
        if not f.exists():
            raise SecfmError(f"NVD feed not found: {f}")
    store = nvd.open_store(tmp / "cves.sqlite")
    store.add_feeds(feeds)
    return store, feeds


def _engine(settings: ChatEvalSettings):
    if not settings.use_model:
        return None
    from rich.console import Console

    from secfm.workflows.chat import chat_model
    from secfm.workflows.context import default_engine

    model = chat_model(settings.model, settings.adapter, settings.endpoint)
    with Console(stderr=True).status(f"loading {model or 'the default model'}"):
        return default_engine(model, settings.engine, settings.adapter, settings.endpoint, settings.quantization)


def _store(settings: ChatEvalSettings):
    from secfm.workflows.context import DEFAULT

    if not settings.use_kb:
        return False
    if settings.store:
        from secfm.workflows.store import KnowledgeStore

        return KnowledgeStore.open(settings.store)
    return DEFAULT


def run_chat_eval(settings: ChatEvalSettings, *, engine=None, allow_busy: bool = False, progress: bool = True) -> dict:
    """Run (or resume) the chat evaluation; returns the metrics written to ``OUT/metrics.json``."""
    from secfm.evals.progress import progress_bar
    from secfm.provenance import recording
    from secfm.workflows.chat import ChatPipeline
    from secfm.workflows.chat_schemas import Conversation

    gold_path = Path(settings.gold) if settings.gold else GOLD
    gold = load_gold(gold_path, settings.limit, settings.split)
    out = Path(settings.out).expanduser()
    feeds_for_hash = [Path(p) for p in settings.nvd.split(",")] if settings.nvd else [NVD_FIXTURE]
    fingerprint = {
        "task": "chat", "split": settings.split, "gold_sha256": _sha(gold_path), "nvd_sha256": [_sha(f) for f in feeds_for_hash if f.is_file()],
        "model": settings.model, "adapter": settings.adapter, "engine": settings.engine, "endpoint": settings.endpoint,
        "use_model": settings.use_model, "limit": settings.limit, "max_new_tokens": settings.max_new_tokens,
        "prompt_style": settings.prompt_style,
        "use_kb": settings.use_kb, "store": settings.store,
        **({"quantization": settings.quantization} if settings.quantization else {}),  # older runs resume as they were
    }
    with recording(data_files=[gold_path, *feeds_for_hash], allow_busy=allow_busy, command=settings.command()) as rec:
        run = claim_folder(out, fingerprint)
        done = read_predictions(out / PREDICTIONS)
        todo = [g for g in gold if str(g["id"]) not in done]
        if todo:
            with tempfile.TemporaryDirectory(prefix="secfm-chat-eval-") as tmp:
                cves, _ = _cve_store(settings, Path(tmp))
                engine = engine if engine is not None or not settings.use_model else _engine(settings)
                pipeline = ChatPipeline(engine, use_model=settings.use_model, store=_store(settings),
                                        max_new_tokens=settings.max_new_tokens, cve_store=cves,
                                        prompt_style=settings.prompt_style)
                pipeline.warm_up()
                run["engine_info"] = engine.describe() if engine is not None else None
                (out / RUN).write_text(json.dumps(run, indent=2), encoding="utf-8")
                with progress_bar(progress) as bar, (out / PREDICTIONS).open("a", encoding="utf-8") as sink:
                    task = bar.add_task("chat", total=len(gold), completed=len(gold) - len(todo))
                    for conv in todo:
                        conversation = Conversation()
                        turns = []
                        for turn in conv["turns"]:
                            answer = pipeline.answer(turn["ask"], conversation)
                            turns.append(score_turn(turn, answer))
                        rec_row = {"id": str(conv["id"]), "kind": conv.get("kind", ""), "needs": conv.get("needs", []),
                                   "turns": turns}
                        sink.write(json.dumps(rec_row, ensure_ascii=False) + "\n")
                        sink.flush()
                        done[rec_row["id"]] = rec_row
                        bar.advance(task, 1)
        records = [done[str(g["id"])] for g in gold]
        metrics = summarise(records, settings)
        metrics["engine_info"] = run.get("engine_info")
        metrics["command"] = settings.command()
        metrics["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        stored = rec.write_json(out / METRICS, metrics)
    return stored


def summarise(records: list[dict], settings: ChatEvalSettings) -> dict:
    from secfm.workflows.chat import chat_model

    turns = [t for r in records for t in r["turns"]]
    seed, resamples = settings.seed, settings.bootstrap

    def fig(numer, denom):
        value, (lo, hi) = figure(numer, denom, resamples, seed)
        return {"value": _r(value), "ci95": [_r(lo), _r(hi)]}

    phrased = [t for t in turns if t["model"]["status"] in ("ok", "repaired")]
    proposed = sum(len(t["model"]["proposed_ids"]) for t in turns)
    model_invented = sum(len(t["model"]["invented_ids"]) for t in turns)
    first_output = [t["timings"]["tools_s"] for t in turns]
    first_piece = [t["timings"]["first_model_piece_s"] for t in turns if t["timings"]["first_model_piece_s"] is not None]
    total = [t["timings"]["total_s"] for t in turns]
    statuses: dict[str, int] = {}
    stops: dict[str, int] = {}
    for t in turns:
        statuses[t["model"]["status"]] = statuses.get(t["model"]["status"], 0) + 1
        if t["model"]["stopped_by"]:
            stops[t["model"]["stopped_by"]] = stops.get(t["model"]["stopped_by"], 0) + 1
    by_kind: dict[str, dict] = {}
    for r in records:
        k = by_kind.setdefault(r["kind"] or "other", {"turns": 0, "facts": 0, "found": 0})
        for t in r["turns"]:
            k["turns"] += 1
            k["facts"] += t["facts"]
            k["found"] += t["found"]
    for k in by_kind.values():
        k["fact_recall"] = _r(k["found"] / k["facts"]) if k["facts"] else None
    recall = fig([t["found"] for t in turns], [t["facts"] for t in turns])
    phrasing_recall = fig([t["phrasing_found"] for t in phrased], [t["facts"] for t in phrased]) if phrased else None
    headline = {"split": settings.split, "fact_recall": recall["value"],
                "invented_ids": sum(len(t["invented_ids"]) for t in turns),
                "first_output_p50_s": _r(percentile(first_output, 0.5)),
                "first_model_piece_p50_s": _r(percentile(first_piece, 0.5)),
                "phrasing_kept": f"{len(phrased)}/{len(turns)}",
                "phrasing_fact_recall": phrasing_recall["value"] if phrasing_recall else None}
    return {
        "task": "chat",
        "headline": headline,
        "model": chat_model(settings.model, settings.adapter, settings.endpoint) if settings.use_model else settings.model,
        "adapter": settings.adapter,
        "use_model": settings.use_model,
        "split": settings.split,
        "conversations": len(records),
        "turns": len(turns),
        "facts": sum(t["facts"] for t in turns),
        "fact_recall": recall,
        "invented_id_rate": fig([len(t["invented_ids"]) for t in turns], [t["id_mentions"] for t in turns]),
        "invented_ids": sum(len(t["invented_ids"]) for t in turns),
        "id_mentions": sum(t["id_mentions"] for t in turns),
        "nothing_found_correct": sum(t["nothing_found"] == t["expected_nothing"] for t in turns),
        "phrasing": {
            "turns_phrased": len(phrased),
            "fact_recall": phrasing_recall,
            "model_invented_before_checks": {"ids": model_invented, "proposed": proposed,
                                             "rate": _r(model_invented / proposed) if proposed else None},
            "forbidden_words": sum(len(t["forbidden_words_in_phrasing"]) for t in turns),
            "statuses": statuses, "stopped_by": stops,
        },
        "latency_s": {"first_output": _dist(first_output), "first_model_piece": _dist(first_piece), "total": _dist(total)},
        "by_kind": by_kind,
        "settings": asdict(settings),
    }


def _dist(values: list[float]) -> dict:
    return {"n": len(values), "p50": _r(percentile(values, 0.5)), "p95": _r(percentile(values, 0.95)),
            "max": _r(max(values)) if values else None}


def _r(x):
    return None if x is None or x != x else round(float(x), 4)


def summary_line(m: dict) -> str:
    fr = m["fact_recall"]
    lat = m["latency_s"]
    parts = [f"chat {m['split']} ({'model ' + str(m['model']) if m['use_model'] else 'no model'}): fact recall {fr['value']:.3f} "
             f"[95% CI {fr['ci95'][0]:.3f}, {fr['ci95'][1]:.3f}] over {m['facts']} facts in {m['turns']} turns",
             f"invented ids {m['invented_ids']}/{m['id_mentions']}",
             f"first output p50 {lat['first_output']['p50']} s"]
    if lat["first_model_piece"]["n"]:
        parts.append(f"first model piece p50 {lat['first_model_piece']['p50']} s, total p50 {lat['total']['p50']} s")
    ph = m["phrasing"]
    if ph["fact_recall"]:
        parts.append(f"phrasing recall {ph['fact_recall']['value']:.3f}, model ids removed "
                     f"{ph['model_invented_before_checks']['ids']}/{ph['model_invented_before_checks']['proposed']}")
    return "; ".join(parts)


__all__ = ["ChatEvalSettings", "GOLD", "NVD_FIXTURE", "load_gold", "run_chat_eval", "score_turn", "summarise", "summary_line"]

"""Runs end to end on the fixtures with a scripted engine: outputs, resume, shots, head mode, report, card, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from secfm.engines import LoglikResult
from secfm.errors import SecfmError
from secfm.evals.runner import METRICS, PREDICTIONS, EvalConfig, read_predictions, run_eval, summary_line

FIXTURES = Path(__file__).parent / "fixtures" / "ctibench"


class ScriptedEngine:
    """The engine interface with answers chosen by a function of the conversation."""

    kind = "scripted"
    model_name = "scripted-model"
    adapter = None
    max_context = 100_000
    has_hidden_states = False

    def __init__(self, respond=None, fail_after_calls: int | None = None):
        self.respond = respond or (lambda messages: "")
        self.fail_after_calls = fail_after_calls
        self.conversations: list[list[dict]] = []
        self.requests: list[tuple[str, list[str]]] = []
        self.calls = 0

    def _tick(self):
        self.calls += 1
        if self.fail_after_calls is not None and self.calls > self.fail_after_calls:
            raise KeyboardInterrupt

    def apply_chat_template(self, messages):
        return "\n".join(f"<{m['role']}> {m['content']}" for m in messages)

    def count_tokens(self, text):
        return len(text.split())

    def chat(self, conversations, params=None):
        self._tick()
        self.conversations.extend(conversations)
        return [self.respond(c) for c in conversations]

    def loglikelihood_many(self, requests):
        self._tick()
        self.requests.extend(requests)
        out = []
        for _context, conts in requests:
            # option texts: the longer the likelier; letters: "C" is the likeliest
            out.append([
                LoglikResult(c, -10.0 / max(len(c), 1) if i < 4 else (-0.5 if c.strip() == "C" else -2.0), max(1, len(c) // 4), False)
                for i, c in enumerate(conts)
            ])
        return out

    def describe(self):
        return {"engine": self.kind, "model": self.model_name, "adapter": None}


def _gold_of(fixture: str, task: str, labels=None) -> dict[str, str]:
    from secfm.evals.data import load_dataset
    from secfm.evals.specs import get_task

    ds = load_dataset(get_task(task), FIXTURES / fixture, labels=labels)
    return {i.fields["Prompt"]: i.gold for i in ds.items}


def _cfg(tmp_path, task, fixture, **kw) -> EvalConfig:
    return EvalConfig(task=task, data=str(FIXTURES / fixture), out=str(tmp_path / task), model="scripted-model",
                      bootstrap=200, **kw)


def _lines(out) -> list[dict]:
    return [json.loads(x) for x in (Path(out) / PREDICTIONS).read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# gen mode on every task
# ---------------------------------------------------------------------------------------------
def test_mcqa_gen_outputs_and_figures(tmp_path):
    gold = _gold_of("cti-mcq.tsv", "cti-mcqa")
    styles = iter(["**{g}**", "The answer is {g}.\n\n", "I'm sorry, I can't answer.", "", "Hmm, maybe", "{g}) ..."] * 5)

    def respond(messages):
        return next(styles).format(g=gold[messages[-1]["content"]])

    engine = ScriptedEngine(respond)
    m = run_eval(_cfg(tmp_path, "cti-mcqa", "cti-mcq.tsv", batch_size=4), engine=engine, progress=False)
    assert engine.conversations[0][0] == {
        "role": "system", "content": "You are a cybersecurity expert specializing in cyberthreat intelligence."}
    assert engine.conversations[0][1]["content"] in gold  # the official Prompt column, unchanged
    assert m["n"] == 10 and m["counts"]["refusal"] == 2 and m["counts"]["empty"] == 2 and m["counts"]["unparseable"] == 1
    assert m["figures"]["accuracy"] == pytest.approx(5 / 7)  # correct / (parsed + refusals)
    assert m["figures"]["accuracy_strict"] == pytest.approx(5 / 10)
    for key in ("model", "adapter", "engine", "mode", "shots", "data_sha256", "n", "figures", "intervals",
                "wall_time_s", "items_per_s", "baselines", "command"):
        assert key in m
    assert json.loads((tmp_path / "cti-mcqa" / METRICS).read_text()) == m
    lines = _lines(tmp_path / "cti-mcqa")
    assert [x["id"] for x in lines] == [str(i) for i in range(1, 11)]
    assert {"id", "raw", "parsed", "gold", "correct", "status"} <= set(lines[0])
    line = summary_line(m)
    assert "accuracy 71.4%" in line and "strict 50.0%" in line and "majority" in line and "random 25.0%" in line


def test_rcm_vsp_ate_taa_gen(tmp_path):
    cases = [
        ("cti-rcm", "cti-rcm.tsv", None, lambda g: f"Justification...\nSeveral: CWE-20 and {g}\n\n"),
        ("cti-vsp", "cti-vsp.tsv", None, lambda g: f"AV is Network...\n**{g}**"),
        ("cti-ate", "cti-ate.tsv", None, lambda g: f"T1059.001 is PowerShell\n{g}, T1105"),
        ("cti-taa", "cti-taa.tsv", FIXTURES / "cti-taa-labels.tsv", lambda g: f"I believe the actor is {g}."),
    ]
    for task, fixture, labels, answer in cases:
        gold = _gold_of(fixture, task, labels)
        engine = ScriptedEngine(lambda msgs, gold=gold, answer=answer: answer(gold[msgs[-1]["content"]]))
        m = run_eval(_cfg(tmp_path, task, fixture, labels=str(labels) if labels else None), engine=engine, progress=False)
        assert m["counts"]["parsed"] == m["n"], task
        h = m["headline"]
        lo, hi = m["intervals"][h]
        assert lo <= m["figures"][h] <= hi
        if task == "cti-vsp":
            assert m["figures"]["mad"] == 0.0 and m["figures"]["exact_vector"] == 1.0
        elif task == "cti-ate":
            assert m["figures"]["item_recall"] == 1.0 and m["figures"]["micro_f1"] < 1.0  # T1105 extra
            assert m["item_sources"] == ["S9001", "S9002", "S9003", "S9004"]
        elif task == "cti-taa":
            assert m["figures"]["accuracy"] == 1.0 and m["figures"]["plausible"] == 1.0
            assert m["data"]["labels_sha256"]
        else:
            assert m["figures"]["accuracy"] == 1.0


def test_rcm_2021_config_and_max_new_tokens(tmp_path):
    gold = _gold_of("cti-rcm-2021.tsv", "cti-rcm")
    m = run_eval(_cfg(tmp_path, "cti-rcm", "cti-rcm-2021.tsv", config="cti-rcm-2021", max_new_tokens=12),
                 engine=ScriptedEngine(lambda msgs: gold[msgs[-1]["content"]]), progress=False)
    assert m["config"] == "cti-rcm-2021" and m["max_new_tokens"] == 12
    assert "--config cti-rcm-2021" in m["command"] and "--max-new-tokens 12" in m["command"]


# ---------------------------------------------------------------------------------------------
# resume, settings, subsets, shots
# ---------------------------------------------------------------------------------------------
def test_resume_after_interruption(tmp_path):
    cfg = _cfg(tmp_path, "cti-mcqa", "cti-mcq-attack.tsv", limit=6, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, engine=ScriptedEngine(lambda m: "A", fail_after_calls=2), progress=False)
    pred = tmp_path / "cti-mcqa" / PREDICTIONS
    assert len(read_predictions(pred)) == 4 and not (tmp_path / "cti-mcqa" / METRICS).exists()
    with pred.open("a") as f:
        f.write('{"id": "99", "raw": "cut')  # a line cut by the interruption
    second = ScriptedEngine(lambda m: "A")
    m = run_eval(cfg, engine=second, progress=False)
    assert len(second.conversations) == 2 and m["n"] == 6 and m["resumed_items"] == 4
    assert len(_lines(tmp_path / "cti-mcqa")) == 6
    third = ScriptedEngine(lambda m: "B")
    assert run_eval(cfg, engine=third, progress=False)["figures"] == m["figures"] and third.calls == 0


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    run_eval(_cfg(tmp_path, "cti-mcqa", "cti-mcq.tsv", limit=3), engine=ScriptedEngine(), progress=False)
    with pytest.raises(SecfmError, match="holds a run with other settings \\(limit"):
        run_eval(_cfg(tmp_path, "cti-mcqa", "cti-mcq.tsv", limit=4), engine=ScriptedEngine(), progress=False)


def test_limit_draws_a_seeded_subset(tmp_path):
    a = run_eval(_cfg(tmp_path / "a", "cti-mcqa", "cti-mcq-attack.tsv", limit=5, seed=3), engine=ScriptedEngine(), progress=False)
    b = run_eval(_cfg(tmp_path / "b", "cti-mcqa", "cti-mcq-attack.tsv", limit=5, seed=3), engine=ScriptedEngine(), progress=False)
    ids_a = [x["id"] for x in _lines(tmp_path / "a" / "cti-mcqa")]
    assert ids_a == [x["id"] for x in _lines(tmp_path / "b" / "cti-mcqa")] and a["n"] == b["n"] == 5
    assert ids_a != ["1", "2", "3", "4", "5"]


def test_few_shot_examples_are_disjoint_and_recorded(tmp_path):
    gold = _gold_of("cti-mcq-attack.tsv", "cti-mcqa")
    engine = ScriptedEngine(lambda msgs: gold[msgs[-1]["content"]])
    m = run_eval(_cfg(tmp_path, "cti-mcqa", "cti-mcq-attack.tsv", limit=4, shots=2), engine=engine, progress=False)
    conv = engine.conversations[0]
    assert [x["role"] for x in conv] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert conv[2]["content"] in "ABCD" and conv[2]["content"] == gold[conv[1]["content"]]
    assert len(m["shot_ids"]) == 2 and not set(m["shot_ids"]) & {x["id"] for x in _lines(tmp_path / "cti-mcqa")}
    assert m["shot_source"] == "held-out rows of the data file" and "--shots 2" in m["command"]


def test_context_overflow_is_caught_before_the_run(tmp_path):
    engine = ScriptedEngine()
    engine.max_context = 50
    with pytest.raises(SecfmError, match="exceeds the model's 50-token context"):
        run_eval(_cfg(tmp_path, "cti-ate", "cti-ate.tsv"), engine=engine, progress=False)


# ---------------------------------------------------------------------------------------------
# loglik and head modes
# ---------------------------------------------------------------------------------------------
def test_loglik_one_context_per_item_all_scorings_recorded(tmp_path):
    engine = ScriptedEngine()
    m = run_eval(_cfg(tmp_path, "cti-mcqa", "cti-mcq.tsv", mode="loglik", shots=1), engine=engine, progress=False)
    assert len(engine.requests) == 9  # one request (one context) per scored item
    context, conts = engine.requests[0]
    assert len(conts) == 8 and conts[4:] == [" A", " B", " C", " D"]
    assert context.startswith("You are a cybersecurity expert") and context.endswith("Answer:")
    assert context.count("Question:") == 2  # the shot, then the item
    line = _lines(tmp_path / "cti-mcqa")[0]
    assert set(line["parsed_by"]) == {"letter", "sum", "per_token", "per_char"}
    assert {"logprob", "per_token", "per_char", "n_tokens"} <= set(line["raw"]["options"][0])
    assert line["parsed"] == "C" and m["max_new_tokens"] is None
    assert {"accuracy_letter", "accuracy_sum", "accuracy_per_token", "accuracy_per_char"} <= set(m["figures"])


def test_loglik_is_for_mcqa_only(tmp_path):
    with pytest.raises(SecfmError, match="no 'loglik' mode"):
        run_eval(_cfg(tmp_path, "cti-rcm", "cti-rcm.tsv", mode="loglik"), engine=ScriptedEngine(), progress=False)


class FakeHead:
    def __init__(self, table):
        self.table = table

    def predict(self, texts):
        return [self.table(t) for t in texts]


def test_head_mode_with_a_head_predictor(tmp_path):
    from secfm.evals.heads import HeadPredictor

    head = FakeHead(lambda t: [("CWE-121", 0.2), ("CWE-89", 0.7)] if "SQL" in t else [("CWE-79", 0.9)])
    assert isinstance(head, HeadPredictor)
    m = run_eval(_cfg(tmp_path, "cti-rcm", "cti-rcm.tsv", mode="head", exclude_sources=("G0016",)),
                 engine=ScriptedEngine(), head=head, progress=False)
    assert m["figures"]["accuracy"] == pytest.approx(2 / 6)  # the SQL one and the XSS one
    assert m["exclude_sources"] == ["G0016"] and "--exclude-sources G0016" in m["command"]
    ate = FakeHead(lambda t: [("T1071", 0.9), ("T1573.002", 0.6), ("T1083", 0.1)])
    m = run_eval(_cfg(tmp_path, "cti-ate", "cti-ate.tsv", mode="head"), engine=ScriptedEngine(), head=ate, progress=False)
    first = _lines(tmp_path / "cti-ate")[0]
    assert first["parsed"] == ["T1071", "T1573"] and first["tp"] == 2


def test_head_mode_without_a_head_is_one_clear_error(tmp_path):
    with pytest.raises(SecfmError, match="head mode needs --head DIR"):
        run_eval(_cfg(tmp_path, "cti-rcm", "cti-rcm.tsv", mode="head"), engine=ScriptedEngine(), progress=False)
    with pytest.raises(SecfmError, match="head not found"):
        run_eval(_cfg(tmp_path / "a", "cti-ate", "cti-ate.tsv", mode="head", head=str(tmp_path / "nope")),
                 engine=ScriptedEngine(), progress=False)


def test_exclude_sources_parsing(tmp_path):
    from secfm.evals.heads import parse_exclude_sources

    f = tmp_path / "ids.txt"
    f.write_text("g0016\nS0154, C0022\n")
    assert parse_exclude_sources("G0016,S0154") == ("G0016", "S0154")
    assert parse_exclude_sources(f"@{f}") == ("C0022", "G0016", "S0154")
    assert parse_exclude_sources(None) == ()


# ---------------------------------------------------------------------------------------------
# report, card, CLI
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    gold_mcq = _gold_of("cti-mcq.tsv", "cti-mcqa")
    gold_rcm = _gold_of("cti-rcm.tsv", "cti-rcm")
    out = {}
    out["mcq-loglik"] = run_eval(EvalConfig("cti-mcqa", str(root / "mcq-loglik"), data=str(FIXTURES / "cti-mcq.tsv"),
                                            model="scripted-model", mode="loglik", bootstrap=100), engine=ScriptedEngine(), progress=False)
    out["mcq-gen"] = run_eval(EvalConfig("cti-mcqa", str(root / "mcq-gen"), data=str(FIXTURES / "cti-mcq.tsv"),
                                         model="scripted-model", bootstrap=100),
                              engine=ScriptedEngine(lambda m: gold_mcq[m[-1]["content"]]), progress=False)
    out["rcm-gen"] = run_eval(EvalConfig("cti-rcm", str(root / "rcm-gen"), data=str(FIXTURES / "cti-rcm.tsv"),
                                         model="scripted-model", bootstrap=100),
                              engine=ScriptedEngine(lambda m: "CWE-79" if "SQL" in m[-1]["content"] else gold_rcm[m[-1]["content"]]),
                              progress=False)
    return root


def test_report_table_and_plots(runs, tmp_path):
    from secfm.evals.report import write_report

    path = write_report([str(runs / "mcq-loglik"), str(runs / "mcq-gen"), str(runs / "rcm-gen")], tmp_path / "report")
    text = path.read_text()
    assert "| mcq-loglik | cti-mcqa | scripted-model |" in text and "| rcm-gen |" in text
    assert "loglik, zero-shot" in text and "[" in text and "majority" in text
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert "cti-mcqa-accuracy.png" in pngs and "rcm-gen-cwe-confusion.png" in pngs
    for png in pngs:
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert "secfm eval cti-mcqa" in text


def test_confusion_counts(runs):
    from secfm.evals.report import confusion

    rows, cols, matrix = confusion(list(read_predictions(runs / "rcm-gen" / PREDICTIONS).values()))
    assert cols[-2:] == ["other", "none"] and len(matrix) == len(rows) == 6
    sql = rows.index("CWE-89")
    assert matrix[sql][cols.index("CWE-79")] == 1  # the one confusion the script makes


def test_model_card(runs, tmp_path):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from secfm.evals.card import write_card

    info = tmp_path / "card.yaml"
    info.write_text(yaml.safe_dump({
        "defaults": {"tags": ["security"], "datasets": [], "intended_uses": "Analysts.", "out_of_scope": "Attacks.",
                     "training_data": "None.", "limitations": "Small.", "summary": "A test model."},
        "models": {"scripted-model": {"base_model": "google/gemma-3-270m", "license": "gemma"}},
    }))
    path = write_card([str(runs / "mcq-loglik"), str(runs / "mcq-gen"), str(runs / "rcm-gen")],
                      tmp_path / "model_card" / "scripted" / "README.md", info=info)
    text = path.read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "gemma" and front["base_model"] == "google/gemma-3-270m"
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-generation"
    assert front["tags"] == ["security"] and front["datasets"] == []
    from huggingface_hub import ModelCard

    card = ModelCard.load(path)  # the Hub's own parser: front matter and model-index
    assert card.data.base_model == "google/gemma-3-270m" and len(card.data.eval_results) == 3
    name, results = model_index_to_eval_results(front["model-index"])
    assert name == "scripted-model" and len(results) == 3
    # fixture files are named by file and sha256, never as the benchmark
    assert {r.dataset_type for r in results} == {"local/cti-mcq.tsv", "local/cti-rcm.tsv"}
    assert all("not CTIBench" in r.dataset_name and r.dataset_split is None for r in results)
    assert "CTIBench cti-mcq" not in {r.dataset_name for r in results}
    loglik = next(r for r in results if "loglik" in r.metric_name)
    assert loglik.metric_args["shots"] == 0 and loglik.metric_args["n"] == 10 and len(loglik.metric_args["ci95"]) == 2
    for heading in ("## Intended uses", "## Out-of-scope uses", "## Training data", "## Evaluation", "## Limitations",
                    "## How to reproduce"):
        assert heading in text
    assert "zero-shot" in text and "secfm eval cti-rcm" in text and "loglik" in text


def test_card_names_the_benchmark_only_for_its_own_data_and_marks_contamination(runs, tmp_path):
    import json
    import shutil

    from huggingface_hub import ModelCard

    from secfm.evals.card import write_card

    bench, dirty = tmp_path / "bench-run", tmp_path / "dirty-run"
    for target, change in ((bench, {"data": {"source": "hf://AI4Sec/cti-bench/cti-mcq/test"}}),
                           (dirty, {"contaminated": True, "contamination": {"seen_items": 3, "items": 10}})):
        shutil.copytree(runs / "mcq-loglik", target)
        metrics = json.loads((target / "metrics.json").read_text())
        for key, value in change.items():
            metrics[key] = {**metrics[key], **value} if isinstance(metrics.get(key), dict) else value
        (target / "metrics.json").write_text(json.dumps(metrics))
    path = write_card([str(bench), str(dirty)], tmp_path / "README.md")
    card = ModelCard.load(path)
    named, local = card.data.eval_results
    assert named.dataset_type == "AI4Sec/cti-bench" and named.dataset_name == "CTIBench cti-mcq"
    assert local.dataset_type == "local/cti-mcq.tsv" and "contaminated: the model or head saw 3 of the 10 items" in local.metric_name
    assert "**contaminated" in path.read_text()


def test_card_refuses_runs_of_different_models(runs, tmp_path):
    from secfm.evals.card import write_card

    other = tmp_path / "other"
    run_eval(EvalConfig("cti-mcqa", str(other), data=str(FIXTURES / "cti-mcq.tsv"), model="another-model", bootstrap=50,
                        limit=2), engine=ScriptedEngine(), progress=False)
    with pytest.raises(SecfmError, match="different models"):
        write_card([str(runs / "mcq-gen"), str(other)], tmp_path / "x.md")


def test_cli_commands_exist_and_fail_with_one_line(runs, tmp_path, capsys):
    from secfm.cli import app, main

    names = {g.name for g in app.registered_groups}
    assert "eval" in names
    bench = next(g for g in app.registered_groups if g.name == "bench").typer_instance
    assert "eval" in {c.name for c in bench.registered_commands}
    for argv in (["eval", "cti-mcqa", "--data", str(tmp_path / "missing.tsv"), "--out", str(tmp_path / "o")],
                 ["eval", "report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")],
                 ["eval", "cti-rcm", "--data", str(FIXTURES / "cti-rcm.tsv"), "--mode", "loglik", "--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("secfm: error:") and "\n" not in err
    main(["eval", "report", str(runs / "mcq-gen"), "--out", str(tmp_path / "rep")])
    assert (tmp_path / "rep" / "report.md").is_file()
    main(["card", "--runs", str(runs / "mcq-gen"), str(runs / "rcm-gen"), "--out", str(tmp_path / "card" / "README.md")])
    front = yaml.safe_load((tmp_path / "card" / "README.md").read_text().split("---\n")[1])
    assert len(front["model-index"][0]["results"]) == 2


def _save_core_head(path, task, labels, weight_rows, trained_sources=()):
    """A tiny head in the core's format over 4-dim features (skips if the core has no heads yet)."""
    core = pytest.importorskip("secfm.heads")
    if not all(hasattr(core, n) for n in ("build_module", "save_head", "HeadManifest")):
        pytest.skip("secfm.heads has no save/load yet")
    import torch

    module = core.build_module(4, len(labels), "linear")
    with torch.no_grad():
        module.net[1].weight.copy_(torch.tensor(weight_rows, dtype=torch.float32))
        module.net[1].bias.zero_()
    manifest = core.HeadManifest(
        task=task, kind="linear", objective="multiclass" if task == "cwe" else "multilabel",
        base_model="scripted-model", adapter=None, layer=-1, pooling="mean", max_length=64, input_dim=4,
        hidden_dim=None, labels=list(labels), trained_sources=list(trained_sources))
    return core.save_head(path, module, manifest)


class FeatureEngine(ScriptedEngine):
    """Hidden states: [SQL?, script?, traversal?, 1] per text."""

    has_hidden_states = True

    def hidden_states(self, texts, layer=-1, pooling="mean", batch_size=8, max_length=512, *,
                      layers=None, progress=None):
        import numpy as np

        X = np.array([[5.0 * ("SQL" in t), 5.0 * ("script" in t), 5.0 * ("traversal" in t), 1.0] for t in texts],
                     dtype=np.float32)
        if layers is None:
            return X
        if isinstance(pooling, str):
            return {lay: X for lay in layers}
        return {(lay, p): X for lay in layers for p in pooling}


def test_head_mode_with_a_core_head(tmp_path):
    head_dir = _save_core_head(tmp_path / "cwe-head", "cwe", ["CWE-89", "CWE-79", "CWE-22"],
                               [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    m = run_eval(_cfg(tmp_path, "cti-rcm", "cti-rcm.tsv", mode="head", head=str(head_dir)),
                 engine=FeatureEngine(), progress=False)
    assert m["figures"]["accuracy"] == pytest.approx(3 / 6)  # SQL, XSS, traversal right; the rest wrong
    assert m["head_info"]["task"] == "cwe" and m["head_info"]["labels"] == 3
    line = _lines(tmp_path / "cti-rcm")[1]
    assert line["parsed"] == "CWE-89" and line["raw"][0][0] == "CWE-89"
    with pytest.raises(SecfmError, match="is a cwe head, not an ATT&CK head"):
        run_eval(_cfg(tmp_path / "b", "cti-ate", "cti-ate.tsv", mode="head", head=str(head_dir)),
                 engine=FeatureEngine(), progress=False)


def test_head_trained_on_held_out_sources_is_refused(tmp_path):
    """The evaluated entities come from the items' URLs (S9001..S9004): a head that trained on one
    of them is refused (naming how many items) unless --allow-seen, which marks the run."""
    head_dir = _save_core_head(tmp_path / "attack-head", "attack", ["T1071", "T1059", "T1486"],
                               [[0, 0, 0, 1], [0, 0, 0, -1], [0, 0, 0, -1]], trained_sources=["S9001", "G0016"])
    with pytest.raises(SecfmError, match="1 of the 4 items are about entities it saw"):
        run_eval(_cfg(tmp_path, "cti-ate", "cti-ate.tsv", mode="head", head=str(head_dir)),
                 engine=FeatureEngine(), progress=False)
    with pytest.raises(SecfmError, match="saw 2 evaluated entities .G0016, S9001."):
        run_eval(_cfg(tmp_path / "x", "cti-ate", "cti-ate.tsv", mode="head", head=str(head_dir), exclude_sources=("G0016",)),
                 engine=FeatureEngine(), progress=False)
    m = run_eval(_cfg(tmp_path / "ok", "cti-ate", "cti-ate.tsv", mode="head", head=str(head_dir), allow_seen=True),
                 engine=FeatureEngine(), progress=False)
    assert _lines(tmp_path / "ok" / "cti-ate")[0]["parsed"] == ["T1071"]  # sigmoid(1) passes 0.5, sigmoid(-1) not
    assert m["counts"]["parsed"] == 4
    assert m["contaminated"] and m["contamination"]["seen_items"] == 1 and m["contamination"]["seen_entities"] == ["S9001"]
    assert m["exclusion"]["entities_from_urls"] == ["S9001", "S9002", "S9003", "S9004"]
    assert m["exclusion"]["origin"] == "given"


def test_a_generic_head_kind_uses_the_one_seen_sources_check(tmp_path):
    """evals.heads.load_head (head mode of a task whose kind has no extractor of its own) refuses a
    head folder that saw a held-out entity in any part: its rows or its retrieval index."""
    from secfm.evals.heads import load_head

    head_dir = _save_core_head(tmp_path / "head", "attack", ["T1071", "T1059", "T1486"],
                               [[0, 0, 0, 1], [0, 0, 0, -1], [0, 0, 0, -1]], trained_sources=["G0016"])
    assert load_head(head_dir, "attack", FeatureEngine(), exclude_sources=("S0154",)).predict(["SQL"])[0][0][0] == "T1071"
    with pytest.raises(SecfmError, match="saw G0016 .its training rows"):
        load_head(head_dir, "attack", FeatureEngine(), exclude_sources=("G0016",))
    (head_dir / "retrieval.json").write_text(json.dumps({"sources": ["S0154"]}), encoding="utf-8")
    with pytest.raises(SecfmError, match="saw S0154"):
        load_head(head_dir, "attack", FeatureEngine(), exclude_sources=("S0154",))


def test_runs_are_also_written_in_the_harness_layout(runs):
    results = sorted((runs / "mcq-loglik").glob("results_*.json"))
    samples = sorted((runs / "mcq-loglik").glob("samples_cti_mcqa_*.jsonl"))
    assert results and samples
    payload = json.loads(results[-1].read_text())
    metrics = json.loads((runs / "mcq-loglik" / "metrics.json").read_text())
    task = payload["results"]["cti_mcqa"]
    assert task["acc,none"] == metrics["figures"]["accuracy"] and task["acc_stderr,none"] > 0
    assert payload["n-shot"] == {"cti_mcqa": 0} and payload["configs"]["cti_mcqa"]["output_type"] == "multiple_choice"
    assert payload["n-samples"]["cti_mcqa"]["effective"] == metrics["n"] and payload["config"]["model"] == "secfm"
    rows = [json.loads(line) for line in samples[-1].read_text().splitlines()]
    assert len(rows) == metrics["n"]
    for row in rows:
        assert {"doc", "arguments", "resps", "filtered_resps", "target"} <= set(row)
        assert len(row["arguments"]) == 4 and row["arguments"]["gen_args_0"]["arg_1"] == " A"
        assert row["arguments"]["gen_args_0"]["arg_0"].endswith("Answer:") and len(row["filtered_resps"]) == 4
        assert row["acc"] in (0.0, 1.0) and row["target"] in range(4)
    gen = json.loads(sorted((runs / "rcm-gen").glob("results_*.json"))[-1].read_text())
    assert "acc,none" in gen["results"]["cti_rcm"]


def test_the_embedded_models_card_loads_and_names_no_local_file_as_ctibench():
    from huggingface_hub import ModelCard

    card = ModelCard.load(Path(__file__).resolve().parents[1] / "model_card" / "gemma-3-270m" / "README.md")
    assert card.data.base_model == "google/gemma-3-270m" and card.data.library_name and card.data.pipeline_tag
    assert card.data.eval_results
    for result in card.data.eval_results:  # every run read a local file: none may be filed under the benchmark
        assert result.dataset_type != "AI4Sec/cti-bench" and "not CTIBench" in result.dataset_name

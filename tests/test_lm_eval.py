"""lm-evaluation-harness interoperability: `secfm eval export-lm-eval` writes task YAMLs the harness
loads, and the exported cti_mcqa task run through `lm_eval` on the real 270M model asks the same
requests and gets the same answers as `secfm eval cti-mcqa --mode loglik`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

FIXTURES = Path(__file__).parent / "fixtures" / "ctibench"


def _four_items(tmp_path: Path) -> Path:
    lines = (FIXTURES / "cti-mcq.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "cti-mcq-4.tsv"
    path.write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    return path


def test_exported_tasks_load_in_the_harness(tmp_path):
    from lm_eval.tasks import TaskManager, get_task_dict

    from secfm.evals.lm_eval_export import EXPORTED, export_tasks

    data = _four_items(tmp_path)
    written = export_tasks(tmp_path / "tasks", {"cti-mcqa": str(data)})
    assert {p.name for p in written} == {f"{t.replace('-', '_')}.yaml" for t in EXPORTED}
    manager = TaskManager(include_path=str(tmp_path / "tasks"))
    assert {"cti_mcqa", "cti_rcm", "cti_vsp", "cti_ate"} <= set(manager.all_tasks)
    task = get_task_dict(["cti_mcqa"], manager)["cti_mcqa"]
    docs = list(task.test_docs())
    assert len(docs) == 4 and task.doc_to_choice(docs[0]) == ["A", "B", "C", "D"]
    assert task.doc_to_text(docs[0]).startswith("Question: ") and task.doc_to_text(docs[0]).endswith("Answer:")
    assert task.doc_to_target(docs[0]) == "ABCD".index(docs[0]["GT"].strip())


@pytest.mark.slow
def test_lm_eval_runs_the_exported_mcq_task_like_secfm_eval(engine, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from secfm.evals.lm_eval_export import export_tasks
    from secfm.evals.runner import EvalConfig, run_eval
    from secfm.models import resolve

    data = _four_items(tmp_path)
    export_tasks(tmp_path / "tasks", {"cti-mcqa": str(data)})
    ours = run_eval(EvalConfig("cti-mcqa", str(tmp_path / "run"), data=str(data), model="gemma-3-270m", mode="loglik",
                               bootstrap=50), engine=engine, progress=False)
    weights = resolve("gemma-3-270m").weights_dir
    theirs = simple_evaluate(model="hf", model_args=f"pretrained={weights},dtype=float32", tasks=["cti_mcqa"],
                             task_manager=TaskManager(include_path=str(tmp_path / "tasks")), device="cpu",
                             batch_size=4, log_samples=True)
    samples = theirs["samples"]["cti_mcqa"]
    ours_rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    by_question = {r["id"]: r for r in ours_rows}
    assert len(samples) == 4
    for sample, item_id in zip(sorted(samples, key=lambda s: s["doc_id"]), sorted(by_question, key=int)):
        harness = [r[0][0] for r in sample["resps"]]
        secfm = [by_question[item_id]["raw"]["letters"][letter] for letter in "ABCD"]
        assert max(abs(a - b) for a, b in zip(harness, secfm)) < 0.05  # the same requests, scored alike
    assert theirs["results"]["cti_mcqa"]["acc,none"] == pytest.approx(ours["figures"]["accuracy"])
    # and secfm's own harness-layout file says the same
    mine = json.loads(sorted((tmp_path / "run").glob("results_*.json"))[-1].read_text())
    assert mine["results"]["cti_mcqa"]["acc,none"] == pytest.approx(theirs["results"]["cti_mcqa"]["acc,none"])

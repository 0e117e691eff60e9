"""The early-stopping loop and the results writer that the ATT&CK and the CVE head training share."""

from __future__ import annotations

import json

from secfm.training.head_training import early_stopping, write_results_files


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    scores = iter([0.2, 0.5, 0.50005, 0.4, 0.45, 0.9])  # 0.50005 is no progress (min delta 1e-4)
    state = {"epoch": 0}

    def train_epoch(epoch):
        state["epoch"] = epoch + 1
        return 1.0 / (epoch + 1)

    best, hist = early_stopping(10, 3, train_epoch, lambda: next(scores), lambda: dict(state))
    assert best == {"epoch": 2} and hist["best_epoch"] == 2 and hist["best_val"] == 0.5
    assert hist["epochs_run"] == 5 and [row["val"] for row in hist["curve"]] == [0.2, 0.5, 0.5, 0.4, 0.45]
    assert hist["curve"][2] == {"epoch": 3, "loss": 0.33333, "val": 0.5}
    nothing, hist = early_stopping(4, 2, lambda e: 0.0, lambda: -5.0, lambda: "w")
    assert nothing is None and hist == {"best_epoch": 0, "best_val": -1.0, "epochs_run": 2, "curve": hist["curve"]}
    seen = []
    best, hist = early_stopping(2, 1, lambda e: 0.0, lambda: -5.0, lambda: "w", floor=-1e9,
                                on_epoch=lambda *a: seen.append(a))
    assert best == "w" and hist["best_epoch"] == 1 and seen == [(1, 0.0, -5.0), (2, 0.0, -5.0)]


def test_results_files_render_what_the_json_holds(tmp_path):
    from secfm.provenance import recording

    payload = {"task": "t", "figure": 0.5}
    got = write_results_files(tmp_path / "r.json", payload,
                              lambda r: f"# {r['task']} {sorted(r)}\n")
    assert got is payload and json.loads((tmp_path / "r.json").read_text()) == payload
    assert (tmp_path / "r.md").read_text() == "# t ['figure', 'task']\n"
    with recording(allow_busy=True, command="pytest") as rec:
        got = write_results_files(tmp_path / "s.json", payload, lambda r: f"# {sorted(r)}\n", rec)
    assert got["provenance"]["command"] == "pytest" and json.loads((tmp_path / "s.json").read_text()) == got
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("# ['figure', 'provenance', 'task']") and "made by `pytest`" in md


def test_the_choice_on_validation_breaks_ties_to_the_preferred_then_the_earliest():
    from secfm.training.head_training import choose_on_validation

    scores = {"a": 0.5, "b": 0.7, "c": 0.7, "d": 0.7}
    best, trained = choose_on_validation("abcd", lambda o: o, scores.get)
    assert best == "b" and trained == list("abcd")
    best, _ = choose_on_validation("abcd", lambda o: o, scores.get, prefer=lambda o: o == "c")
    assert best == "c"

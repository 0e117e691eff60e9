"""secfm.outputs: outputs move into place, never over an input, never into a user's folder unasked."""

from __future__ import annotations

import pytest

from secfm.errors import SecfmError
from secfm.outputs import MARKER, check_output_file, claim_folder, output_folder, write_text


def test_write_text_is_atomic_and_refuses_inputs_and_folders(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
    source = tmp_path / "input.json"
    source.write_text("precious")
    with pytest.raises(SecfmError, match="one of the inputs"):
        write_text(source, "x", inputs=[str(source)])
    with pytest.raises(SecfmError, match="one of the inputs"):
        write_text(tmp_path / "." / "input.json", "x", inputs=[f"@{source}"])
    assert source.read_text() == "precious"
    with pytest.raises(SecfmError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(SecfmError, match="is a file, not a folder"):
        check_output_file(source / "x.json")
    assert check_output_file(tmp_path / "new.json", ["a literal text argument " * 20])


def test_failed_build_leaves_nothing_and_the_old_output_stays(tmp_path):
    out = tmp_path / "out"
    with output_folder(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first" and (out / MARKER).is_file()
    with pytest.raises(RuntimeError), output_folder(out, force=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def test_a_users_folder_needs_force_and_keeps_its_files(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(SecfmError, match="secfm did not write"), output_folder(user):
        pass
    with output_folder(user, force=True) as tmp:
        (tmp / "result.txt").write_text("new")
    assert (user / "notes.txt").read_text() == "keep me" and (user / "result.txt").read_text() == "new"


def test_force_on_our_folder_never_deletes_an_input_inside_it(tmp_path):
    out = tmp_path / "out"
    with output_folder(out) as tmp:
        (tmp / "data.txt").write_text("old output")
    source = out / "docs.jsonl"
    source.write_text('{"text": "precious"}\n')
    with pytest.raises(SecfmError, match="exists and is not empty"), output_folder(out, inputs=[source]):
        pass
    with output_folder(out, inputs=[source], force=True) as tmp:
        (tmp / "data.txt").write_text("new output")
    assert source.read_text() == '{"text": "precious"}\n' and (out / "data.txt").read_text() == "new output"


def test_claim_folder_resumes_ours_and_refuses_a_users(tmp_path):
    run = claim_folder(tmp_path / "run")
    (run / "metrics.json").write_text("{}")
    assert claim_folder(run) == run  # resume
    user = tmp_path / "results"
    user.mkdir()
    (user / "metrics.json").write_text('{"mine": 1}')
    with pytest.raises(SecfmError, match="secfm did not write"):
        claim_folder(user)
    assert (user / "metrics.json").read_text() == '{"mine": 1}'

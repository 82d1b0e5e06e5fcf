"""deepinv_ext.checkpoint: a rerun resumes a checkpoint of the same options and refuses one of other options,
naming them (the recipes' own checkpoints, deepinv Trainer folders, files written by other code)."""

from __future__ import annotations

import json

import pytest
import torch

from deepinv_ext.checkpoint import (
    OptionsChangedError,
    changed_options,
    check_recorded_options,
    resumable_checkpoints,
    resume_checkpoint,
    save_checkpoint,
)


def test_changed_options_names_every_difference():
    assert changed_options({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    assert changed_options({"a": 1, "b": 2, "gone": 0}, {"a": 1, "b": 3, "new": 4}) == ["b", "gone", "new"]
    assert changed_options(None, {"a": 1}) == ["a"]


def test_save_and_resume(tmp_path):
    path = tmp_path / "model.pt"
    assert resume_checkpoint(path, {"lr": 0.1}) is None
    save_checkpoint(path, {"step": 3, "weights": torch.ones(2)}, {"lr": 0.1, "seed": 0})
    state = resume_checkpoint(path, {"lr": 0.1, "seed": 0})
    assert state["step"] == 3 and torch.equal(state["weights"], torch.ones(2))
    with pytest.raises(OptionsChangedError, match=r"model.pt was trained with other options \(lr\): use another "
                                                  r"--output, or delete it to retrain"):
        resume_checkpoint(path, {"lr": 0.2, "seed": 0})
    assert isinstance(OptionsChangedError("x"), RuntimeError)  # what the recipes raised before
    assert resume_checkpoint(path, {"lr": 0.2, "seed": 0}, refuse_changed=False) is None  # ignored: train anew
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        resume_checkpoint(path, {"lr": 0.1})


def test_recorded_options_beside_a_foreign_checkpoint(tmp_path):
    record = tmp_path / "denoiser.json"
    check_recorded_options(record, {"epochs": 2, "out": tmp_path}, resuming=False)
    assert json.loads(record.read_text()) == {"epochs": 2, "out": str(tmp_path)}  # non-JSON values as str
    check_recorded_options(record, {"epochs": 2, "out": tmp_path}, resuming=True)
    with pytest.raises(OptionsChangedError, match=r"denoiser.pt was trained with other options \(epochs\)"):
        check_recorded_options(record, {"epochs": 3, "out": tmp_path}, resuming=True,
                               checkpoint=tmp_path / "denoiser.pt")
    check_recorded_options(record, {"epochs": 3, "out": tmp_path}, resuming=False)  # trained anew: recorded
    assert json.loads(record.read_text())["epochs"] == 3
    check_recorded_options(tmp_path / "none.json", {"epochs": 9}, resuming=True)  # older checkpoint, no record


def test_trainer_folder_refuses_other_options(tmp_path):
    kwargs = resumable_checkpoints(tmp_path, {"lr": 0.1})
    assert kwargs == {"save_path": tmp_path / "attempt0", "ckpt_pretrained": None}
    (tmp_path / "attempt0" / "stamp").mkdir(parents=True)
    (tmp_path / "attempt0" / "stamp" / "ckp_0.pth.tar").write_bytes(b"")
    assert resumable_checkpoints(tmp_path, {"lr": 0.1})["ckpt_pretrained"].name == "ckp_0.pth.tar"
    with pytest.raises(OptionsChangedError, match="other options \\(lr\\)"):
        resumable_checkpoints(tmp_path, {"lr": 0.2})
    assert resumable_checkpoints(tmp_path)["ckpt_pretrained"] is not None  # no options given: not checked

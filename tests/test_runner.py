"""deepinv-ext run CONFIG: builds, trains, evaluates, records provenance and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deepinv_ext.runner import latest_checkpoint, run_config

SHIPPED = Path(__file__).parents[1] / "recipes" / "configs" / "denoise_ellipses.yaml"


def small_config() -> dict:
    config = yaml.safe_load(SHIPPED.read_text())
    config["device"] = "cpu"
    config["model"].update(depth=2, nf=4)
    config["data"].update(train={"kind": "dataset", "name": "ellipses", "length": 4, "size": 16, "seed": 0},
                          test={"kind": "dataset", "name": "ellipses", "length": 2, "size": 16, "seed": 1},
                          batch_size=2)
    config["training"]["epochs"] = 1
    return config


def test_run_records_config_and_resumes(tmp_path):
    config = small_config()
    results = run_config(config, output_dir=tmp_path, verbose=False)
    assert results["PSNR"] == results["PSNR"] and "SSIM" in results
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"] == config and record["seed"] == 0
    assert record["versions"]["deepinv"].startswith("0.5") and record["versions"]["deepinv-ext"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == results
    assert latest_checkpoint(tmp_path).name == "ckp_0.pth.tar"

    config["training"]["epochs"] = 2  # run again: resumes after epoch 0 and trains epoch 1 only
    run_config(config, output_dir=tmp_path, verbose=False)
    assert latest_checkpoint(tmp_path).name == "ckp_1.pth.tar"
    assert len(list(tmp_path.glob("**/ckp_0.pth.tar"))) == 1, "epoch 0 was trained again instead of resumed"


def test_bad_config_sections(tmp_path):
    with pytest.raises(ValueError, match="unknown section"):
        run_config(small_config() | {"trainig": {}}, output_dir=tmp_path)
    config = small_config()
    del config["model"]
    with pytest.raises(ValueError, match="'model'"):
        run_config(config, output_dir=tmp_path)


def test_resumable_checkpoints_picks_the_highest_epoch_and_a_fresh_folder(tmp_path):
    from deepinv_ext.runner import resumable_checkpoints

    assert resumable_checkpoints(tmp_path / "none") == {"save_path": tmp_path / "none" / "attempt0",
                                                        "ckpt_pretrained": None}
    for attempt, epoch in (("attempt0", 0), ("attempt0", 1), ("attempt1", 2)):
        (tmp_path / attempt / "stamp").mkdir(parents=True, exist_ok=True)
        (tmp_path / attempt / "stamp" / f"ckp_{epoch}.pth.tar").write_bytes(b"")
    (tmp_path / "attempt0" / "stamp" / "ckp_best.pth.tar").write_bytes(b"")  # newer, but not the latest epoch
    kwargs = resumable_checkpoints(tmp_path)
    assert kwargs["save_path"] == tmp_path / "attempt2"
    assert kwargs["ckpt_pretrained"].name == "ckp_2.pth.tar"


def test_a_rerun_that_saves_nothing_leaves_no_empty_folder(tmp_path, capsys):
    """A rerun that trains nothing leaves no empty folder and no deepinv warning: one line says so."""
    import warnings

    config = small_config()
    run_config(config, output_dir=tmp_path, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_config(config, output_dir=tmp_path, verbose=True)  # epochs already done: the Trainer saves nothing
    assert not [w for w in caught if "No training" in str(w.message)]
    assert "nothing left to train: the checkpoint holds all 1 epochs" in capsys.readouterr().out
    empty = [p for p in (tmp_path / "checkpoints").rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert not empty, empty
    assert latest_checkpoint(tmp_path).name == "ckp_0.pth.tar"


def test_prune_empty_folders_keeps_files(tmp_path):
    from deepinv_ext.runner import prune_empty_folders

    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "d").mkdir()
    (tmp_path / "a" / "d" / "ckp_0.pth.tar").write_bytes(b"")
    prune_empty_folders(tmp_path / "a")
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a" / "d" / "ckp_0.pth.tar").exists()
    (tmp_path / "e" / "f").mkdir(parents=True)
    prune_empty_folders(tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_a_rerun_with_other_training_options_is_refused(tmp_path):
    """More epochs resume; any other change the training depends on (here the learning rate) is refused, naming it,
    rather than resumed into a mix of two trainings."""
    from deepinv_ext.runner import ConfigError

    config = small_config()
    run_config(config, output_dir=tmp_path, verbose=False)
    config["training"]["lr"] = 1e-2
    with pytest.raises(ConfigError, match=r"trained with other options \(training\)"):
        run_config(config, output_dir=tmp_path, verbose=False)
    config["training"]["lr"] = small_config()["training"]["lr"]
    config["evaluation"] = {"metrics": [{"target": "deepinv.loss.metric:PSNR"}]}  # evaluation only: resumes
    run_config(config, output_dir=tmp_path, verbose=False)


def test_threads_hold_for_the_run_only(tmp_path, monkeypatch):
    """``threads: N`` runs on N torch threads and gives the caller's count back; a bad value is a ConfigError."""
    import torch

    import deepinv_ext.runner
    from deepinv_ext.runner import ConfigError

    seen = []
    monkeypatch.setattr(deepinv_ext.runner, "_run", lambda *args: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    run_config(small_config() | {"threads": before + 1}, output_dir=tmp_path, verbose=False)
    assert seen == [before + 1] and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads must be an integer >= 1"):
        run_config(small_config() | {"threads": 0}, output_dir=tmp_path, verbose=False)

"""recipes/tdv_eigenfunctions.py: the smoke run on the shipped camera crop writes its outputs, a rerun reads the saved
image back, a rerun under other options is refused; the crop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from recipe_helpers import load_recipe

from deepinv_ext.algorithms import NotConvergedWarning
from deepinv_ext.checkpoint import OptionsChangedError

DATA = Path(__file__).parent / "data"


def test_smoke_run_writes_its_outputs_and_resumes(tmp_path, capsys):
    recipe = load_recipe("tdv_eigenfunctions")
    argv = ["--smoke", "--data", str(DATA), "--images", "0", "--output", str(tmp_path)]
    with pytest.warns(NotConvergedWarning, match="max_iter=30"):
        results = recipe.main(argv)
    (row,) = results["images"]
    assert row["image"] == "camera_96.png" and row["iterations"] == 30 and not row["converged"]
    assert abs(row["residual_float64"] - row["residual"]) < 1e-3 * row["residual"]  # float32 gradients suffice here
    assert json.loads((tmp_path / "results.json").read_text()) == results
    for name in ("eigenfunctions.png", "run.json", "images/camera_96.pt"):
        assert (tmp_path / name).is_file(), name
    assert "smoke run: checks skipped" in capsys.readouterr().out
    assert recipe.main(argv) == results  # read back, not recomputed
    assert "done in an earlier run" in capsys.readouterr().out
    with pytest.raises(OptionsChangedError, match="tol"):
        recipe.main([*argv, "--tol", "1e-2"])


def test_options_are_checked_before_anything_runs(tmp_path):
    recipe = load_recipe("tdv_eigenfunctions")
    for bad in (["--size", "8"], ["--tol", "0"], ["--images", "-1"]):
        with pytest.raises(SystemExit):
            recipe.parse_args([*bad, "--output", str(tmp_path)])
    with pytest.raises(SystemExit, match="holds 1 images"):
        recipe.main(["--smoke", "--data", str(DATA), "--images", "3", "--output", str(tmp_path)])
    with pytest.raises(SystemExit, match="takes 1-channel images"):
        recipe.main(["--smoke", "--data", str(DATA), "--images", "0", "--checkpoint",
                     str(DATA / "tdv" / "tdv3-3-25-f32-gray.pth"), "--color", "--output", str(tmp_path / "c")])
    assert recipe.parse_args(["--color"]).checkpoint.endswith("tdv3-3-25-f32-color.pth")


def test_centre_crop():
    run = load_recipe("tdv_eigenfunctions_run")
    x = torch.arange(36.0).reshape(1, 6, 6)
    assert run.crop(x, 1, 2, "x").flatten().tolist() == [14.0, 15.0, 20.0, 21.0]
    assert run.crop(x, 2, 2, "x").flatten().tolist() == [3.5, 5.5, 15.5, 17.5]  # 2x2 box means, then the centre
    with pytest.raises(SystemExit, match="x: 3x3 after --downscale 2 is smaller than --size 4"):
        run.crop(x, 2, 4, "x")

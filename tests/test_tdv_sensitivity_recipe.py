"""recipes/tdv_sensitivity.py trains its two tiny networks (two batches each), bounds the difference of their flows on
one crop, writes its outputs and resumes its trainings instead of repeating them; under ``torchrun`` (2 gloo
processes) both trainings run data-parallel."""

from __future__ import annotations

import json
import math
from argparse import Namespace

import pytest
from recipe_helpers import load_recipe, needs_gloo, torchrun


def test_tdv_sensitivity_smoke(tmp_path, capsys):
    recipe = load_recipe("tdv_sensitivity")
    results = recipe.main(["--smoke", "--output", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "tdv_sensitivity.png").exists() and (tmp_path / "run.json").exists()
    a, b = results["training"]["A"]["images"], results["training"]["B"]["images"]
    assert "camera" not in a and len(a) == 17 and len(b) == 10 and set(b) < set(a)
    [row] = results["images"]
    assert row["shape"] == [48, 48]
    for pair in ("A|B", "B|A"):
        res = row[pair]
        assert res["holds"] and results["pairs"][pair]["holds_at_every_step_for_every_image"]
        assert len(res["rmse"]) == 5 and res["rmse"][0] == 0 and all(v > 0 for v in res["rmse"][1:])
        assert math.isclose(res["ratio"][0], 1.0, rel_tol=1e-6)  # the bound is attained at the first step
    assert "smoke run" in capsys.readouterr().out
    again = recipe.main(["--smoke", "--output", str(tmp_path)])  # resumes both finished trainings
    assert "nothing left to train" in capsys.readouterr().out
    assert again["training"]["A"]["T"] == results["training"]["A"]["T"]


def test_tdv_sensitivity_option_errors(capsys):
    recipe = load_recipe("tdv_sensitivity")
    for argv in (["--subset", "0"], ["--test-images", "0"]):
        with pytest.raises(SystemExit):
            recipe.parse_args(argv)
        assert f"{argv[0]} must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--subset must be at most 17"):
        load_recipe("tdv_sensitivity_run").training_sets(Namespace(subset=18, subset_seed=0))


@needs_gloo
@pytest.mark.slow
def test_tdv_sensitivity_trains_both_networks_under_torchrun(tmp_path):
    """Both trainings data-parallel in one process group (a global batch of 4: 2 a process), evaluated and written
    once, by rank 0 (the resume in one process: tdv_denoising's test, the same training)."""
    done = torchrun("tdv_sensitivity", "--smoke", "--output", str(tmp_path))
    log = done.stdout + done.stderr
    for line in ("smoke run", "training A on", "training B on", "results.json, tdv_sensitivity.png and run.json in"):
        assert log.count(line) == 1, (line, log)
    assert log.count("Train epoch 0") == 2, log  # one a training
    for tag in ("A", "B"):
        assert len(list((tmp_path / tag / "checkpoints").glob("attempt*/*/ckp_0.pth.tar"))) == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(results["pairs"][pair]["holds_at_every_step_for_every_image"] for pair in ("A|B", "B|A"))
    assert "previous" not in json.loads((tmp_path / "run.json").read_text())
    assert (tmp_path / "tdv_sensitivity.png").exists()

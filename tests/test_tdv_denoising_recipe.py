"""recipes/tdv_denoising.py trains (two batches of its smoke run), tests and writes its outputs; under ``torchrun``
(2 gloo processes) it trains data-parallel, writes once, and a plain process resumes its checkpoint."""

from __future__ import annotations

import json

import pytest
from recipe_helpers import load_recipe, needs_gloo, torchrun


def test_tdv_denoising_smoke(tmp_path):
    recipe = load_recipe("tdv_denoising")
    results = recipe.main(["--smoke", "--max-batch-steps", "2", "--output", str(tmp_path)])
    assert results["PSNR"] > results["PSNR no learning"], results  # even two steps denoise
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "denoising.png").exists() and (tmp_path / "run.json").exists()


@needs_gloo
@pytest.mark.slow
def test_tdv_denoising_under_torchrun_writes_once_and_resumes_in_one_process(tmp_path, capsys):
    # 8 steps of a global batch of 8 (4 a process): epoch 0 and 2 steps of epoch 1, then the stop
    done = torchrun("tdv_denoising", "--smoke", "--max-batch-steps", "8", "--output", str(tmp_path))
    log = done.stdout + done.stderr
    assert log.count("Train epoch 0") == 1 and log.count("results.json, denoising.png and run.json in") == 1, log
    assert log.count("The model has") == 1, log
    [checkpoint] = (tmp_path / "checkpoints").glob("attempt*/*/ckp_*.pth.tar")  # one folder: rank 0's
    assert "previous" not in json.loads((tmp_path / "run.json").read_text())  # written once
    assert (tmp_path / "denoising.png").exists()
    parallel = json.loads((tmp_path / "results.json").read_text())

    results = load_recipe("tdv_denoising").main(["--smoke", "--output", str(tmp_path)])  # no torchrun: resumes
    out = capsys.readouterr().out
    assert f"resuming from {checkpoint}" in out and "Train epoch 2" in out and "Train epoch 0" not in out, out
    assert list((tmp_path / "checkpoints").glob("attempt*/*/ckp_2.pth.tar"))
    assert len(json.loads((tmp_path / "run.json").read_text())["previous"]) == 1
    assert results["T"] != parallel["T"]  # the plain process trained on

"""recipes/tdv_denoising.py trains (two batches of its smoke run), tests and writes its outputs."""

from __future__ import annotations

import json

from recipe_helpers import load_recipe


def test_tdv_denoising_smoke(tmp_path):
    recipe = load_recipe("tdv_denoising")
    results = recipe.main(["--smoke", "--max-batch-steps", "2", "--output", str(tmp_path)])
    assert results["PSNR"] > results["PSNR no learning"], results  # even two steps denoise
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "denoising.png").exists() and (tmp_path / "run.json").exists()

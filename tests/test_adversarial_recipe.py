"""recipes/ct_learned_regularizers.py runs end to end on tiny sizes, writes its outputs and resumes."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_helpers import load_recipe

pytest.importorskip("deepinv_ext.algorithms.variational")


@pytest.mark.slow
def test_recipe_smoke_and_resume(tmp_path):
    threads = torch.get_num_threads()
    recipe = load_recipe("ct_learned_regularizers")
    args = ["--smoke", "--problems", "sparse_view", "--size", "16", "--n-test", "1", "--grid", "0", "--iters", "8",
            "--val-iters", "4", "--budgets", "2", "4", "--output", str(tmp_path)]
    try:
        results = recipe.main(args + ["--n-train", "8"])
        for name in ("results.md", "results.json", "run.json", "ct_learned_regularizers.png"):
            assert (tmp_path / name).exists(), name
        res = results["sparse_view"]
        assert set(recipe.METHODS) <= set(res)
        assert all(torch.isfinite(torch.tensor(res[m]["psnr"])) for m in recipe.METHODS)
        assert res["_checks"]["acr_convexity"]["pair_failures"] == 0
        for method in ("TV", *recipe.LEARNED):  # (lambda, K) chosen jointly on validation, the test solve runs K
            choice = res[method]["lambda"]
            scores = next(iter(choice["validation_psnr"].values()))
            assert {int(k) for k in scores} == {2, 4} and choice["budget"] in (2, 4)
            assert res[method]["max_iter"] == choice["budget"] and res[method]["iterations"] <= choice["budget"]
        stored = json.loads((tmp_path / "results.json").read_text())
        assert stored["sparse_view"]["FBP"]["psnr"] == pytest.approx(res["FBP"]["psnr"])
        # resume: the per-epoch checkpoints are found and training is skipped; solves rerun identically
        ckpt = torch.load(tmp_path / "sparse_view" / "AR.pt", weights_only=True)
        assert ckpt["epoch"] == 1
        (tmp_path / "sparse_view" / "results.json").unlink()
        again = recipe.main(args + ["--n-train", "8"])
        assert again["sparse_view"]["AR"]["psnr"] == pytest.approx(res["AR"]["psnr"], rel=1e-5)
    finally:
        torch.set_num_threads(threads)

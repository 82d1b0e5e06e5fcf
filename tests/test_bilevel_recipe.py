"""recipes/bilevel_regularizers.py (with bilevel_regularizers_train.py and bilevel_regularizers_run.py) runs end to
end on tiny sizes: bilevel FoE and ACR beside the adversarial AR and ACR of the CT recipe in one table, its outputs
written, every training step's lower-level iterations recorded, lambda learned, and a rerun resumes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from recipe_helpers import RECIPES, load_recipe

pytestmark = pytest.mark.filterwarnings("ignore::deepinv_ext.algorithms.NotConvergedWarning")


def test_smoke_run_writes_one_table_and_resumes(tmp_path):
    threads = torch.get_num_threads()
    recipe = load_recipe("bilevel_regularizers")
    args = ["--smoke", "--problems", "ct", "--output", str(tmp_path)]
    try:
        rows = recipe.main(args)["ct"]
        for name in ("results.md", "results.json", "run.json", "bilevel_regularizers.png", "ct/FoE_bilevel.pt",
                     "ct/ACR_bilevel.pt", "ct/adversarial/ACR.pt"):
            assert (tmp_path / name).exists(), name
        assert set(rows) == {"FBP", "TV", "AR (adversarial)", "ACR (adversarial)", "FoE (bilevel)", "ACR (bilevel)"}
        for name in ("FoE (bilevel)", "ACR (bilevel)"):
            row = rows[name]
            assert row["steps"] == 2 and 1 <= row["iterations_per_step"] <= 10  # 8 images, batches of 4, max_iter 10
            assert row["lambda"] != pytest.approx(row["lambda_init"], rel=1e-6)  # lambda is learned
            assert torch.isfinite(torch.tensor(row["psnr"])) and row["train_s"] > 0
        assert "| ct | ACR (bilevel) |" in (tmp_path / "results.md").read_text()
        assert json.loads((tmp_path / "results.json").read_text())["ct"]["FoE (bilevel)"]["psnr"] == rows[
            "FoE (bilevel)"]["psnr"]
        # rerun: the checkpoints are resumed (no training step), the test gives the same numbers
        again = recipe.main(args)["ct"]
        for name in ("FoE (bilevel)", "ACR (bilevel)"):
            assert again[name]["steps"] == 2 and again[name]["psnr"] == pytest.approx(rows[name]["psnr"], rel=1e-5)
            assert again[name]["train_s"] == rows[name]["train_s"]
    finally:
        torch.set_num_threads(threads)


def test_lower_level_starts_at_the_fbp():
    """With no iteration allowed beyond the start, the bilevel reconstruction is the FBP (the noisy image in
    denoising), and a training forward records its iterations."""
    job = load_recipe("bilevel_regularizers_train")
    args = load_recipe("bilevel_regularizers").parse_args(["--smoke", "--max-iter", "1"])
    ct_args = job.ct_options(args, "ct")
    physics, data = job.setting("ct", args, ct_args)
    sets = job.split(physics, data, args)
    model = job.make_bilevel("FoE", physics, sets["pairs"], args, ct_args)
    model.grad_tol = 1e30  # converged at the start
    y = sets["test"][1]
    x = model(y, physics)
    assert model.lower_iterations == 0 and torch.allclose(x, job.fbp(y, physics))
    assert model.step_iterations == [0]


def test_option_errors_before_heavy_imports():
    probe = ("import runpy, sys; sys.argv = ['bilevel_regularizers.py', '--smoothing', '0']\n"
             "try:\n    runpy.run_path('bilevel_regularizers.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'deepinv', 'astra', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=RECIPES, check=True)
    assert "--smoothing must be > 0" in done.stderr and done.stdout.strip().endswith("HEAVY []")

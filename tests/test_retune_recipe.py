"""recipes/retune.py (with its jobs retune_train.py and retune_evaluate.py) runs end to end on tiny sizes, reports its
figure checks, resumes only a matching run, and trains data-parallel under torchrun (2 processes as 1)."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_helpers import load_recipe, max_difference, needs_gloo, torchrun

# these tests run solvers on small budgets on purpose and check iterates, gradients or outputs; the tests that are
# about convergence assert the solvers' per-image `converged` flags (or expect the warning) themselves
pytestmark = pytest.mark.filterwarnings("ignore::deepinv_ext.algorithms.NotConvergedWarning")


@pytest.mark.slow
def test_recipe_smoke_resume_and_config_guard(tmp_path):
    recipe = load_recipe("retune")
    args = ["--smoke", "--device", "cpu", "--parts", "pnp"]
    out = recipe.main(args + ["--output", str(tmp_path / "a")])
    rows = out["rows"]
    assert {"pnp-untrained", "pnp-unroll", "pnp-full-unroll", "pnp-deq", "pnp-retune"} <= set(rows)
    assert all(torch.isfinite(torch.tensor(r["psnr_fixed_point"])) for r in rows.values())
    table = (tmp_path / "a" / "table.txt").read_text()
    assert "smoke run: figure checks skipped" in table and " NO" not in table and "nan" not in table
    assert json.loads((tmp_path / "a" / "results.json").read_text())["sweep"] == []
    # a run extended from its checkpoints (3 steps after 3) ends where an uninterrupted 6-step run ends
    extended = recipe.main(args + ["--steps", "6", "--output", str(tmp_path / "a")])["rows"]
    fresh = recipe.main(args + ["--steps", "6", "--output", str(tmp_path / "b")])["rows"]
    for name in ("pnp-unroll", "pnp-retune"):
        assert extended[name]["psnr_fixed_point"] == pytest.approx(fresh[name]["psnr_fixed_point"], abs=1e-6)
        assert extended[name]["psnr_fixed_point"] != pytest.approx(rows[name]["psnr_fixed_point"], abs=1e-6)
    # a checkpoint of another configuration is refused, naming the option that changed
    with pytest.raises(RuntimeError, match="denoiser_lr"):
        recipe.main(args + ["--denoiser-lr", "1e-2", "--output", str(tmp_path / "a")])


def test_figure_checks_compare_retune_with_its_baselines():
    recipe = load_recipe("retune_evaluate")
    rows = {"pnp-untrained": {"psnr_fixed_point": 24.0},
            "pnp-unroll": {"psnr_depth": 24.5},
            "pnp-retune": {"psnr_fixed_point": 25.0, "residual": 5e-6, "lipschitz": 0.95}}
    (line,) = recipe.figure_checks(rows, tol=1e-5)
    assert "NO" not in line
    rows["pnp-retune"].update(psnr_fixed_point=24.4, lipschitz=1.02)
    (line,) = recipe.figure_checks(rows, tol=1e-5)
    assert "contractive (Lipschitz < 1) NO" in line and "at least unrolling at depth L NO" in line
    assert "beats untrained yes" in line
    assert recipe.figure_checks({"pnp-retune": rows["pnp-retune"]}, tol=1e-5) == []


def test_denoiser_weights_get_their_own_learning_rate():
    import argparse

    import deepinv as dinv

    from deepinv_ext.algorithms import ReTune

    recipe = load_recipe("retune_train")
    den = dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None)
    model = ReTune(recipe.pnp_layer(den, 1.0, anchor=0.1), depth=2, restarts=1)
    groups = recipe.param_groups(model, argparse.Namespace(lr=1e-2, denoiser_lr=1e-4))
    assert [g["lr"] for g in groups] == [1e-2, 1e-4]
    n_den = sum(p.numel() for p in den.parameters())
    assert sum(p.numel() for p in groups[1]["params"]) == n_den
    assert len(groups[0]["params"]) == 3  # step, noise level, relaxation


def test_data_dir_is_read_by_deepinv_image_folder(tmp_path):
    """``--data-dir``: a folder of images read by deepinv's ImageFolder as gray, square, resized images; the first
    quarter (natural order) are the test images."""
    import argparse

    import numpy as np
    from skimage.io import imsave

    job = load_recipe("retune_train")
    for i in range(4):
        image = np.zeros((40, 60, 3), dtype=np.uint8)
        image[..., 0] = 60 * i
        imsave(tmp_path / f"img{i}.png", image)
    train, test = job.make_data(argparse.Namespace(data_dir=str(tmp_path), size=8, smoke=True))
    assert train.shape == (3, 1, 16, 16) and test.shape == (1, 1, 8, 8)
    assert float(test.max()) == 0.0 and float(train[-1].mean()) == pytest.approx(0.2126 * 180 / 255, abs=1e-3)
    with pytest.raises(ValueError, match="holds no image"):
        job.make_data(argparse.Namespace(data_dir=str(tmp_path / "empty"), size=8, smoke=True))


def _trained(output, name: str) -> dict[str, torch.Tensor]:
    return torch.load(output / "ckpt" / f"{name}.pt", weights_only=True)["model"]


@pytest.mark.slow
@needs_gloo
def test_two_processes_train_as_one_and_their_checkpoints_resume_in_one(tmp_path, monkeypatch):
    args = ["--smoke", "--device", "cpu", "--parts", "wavelet", "--noise", "0"]  # no noise: the same steps exactly
    done = torchrun("retune", *args, "--output", str(tmp_path / "two"))
    assert done.stdout.count("smoke run: figure checks skipped") == 1  # rank 0 alone evaluates and writes
    assert {"results.json", "table.txt", "run.json", "retune_interplay.png"} <= {p.name for p in (tmp_path / "two").iterdir()}
    recipe, job = load_recipe("retune"), load_recipe("retune_train")
    rows_one = recipe.main(args + ["--output", str(tmp_path / "one")])["rows"]
    rows_two = json.loads((tmp_path / "two" / "results.json").read_text())["rows"]
    assert rows_two["wavelet-retune"]["saved_MB"] < 0.6 * rows_one["wavelet-retune"]["saved_MB"]  # half a batch each
    for name in ("wavelet-unroll", "wavelet-retune"):
        one, two = _trained(tmp_path / "one", name), _trained(tmp_path / "two", name)
        print(name, "max |1 process - 2 processes| after 3 steps:", max_difference(one, two))
        assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)
    steps, step = [], job.train_step
    monkeypatch.setattr(job, "train_step", lambda *a: steps.append(1) or step(*a))
    recipe.main(args + ["--steps", "6", "--output", str(tmp_path / "two")])  # a plain process resumes step 3 of 6 ...
    assert len(steps) == 2 * 3
    recipe.main(args + ["--steps", "6", "--output", str(tmp_path / "straight")])
    for name in ("wavelet-unroll", "wavelet-retune"):  # ... and ends where an uninterrupted process ends
        one, two = _trained(tmp_path / "straight", name), _trained(tmp_path / "two", name)
        assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)

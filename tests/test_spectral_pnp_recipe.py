"""recipes/spectral_pnp_ct.py reuses its trained denoiser on a rerun, and refuses one trained under other options;
under ``torchrun`` (2 gloo processes) it trains the denoiser data-parallel, writes once, and a plain process reuses
it."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_helpers import load_recipe, max_difference, needs_gloo, torchrun

from deepinv_ext.checkpoint import OptionsChangedError


def test_denoiser_is_reused_only_under_the_same_options(tmp_path):
    recipe, job = load_recipe("spectral_pnp_ct"), load_recipe("spectral_pnp_ct_train")
    args = recipe.parse_args(["--smoke", "--output", str(tmp_path)])
    args.train_images, args.train_size, args.epochs, args.batch_size = 4, 16, 1, 4
    first = job.train_denoiser(args, tmp_path)
    again = job.train_denoiser(args, tmp_path)  # loaded, not trained again
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    args.epochs = 2
    with pytest.raises(OptionsChangedError, match=r"denoiser.pt was trained with other options \(epochs\)"):
        job.train_denoiser(args, tmp_path)


@pytest.mark.slow
@needs_gloo
def test_two_processes_train_as_one_write_once_and_resume_in_one(tmp_path, capsys):
    """2 torchrun processes train on halves of a batch of the whole (all but noise-free) training set and take the
    single-process steps; rank 0 alone prints, writes and runs the experiment; a plain process reuses the denoiser."""
    args = ["--smoke", "--small-size", "0", "--large-size", "16", "--large-deltas", "0.1", "0.01", "2",
            "--train-images", "8", "--epochs", "2", "--sigma", "1e-9", "--output", str(tmp_path / "two")]
    done = torchrun("spectral_pnp_ct", *args)
    for line in ("denoiser PSNR on held-out phantoms", "16x16: |x_hat - x_dag|", "saved "):
        assert done.stdout.count(line) == 1, done.stdout
    assert "previous" not in json.loads((tmp_path / "two" / "run.json").read_text())  # written once
    assert (tmp_path / "two" / "convergence_16.csv").exists() and (tmp_path / "two" / "convergence.png").exists()
    two = torch.load(tmp_path / "two" / "denoiser.pt", weights_only=True)

    recipe, job = load_recipe("spectral_pnp_ct"), load_recipe("spectral_pnp_ct_train")
    options = recipe.parse_args(args[:-1] + [str(tmp_path / "one")])
    torch.manual_seed(options.seed)  # as the recipe seeds the denoiser's initialisation
    one = job.train_denoiser(options, tmp_path / "one").state_dict()  # one process, the same global batch
    capsys.readouterr()
    with capsys.disabled():
        print("\nmax |1 process - 2 processes| after 2 steps:", max_difference(one, two))
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)
    again = job.train_denoiser(recipe.parse_args(args), tmp_path / "two").state_dict()  # no torchrun: reused
    assert "loaded the trained denoiser" in capsys.readouterr().out
    assert all(torch.equal(again[k], two[k]) for k in two)

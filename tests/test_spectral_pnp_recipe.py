"""recipes/spectral_pnp_ct.py reuses its trained denoiser on a rerun, and refuses one trained under other options."""

from __future__ import annotations

import pytest
import torch
from recipe_helpers import load_recipe

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

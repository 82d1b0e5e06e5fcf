"""recipes/gs_pnp_convergence.py: the denoiser training resumes from its checkpoint and ends where an uninterrupted
training ends; weights of other options are trained anew (not refused: the recipe's documented behaviour)."""

from __future__ import annotations

import pytest
import torch
from recipe_helpers import load_recipe


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_denoiser_training_resumes_exactly_and_retrains_under_other_options(tmp_path, monkeypatch):
    job = load_recipe("gs_pnp_convergence_train")
    kwargs = dict(channels=4, depth=2, train_size=40, exclude="camera", patch=16, batch=2)
    straight = _weights(job.train_denoiser(tmp_path / "a", steps=4, checkpoint_every=2, **kwargs))
    save = job.save_checkpoint

    def save_then_stop(*args):  # the run is interrupted right after its checkpoint at step 2
        save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        job.train_denoiser(tmp_path / "b", steps=4, checkpoint_every=2, **kwargs)
    monkeypatch.setattr(job, "save_checkpoint", save)
    assert torch.load(tmp_path / "b" / "denoiser_ckpt.pt", weights_only=True)["step"] == 2
    resumed = _weights(job.train_denoiser(tmp_path / "b", steps=4, checkpoint_every=2, **kwargs))
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)
    other = _weights(job.train_denoiser(tmp_path / "a", steps=4, checkpoint_every=2, **kwargs | {"batch": 3}))
    assert any(not torch.equal(straight[k], other[k]) for k in straight)
    assert torch.load(tmp_path / "a" / "denoiser.pt", weights_only=True)["config"]["batch"] == 3

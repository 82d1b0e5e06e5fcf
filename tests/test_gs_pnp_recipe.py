"""recipes/gs_pnp_convergence.py: the denoiser training resumes from its checkpoint and ends where an uninterrupted
training ends; weights of other options are trained anew (not refused: the recipe's documented behaviour); under
torchrun, 2 processes train as one and share checkpoints with a plain process."""

from __future__ import annotations

import pytest
import torch
from recipe_helpers import load_recipe, max_difference, needs_gloo, torchrun


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


@pytest.mark.slow
@needs_gloo
def test_two_processes_train_as_one_and_share_checkpoints_with_one(tmp_path, monkeypatch):
    job = load_recipe("gs_pnp_convergence_train")
    kwargs = dict(steps=4, channels=4, depth=2, train_size=40, exclude="camera")  # the command line's below
    straight = _weights(job.train_denoiser(tmp_path / "one", **kwargs))
    save = job.save_checkpoint

    def save_then_stop(*args):
        save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):  # one process stops after step 2 ...
        job.train_denoiser(tmp_path / "two", checkpoint_every=2, **kwargs)
    monkeypatch.setattr(job, "save_checkpoint", save)
    done = torchrun("gs_pnp_convergence", "--smoke", "--train-steps", "4", "--channels", "4", "--depth", "2", "--train-size", "40",
                     "--size", "16", "--max-iter", "20", "--deltas", "0.1", "0.01", "--output", str(tmp_path / "two"))
    assert "| 2/4 [" in done.stderr and "| 0/4 [" not in done.stderr  # ... and two processes resume it at step 2
    two = _weights(tmp_path / "two" / "denoiser.pt")
    print("max |1 process - 2 processes| after 4 steps:", max_difference(two, straight))
    assert all(torch.allclose(two[k], straight[k], atol=1e-6) for k in two)
    assert done.stdout.count("checks:") == 1  # the sweep, its table and outputs: rank 0 alone
    assert {"results.json", "run.json", "gs_pnp_convergence.png", "sweep.pt"} <= {p.name for p in (tmp_path / "two").iterdir()}
    # rank 0's last checkpoint (step 4) resumes in a plain process: it trains no further step, same weights
    (tmp_path / "two" / "denoiser.pt").unlink()
    monkeypatch.setattr(job, "random_patches", None)
    resumed = _weights(job.train_denoiser(tmp_path / "two", **kwargs))
    assert all(torch.equal(resumed[k], two[k]) for k in two)

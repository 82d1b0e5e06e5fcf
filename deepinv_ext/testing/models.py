r"""Contract checks for reconstructors, denoisers, losses and datasets: they run inside :class:`deepinv.Trainer`
and :func:`deepinv.test` as any deepinv model, loss or dataset does."""

from __future__ import annotations

import warnings

import deepinv as dinv
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_ext._convergence import NotConvergedWarning
from deepinv_ext.testing.examples import example_generator, seeded_init


def _run_in_trainer(model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset,
                    losses: list | None = None, batch_size: int = 2) -> None:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    device = next((b.device for b in physics.buffers()), torch.device("cpu"))
    with seeded_init(example_generator()), warnings.catch_warnings():
        # the online measurements' noise is drawn without touching the global stream; a contract example runs a
        # solver for a few iterations, so whether it converges is not what this check is about
        warnings.filterwarnings("ignore", category=NotConvergedWarning)
        if trainable:  # deepinv's Trainer needs an optimizer; a model without parameters is only tested
            trainer = dinv.Trainer(model=model, physics=physics, optimizer=torch.optim.Adam(trainable, lr=1e-4),
                                   train_dataloader=loader, epochs=1, max_batch_steps=1,
                                   losses=losses or dinv.loss.SupLoss(), online_measurements=True, device=device,
                                   save_path=None, verbose=False, show_progress_bar=False,
                                   compute_train_metrics=False,
                                   non_blocking_transfers=device.type == "cuda")
            trainer.train()
        metrics = dinv.test(model, loader, physics, metrics=dinv.metric.PSNR(), online_measurements=True,
                            device=device, verbose=False, show_progress_bar=False, compare_no_learning=False,
                            non_blocking_transfers=device.type == "cuda")  # deepinv warns about it off CUDA
    values = [float(v) for k, v in metrics.items() if "PSNR" in k]
    assert values and all(v == v for v in values), f"deepinv.test returned no finite PSNR: {metrics}"


def check_reconstructor(model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset, *,
                        batch_size: int = 2) -> None:
    r"""Check that ``model(y, physics)`` returns an image of the right shape, trains one step inside
    :class:`deepinv.Trainer` (supervised loss, online measurements; skipped for a model without trainable
    parameters) and is evaluated by :func:`deepinv.test`."""
    x = next(iter(DataLoader(dataset, batch_size=batch_size)))["x"]
    x = x.to(next((b.device for b in physics.buffers()), x.device))
    with torch.no_grad(), seeded_init(example_generator()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=NotConvergedWarning)  # a few iterations: see _run_in_trainer
        out = model(physics(x), physics)
    assert out.shape == x.shape, f"model(y, physics) has shape {tuple(out.shape)}, expected {tuple(x.shape)}"
    assert torch.isfinite(out).all(), "model(y, physics) is not finite"
    _run_in_trainer(model, physics, dataset, batch_size=batch_size)


def check_denoiser(denoiser: dinv.models.Denoiser, dataset: Dataset, *, sigma: float = 0.1,
                   batch_size: int = 2) -> None:
    r"""Check a denoiser: ``denoiser(x, sigma)`` keeps the shape, and the denoiser trains and tests inside
    deepinv as deepinv itself wraps one, :class:`deepinv.models.ArtifactRemoval` on :class:`Denoising` physics."""
    x = next(iter(DataLoader(dataset, batch_size=batch_size)))["x"]
    with torch.no_grad():
        noise = torch.randn(x.shape, generator=example_generator(), dtype=x.dtype).to(x.device)
        out = denoiser(x + sigma * noise, sigma)
    assert out.shape == x.shape, f"denoiser(x, sigma) has shape {tuple(out.shape)}, expected {tuple(x.shape)}"
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma))
    model = dinv.models.ArtifactRemoval(denoiser, mode="direct")
    check_reconstructor(model, physics, dataset, batch_size=batch_size)


def check_loss(loss: dinv.loss.Loss, model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset,
               *, batch_size: int = 2) -> None:
    r"""Check that a training loss is a :class:`deepinv.loss.Loss` and trains ``model`` one step inside
    :class:`deepinv.Trainer`."""
    assert isinstance(loss, dinv.loss.Loss), f"a loss plugin must subclass deepinv.loss.Loss, got {type(loss)}"
    _run_in_trainer(model, physics, dataset, losses=[loss], batch_size=batch_size)


def check_dataset(dataset: Dataset, *, indices: tuple[int, ...] = (0, 1)) -> None:
    r"""Check a dataset: items are dicts with an image ``"x"`` of shape ``(C, H, W)``, finite, and item ``i`` is
    the same on every call."""
    for i in indices:
        first, again = dataset[i], dataset[i]
        assert isinstance(first, dict) and "x" in first, f"item {i} must be a dict with key 'x', got {type(first)}"
        assert first["x"].ndim == 3, f"item {i}: x must be (C, H, W), got shape {tuple(first['x'].shape)}"
        assert torch.isfinite(first["x"]).all(), f"item {i} is not finite"
        assert torch.equal(first["x"], again["x"]), f"item {i} differs between two calls"

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
    parameters) and is evaluated by :func:`deepinv.test`.

    :param torch.nn.Module model: the reconstructor, called as ``model(y, physics)``.
    :param deepinv.physics.Physics physics: the measurement operator (its buffers' device is used).
    :param torch.utils.data.Dataset dataset: images as deepinv dict items ``{"x": x}``.
    :param int batch_size: images per batch.
    :raises AssertionError: a wrong shape, a non-finite output, or no finite PSNR from :func:`deepinv.test`.

    |sep|

    :Examples:

        A pseudo-inverse followed by a small trainable CNN, on blurred images:

        >>> import deepinv as dinv
        >>> from deepinv_ext.testing import check_reconstructor, example_images
        >>> from deepinv_ext.testing.examples import example_blur
        >>> cnn = dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None)
        >>> model = dinv.models.ArtifactRemoval(cnn, mode="pinv")
        >>> check_reconstructor(model, example_blur(16, noise=0.01), example_images(2, 16))
    """
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
    deepinv as deepinv itself wraps one, :class:`deepinv.models.ArtifactRemoval` on
    :class:`deepinv.physics.Denoising` physics with Gaussian noise of standard deviation ``sigma``.

    :param deepinv.models.Denoiser denoiser: the denoiser, called as ``denoiser(x, sigma)``.
    :param torch.utils.data.Dataset dataset: images as deepinv dict items ``{"x": x}``.
    :param float sigma: the noise level.
    :param int batch_size: images per batch.
    :raises AssertionError: a wrong shape, or a failure of :func:`check_reconstructor`.

    |sep|

    :Examples:

        >>> import deepinv as dinv
        >>> from deepinv_ext.testing import check_denoiser, example_images
        >>> check_denoiser(dinv.models.MedianFilter(), example_images(2, 16))
    """
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
    :class:`deepinv.Trainer`.

    :param deepinv.loss.Loss loss: the loss.
    :param torch.nn.Module model: a trainable model, called as ``model(y, physics)``.
    :param deepinv.physics.Physics physics: the measurement operator.
    :param torch.utils.data.Dataset dataset: images as deepinv dict items ``{"x": x}``.
    :param int batch_size: images per batch.
    :raises AssertionError: ``loss`` is not a deepinv loss, or the training step fails.

    |sep|

    :Examples:

        Self-supervised measurement consistency on a denoising problem:

        >>> import deepinv as dinv
        >>> from deepinv_ext.testing import check_loss, example_images
        >>> cnn = dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None)
        >>> model = dinv.models.ArtifactRemoval(cnn, mode="direct")
        >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
        >>> check_loss(dinv.loss.MCLoss(), model, physics, example_images(2, 16))
    """
    assert isinstance(loss, dinv.loss.Loss), f"a loss plugin must subclass deepinv.loss.Loss, got {type(loss)}"
    _run_in_trainer(model, physics, dataset, losses=[loss], batch_size=batch_size)


def check_dataset(dataset: Dataset, *, indices: tuple[int, ...] = (0, 1)) -> None:
    r"""Check a dataset: items are dicts with an image ``"x"`` of shape ``(C, H, W)``, finite, and item ``i`` is
    the same on every call.

    :param torch.utils.data.Dataset dataset: the dataset.
    :param tuple[int, ...] indices: the items checked.
    :raises AssertionError: naming the item and what is wrong with it.

    |sep|

    :Examples:

        A dataset passes silently; one that draws a new image at every call fails:

        >>> import torch
        >>> from deepinv_ext.testing import check_dataset, example_images
        >>> check_dataset(example_images(2, 16))
        >>> class Random(torch.utils.data.Dataset):
        ...     def __len__(self):
        ...         return 1
        ...     def __getitem__(self, i):
        ...         return {"x": torch.rand(1, 4, 4)}
        >>> try:
        ...     check_dataset(Random(), indices=(0,))
        ... except AssertionError as err:
        ...     print(str(err).splitlines()[0])
        item 0 differs between two calls
    """
    for i in indices:
        first, again = dataset[i], dataset[i]
        assert isinstance(first, dict) and "x" in first, f"item {i} must be a dict with key 'x', got {type(first)}"
        assert first["x"].ndim == 3, f"item {i}: x must be (C, H, W), got shape {tuple(first['x'].shape)}"
        assert torch.isfinite(first["x"]).all(), f"item {i} is not finite"
        assert torch.equal(first["x"], again["x"]), f"item {i} differs between two calls"

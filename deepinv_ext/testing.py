r"""Contract checks that every deepinv-ext plugin passes, usable by third-party plugin authors in their own tests.

Each ``check_*`` function raises :class:`AssertionError` (with a message saying what failed and by how much) or
returns quietly. A plugin class can declare a small example of itself for these checks with a static or class
method ``contract_example()`` returning the keyword arguments of the check of its kind (for a physics:
``{"physics": ..., "x": ...}``); :func:`check_plugin` then checks it from the registry alone, which is how the
deepinv-ext test suite checks every registered plugin:

.. code-block:: python

    import pytest
    from deepinv_ext import plugins, testing

    @pytest.mark.parametrize("info", plugins.available(), ids=lambda p: p.key)
    def test_contract(info):
        testing.check_plugin(info)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import deepinv as dinv
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_ext.plugins import PluginInfo, load

__all__ = ["check_physics", "check_prior", "check_denoiser", "check_reconstructor", "check_loss", "check_dataset",
           "check_plugin"]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(torch.finfo(b.dtype).tiny))


def check_physics(physics: dinv.physics.LinearPhysics, x: torch.Tensor, *, adjoint_tol: float = 1e-5,
                  batch_tol: float = 1e-5, gradcheck: bool = True, gradcheck_kwargs: dict | None = None,
                  wrong_shape: torch.Tensor | None = None) -> None:
    r"""Check a linear physics on a batch ``x`` of at least two images.

    - adjointness: deepinv's Monte-Carlo estimate of :math:`\|A - (A^\top)^\top\|_F / \|A\|_F` below
      ``adjoint_tol``;
    - batch = per sample: :math:`A(x)_i = A(x_i)` and the same for :math:`A^\top`;
    - device and dtype of ``x`` kept by :math:`A` and :math:`A^\top`;
    - autograd: ``torch.autograd.gradcheck`` of :math:`A` and :math:`A^\top` on the first image (pass ``x`` in
      float64, or float32 with loose ``gradcheck_kwargs`` for float32-only backends; ``gradcheck=False`` skips it);
    - a clear error (``ValueError`` or ``TypeError``) on ``wrong_shape`` (default: ``x`` with one column less).

    :param deepinv.physics.LinearPhysics physics: the operator.
    :param torch.Tensor x: images ``(B, C, ...)``, ``B >= 2``, on the device and in the dtype to check.
    """
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least two images to check batching, got shape {tuple(x.shape)}")
    y = physics.A(x)
    x_adj = physics.A_adjoint(y)
    for name, out, ref in (("A", y, x), ("A_adjoint", x_adj, x)):
        assert out.device == ref.device, f"{name} moved the data from {ref.device} to {out.device}"
        assert out.dtype == ref.dtype, f"{name} changed the dtype from {ref.dtype} to {out.dtype}"
        assert torch.isfinite(out).all(), f"{name} returned non-finite values"
    assert x_adj.shape == x.shape, f"A_adjoint(A(x)) has shape {tuple(x_adj.shape)}, expected {tuple(x.shape)}"

    error = float(physics.adjointness_test(x, num_samples=4))
    assert abs(error) < adjoint_tol, f"adjointness error {error:.2e} above {adjoint_tol:.0e}"

    for name, op, batch in (("A", physics.A, x), ("A_adjoint", physics.A_adjoint, y)):
        single = torch.cat([op(batch[i: i + 1]) for i in range(batch.shape[0])])
        err = _relative_error(op(batch), single)
        assert err < batch_tol, f"{name} on the batch differs from {name} per sample by {err:.2e} (relative)"

    if gradcheck:
        kwargs = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3} | (gradcheck_kwargs or {})
        x0 = x[:1].detach().clone().requires_grad_(True)
        y0 = y[:1].detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(physics.A, (x0,), **kwargs), "gradcheck of A failed"
        assert torch.autograd.gradcheck(physics.A_adjoint, (y0,), **kwargs), "gradcheck of A_adjoint failed"

    bad = x[..., :-1] if wrong_shape is None else wrong_shape
    try:
        physics.A(bad)
    except (ValueError, TypeError):
        pass
    else:
        raise AssertionError(f"A accepted an input of shape {tuple(bad.shape)} without a ValueError/TypeError")


def check_prior(prior: dinv.optim.Prior, x: torch.Tensor, *, rtol: float = 1e-5) -> None:
    r"""Check a prior's energy and gradient on a batch ``x`` (float64 recommended).

    - ``fn(x)`` returns one finite value per batch element, shape ``(B,)``;
    - ``grad(x)`` has the shape of ``x`` and equals the autograd gradient of :math:`\sum_b fn(x)_b` to ``rtol``
      (relative, in the max norm);
    - the energy of each batch element does not depend on the others (``fn`` on the batch = ``fn`` per sample).
    """
    energy = prior.fn(x)
    assert energy.shape == (x.shape[0],), f"fn(x) has shape {tuple(energy.shape)}, expected ({x.shape[0]},)"
    assert torch.isfinite(energy).all(), "fn(x) is not finite"
    single = torch.cat([prior.fn(x[i: i + 1]).reshape(1) for i in range(x.shape[0])])
    err = _relative_error(energy, single)
    assert err < rtol, f"fn on the batch differs from fn per sample by {err:.2e} (relative)"
    z = x.detach().clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(prior.fn(z).sum(), z)
    grad = prior.grad(x)
    assert grad.shape == x.shape, f"grad(x) has shape {tuple(grad.shape)}, expected {tuple(x.shape)}"
    err = _relative_error(grad, reference)
    assert err < rtol, f"grad differs from the autograd gradient of fn by {err:.2e} (relative), above {rtol:.0e}"


def _run_in_trainer(model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset,
                    losses: list | None = None, batch_size: int = 2) -> None:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    device = next((b.device for b in physics.buffers()), torch.device("cpu"))
    if trainable:  # deepinv's Trainer needs an optimizer; a model without parameters is only tested
        trainer = dinv.Trainer(model=model, physics=physics, optimizer=torch.optim.Adam(trainable, lr=1e-4),
                               train_dataloader=loader, epochs=1, max_batch_steps=1,
                               losses=losses or dinv.loss.SupLoss(), online_measurements=True, device=device,
                               save_path=None, verbose=False, show_progress_bar=False, compute_train_metrics=False)
        trainer.train()
    metrics = dinv.test(model, loader, physics, metrics=dinv.metric.PSNR(), online_measurements=True,
                        device=device, verbose=False, show_progress_bar=False, compare_no_learning=False)
    values = [float(v) for k, v in metrics.items() if "PSNR" in k]
    assert values and all(v == v for v in values), f"deepinv.test returned no finite PSNR: {metrics}"


def check_reconstructor(model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset, *,
                        batch_size: int = 2) -> None:
    r"""Check that ``model(y, physics)`` returns an image of the right shape, trains one step inside
    :class:`deepinv.Trainer` (supervised loss, online measurements; skipped for a model without trainable
    parameters) and is evaluated by :func:`deepinv.test`."""
    x = next(iter(DataLoader(dataset, batch_size=batch_size)))["x"]
    x = x.to(next((b.device for b in physics.buffers()), x.device))
    with torch.no_grad():
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
        out = denoiser(x + sigma * torch.randn_like(x), sigma)
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


_CHECKS: dict[str, Callable[..., None]] = {
    "physics": check_physics, "prior": check_prior, "denoiser": check_denoiser, "algorithm": check_reconstructor,
    "loss": check_loss, "dataset": check_dataset,
}


def check_plugin(plugin: PluginInfo | Any, kind: str | None = None) -> None:
    r"""Run the contract check of a plugin's kind on the example it declares with ``contract_example()``.

    :param plugin: a :class:`deepinv_ext.plugins.PluginInfo` (loaded from the registry), or the object itself
        together with ``kind``.
    :param str kind: the plugin's kind, when ``plugin`` is the object.
    :raises AssertionError: the plugin declares no ``contract_example`` or fails its check.
    """
    if isinstance(plugin, PluginInfo):
        kind, obj = plugin.kind, load(plugin.kind, plugin.name, plugin.distribution)
    else:
        obj = plugin
    if kind not in _CHECKS:
        raise ValueError(f"kind must be one of {tuple(_CHECKS)}, got {kind!r}")
    example = getattr(obj, "contract_example", None)
    assert callable(example), f"{obj!r} declares no contract_example(): the registry cannot check it"
    _CHECKS[kind](**example())

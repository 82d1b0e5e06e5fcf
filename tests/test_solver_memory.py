"""Solvers keep no autograd graph of their iterations unless asked to (``differentiable=True``), and published
weights load frozen: inference runs in memory independent of the number of iterations, training still gets
gradients.

The memory of the graphs is measured exactly, independently of the allocator: every tensor autograd saves for a
backward pass goes through :func:`torch.autograd.graph.saved_tensors_hooks`, and :class:`SavedTensorMeter` counts
the bytes of those still alive (``live``) and the most that were alive at once (``peak``). Peak resident memory at
256x256 is measured by ``benchmarks/solver_memory.py``.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import deepinv as dinv
import pytest
import torch
from deepinv.physics.functional.blur import gaussian_blur
from torch import nn

from deepinv_ext.algorithms import FISTASolver, GradientStepPnP, SpectralPnP, TDVNetwork, VariationalSolver
from deepinv_ext.denoisers import GradientStepDenoiser, LinearSymmetricUNet, SmallPotentialNet
from deepinv_ext.priors import TDV
from deepinv_ext.spectral import ScalingFilter

GRAY = Path(__file__).resolve().parent / "data" / "tdv" / "tdv3-3-25-f32-gray.pth"  # shipped test data
SIZE = 16
SHORT, LONG = 2, 6  # iteration budgets compared


class SavedTensorMeter:
    """Bytes of the tensors autograd saves for backward inside the ``with`` block: ``live`` (still held by a graph)
    and ``peak`` (the most held at once)."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda saved: saved.tensor)

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        gc.collect()

    def _pack(self, tensor: torch.Tensor) -> _Saved:
        return _Saved(tensor, self)


class _Saved:
    """One saved tensor; its bytes count as live until autograd drops it (its graph is freed or used)."""

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter) -> None:
        self.tensor, self.meter, self.nbytes = tensor, meter, tensor.numel() * tensor.element_size()
        meter.live += self.nbytes
        meter.peak = max(meter.peak, meter.live)

    def __del__(self) -> None:
        self.meter.live -= self.nbytes


class _LearnedTikhonov(dinv.optim.Prior):
    r""":math:`g(x) = \frac{w}{2}\|x\|^2` with a trainable weight :math:`w`, prox :math:`x / (1 + \gamma w)`."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(2.0))

    def fn(self, x, *args, **kwargs):
        return 0.5 * self.weight * x.pow(2).flatten(1).sum(1)

    def prox(self, x, *args, gamma=1.0, **kwargs):
        return x / (1 + gamma * self.weight)


def _blur() -> dinv.physics.BlurFFT:
    return dinv.physics.BlurFFT((1, SIZE, SIZE), filter=gaussian_blur(sigma=(1.0, 1.0)))


def _solver(name: str, max_iter: int, differentiable: bool = False) -> torch.nn.Module:
    """A small solver whose parameters all require grad, with a tolerance no run of ``max_iter`` iterations meets."""
    torch.manual_seed(0)
    if name == "variational":
        return VariationalSolver(TDV(num_features=4, num_macro_blocks=1), weight=50.0, max_iter=max_iter,
                                 cg_init_iter=2, tol=1e-12, differentiable=differentiable)
    if name == "spectral_pnp":
        den = LinearSymmetricUNet(channels=(4, 8), convs_per_scale=1)
        den.calibrate_spectrum((0.05, 0.95), shape=(1, SIZE, SIZE), n_iter=30)
        return SpectralPnP(den, ScalingFilter(), tau=0.5, max_iter=max_iter, tol=1e-12, filter_tol=1e-6,
                           differentiable=differentiable)
    if name == "gs_pnp":
        return GradientStepPnP(GradientStepDenoiser(SmallPotentialNet(1, 6, 3)), lambda_=0.5, sigma_denoiser=0.05,
                               max_iter=max_iter, tol=1e-12, differentiable=differentiable)
    return FISTASolver(_LearnedTikhonov(), lambda_reg=0.1, lipschitz=1.01, max_iter=max_iter, tol=1e-14,
                       differentiable=differentiable)


def _iterations(solver: torch.nn.Module) -> int:
    if isinstance(solver, SpectralPnP):
        return solver.last_info["iterations"]
    if isinstance(solver, GradientStepPnP):
        return len(solver.history["step"])
    return solver.iterations


def _run(name: str, max_iter: int, differentiable: bool = False) -> tuple[torch.nn.Module, torch.Tensor, int]:
    """Solve one blurred image with autograd enabled (no ``torch.no_grad``): the solver, its output, and the peak of
    the saved-tensor bytes during the call (and asserts every iteration ran)."""
    solver = _solver(name, max_iter, differentiable)
    assert all(p.requires_grad for p in solver.parameters()) and any(True for _ in solver.parameters())
    physics = _blur()
    y = physics(torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))
    with warnings.catch_warnings(), SavedTensorMeter() as meter:
        warnings.simplefilter("ignore")  # NotConvergedWarning: the budgets are meant to be too small
        out = solver(y, physics)
    assert _iterations(solver) == max_iter
    return solver, out, meter


SOLVERS = ["variational", "spectral_pnp", "gs_pnp", "fista"]


@pytest.mark.parametrize("name", SOLVERS)
def test_inference_keeps_no_graph_whatever_the_number_of_iterations(name):
    """The README's call (autograd enabled, parameters requiring grad): no graph survives the call, and the graphs
    alive during it (autograd inside an iteration, e.g. a gradient of the potential) do not grow with ``max_iter``."""
    peaks = []
    for max_iter in (SHORT, LONG):
        _, out, meter = _run(name, max_iter)
        assert not out.requires_grad and out.grad_fn is None
        assert meter.live == 0, f"{meter.live} bytes of saved tensors still held after the call"
        peaks.append(meter.peak)
    assert peaks[1] == peaks[0], f"saved-tensor peak {peaks[0]} B at {SHORT} iterations, {peaks[1]} B at {LONG}"


@pytest.mark.parametrize("name", SOLVERS)
def test_differentiable_true_trains_through_the_solver(name):
    """``differentiable=True``: every parameter gets a finite, non-zero gradient through the output. The graph is
    unrolled (it grows with the iterations), except GS-PnP's, one Jacobian-free step whatever ``max_iter``."""
    peaks = []
    for max_iter in (SHORT, LONG):
        solver, out, meter = _run(name, max_iter, differentiable=True)
        out.pow(2).sum().backward()
        grads = {n: p.grad for n, p in solver.named_parameters()}
        assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), grads
        assert sum(float(g.abs().sum()) for g in grads.values()) > 0
        peaks.append(meter.peak)
    if name == "gs_pnp":
        assert 0 < peaks[1] == peaks[0]
    else:
        assert peaks[1] > 1.5 * peaks[0] > 0


@pytest.mark.parametrize("name", SOLVERS)
def test_differentiable_must_be_a_bool(name):
    with pytest.raises(TypeError, match="differentiable"):
        _solver(name, 1, differentiable="False")


def test_published_tdv_weights_load_frozen_and_infer_without_a_graph():
    prior = TDV.from_checkpoint(GRAY)
    assert not any(p.requires_grad for p in prior.parameters())
    assert all(p.requires_grad for p in TDV.from_checkpoint(GRAY, trainable=True).parameters())
    with pytest.raises(TypeError, match="trainable"):
        TDV.from_checkpoint(GRAY, trainable="no")
    net = TDVNetwork.from_checkpoint(GRAY)
    assert not any(p.requires_grad for p in net.parameters())
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255))
    y = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    with SavedTensorMeter() as meter:
        out = net(y, physics)
    assert not out.requires_grad and meter.peak == 0
    trainable = TDVNetwork.from_checkpoint(GRAY, trainable=True)
    assert all(p.requires_grad for p in trainable.parameters())
    assert trainable(y, physics).requires_grad  # a network in training records its S steps
    with pytest.raises(TypeError, match="trainable"):
        TDVNetwork.from_checkpoint(GRAY, trainable=1)


def test_stopping_time_derivative_of_a_frozen_network():
    """The optimal stopping time is a question about published weights: J'(T) works on a frozen network, equals
    that of the same network trainable, and leaves it frozen."""
    frozen, trainable = TDVNetwork.from_checkpoint(GRAY), TDVNetwork.from_checkpoint(GRAY, trainable=True)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255))
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert frozen.stopping_time_derivative(y, physics, x) == pytest.approx(
        trainable.stopping_time_derivative(y, physics, x), rel=1e-5)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_gsdrunet_loaded_weights_are_frozen_a_random_initialisation_trainable(tmp_path):
    kwargs = {"in_channels": 1, "nb": 1, "nc": (4, 4, 4, 4)}
    path = tmp_path / "gsdrunet.pth"
    torch.save({"state_dict": dinv.models.GSDRUNet(out_channels=1, pretrained=None, **kwargs).state_dict()}, path)
    assert not any(p.requires_grad for p in GradientStepDenoiser.from_gsdrunet(path, **kwargs).parameters())
    assert all(p.requires_grad for p in GradientStepDenoiser.from_gsdrunet(path, trainable=True, **kwargs).parameters())
    assert all(p.requires_grad for p in GradientStepDenoiser.from_gsdrunet(None, **kwargs).parameters())
    with pytest.raises(TypeError, match="trainable"):
        GradientStepDenoiser.from_gsdrunet(path, trainable=0, **kwargs)

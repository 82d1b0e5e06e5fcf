"""deepinv_ext.analysis.eigenfunctions: nonlinear eigenpairs by accelerated projected gradient descent on the sphere.

The maths is checked where the answer is known: on a quadratic R(x) = <x, Qx>/2 of known spectrum the minimiser of R
on the sphere is the eigenvector of the smallest eigenvalue; on the Neumann Laplacian energy (invariant to constants)
the zero-mean minimiser is the slowest cosine. Then a 16x16 crop under the published TDV weights reaches the tolerance
of the paper in float32.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from deepinv.optim import Prior

from deepinv_ext.algorithms import NotConvergedWarning
from deepinv_ext.analysis.eigenfunctions import nonlinear_eigenfunction
from deepinv_ext.priors import TDV

DATA = Path(__file__).parent / "data"
SPECTRUM = (-1.0, -0.5, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # of Q, on (B, 1, 3, 3) images


class Quadratic(Prior):
    r""":math:`R(x) = \frac12\langle x, Qx\rangle`, :math:`Q = U\operatorname{diag}(q)U^\top` with a random orthogonal
    :math:`U` (columns: the eigenvectors), on ``(B, 1, 3, 3)`` images in float64."""

    def __init__(self, spectrum=SPECTRUM, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(spectrum)
        U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.register_buffer("U", U)
        self.register_buffer("Q", U @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ U.T)
        self.explicit_prior = True

    def eigenvector(self, i: int) -> torch.Tensor:
        return self.U[:, i].reshape(1, 1, 3, 3)

    def fn(self, x, *args, **kwargs):
        v = x.flatten(1)
        return 0.5 * (v * (v @ self.Q)).sum(dim=1)

    def grad(self, x, *args, **kwargs):
        return (x.flatten(1) @ self.Q).reshape(x.shape)


class WrongSign(Quadratic):
    """A ``grad`` that is minus the gradient of ``fn``."""

    def grad(self, x, *args, **kwargs):
        return -super().grad(x)


class NeumannDirichletEnergy(Prior):
    r""":math:`R(x) = \frac12(\|D_h x\|^2 + \|D_v x\|^2)` (forward differences, no boundary term): invariant to adding a
    constant; the gradient by deepinv's autograd default. On ``H x W`` images, ``W > H``, the smallest nonzero
    eigenvalue is :math:`2 - 2\cos(\pi/W)`, with the eigenvector :math:`\cos(\pi(j + 1/2)/W)` along the columns."""

    def fn(self, x, *args, **kwargs):
        return 0.5 * (x.diff(dim=-1).pow(2).sum(dim=(1, 2, 3)) + x.diff(dim=-2).pow(2).sum(dim=(1, 2, 3)))


def _random(shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_quadratic_minimiser_is_the_smallest_eigenvector():
    prior, x0 = Quadratic(), _random((1, 1, 3, 3))
    r = x0.norm()
    result = nonlinear_eigenfunction(prior, x0, tol=1e-10, max_iter=500)
    assert result.converged.item() and not result.stalled.item()
    assert result.residual.item() <= 1e-10
    assert result.eigenvalue.item() == pytest.approx(SPECTRUM[0], abs=1e-12)
    u = prior.eigenvector(0)
    sign = torch.sign((result.x * u).sum())
    torch.testing.assert_close(result.x, sign * r * u, rtol=0, atol=1e-9)
    torch.testing.assert_close(result.x.norm(), r, rtol=1e-14, atol=0)  # on the sphere
    assert result.energy.item() == pytest.approx(0.5 * SPECTRUM[0] * r.item() ** 2, rel=1e-12)
    e = result.energy_history[:, 0]
    assert len(e) == result.iterations.item() + 1 > 5
    assert bool((e.diff() <= 1e-13 * e.abs().max()).all()), "the energy increased along the iterates"
    assert result.residual_history[-1, 0].item() == result.residual.item()


def test_the_energy_never_increases_not_even_at_a_converged_momentum_point():
    """A momentum point that meets the tolerance is returned only if it is not above the last iterate."""
    prior = Quadratic((0.1, 0.2, 0.3, 1.0, 2.0, 3.0, 5.0, 8.0, 100.0))
    result = nonlinear_eigenfunction(prior, _random((8, 1, 3, 3), seed=0), tol=0.1, max_iter=500)
    assert result.converged.all()
    e = result.energy_history
    assert bool((e.diff(dim=0) <= 1e-13 * e.abs().max(dim=0).values).all())


def test_each_image_has_its_own_sphere_and_eigenvalue():
    prior = Quadratic()
    x0 = torch.cat([_random((1, 1, 3, 3), seed=2), 3 * prior.eigenvector(3), 0.1 * _random((1, 1, 3, 3), seed=3)])
    batch = nonlinear_eigenfunction(prior, x0, tol=1e-10, max_iter=500)
    assert batch.converged.all()
    torch.testing.assert_close(batch.x.flatten(1).norm(dim=1), x0.flatten(1).norm(dim=1), rtol=1e-14, atol=0)
    torch.testing.assert_close(batch.eigenvalue, torch.tensor([SPECTRUM[0], SPECTRUM[3], SPECTRUM[0]],
                                                              dtype=torch.float64), rtol=0, atol=1e-12)
    assert batch.iterations[1].item() == 0  # an eigenvector is an eigenvector from the start
    for b in range(3):  # each image as if alone
        alone = nonlinear_eigenfunction(prior, x0[b:b + 1], tol=1e-10, max_iter=500)
        assert alone.iterations.item() == batch.iterations[b].item()
        torch.testing.assert_close(alone.x[0], batch.x[b], rtol=0, atol=1e-12)


def test_zero_mean_search_finds_the_slowest_cosine():
    H, W = 4, 6
    x0 = _random((1, 1, H, W)) + 5.0  # a large mean: on the full sphere rho >= 0.98 at every non-stationary point
    result = nonlinear_eigenfunction(NeumannDirichletEnergy(), x0, tol=1e-9, max_iter=2000, zero_mean=True)
    assert result.converged.item()
    assert result.eigenvalue.item() == pytest.approx(2 - 2 * math.cos(math.pi / W), rel=1e-9)
    assert abs(result.x.mean().item()) < 1e-12
    torch.testing.assert_close(result.x.norm(), (x0 - x0.mean()).norm(), rtol=1e-14, atol=0)
    mode = torch.cos(math.pi * (torch.arange(W, dtype=torch.float64) + 0.5) / W).expand(1, 1, H, W)
    mode = mode / mode.norm() * result.x.norm()
    torch.testing.assert_close(result.x.abs(), mode.abs(), rtol=0, atol=1e-6)


def test_a_short_budget_warns_and_is_not_converged():
    with pytest.warns(NotConvergedWarning, match="1 reached max_iter=3"):
        result = nonlinear_eigenfunction(Quadratic(), _random((1, 1, 3, 3)), tol=1e-12, max_iter=3)
    assert not result.converged.item() and not result.stalled.item()
    assert result.iterations.item() == 3 and result.residual.item() > 1e-12
    assert result.energy_history.shape == result.residual_history.shape == (4, 1)


def test_a_gradient_of_the_wrong_sign_stalls_and_is_not_converged():
    with pytest.warns(NotConvergedWarning, match="stalled"):
        result = nonlinear_eigenfunction(WrongSign(), _random((1, 1, 3, 3)), tol=1e-6, max_iter=50)
    assert result.stalled.item() and not result.converged.item()
    assert result.iterations.item() == 1


def test_energy_and_grad_is_used_where_the_prior_has_it():
    class OneSweep(Quadratic):
        calls = 0

        def fn(self, x, *args, **kwargs):
            raise AssertionError("fn called although energy_and_grad exists")

        def energy_and_grad(self, x):
            OneSweep.calls += 1
            return Quadratic.fn(self, x), self.grad(x)

    result = nonlinear_eigenfunction(OneSweep(), _random((2, 1, 3, 3)), tol=1e-8)
    assert result.converged.all() and OneSweep.calls > 0


def test_autograd_gradients_leave_no_trace():
    """deepinv's default ``grad`` (autograd) marks its input as requiring grad: neither ``x0`` nor the result is."""
    prior = NeumannDirichletEnergy()
    x0 = torch.zeros(1, 1, 4, 6, dtype=torch.float64)
    x0[..., :3] = 1.0  # not an eigenvector: iterations run
    result = nonlinear_eigenfunction(prior, x0, tol=1e-6, zero_mean=True)
    assert result.converged.item() and result.iterations.item() > 0
    slow = result.x.clone()
    again = nonlinear_eigenfunction(prior, slow, tol=1e-6, zero_mean=True)  # an eigenvector: no iteration
    assert again.iterations.item() == 0
    for t in (x0, result.x, slow, again.x, again.energy):
        assert not t.requires_grad


def _crop(size: int) -> torch.Tensor:
    from PIL import Image

    img = np.asarray(Image.open(DATA / "camera_96.png").convert("L"), dtype=np.float32) / 255
    return torch.from_numpy(img[:size, :size].copy())[None, None]


def test_published_tdv_reaches_the_tolerance_in_float32():
    prior = TDV.from_checkpoint(DATA / "tdv" / "tdv3-3-25-f32-gray.pth")
    x0 = _crop(16)  # 140 iterations (a 32x32 crop: 240, 12 s)
    result = nonlinear_eigenfunction(prior, x0, tol=1e-3, max_iter=300, zero_mean=True)
    assert result.converged.item() and result.residual.item() <= 1e-3
    assert result.x.dtype == torch.float32
    torch.testing.assert_close(result.x.norm(), (x0 - x0.mean()).norm(), rtol=1e-5, atol=0)
    assert abs(result.x.mean().item()) < 1e-6


@pytest.mark.parametrize("kwargs, error, match", [
    ({"prior": object()}, TypeError, "prior must be a deepinv.optim.Prior"),
    ({"x0": [[1.0, 2.0]]}, TypeError, "x0 must be a torch.Tensor"),
    ({"x0": torch.ones(1, 1, 3, 3, dtype=torch.int64)}, TypeError, "real floating"),
    ({"x0": torch.ones(9, dtype=torch.float64)}, ValueError, "x0 must be a batch"),
    ({"x0": torch.ones(0, 1, 3, 3, dtype=torch.float64)}, ValueError, "at least one sample"),
    ({"x0": torch.full((1, 1, 3, 3), math.nan, dtype=torch.float64)}, ValueError, "finite"),
    ({"x0": torch.zeros(2, 1, 3, 3, dtype=torch.float64)}, ValueError, r"images \[0, 1\] are not"),
    ({"x0": torch.ones(1, 1, 3, 3, dtype=torch.float64), "zero_mean": True}, ValueError, "non-constant"),
    ({"tol": 0.0}, ValueError, "tol"),
    ({"tol": math.inf}, ValueError, "tol"),
    ({"max_iter": 10.0}, ValueError, "max_iter"),
    ({"max_iter": -1}, ValueError, "max_iter"),
    ({"lipschitz": 0.0}, ValueError, "lipschitz"),
    ({"zero_mean": 1}, TypeError, "zero_mean"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"backtracking": {"increase": 2.0}}, TypeError, "backtracking"),
])
def test_bad_input_is_refused(kwargs, error, match):
    call = {"prior": Quadratic(), "x0": _random((1, 1, 3, 3)), **kwargs}
    with pytest.raises(error, match=match):
        nonlinear_eigenfunction(call.pop("prior"), call.pop("x0"), **call)


def test_an_energy_not_per_image_is_refused():
    prior = Prior(lambda x, *args, **kwargs: 0.5 * x.pow(2).sum())
    with pytest.raises(ValueError, match="one energy per image"):
        nonlinear_eigenfunction(prior, _random((2, 1, 3, 3)))

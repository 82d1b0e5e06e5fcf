"""Tests of SpectralPnP: convergence to the solution of [A^T A + (tau/eta) r_tau(D)] x = A^T y, and its checks."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms import SpectralPnP
from deepinv_ext.spectral import NeumannFilter, ScalingFilter

SHAPE = (1, 8, 8)
N = 64


class MatrixDenoiser(dinv.models.Denoiser):
    """A linear denoiser given by a matrix (test helper)."""

    def __init__(self, M):
        super().__init__()
        self.register_buffer("M", M)

    def forward(self, x, sigma=None, **kwargs):
        return (x.reshape(x.shape[0], -1) @ self.M.T.to(x.dtype)).reshape(x.shape)


def _spd(lo, hi, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    lam = torch.linspace(lo, hi, N, dtype=torch.float64)
    return (Q * lam) @ Q.T


def _matrix_physics(m=40, seed=1):
    """A rank-deficient (m < N, so a kernel) matrix physics with ||A|| = 3."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, N, generator=g, dtype=torch.float64)
    A = 3 * A / torch.linalg.matrix_norm(A, ord=2)
    physics = dinv.physics.LinearPhysics(A=lambda x: x.reshape(x.shape[0], -1) @ A.T,
                                         A_adjoint=lambda y: (y @ A).reshape(y.shape[0], *SHAPE))
    return physics, A


def _solve(A, y, Rtau, alpha):
    return torch.linalg.solve(A.T @ A + alpha * Rtau, (y @ A).T).T.reshape(y.shape[0], *SHAPE)


@pytest.mark.parametrize("filt,tau,method,accel", [
    (ScalingFilter(), 0.3, "auto", "none"),
    (ScalingFilter(), 0.05, "auto", "fista"),
    (ScalingFilter(), 2.0, "lanczos", "none"),
    (ScalingFilter(), 0.3, "eig", "fista"),
    (NeumannFilter(2), 0.5, "auto", "none"),
    (NeumannFilter(4), 0.2, "chebyshev", "fista"),
])
def test_fixed_point_solves_the_linear_system(filt, tau, method, accel):
    M = _spd(0.05, 0.95)
    physics, A = _matrix_physics()
    x_true = torch.randn(2, *SHAPE, dtype=torch.float64)
    y = physics.A(x_true) + 0.05 * torch.randn(2, 40, dtype=torch.float64)
    model = SpectralPnP(MatrixDenoiser(M), filt, tau, method=method, acceleration=accel, tol=1e-11,
                        filter_tol=1e-12, max_iter=5000)
    x = model(y, physics)
    assert model.last_info["converged"]
    eta = model.last_info["stepsize"]
    assert eta <= 1.0 / 9.0 + 1e-12  # eta = 1 / ||A||^2 computed, ||A||^2 = 9
    lam, V = torch.linalg.eigh(M)
    Rtau = (V * filt.r(lam, tau)) @ V.T
    ref = _solve(A, y, Rtau, tau / eta)
    assert float((x - ref).norm() / ref.norm()) < 1e-7
    if isinstance(filt, ScalingFilter):  # the direct CG solve of the same system
        xd = model.solve_linear_system(y, physics, tol=1e-12)
        assert float((xd - ref).norm() / ref.norm()) < 1e-7


@pytest.mark.slow
def test_regularisation_converges_to_the_J_star_minimising_solution():
    # Theorem 5 on a small problem: tau ~ delta, x_hat(y_delta) -> x_dagger = argmin J*(x) s.t. A^T A x = A^T y
    M = _spd(0.05, 0.95)
    physics, A = _matrix_physics()
    lam, V = torch.linalg.eigh(M)
    Rstar = (V * ScalingFilter().r_star(lam)) @ V.T
    x_true = torch.randn(1, *SHAPE, dtype=torch.float64)
    y = physics.A(x_true)
    # x_dagger: minimise 1/2 <x, R x> subject to A x = y (A has full row rank): KKT system
    K = torch.cat([torch.cat([Rstar, A.T], 1), torch.cat([A, torch.zeros(40, 40, dtype=A.dtype)], 1)])
    x_dag = torch.linalg.solve(K, torch.cat([torch.zeros(N, dtype=A.dtype), y[0]]))[:N].reshape(1, *SHAPE)
    noise = torch.randn(1, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = noise / noise.norm()
    errors = []
    for delta in (1e-1, 1e-2, 1e-3):
        model = SpectralPnP(MatrixDenoiser(M), ScalingFilter(), tau=delta, acceleration="fista", tol=1e-12,
                            filter_tol=1e-12, max_iter=20000)
        x = model(y + delta * noise, physics)
        errors.append(float((x - x_dag).norm()))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0]


def test_clear_errors():
    physics, A = _matrix_physics()
    y = torch.randn(1, 40, dtype=torch.float64)
    nonsym = _spd(0.1, 0.9) + 0.05 * torch.randn(N, N, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64)
    with pytest.raises(ValueError, match="not symmetric"):
        SpectralPnP(MatrixDenoiser(nonsym), tau=0.1)(y, physics)
    with pytest.raises(ValueError, match="not contractive"):
        SpectralPnP(MatrixDenoiser(_spd(0.1, 1.2)), tau=0.1)(y, physics)
    with pytest.raises(ValueError, match="positive definite"):
        SpectralPnP(MatrixDenoiser(_spd(-0.1, 0.9)), tau=0.1)(y, physics)
    good = MatrixDenoiser(_spd(0.1, 0.9))
    with pytest.raises(ValueError, match="stepsize"):
        SpectralPnP(good, tau=0.1, stepsize=0.3)(y, physics)  # 2/||A||^2 = 2/9 < 0.3
    with pytest.raises(ValueError, match="tau"):
        SpectralPnP(good, tau=-1.0)
    with pytest.raises(ValueError, match="tau"):
        SpectralPnP(good, NeumannFilter(2), tau=1.5)(y, physics)
    with pytest.raises(TypeError, match="filter"):
        SpectralPnP(good, filter=lambda l: l)
    with pytest.raises(ValueError, match="max_dim"):
        SpectralPnP(good, tau=0.1, method="eig", max_eig_dim=10)(y, physics)

"""Tests of SpectralPnP: convergence to the solution of [A^T A + (tau/eta) r_tau(D)] x = A^T y, and its checks."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms import NotConvergedWarning, SpectralPnP
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
    # filter_tol 1e-11: the Chebyshev error bound (its coefficient tail) cannot certify less in float64
    model = SpectralPnP(MatrixDenoiser(M), filt, tau, method=method, acceleration=accel, tol=1e-11,
                        filter_tol=1e-11, max_iter=5000)
    x = model(y, physics)
    assert model.last_info["converged"] and model.converged.all() and model.converged.shape == (2,)
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


@pytest.mark.parametrize("kwargs,error,name", [
    ({"filter_tol": -1.0}, ValueError, "filter_tol"),  # made 1000 denoiser calls in 5 iterations
    ({"max_iter": 0}, ValueError, "max_iter"),  # raised UnboundLocalError
    ({"max_iter": 5.0}, ValueError, "max_iter"), ({"max_iter": True}, ValueError, "max_iter"),
    ({"tol": float("nan")}, ValueError, "tol"), ({"tau": float("inf")}, ValueError, "tau"),
    ({"tau": "0.1"}, TypeError, "tau"), ({"stepsize": float("nan")}, ValueError, "stepsize"),
    ({"step_factor": 2.5}, ValueError, "step_factor"), ({"method": "svd"}, ValueError, "method"),
    ({"sym_tol": 0.0}, ValueError, "sym_tol"), ({"max_eig_dim": 10.0}, ValueError, "max_eig_dim"),
    ({"check": "no"}, TypeError, "check"), ({"cache_norm": 1}, TypeError, "cache_norm"),
    ({"spectrum": (0.9, 0.1)}, ValueError, "spectrum"), ({"spectrum": (0.1, float("nan"))}, ValueError, "spectrum"),
    ({"eig": "eig"}, TypeError, "eig"), ({"sigma": -1.0}, ValueError, "sigma"),
])
def test_bad_constructor_arguments_are_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        SpectralPnP(MatrixDenoiser(_spd(0.1, 0.9)), **({"tau": 0.1} | kwargs))


def test_bad_measurements_are_refused_before_iterating():
    physics, A = _matrix_physics()
    model = SpectralPnP(MatrixDenoiser(_spd(0.1, 0.9)), tau=0.1, max_iter=3)
    y = torch.randn(2, 40, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"y of shape \(2, 40, 1\) does not fit"):
        model(y[..., None], physics)
    with pytest.raises(ValueError, match="y must hold at least one sample"):
        model(y[:0], physics)
    with pytest.raises(TypeError, match=r"y has dtype torch.float32 but SpectralPnP computes in torch.float64"):
        model(y.float(), physics)
    with pytest.raises(ValueError, match="x_init must have the shape"):
        model(y, physics, x_init=torch.zeros(2, 64, dtype=torch.float64))
    blur = dinv.physics.BlurFFT((1, 8, 8), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0)).double())
    with pytest.raises(ValueError, match=r"y must have the shape \(2, 1, 8, 8\)"):
        model(torch.rand(2, 1, 8, 1, dtype=torch.float64), blur)  # broadcasts against the blur


def test_convergence_is_reported_per_image():
    M = _spd(0.05, 0.95)
    physics, A = _matrix_physics()
    y = torch.randn(2, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y[1] = 0.0  # the second image is at its fixed point x = 0 from the start
    model = SpectralPnP(MatrixDenoiser(M), tau=0.3, tol=1e-10, filter_tol=1e-12, max_iter=3)
    with pytest.warns(NotConvergedWarning, match="1 of 2 images did not converge"):
        model(y, physics)
    assert model.converged.tolist() == [False, True] and not model.last_info["converged"]


def test_a_filter_application_that_misses_its_tolerance_is_not_convergence():
    """The outer iteration settles, but its filter applications are not within filter_tol (a Chebyshev bound cannot
    certify 1e-13 in float64): the images are not reported converged."""
    physics, A = _matrix_physics()
    y = torch.randn(2, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = SpectralPnP(MatrixDenoiser(_spd(0.05, 0.95)), NeumannFilter(2), tau=0.5, method="chebyshev",
                        tol=1e-3, filter_tol=1e-13, max_iter=50)
    with pytest.warns(NotConvergedWarning, match="missed filter_tol=1e-13"):
        model(y, physics)
    assert not model.converged.any() and model.last_info["last_change"] < 1e-3


def test_exact_eigendecomposition_of_a_float32_denoiser():
    """method="eig" assembles the float32 network's matrix in float32 and diagonalises it in float64 (it refused the
    float32 network with a dtype error when the columns were fed to it in float64)."""
    example = SpectralPnP.contract_example()
    model, physics = example["model"], example["physics"]
    model.method = "eig"
    x = example["dataset"][0]["x"][None]
    y = physics.A(x)
    out = model(y, physics)
    assert out.dtype == torch.float32 and out.shape == x.shape and torch.isfinite(out).all()
    eig = next(iter(model._eig.values()))
    assert eig.eigenvalues.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_step_is_deepinvs_seeded_power_method_without_touching_the_global_random_state(dtype):
    """eta = step_factor / (1.01 ||A||^2), ||A||^2 by the power method from seeded starts: the numbers deepinv's
    compute_sqnorm gives under the global seed 0, now from a generator of the solver's own."""
    if dtype == torch.float64:
        physics, _ = _matrix_physics()
    else:
        physics = dinv.physics.BlurFFT(SHAPE, filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0)))
    x = torch.zeros(2, *SHAPE, dtype=dtype)
    model = SpectralPnP(MatrixDenoiser(_spd(0.1, 0.9)), tau=0.3, step_factor=1.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rough = float(physics.compute_sqnorm(x[:1], max_iter=10, tol=0.0, verbose=False))
        expected = 1.01 * float(physics.compute_sqnorm(x[:1], max_iter=300, tol=1e-5 * rough, verbose=False))
    state = torch.random.get_rng_state()
    eta = model.compute_stepsize(physics, x)
    assert torch.equal(torch.random.get_rng_state(), state), "compute_stepsize touched the global random state"
    assert eta == 1.5 / expected

"""VariationalSolver: convergence on a quadratic problem, monotone energy with TDV, per-sample batching."""

import deepinv as dinv
import pytest
import torch
from deepinv.optim import Prior
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import VariationalSolver
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.priors import TDV


class Quadratic(Prior):
    """R(x) = mu/2 ||x||^2."""

    def __init__(self, mu: float):
        super().__init__()
        self.mu, self.explicit_prior = mu, True

    def fn(self, x, *args, **kwargs):
        return 0.5 * self.mu * x.pow(2).flatten(1).sum(1)

    def grad(self, x, *args, **kwargs):
        return self.mu * x


def setup(size=16, batch=2):
    physics = dinv.physics.BlurFFT((1, size, size), filter=gaussian_blur(sigma=(1.5, 1.5)).double(),
                                   noise_model=dinv.physics.GaussianNoise(0.02))
    data = RandomEllipsesDataset(batch, size, seed=0)
    x = torch.stack([data[i]["x"] for i in range(batch)]).double()
    torch.manual_seed(0)
    return physics, x, physics(x)


def test_converges_to_the_minimiser_of_a_quadratic_energy():
    physics, x, y = setup()
    w, mu = 20.0, 0.5
    solver = VariationalSolver(Quadratic(mu), weight=w, max_iter=500, cg_init_iter=2, tol=1e-10)
    out = solver(y, physics)
    # minimiser: (w A^T A + mu I) x = w A^T y, solved by deepinv's FFT prox: prox_{(w/mu) f}(0)
    exact = physics.prox_l2(torch.zeros_like(x), y, w / mu)
    assert (out - exact).abs().max() < 1e-6
    assert solver.monotone()
    assert solver.iterations < 500  # the stopping rule fired


def test_energy_decreases_monotonically_with_tdv():
    physics, x, y = setup()
    torch.manual_seed(1)
    prior = TDV(num_features=8, num_macro_blocks=1).double()
    solver = VariationalSolver(prior, weight=50.0, max_iter=25, cg_init_iter=5, lipschitz_init=1.0)
    with torch.no_grad():
        solver(y, physics)
    h = torch.stack(solver.history)
    assert solver.monotone()
    assert (h[1:] <= h[:-1]).all()
    assert (h[-1] < h[0]).all()
    # the gradient at the result is much smaller than at the CG initialisation
    g0 = solver.energy_and_grad(solver.initialise(y, physics), y, physics)[1].norm()
    assert solver.energy_and_grad(solver(y, physics), y, physics)[1].norm() < 0.5 * g0


def test_batch_equals_per_sample():
    physics, x, y = setup()
    prior = Quadratic(0.3)
    solver = VariationalSolver(prior, weight=10.0, max_iter=60, cg_init_iter=3)
    batch = solver(y, physics)
    single = torch.cat([solver(y[i:i + 1], physics) for i in range(2)])
    assert torch.allclose(batch, single, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="weight"):
        VariationalSolver(Quadratic(1.0), weight=0.0)
    with pytest.raises(TypeError, match="prior"):
        VariationalSolver(object())
    physics, x, y = setup()
    with pytest.raises(ValueError, match="finite"):
        VariationalSolver(Quadratic(1.0))(y * float("nan"), physics)


def test_super_resolution_with_tdv_decreases_the_energy():
    physics = dinv.physics.DownsamplingMatlab(factor=2)
    data = RandomEllipsesDataset(1, 32, seed=1)
    x = data[0]["x"][None].double()
    y = physics.A(x)
    torch.manual_seed(2)
    prior = TDV(num_features=8, num_macro_blocks=1).double()
    solver = VariationalSolver(prior, weight=100.0, max_iter=15, cg_init_iter=5)
    with torch.no_grad():
        out = solver(y, physics)
    assert out.shape == x.shape
    assert solver.monotone() and solver.history[-1] < solver.history[0]


def test_record_keeps_the_iterates_of_shorter_runs():
    """snapshots[k] is the iterate a solve with max_iter=k returns; budgets past the stop keep the final iterate."""
    physics, x, y = setup()
    prior = Quadratic(0.3)
    solver = VariationalSolver(prior, weight=10.0, max_iter=60, cg_init_iter=3, record=(0, 5, 20, 60))
    final = solver(y, physics)
    assert set(solver.snapshots) == {0, 5, 20, 60}
    torch.testing.assert_close(solver.snapshots[0], solver.initialise(y, physics))
    for k in (5, 20):
        short = VariationalSolver(prior, weight=10.0, max_iter=k, cg_init_iter=3)(y, physics)
        torch.testing.assert_close(solver.snapshots[k], short, rtol=0, atol=1e-12)
    assert not torch.equal(solver.snapshots[5], solver.snapshots[20])
    early = VariationalSolver(prior, weight=10.0, max_iter=500, cg_init_iter=3, tol=1e-4, record=(500,))
    out = early(y, physics)
    assert early.iterations < 500 and torch.equal(early.snapshots[500], out)
    torch.testing.assert_close(final, solver.snapshots[60])
    with pytest.raises(ValueError, match="record"):
        VariationalSolver(prior, max_iter=10, record=(11,))

"""VariationalSolver: convergence on a quadratic problem, monotone energy with TDV, per-sample batching."""

import deepinv as dinv
import pytest
import torch
from deepinv.optim import Prior
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import NotConvergedWarning, VariationalSolver
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.priors import TDV

# these tests run solvers on small budgets on purpose and check iterates, gradients or outputs; the tests that are
# about convergence assert the solvers' per-image `converged` flags (or expect the warning) themselves
pytestmark = pytest.mark.filterwarnings("ignore::deepinv_ext.algorithms.NotConvergedWarning")


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


class FlippedQuadratic(Quadratic):
    """A mutant prior: grad returns -grad of its fn."""

    def grad(self, x, *args, **kwargs):
        return -super().grad(x)


def _relative_gradient(solver, x, x0, y, physics):
    reference = VariationalSolver(solver.prior if not isinstance(solver.prior, FlippedQuadratic)
                                  else Quadratic(solver.prior.mu), weight=solver.weight)
    norm = lambda z: reference.energy_and_grad(z, y, physics)[1].flatten(1).norm(dim=1)  # noqa: E731
    return norm(x) / norm(x0)


@pytest.mark.parametrize("prior_name", ["quadratic", "tdv"])
def test_a_converged_solve_ends_at_a_stationary_point(prior_name):
    """||grad E(x)|| / ||grad E(x_0)|| is small where the solver says it converged (TDV: denoising, well posed)."""
    physics, x, y = setup()
    if prior_name == "tdv":
        torch.manual_seed(1)
        prior, weight, physics = TDV(num_features=8, num_macro_blocks=1).double(), 5.0, dinv.physics.Denoising()
        y = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    else:
        prior, weight = Quadratic(0.5), 20.0
    solver = VariationalSolver(prior, weight=weight, max_iter=300, cg_init_iter=2, tol=1e-7)
    with torch.no_grad():
        out = solver(y, physics)
        relative = _relative_gradient(solver, out, solver.initialise(y, physics), y, physics)
    assert solver.converged.shape == (2,) and solver.converged.all() and not solver.stalled.any()
    assert (relative < 1e-5).all(), relative


def test_a_prior_whose_gradient_has_the_wrong_sign_is_not_reported_converged():
    """The prior dominates, so with its gradient flipped no step lowers E: the solver stays at x_0 and says it
    stalled (the bug: the 8-ulp round-off allowance accepted tiny uphill steps, the relative change was 0, and the
    step rule called that convergence)."""
    physics, x, y = setup()
    solver = VariationalSolver(FlippedQuadratic(5.0), weight=1.0, max_iter=50, cg_init_iter=2, max_backtracking=100)
    with pytest.warns(NotConvergedWarning, match="2 stalled"):
        out = solver(y, physics)
    assert not solver.converged.any() and solver.stalled.all()
    torch.testing.assert_close(out, solver.initialise(y, physics), rtol=0, atol=0)
    assert torch.equal(solver.history[-1], solver.history[0])  # no step, uphill or not, was taken


def test_a_budget_too_small_warns_and_says_which_images():
    physics, x, y = setup()
    solver = VariationalSolver(Quadratic(0.5), weight=20.0, max_iter=2, cg_init_iter=0)
    with pytest.warns(NotConvergedWarning, match="2 reached max_iter=2"):
        solver(y, physics)
    assert solver.converged.tolist() == [False, False] and not solver.stalled.any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="weight"):
        VariationalSolver(Quadratic(1.0), weight=0.0)
    with pytest.raises(TypeError, match="prior"):
        VariationalSolver(object())
    physics, x, y = setup()
    with pytest.raises(ValueError, match="finite"):
        VariationalSolver(Quadratic(1.0))(y * float("nan"), physics)


@pytest.mark.parametrize("kwargs,error,name", [
    ({"max_iter": 10.0}, ValueError, "max_iter"), ({"max_iter": True}, ValueError, "max_iter"),
    ({"max_iter": -1}, ValueError, "max_iter"), ({"cg_init_iter": "3"}, ValueError, "cg_init_iter"),
    ({"weight": float("nan")}, ValueError, "weight"), ({"weight": float("inf")}, ValueError, "weight"),
    ({"weight": "1"}, TypeError, "weight"), ({"tol": -1e-5}, ValueError, "tol"),
    ({"lipschitz_init": 0.0}, ValueError, "lipschitz_init"), ({"increase": 1.0}, ValueError, "increase"),
    ({"decrease": float("nan")}, ValueError, "decrease"), ({"max_backtracking": 2.5}, ValueError, "max_backtracking"),
    ({"progress": "no"}, TypeError, "progress"), ({"record": 5}, ValueError, "record"),
])
def test_bad_constructor_arguments_are_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        VariationalSolver(Quadratic(1.0), **kwargs)


def test_bad_measurements_are_refused_before_iterating():
    physics, x, y = setup()
    solver = VariationalSolver(Quadratic(1.0), max_iter=5)
    with pytest.raises(ValueError, match=r"y must have the shape \(2, 1, 16, 16\)"):
        solver(y[..., :1], physics)  # (B, 1, N, 1) broadcasts against the blur: refused, not a full image
    with pytest.raises(ValueError, match="y must hold at least one sample"):
        solver(y[:0], physics)
    with pytest.raises(TypeError, match="y must be a real floating tensor"):
        solver(y.long(), physics)
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        solver(y.tolist(), physics)
    with pytest.raises(TypeError, match="physics must be a deepinv.physics.LinearPhysics"):
        solver(y, lambda v: v)
    with pytest.raises(ValueError, match="x_init must have the shape"):
        solver(y, physics, x_init=torch.zeros(2, 1, 16, 17, dtype=y.dtype))
    with pytest.raises(TypeError, match="x_init has dtype"):
        solver(y, physics, x_init=x.float())
    torch.manual_seed(0)
    tdv = VariationalSolver(TDV(num_features=4, num_macro_blocks=1), max_iter=2)  # float32 parameters
    with pytest.raises(TypeError, match=r"y has dtype torch.float64 but VariationalSolver computes in torch.float32"):
        tdv(y, physics)


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

"""VariationalSolver's checkable conditions: its stopping test as a method, and the prior capability it relies on
declared as a type (SmoothLearnedPrior) instead of probed."""

from __future__ import annotations

import deepinv as dinv
import torch
from deepinv.optim import Prior

from deepinv_ext.algorithms import VariationalSolver
from deepinv_ext.priors.smooth import SmoothLearnedPrior

F64 = torch.float64


class _Quadratic(Prior):
    """R(x) = 1/2 |x|^2, a deepinv Prior that is not a SmoothLearnedPrior."""

    def __init__(self):
        super().__init__()
        self.explicit_prior, self.calls = True, []

    def fn(self, x, *args, **kwargs):
        self.calls.append("fn")
        return 0.5 * x.pow(2).flatten(1).sum(1)

    def grad(self, x, *args, **kwargs):
        self.calls.append("grad")
        return x

    def energy_and_grad(self, x):  # a method of the same name is not a declared capability: never called
        raise AssertionError("energy_and_grad of a non-SmoothLearnedPrior was called")


class _SmoothQuadratic(SmoothLearnedPrior):
    def __init__(self):
        super().__init__()
        self.calls = []

    def fn(self, x, *args, **kwargs):
        return 0.5 * x.pow(2).flatten(1).sum(1)

    def energy_and_grad(self, x):
        self.calls.append("energy_and_grad")
        return self.fn(x), x


def _problem():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    return dinv.physics.Denoising(), x


def test_any_deepinv_prior_goes_through_fn_and_grad_a_smooth_learned_prior_through_energy_and_grad():
    physics, y = _problem()
    plain, smooth = _Quadratic(), _SmoothQuadratic()
    e_plain, g_plain = VariationalSolver(plain).energy_and_grad(y, y, physics)
    e_smooth, g_smooth = VariationalSolver(smooth).energy_and_grad(y, y, physics)
    assert plain.calls == ["fn", "grad"] and smooth.calls == ["energy_and_grad"]
    torch.testing.assert_close(e_plain, e_smooth)
    torch.testing.assert_close(g_plain, g_smooth)


def test_the_stopping_test_is_both_relative_changes_below_tol_per_image():
    solver = VariationalSolver(_Quadratic(), tol=1e-3)
    x = torch.ones(3, 4, dtype=F64)
    e = torch.full((3,), 2.0, dtype=F64)
    x_new = x * torch.tensor([1 + 5e-4, 1 + 2e-3, 1 + 5e-4], dtype=F64).view(3, 1)
    e_new = e * torch.tensor([1 - 5e-4, 1 - 5e-4, 1 - 2e-3], dtype=F64)
    assert solver.check_conv(x, x_new, e, e_new).tolist() == [True, False, False]


def test_a_converged_solve_ends_on_a_step_that_passes_the_stopping_test():
    physics, y = _problem()
    solver = VariationalSolver(_Quadratic(), weight=4.0, max_iter=500, tol=1e-8, cg_init_iter=0,
                               record=tuple(range(501)))
    with torch.no_grad():
        solver(y, physics)
    k = solver.iterations
    assert solver.converged.all() and k < 500
    h = solver.history
    assert solver.check_conv(solver.snapshots[k - 1], solver.snapshots[k], h[k - 1], h[k]).all()
    assert not solver.check_conv(solver.snapshots[0], solver.snapshots[1], h[0], h[1]).any()

"""Gradients through solvers reach every parameter of every smooth learned prior and match finite differences.

Solvers: our :class:`VariationalSolver` (unrolled accelerated gradient descent), and deepinv's
``unfolded_builder("PGD", ...)`` whose prior step is our prox (its inner solve unrolled), with only the prior
trainable or with a trainable stepsize as well; and a one-step :class:`deepinv.Trainer` run. Directional derivatives
along a random parameter direction are compared with central finite differences in float64 (printed with ``-s``).
"""

from __future__ import annotations

from collections.abc import Callable

import deepinv as dinv
import pytest
import torch
from deepinv.unfolded import unfolded_builder
from helpers_priors import PRIOR_NAMES, image_size, make_prior

from deepinv_ext.algorithms import VariationalSolver
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.priors import ProxConfig
from deepinv_ext.testing import check_reconstructor

# these tests run solvers on small budgets on purpose and check iterates, gradients or outputs; the tests that are
# about convergence assert the solvers' per-image `converged` flags (or expect the warning) themselves
pytestmark = pytest.mark.filterwarnings("ignore::deepinv_ext.algorithms.NotConvergedWarning")


def _problem(name: str) -> tuple[dinv.physics.LinearPhysics, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    h, w = image_size(name)
    physics = dinv.physics.BlurFFT((1, h, w), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0)).double())
    x = torch.rand(2, 1, h, w, dtype=torch.float64)
    return physics, physics(x), torch.randn(2, 1, h, w, dtype=torch.float64)


def _moving(prior: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parameters grad R depends on (an energy offset, e.g. the critic's last bias, moves no minimiser)."""
    named = dict(prior.named_parameters())
    g = prior.grad(x)
    used = torch.autograd.grad((g * torch.randn_like(g)).sum(), list(named.values()), allow_unused=True)
    return {n: p for (n, p), d in zip(named.items(), used) if d is not None}


def _directional_check(loss: Callable[[], torch.Tensor], params: dict[str, torch.Tensor], eps: float) -> float:
    """Every parameter gets a finite gradient; return the relative error of the directional derivative along a
    random direction against central finite differences."""
    grads = torch.autograd.grad(loss(), list(params.values()), allow_unused=True)
    missing = [n for n, g in zip(params, grads) if g is None]
    assert not missing, f"no gradient reached {missing}"
    assert all(torch.isfinite(g).all() for g in grads)
    torch.manual_seed(3)
    direction = [torch.randn_like(p) for p in params.values()]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))
    values = []
    with torch.no_grad():
        for sign in (1.0, -1.0):
            for p, d in zip(params.values(), direction):
                p.add_(sign * eps * d)
            values.append(float(loss()))
            for p, d in zip(params.values(), direction):
                p.sub_(sign * eps * d)
    fd = (values[0] - values[1]) / (2 * eps)
    return abs(analytic - fd) / abs(fd)


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_variational_solver_gradients_match_finite_differences(name):
    prior = make_prior(name)
    physics, y, w = _problem(name)
    solver = VariationalSolver(prior, weight=5.0, max_iter=4, cg_init_iter=2, tol=1e-14, differentiable=True)
    params = _moving(prior, physics.A_adjoint(y))
    err = _directional_check(lambda: (solver(y, physics) * w).sum(), params, eps=1e-5)
    print(f"\nVariationalSolver {name}: directional derivative relative error {err:.1e}")
    assert err < 1e-4


def _unfolded(prior: torch.nn.Module, trainable: tuple[str, ...]) -> torch.nn.Module:
    # trainable_params without "lambda": deepinv 0.5's cost_fn crashes on a trainable lambda
    # (docs/upstream/unfolded-builder-lambda.md)
    return unfolded_builder("PGD", params_algo={"stepsize": 0.8, "lambda": 1.0}, data_fidelity=dinv.optim.L2(),
                            prior=prior, max_iter=3, trainable_params=trainable).double()


@pytest.mark.parametrize("trainable", [(), ("stepsize",)], ids=["prior-only", "prior-and-stepsize"])
@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_unfolded_pgd_gradients_match_finite_differences(name, trainable):
    """Three unrolled PGD steps, each prior step our prox (inner solve to 1e-10, unrolled)."""
    prior = make_prior(name, prox_config=ProxConfig(tol=1e-10, max_iter=1000, warm_start=False))
    physics, y, w = _problem(name)
    model = _unfolded(prior, trainable)
    params = _moving(prior, physics.A_adjoint(y))
    params |= {n: p for n, p in model.named_parameters() if n.startswith("params_algo")}
    assert len(params) > len(trainable)
    # eps 1e-4: central differences (O(eps^2)) well above the noise of the inner tolerance
    err = _directional_check(lambda: (model(y, physics) * w).sum(), params, eps=1e-4)
    print(f"\nunfolded PGD {name} {trainable}: directional derivative relative error {err:.1e}")
    assert err < 1e-4


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_one_trainer_step_with_variational_solver(name):
    prior = make_prior(name, dtype=torch.float32)
    physics = dinv.physics.BlurFFT((1, 16, 16), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0)))
    before = {n: p.detach().clone() for n, p in prior.named_parameters()}
    check_reconstructor(VariationalSolver(prior, weight=20.0, max_iter=3, cg_init_iter=2, differentiable=True), physics,
                        RandomEllipsesDataset(2, 16, seed=0))
    moved = [n for n, p in prior.named_parameters() if not torch.equal(p, before[n])]
    assert moved, "the Trainer step changed no parameter of the prior"


@pytest.mark.parametrize("prior", [dinv.optim.prior.Tikhonov(), make_prior("ACR")], ids=["Tikhonov", "ACR"])
def test_deepinv_unfolded_builder_default_trainable_lambda_bug(prior):
    """deepinv 0.5.0: unfolded_builder's default trainable lambda (a 0-dim Parameter) crashes in cost_fn
    (``lambda.flatten(1, -1)``) for every explicit prior; see docs/upstream/unfolded-builder-lambda.md. If this test
    fails, deepinv fixed it: drop the workaround (trainable_params without "lambda")."""
    physics, y, _ = _problem("ACR")
    model = unfolded_builder("PGD", params_algo={"stepsize": 0.8, "lambda": 1.0}, data_fidelity=dinv.optim.L2(),
                             prior=prior, max_iter=2).double()
    with pytest.raises(IndexError, match="Dimension out of range"):
        model(y, physics)
    _unfolded(prior, ("stepsize",))(y, physics)  # the workaround runs


def _deq_error(name: str, max_iter: int, thres_conv: float) -> float:
    prior = make_prior(name, prox_config=ProxConfig(tol=1e-9, max_iter=500))
    physics, y, w = _problem(name)
    model = dinv.optim.PGD(prior=prior, data_fidelity=dinv.optim.L2(), stepsize=1.0, lambda_reg=1.0,
                           max_iter=max_iter, thres_conv=thres_conv, early_stop=True, trainable_params=[],
                           DEQ=dinv.optim.DEQConfig(max_iter_backward=max_iter))
    params = _moving(prior, physics.A_adjoint(y))
    assert params
    err = _directional_check(lambda: (model(y, physics) * w).sum(), params, eps=1e-4)
    print(f"\nDEQ PGD {name}: directional derivative relative error {err:.1e}")
    return err


@pytest.mark.parametrize("name", ["SFB", "NETT"])
def test_deq_pgd_implicit_gradients_match_finite_differences(name):
    """deepinv's PGD as a deep-equilibrium model (``DEQ=DEQConfig()``: forward to the fixed point without a graph,
    backward by the implicit-function fixed-point iteration through one more step, whose prior step is our prox
    with its implicit derivative; a warm-started prox that stops at once must still carry the right derivative)."""
    assert _deq_error(name, max_iter=100, thres_conv=1e-8) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["AR", "ACR"])
def test_deq_pgd_implicit_gradients_slowly_converging_priors(name):
    """AR and ACR converge linearly and slowly in PGD (about 600 iterations to 1e-9): the derivative is as accurate
    as the forward fixed point (TDV, slower still, is left to the unrolled test above)."""
    assert _deq_error(name, max_iter=2000, thres_conv=1e-9) < 2e-3

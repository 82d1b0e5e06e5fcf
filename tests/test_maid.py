"""Certified hypergradients and MAID (deepinv_ext.algorithms.maid) on the bilevel problem whose constants are known:
learning the weight lambda of smoothed total variation for denoising,

    E(x) = 1/2 ||x - y||^2 + lambda w sum phi_s(Dx),   phi_s(t) = sqrt(t^2 + s^2) - s,

with D the forward differences (||D||^2 <= 8), so that mu = 1, and in the parameter rho = log(lambda):
J = lambda grad R, L_J = lambda w ||D||^2 max phi'' = 8 lambda w / s and
L_H = lambda w ||D||^3 max |phi'''| = lambda w 8^1.5 (1.5 / 1.25^2.5) / s^2."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms import MAID, BilevelReconstructor, HypergradientBound, NotConvergedWarning
from deepinv_ext.priors import SparsifyingFilterBank

SMOOTHING, BATCH = 0.05, 2
PHYSICS = dinv.physics.Denoising()


def _tv() -> SparsifyingFilterBank:
    prior = SparsifyingFilterBank(num_filters=2, kernel_size=3, init_weight=1.0, smoothing=SMOOTHING)
    with torch.no_grad():
        d = torch.zeros(2, 1, 3, 3)
        d[:, 0, 1, 1] = -1.0
        d[0, 0, 1, 2] = d[1, 0, 2, 1] = 1.0
        prior.filters.weight.copy_(d)
    prior.requires_grad_(False)  # lambda alone is learned
    return prior.double()


def _constants(model: BilevelReconstructor) -> HypergradientBound:
    scale = model.regularizer.lam.item() * model.regularizer.prior.weight.item()
    return HypergradientBound(1.0, loss_lipschitz=1.0 / BATCH,
                              hessian_lipschitz=scale * 8**1.5 * 1.5 / 1.25**2.5 / SMOOTHING**2,
                              mixed_lipschitz=scale * 8 / SMOOTHING)


def _problem(size: int = 12):
    g = torch.Generator().manual_seed(1)
    x_true = torch.nn.functional.avg_pool2d(torch.rand(BATCH, 1, size, size, dtype=torch.float64, generator=g), 3,
                                            1, 1)
    return x_true, x_true + 0.1 * torch.randn(x_true.shape, dtype=torch.float64, generator=g)


def _model(lam: float) -> BilevelReconstructor:
    return BilevelReconstructor(_tv(), lam=lam, max_iter=20000).double()


def _exact_loss(lam: float, y, x_true) -> float:
    model = BilevelReconstructor(_tv(), lam=lam, grad_tol=1e-9, max_iter=20000).double()
    with torch.no_grad():
        return float(MAID.loss(model(y, PHYSICS), x_true))


def test_bound_is_above_the_true_hypergradient_error():
    """For every accuracy pair tried, the certified bound exceeds the distance to a reference hypergradient
    computed at 1e-13 (up to the reference's own bound); the ratios run from about 10 to 2000 (printed)."""
    x_true, y = _problem()
    reference = MAID(_model(0.05), _constants, eps=1e-10, delta=1e-12).hypergradient(y, PHYSICS, x_true)
    ratios = []
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        for delta in (1e-1, 1e-3):
            hg = MAID(_model(0.05), _constants, eps=eps, delta=delta).hypergradient(y, PHYSICS, x_true)
            error = float((hg.grad - reference.grad).norm())
            assert hg.eps <= eps and hg.delta <= delta
            assert error <= hg.bound + reference.bound, (eps, delta, error, hg.bound)
            ratios.append(hg.bound / error)
    print("bound / true error:", [f"{r:.0f}" for r in ratios], "reference bound", reference.bound)
    assert min(ratios) > 1


def test_backtracking_lowers_the_exact_loss_monotonically():
    """From a step size far too long (30) and loose accuracies (0.3), the certified sufficient decrease rejects the
    steps that would raise the exact upper-level loss: it never rises, and falls at every accepted step by at least
    the decrease the step certified."""
    x_true, y = _problem()
    model = _model(0.01)
    maid = MAID(model, _constants, eps=0.3, delta=0.3, step=30.0)
    exact = [_exact_loss(0.01, y, x_true)]
    for _ in range(8):
        record = maid.step(y, PHYSICS, x_true)
        exact.append(_exact_loss(model.regularizer.lam.item(), y, x_true))
        assert exact[-2] - exact[-1] >= record["decrease"] - 1e-9, (record, exact)
        assert exact[-1] < exact[-2] if record["accepted"] else exact[-1] == exact[-2], (record, exact)
    assert sum(record["backtracks"] for record in maid.history) >= 2
    assert exact[-1] < 0.7 * exact[0]


def test_no_step_is_taken_that_the_accuracy_cannot_certify():
    """At a fixed loose accuracy (eps = 0.3: the loss is known to within ||grad l|| eps, far more than one step can
    lower it), no step passes the certified test, whatever the step size: the parameters stay."""
    x_true, y = _problem()
    model = _model(0.01)
    maid = MAID(model, _constants, eps=0.3, delta=0.3, adaptive=False, max_backtracking=4)
    for _ in range(3):
        assert not maid.step(y, PHYSICS, x_true)["accepted"]
    assert model.regularizer.lam.item() == pytest.approx(0.01, rel=1e-12)


def test_adaptive_accuracy_needs_fewer_lower_level_iterations_than_a_fixed_tight_one():
    """The same 8 steps (all accepted) from the same start: the adaptive scheme (eps, delta from 0.1, loosened on
    success, tightened by the bound) ends at the exact loss of a fixed accuracy 1e-6 with fewer lower-level
    iterations (67 against 152 when written), tightening its accuracy on the way to the optimum."""
    x_true, y = _problem()
    runs = {}
    for adaptive, eps in ((True, 1e-1), (False, 1e-6)):
        model = _model(0.01)
        maid = MAID(model, _constants, eps=eps, delta=eps, adaptive=adaptive)
        for _ in range(8):
            assert maid.step(y, PHYSICS, x_true)["accepted"]
        runs[adaptive] = (_exact_loss(model.regularizer.lam.item(), y, x_true), maid.lower_iterations, maid.history)
    print("adaptive: loss {:.8f}, {} lower-level iterations; fixed 1e-6: loss {:.8f}, {}".format(*runs[True][:2],
                                                                                                 *runs[False][:2]))
    assert abs(runs[True][0] - runs[False][0]) <= 1e-4 * runs[False][0]  # 5e-6 apart when written
    assert runs[True][1] < 0.75 * runs[False][1]
    eps_history = [record["eps"] for record in runs[True][2]]
    assert eps_history[-1] < 0.1 * eps_history[0]
    targets = [record["accuracy"][0] for record in runs[True][2]]
    assert any(b > a for a, b in zip(targets, targets[1:]))  # loosened after a successful step


def test_bound_terms_are_the_first_order_worst_cases():
    """At an exact lower-level solve (eps = 0) the bound is ||J|| delta / mu, the worst case of ||J^T (q - q~)||
    over ||H (q - q~)|| <= delta; its slope in eps at 0 is the first-order sensitivity
    ||J|| (L_l + L_H Q0) / mu + L_J Q0, Q0 = ||grad l|| / mu; and the loss error is ||grad l|| eps + L_l eps^2 / 2."""
    bound = HypergradientBound(2.0, loss_lipschitz=0.5, hessian_lipschitz=3.0, mixed_lipschitz=7.0)
    assert bound(0.0, 0.4, loss_grad_norm=1.5, mixed_norm=5.0) == pytest.approx(5.0 * 0.4 / 2.0)
    h = 1e-7
    slope = (bound(h, 0.0, 1.5, 5.0) - bound(0.0, 0.0, 1.5, 5.0)) / h
    q0 = 1.5 / 2.0
    assert slope == pytest.approx(5.0 * (0.5 + 3.0 * q0) / 2.0 + 7.0 * q0, rel=1e-5)
    assert bound.loss_error(0.1, 1.5) == pytest.approx(0.15 + 0.25 * 0.01)


def test_maid_stops_at_a_certified_stationary_point():
    """With a tolerance, MAID stops once ||z|| + bound (an upper bound of the exact gradient norm) is below it, and
    warns when the steps run out first."""
    x_true, y = _problem()
    maid = MAID(_model(0.01), _constants, tol=1e-2)
    history = maid.run(y, PHYSICS, x_true, steps=30)
    assert maid.converged and history[-1]["stationary"] and len(history) < 30
    assert history[-1]["grad_norm"] + history[-1]["bound"] <= 1e-2
    with pytest.warns(NotConvergedWarning, match="certified stationary"):
        MAID(_model(0.01), _constants, tol=1e-2).run(y, PHYSICS, x_true, steps=1)


def test_a_run_resumes_from_its_state(tmp_path):
    """Three steps, a saved state, a fresh MAID that loads it and runs two more: the same lambda, accuracies and
    history as five uninterrupted steps."""
    x_true, y = _problem()
    whole = MAID(_model(0.01), _constants)
    whole.run(y, PHYSICS, x_true, steps=5)
    first = MAID(_model(0.01), _constants)
    first.run(y, PHYSICS, x_true, steps=3)
    torch.save(first.state_dict(), tmp_path / "maid.pt")
    resumed = MAID(_model(0.5), _constants)
    resumed.load_state_dict(torch.load(tmp_path / "maid.pt"))
    resumed.run(y, PHYSICS, x_true, steps=2)
    assert resumed.model.regularizer.lam.item() == whole.model.regularizer.lam.item()
    assert (resumed.eps, resumed.lower_iterations) == (whole.eps, whole.lower_iterations)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]


def test_refusals():
    with pytest.raises(ValueError, match="implicit"):
        MAID(BilevelReconstructor(_tv(), hypergradient="jfb"), _constants)
    with pytest.raises(ValueError, match="strong_convexity"):
        HypergradientBound(0.0)
    with pytest.raises(ValueError, match="eta"):
        MAID(_model(0.1), _constants, eta=1.5)

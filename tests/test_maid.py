"""Certified hypergradients and MAID (deepinv_ext.algorithms.maid) on the bilevel problem whose constants are known:
learning the weight lambda of smoothed total variation for denoising,

    E(x) = 1/2 ||x - y||^2 + lambda w sum phi_s(Dx),   phi_s(t) = sqrt(t^2 + s^2) - s,

with D the forward differences (SparsifyingFilterBank.total_variation), whose constants are those of
HypergradientBound.total_variation_denoising."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms import MAID, BilevelReconstructor, HypergradientBound, NotConvergedWarning
from deepinv_ext.priors import SparsifyingFilterBank

SMOOTHING, BATCH = 0.05, 2
PHYSICS = dinv.physics.Denoising()


def _tv() -> SparsifyingFilterBank:
    return SparsifyingFilterBank.total_variation(smoothing=SMOOTHING).double()  # frozen: lambda alone is learned


def _constants(model: BilevelReconstructor) -> HypergradientBound:
    return HypergradientBound.total_variation_denoising(model.regularizer.lam.item(),
                                                        model.regularizer.prior.weight.item(), SMOOTHING, BATCH)


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


def test_total_variation_constants_are_lipschitz_constants():
    """The constants of HypergradientBound.total_variation_denoising: the maximum of |phi_s'''| on a fine grid is the
    closed form used, and sampled pairs of points never exceed L_J (of J = lambda grad R) nor L_H (of the Hessian)."""
    lam, s = 0.3, SMOOTHING
    model = _model(lam)
    bound = _constants(model)
    t = torch.linspace(-5 * s, 5 * s, 20001, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad((torch.sqrt(t * t + s * s) - s).sum(), t, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), t, create_graph=True)
    (d3,) = torch.autograd.grad(d2.sum(), t)
    assert float(d3.abs().max()) == pytest.approx(1.5 / 1.25**2.5 / s**2, rel=1e-6)
    g = torch.Generator().manual_seed(5)
    regulariser = model.regularizer
    for _ in range(20):
        x, x2, v = (torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g) * 0.05 for _ in range(3))
        gap = float((x - x2).norm())
        assert float((regulariser.grad(x) - regulariser.grad(x2)).detach().norm()) <= bound.mixed_lipschitz * gap
        hv = []
        for point in (x, x2):
            z = point.clone().requires_grad_(True)
            (h,) = torch.autograd.grad(regulariser.grad(z), z, v)
            hv.append(h)
        assert float((hv[0] - hv[1]).norm()) <= bound.hessian_lipschitz * gap * float(v.norm())
    # near the worst case: one pixel, raised to where the third derivative of phi_s peaks (its four differences at
    # s / 2), moved alone
    bump = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    bump[0, 0, 4, 4] = 1.0
    hv = []
    for point in (0.5 * s * bump, (0.5 + 1e-5) * s * bump):
        z = point.clone().requires_grad_(True)
        (h,) = torch.autograd.grad(regulariser.grad(z), z, bump)
        hv.append(h)
    ratio = float((hv[0] - hv[1]).norm()) / (bound.hessian_lipschitz * 1e-5 * s)
    assert 0.1 < ratio <= 1.0, ratio  # 0.2 when written


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
    with pytest.raises(ValueError, match="nothing to learn"):
        MAID(BilevelReconstructor(_tv(), learn_lam=False), _constants)
    with pytest.raises(ValueError, match="eta"):
        MAID(_model(0.1), _constants, eta=1.5)

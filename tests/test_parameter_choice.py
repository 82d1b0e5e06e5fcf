"""Choices of lambda for the learned regularisers (issue 5): gradient balance (AR heuristic), discrepancy
principle, noise-norm estimates and the ground-truth-free stopping rule."""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms.parameter_choice import (
    RelativeChangeStop,
    discrepancy_lambda,
    gradient_balance_lambda,
    noise_norm_gaussian,
    noise_norm_log_poisson,
    select_lambda_and_budget,
)
from deepinv_ext.priors.nett import NETT


def test_gradient_balance_recovers_stationary_lambda():
    """If every ground truth is exactly stationary for lam0, the rule returns lam0."""
    torch.manual_seed(0)
    prior = NETT(width=4, depth=1).double()
    physics = dinv.physics.Denoising()
    lam0 = 0.37
    batches = []
    for _ in range(3):
        x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
        batches.append((x, x + lam0 * prior.grad(x)))  # A^T(Ax - y) = -lam0 grad R(x)
    assert gradient_balance_lambda(batches, physics, prior) == pytest.approx(lam0, rel=1e-10)
    # Lunz et al.'s rule (prior=None): the mean norm of A^T(Ax - y)
    expected = sum(float((y - x).flatten(1).norm(dim=1).sum()) for x, y in batches) / 6
    assert gradient_balance_lambda(batches, physics) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="pairs"):
        gradient_balance_lambda([], physics)


def test_discrepancy_principle_tikhonov():
    """A = I, R = |x|^2/2: x_lam = y/(1+lam), residual lam/(1+lam)|y|; the principle gives delta/(|y|-delta)."""
    y = torch.randn(1, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    physics = dinv.physics.Denoising()
    delta = 0.3 * float(y.norm())
    lam, trace = discrepancy_lambda(lambda lam: y / (1 + lam), y, physics, delta, steps=40)
    assert lam == pytest.approx(delta / (float(y.norm()) - delta), rel=1e-6)
    assert len(trace) == 40 and all(r > 0 for _, r in trace)
    with pytest.raises(ValueError, match="lam_range"):
        discrepancy_lambda(lambda lam: y, y, physics, delta, lam_range=(1.0, 0.1))


def test_noise_norms_match_simulated_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(4, 1, 40, 50)
    noise = dinv.physics.GaussianNoise(0.2, rng=g)
    measured = (noise(y) - y).flatten(1).norm(dim=1)
    torch.testing.assert_close(measured, noise_norm_gaussian(0.2, y), rtol=0.05, atol=0)
    N0, mu = 500.0, 0.05
    clean = torch.full((4, 1, 40, 50), 10.0)
    noisy = dinv.physics.LogPoissonNoise(N0=N0, mu=mu, rng=g)(clean)
    measured = (noisy - clean).flatten(1).norm(dim=1)
    torch.testing.assert_close(measured, noise_norm_log_poisson(noisy, N0, mu), rtol=0.1, atol=0)
    with pytest.raises(ValueError, match="sigma"):
        noise_norm_gaussian(-1.0, y)


def test_relative_change_stop():
    stop = RelativeChangeStop(tol=1e-3)
    x = torch.ones(2, 1, 4, 4)
    x_new = x.clone()
    x_new[1] += 0.1
    assert stop(x_new, x).tolist() == [True, False]
    e = torch.tensor([1.0, 1.0])
    assert stop(x, x, torch.tensor([0.5, 1.0]), e).tolist() == [False, True]
    with pytest.raises(ValueError, match="tol"):
        RelativeChangeStop(tol=math.nan)


def test_bad_arguments_are_named():
    from deepinv_ext.algorithms import AffineParameterRule

    y = torch.rand(2, 1, 4, 4)
    for call, error, name in (
            (lambda: AffineParameterRule(c="1"), TypeError, "c"),
            (lambda: AffineParameterRule(eps=float("nan")), ValueError, "eps"),
            (lambda: AffineParameterRule()(float("inf")), ValueError, "delta"),
            (lambda: AffineParameterRule()(torch.tensor([0.1, float("nan")])), ValueError, "delta"),
            (lambda: noise_norm_gaussian(float("inf"), y), ValueError, "sigma"),
            (lambda: noise_norm_log_poisson(y, float("inf"), 1.0), ValueError, "N0"),
            (lambda: noise_norm_log_poisson(y, 1e4, float("nan")), ValueError, "mu"),
            (lambda: discrepancy_lambda(lambda lam: y, y, None, 1.0, lam_range=(1e-3, float("inf"))), ValueError,
             "lam_range"),
            (lambda: discrepancy_lambda(lambda lam: y, y, None, 1.0, tau=float("inf")), ValueError, "tau"),
            (lambda: discrepancy_lambda(lambda lam: y, y, None, 1.0, steps=2.0), ValueError, "steps"),
            (lambda: discrepancy_lambda(lambda lam: y, y, None, -1.0), ValueError, "noise_norm"),
            (lambda: discrepancy_lambda(lambda lam: y, y, None, torch.ones(3)), ValueError, "noise_norm"),
            (lambda: RelativeChangeStop(tol="1e-6"), TypeError, "tol")):
        with pytest.raises(error, match=name):
            call()
    assert noise_norm_gaussian(0.1, y[:0]).shape == (0,)


def test_select_lambda_and_budget_scores_every_pair_of_one_solve_per_lambda():
    """Each lambda is solved once with all budgets recorded; the best (lambda, K) pair wins, not the best lambda at
    the largest budget (an early-stopped non-convex solve can beat the converged one)."""
    truth = torch.ones(1, 1, 2, 2)
    calls = []

    def solve(lam, budgets):  # lam = 1 converges to 0.9 truth; lam = 2 meets the truth at K = 2, then overshoots
        calls.append((lam, budgets))
        if lam == 1.0:
            return {K: truth * 0.9 * min(1.0, K / 4) for K in budgets}
        return {K: truth * min(1.0, K / 2) * (1 + max(0, K - 2) / 4) for K in budgets}

    lam, K, scores = select_lambda_and_budget(solve, lambda x: -(x - truth).abs().mean(), [1.0, 2.0], [1, 2, 8])
    assert calls == [(1.0, (1, 2, 8)), (2.0, (1, 2, 8))]
    assert (lam, K) == (2.0, 2) and scores[2.0][2] == 0.0 and scores[1.0][8] == pytest.approx(-0.1)
    assert set(scores) == {1.0, 2.0} and all(set(v) == {1, 2, 8} for v in scores.values())
    assert select_lambda_and_budget(solve, lambda x: 0.0, [2.0, 1.0], [8, 1])[:2] == (2.0, 8)  # ties: the first
    with pytest.raises(ValueError, match="at least one candidate"):
        select_lambda_and_budget(solve, lambda x: 0.0, [], [1])

"""Batched accelerated descent: each element converges on its own, monotone, and says when it did not."""

import pytest
import torch

from deepinv_ext.priors.accelerated import accelerated_descent
from deepinv_ext.priors.step_size import ArmijoStepSize, Backtracking


def _quadratics(curvature: torch.Tensor, centre: torch.Tensor):
    def energy(x):
        return 0.5 * (curvature.view(-1, 1) * (x - centre).pow(2)).sum(1)

    def energy_and_grad(x):
        return energy(x), curvature.view(-1, 1) * (x - centre)

    return energy, energy_and_grad


def test_each_element_reaches_its_own_minimiser_monotonically():
    curvature = torch.tensor([1.0, 30.0, 1000.0], dtype=torch.float64)
    centre = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    energy, energy_and_grad = _quadratics(curvature, centre)
    history = []
    result = accelerated_descent(energy, energy_and_grad, torch.zeros(3, 5, dtype=torch.float64), max_iter=500,
                                 lipschitz=1.0, grad_converged=lambda x, g: g.norm(dim=1) < 1e-10,
                                 callback=lambda k, x, e: history.append(e.clone()))
    assert result.converged.all()
    assert torch.allclose(result.x, centre, atol=1e-9)
    h = torch.stack(history)
    assert bool((h[1:] <= h[:-1] + 1e-12).all()), "the energy rose"
    assert result.iterations[0] < result.iterations[2], "a stiffer element needs more iterations"
    assert torch.all(result.lipschitz >= 0.5 * curvature * Backtracking().decrease)


def test_a_budget_too_small_is_not_reported_as_convergence():
    curvature = torch.tensor([1000.0], dtype=torch.float64)
    energy, energy_and_grad = _quadratics(curvature, torch.ones(1, 5, dtype=torch.float64))
    result = accelerated_descent(energy, energy_and_grad, torch.zeros(1, 5, dtype=torch.float64), max_iter=3,
                                 grad_converged=lambda x, g: g.norm(dim=1) < 1e-12)
    assert not result.converged.any() and int(result.iterations) == 3


def test_backtracking_demands_the_sufficient_decrease_not_any_decrease():
    """On E = c/2 |x|^2 the step 1/L meets E(x - g/L) <= E(x) - |g|^2/(2L) iff L >= c; plain decrease already
    holds for L > c/2. From L = 1 doubling, L = 512 lowers E but only L = 1024 is sufficient."""
    energy, energy_and_grad = _quadratics(torch.tensor([1000.0], dtype=torch.float64), torch.zeros(1, 4))
    x = torch.ones(1, 4, dtype=torch.float64)
    e, g = energy_and_grad(x)
    active = torch.ones(1, dtype=torch.bool)
    rule = ArmijoStepSize(torch.ones(1, dtype=torch.float64), Backtracking(increase=2.0))
    x_new, e_new, ok = rule.search(energy, x, e, g, active)
    L = rule.lipschitz
    assert ok.all() and float(L) == 1024.0
    assert bool((e_new <= e - 0.5 * g.pow(2).sum(1) / L).all())


def test_a_wrong_gradient_stalls_and_is_not_reported_as_convergence():
    """With the gradient's sign flipped no step lowers E: the elements stay put, stalled and not converged (the
    round-off allowance must not let a tiny uphill step at a huge L pass for a step, nor staying put for
    convergence)."""
    energy, energy_and_grad = _quadratics(torch.tensor([1.0, 50.0], dtype=torch.float64),
                                          torch.zeros(2, 5, dtype=torch.float64))

    def flipped(x):
        e, g = energy_and_grad(x)
        return e, -g

    x0 = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # room for L to grow until an uphill step hides in the round-off (2^100)
    result = accelerated_descent(energy, flipped, x0, max_iter=50, backtracking=Backtracking(max_backtracking=100),
                                 step_converged=lambda x, x_new, e, e_new: (x_new - x).norm(dim=1) < 1e-8)
    assert result.stalled.all() and not result.converged.any()
    assert torch.equal(result.x, x0) and (result.iterations == 0).all()


def test_below_the_round_off_of_the_energy_the_iteration_neither_stalls_nor_stops():
    """Started next to the minimiser of a quadratic with a non-zero minimum (a decrease far below the round-off of
    E) and with L_0 under the curvature, the iteration keeps taking the steps that keep E within its round-off until
    its gradient rule, 100 times below the gradient at which E's round-off hides the decrease, fires; it never
    calls that a stall."""
    curvature, centre = torch.tensor([3.0, 3.0], dtype=torch.float64), torch.ones(2, 5, dtype=torch.float64)

    def energy(x):
        return 0.5 * (curvature.view(-1, 1) * (x - centre).pow(2)).sum(1) + 1.0

    def energy_and_grad(x):
        return energy(x), curvature.view(-1, 1) * (x - centre)

    x0 = centre + torch.tensor([[1e-9], [1.0]], dtype=torch.float64)
    result = accelerated_descent(energy, energy_and_grad, x0, max_iter=500,
                                 grad_converged=lambda x, g: g.norm(dim=1) < 1e-9)
    assert result.converged.all() and not result.stalled.any()
    assert (result.x - centre).abs().max() < 1e-9


def test_a_predicted_decrease_within_the_precision_margin_keeps_the_iteration_going():
    """Started where the predicted decrease is 5 round-offs of E, on an energy with a ripple of 0.3 round-offs that
    its gradient ignores: a step showing the full decrease may fail on the ripple, but the point is not yet
    stationary for the gradient rule (1e-9, 200 times lower): smaller steps go on until the rule fires."""
    roundoff, curvature = 8 * torch.finfo(torch.float64).eps, 3.0
    direction = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    centre = torch.full((16, 5), 1 / 3, dtype=torch.float64)
    x0 = centre + direction / direction.norm(dim=1, keepdim=True) * (2 * 5 * roundoff / curvature) ** 0.5

    def energy(x):
        return 1.0 + 0.5 * curvature * (x - centre).pow(2).sum(1) + 0.3 * roundoff * torch.sin(1e9 * x).sum(1)

    def energy_and_grad(x):
        return energy(x), curvature * (x - centre)

    result = accelerated_descent(energy, energy_and_grad, x0, max_iter=300, lipschitz=curvature,
                                 grad_converged=lambda x, g: g.norm(dim=1) < 1e-9)
    assert result.converged.all() and not result.stalled.any()
    assert (curvature * (result.x - centre)).norm(dim=1).max() < 1e-9


def test_where_no_step_lowers_the_energy_the_predicted_decrease_tells_stationary_from_stalled():
    """E is lowest exactly at x_0 (any move raises it by 1e-3). A gradient predicting a decrease below 16 round-offs
    of E (1.8e-15) leaves x_0 stationary to working precision: converged. One predicting more has stalled."""
    x0 = torch.zeros(3, 3, dtype=torch.float64)

    def energy(x):
        return 1.0 + 1e-3 * (x != x0).any(dim=1).to(x.dtype)

    # |g|^2 / 2 at L = 1: 1.5e-18 (below one round-off), 8.9e-15 (five round-offs), 1.5 (far above)
    g = torch.tensor([[1e-9], [7.7e-8], [1.0]], dtype=torch.float64).expand(3, 3)

    def energy_and_grad(x):
        return energy(x), g

    result = accelerated_descent(energy, energy_and_grad, x0, max_iter=10,
                                 backtracking=Backtracking(max_backtracking=100))
    assert result.converged.tolist() == [True, True, False] and result.stalled.tolist() == [False, False, True]
    assert torch.equal(result.x, x0) and (result.iterations == 0).all()


def test_bad_arguments():
    energy, energy_and_grad = _quadratics(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2))
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    for kwargs, name in (({"max_iter": 2.0}, "max_iter"), ({"max_iter": -1}, "max_iter"),
                         ({"max_iter": 5, "lipschitz": 0.0}, "lipschitz"),
                         ({"max_iter": 5, "lipschitz": float("nan")}, "lipschitz")):
        with pytest.raises(ValueError, match=name):
            accelerated_descent(energy, energy_and_grad, x0, **kwargs)
    for kwargs, name in (({"increase": 1.0}, "increase"), ({"increase": float("inf")}, "increase"),
                         ({"decrease": 0.0}, "decrease"), ({"decrease": 1.5}, "decrease"),
                         ({"max_backtracking": 2.5}, "max_backtracking"),
                         ({"max_backtracking": True}, "max_backtracking")):
        with pytest.raises(ValueError, match=name):
            Backtracking(**kwargs)
    with pytest.raises(TypeError, match="increase"):
        Backtracking(increase="2")


def test_an_element_starting_at_a_nan_stops_at_once_not_converged():
    """A NaN in x0 makes its energy NaN: no step can be validated, so the element stops at its first iterate (the NaN
    visible), not converged, without spending max_iter x max_backtracking energy evaluations; the others go on."""
    curvature = torch.tensor([1.0, 2.0], dtype=torch.float64)
    energy, energy_and_grad = _quadratics(curvature, torch.ones(2, 5, dtype=torch.float64))
    calls = []

    def counted(x):
        calls.append(1)
        return energy(x)

    x0 = torch.zeros(2, 5, dtype=torch.float64)
    x0[0, 0] = float("nan")
    result = accelerated_descent(counted, energy_and_grad, x0, max_iter=200,
                                 grad_converged=lambda x, g: g.norm(dim=1) < 1e-10)
    assert result.not_finite.tolist() == [True, False] and result.converged.tolist() == [False, True]
    assert int(result.iterations[0]) == 0 and torch.isnan(result.x[0, 0])
    assert torch.allclose(result.x[1], torch.ones(5, dtype=torch.float64), atol=1e-9)
    assert len(calls) < 200

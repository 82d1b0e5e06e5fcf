"""Batched accelerated descent: each element converges on its own, monotone, and says when it did not."""

import torch

from deepinv_ext.priors.accelerated import Backtracking, accelerated_descent


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

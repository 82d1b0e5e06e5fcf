"""The per-image Armijo step-size rule shared by GS-PnP and the accelerated descent (VariationalSolver, priors' prox)."""

from __future__ import annotations

import pytest
import torch
from deepinv.optim import BacktrackingConfig

from deepinv_ext.algorithms import GradientStepPnP
from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet
from deepinv_ext.priors.step_size import ArmijoStepSize, Backtracking

F64 = torch.float64


def _rule(L, **kwargs):
    return ArmijoStepSize(torch.tensor(L, dtype=F64), Backtracking(**kwargs))


def test_the_armijo_test_demands_c_times_the_squared_gradient_over_L():
    """E(x+) <= E(x) - c |G|^2 / L: with |G|^2 = 4, L = 2, c = 0.25 the demanded decrease is 0.5, per image."""
    rule = _rule([2.0, 2.0, 2.0], sufficient_decrease=0.25, slack=0.0)
    e, gsq = torch.full((3,), 10.0, dtype=F64), torch.full((3,), 4.0, dtype=F64)
    e_new = torch.tensor([9.5, 9.5 + 1e-9, 9.0], dtype=F64)
    stationary = torch.zeros(3, dtype=torch.bool)
    assert rule.accepts(e, e_new, gsq, stationary).tolist() == [True, False, True]


def test_the_slack_allows_round_offs_of_the_energy_and_only_them():
    e, gsq = torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64)
    roundoff = 8 * torch.finfo(F64).eps
    e_new = torch.tensor([1 + 0.5 * roundoff, 1 + 2 * roundoff], dtype=F64)
    stationary = torch.ones(2, dtype=torch.bool)  # gsq = 0: nothing to show
    assert _rule([1.0, 1.0], slack=1.0).accepts(e, e_new, gsq, stationary).tolist() == [True, False]
    assert _rule([1.0, 1.0], slack=0.0).accepts(e, e_new, gsq, stationary).tolist() == [False, False]


def test_a_step_whose_predicted_decrease_is_below_the_round_off_passes_only_at_a_stationary_point():
    """P = |G|^2/(2L) below the round-off of E: the energy cannot show it, so the candidate is refused unless x is
    stationary to working precision."""
    rule = _rule([1.0, 1.0], slack=1.0)
    e = torch.ones(2, dtype=F64)
    gsq = torch.full((2,), 1e-20, dtype=F64)
    assert not rule.visible(gsq, e).any()
    ok = rule.accepts(e, e, gsq, torch.tensor([False, True]))
    assert ok.tolist() == [False, True]


def test_backtrack_and_relax_change_only_the_images_asked():
    rule = _rule([1.0, 1.0, 1.0], increase=4.0, decrease=0.5)
    rule.backtrack(torch.tensor([True, False, True]))
    rule.relax(torch.tensor([True, True, False]))
    assert rule.lipschitz.tolist() == [2.0, 0.5, 4.0]
    torch.testing.assert_close(rule.step, 1 / rule.lipschitz)


def test_the_search_stops_each_image_at_its_own_step():
    """E_b(x) = c_b/2 |x|^2: from L = 1 doubling, the first sufficient L is c_b (a power of two here)."""
    curvature = torch.tensor([1.0, 8.0, 64.0], dtype=F64)

    def energy(x):
        return 0.5 * (curvature.view(-1, 1) * x.pow(2)).sum(1)

    x = torch.ones(3, 4, dtype=F64)
    rule = _rule([1.0, 1.0, 1.0])
    x_new, e_new, ok = rule.search(energy, x, energy(x), curvature.view(-1, 1) * x, torch.ones(3, dtype=torch.bool))
    assert ok.all() and rule.lipschitz.tolist() == curvature.tolist()
    assert torch.equal(e_new, torch.zeros(3, dtype=F64))


@pytest.mark.parametrize("kwargs,name", [({"sufficient_decrease": 1.0}, "sufficient_decrease"),
                                         ({"sufficient_decrease": -0.1}, "sufficient_decrease"),
                                         ({"slack": -1.0}, "slack"), ({"increase": 1.0}, "increase")])
def test_bad_constants_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Backtracking(**kwargs)
    with pytest.raises(TypeError, match="backtracking"):
        ArmijoStepSize(torch.ones(1), BacktrackingConfig())


def test_gs_pnp_steps_by_the_rule_with_its_backtracking_constants():
    """GS-PnP's tau_k is the rule's 1/L: gamma is the Armijo constant, eta the shrink factor, no round-off slack and
    no relaxation; without backtracking the step stays fixed."""
    torch.manual_seed(0)
    denoiser = GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=4, depth=2))
    model = GradientStepPnP(denoiser, lambda_=2.0, sigma_denoiser=0.05, stepsize=3.0,
                            backtracking=BacktrackingConfig(gamma=0.3, eta=0.25, max_iter=7))
    rule = model.step_size(torch.zeros(2, 1, 8, 8))
    bt = rule.backtracking
    assert (bt.sufficient_decrease, bt.increase, bt.decrease, bt.slack, bt.max_backtracking) == (0.3, 4.0, 1.0, 0.0, 7)
    torch.testing.assert_close(rule.step, torch.full((2,), 3.0))
    fixed = GradientStepPnP(denoiser, lambda_=2.0, sigma_denoiser=0.05, backtracking=False).step_size(torch.zeros(1, 1))
    assert fixed.backtracking.max_backtracking == 0

"""The sensitivity bound of Theorem 3.2 of the TDV paper (deepinv_ext.analysis.sensitivity): the Gronwall recursion,
the bound against the exact error of two linear flows (quadratic regularisers, computed here with matrices), its
equality cases, two small TDV networks, and bad input."""

from __future__ import annotations

import copy

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms import TDVNetwork
from deepinv_ext.analysis.sensitivity import gronwall_bound, tdv_sensitivity
from deepinv_ext.priors import TDV

SIDE = 6  # images 1 x 6 x 6: N = 36


class QuadraticR(TDV):
    """R(x) = 1/2 <x, Q x> on flattened images: a test double (TDVNetwork only calls ``grad`` and
    ``check_input`` of its prior), so that both flows are linear and computed exactly below."""

    def __init__(self, Q: torch.Tensor) -> None:
        super().__init__(num_features=1, num_scales=2, num_macro_blocks=1)
        self.register_buffer("Q", Q)

    def grad(self, x, *args, **kwargs):
        return (x.flatten(1) @ self.Q).view_as(x)


def linear_net(Q, T, lmbda, steps=6):
    return TDVNetwork(QuadraticR(Q), steps=steps, T=T, lmbda=lmbda, sigma_train=0.1).double()


def exact_flow(Q, T, lmbda, z, steps=6):
    """x_0 = z, x_{k+1} = ((I - t Q) x_k + tau z) / (1 + tau) (denoising), each image a row."""
    t, tau = T / steps, lmbda / steps
    M = (torch.eye(Q.shape[0], dtype=Q.dtype) - t * Q) / (1 + tau)
    xs = [z]
    for _ in range(steps):
        xs.append(xs[-1] @ M + tau / (1 + tau) * z)  # M is symmetric
    return xs, M, tau / (1 + tau) * z


def symmetric(seed, shift):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(SIDE**2, SIDE**2, generator=g, dtype=torch.float64)
    return (G + G.T) / 4 - shift * torch.eye(SIDE**2, dtype=torch.float64)  # indefinite: I - tQ expands some modes


def denoising(sigma):
    return dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma)).to(torch.float64)  # sigma in float64 too


def noisy(batch=2, side=SIDE, sigma=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, side, side, generator=g, dtype=torch.float64)
    return x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)


def test_gronwall_bound_is_the_unrolled_sum():
    g = torch.Generator().manual_seed(1)
    deltas = torch.rand(5, 3, generator=g, dtype=torch.float64)
    q = 0.5 + torch.rand(3, generator=g, dtype=torch.float64)
    b = gronwall_bound(deltas, q)
    assert b.shape == (6, 3) and torch.equal(b[0], torch.zeros(3, dtype=torch.float64))
    for k in range(1, 6):
        assert torch.allclose(b[k], sum(q ** (k - 1 - r) * deltas[r] for r in range(k)), rtol=1e-14)
    per_step = 0.5 + torch.rand(5, 3, generator=g, dtype=torch.float64)  # q_k: b_2 = q_1 delta_0 + delta_1
    assert torch.allclose(gronwall_bound(deltas, per_step)[2], per_step[1] * deltas[0] + deltas[1], rtol=1e-14)
    assert gronwall_bound(torch.tensor([1.0, 2.0]), 0.0).tolist() == [0.0, 1.0, 2.0]


def test_bound_holds_for_two_linear_flows_computed_exactly():
    Q_a, Q_b = symmetric(0, 0.5), symmetric(1, 0.3)
    (T_a, l_a), (T_b, l_b) = (0.375, 0.75), (0.25, 1.5)  # exact in float32, as the parameters start
    y = noisy()
    res = tdv_sensitivity(linear_net(Q_a, T_a, l_a), linear_net(Q_b, T_b, l_b), y, denoising(0.2))
    z = 0.5 * y.flatten(1)  # the flows run at sigma_train = 0.1: z = (0.1 / 0.2) y
    xs, M_a, c_a = exact_flow(Q_a, T_a, l_a, z)
    xts, _, _ = exact_flow(Q_b, T_b, l_b, z)
    errors = torch.stack([(x - xt).norm(dim=1) for x, xt in zip(xs, xts)]) / 0.5
    deltas = torch.stack([(xt @ M_a + c_a - xt_next).norm(dim=1) for xt, xt_next in zip(xts, xts[1:])]) / 0.5
    secants = torch.stack([((x - xt) @ Q_a).norm(dim=1) / (x - xt).norm(dim=1) for x, xt in zip(xs[1:-1], xts[1:-1])])
    L = secants.max(dim=0).values
    q = (1 + T_a / 6 * L) / (1 + l_a / 6)
    bound = torch.stack([sum((q ** (k - 1 - r) * deltas[r] for r in range(k)), torch.zeros(2, dtype=torch.float64))
                         for k in range(7)])
    assert torch.allclose(res.observed, errors, rtol=1e-12)
    assert torch.allclose(res.deltas, deltas, rtol=1e-12)
    assert torch.allclose(res.lipschitz, L, rtol=1e-12)
    assert torch.allclose(res.bound, bound, rtol=1e-12)
    q_k = (1 + T_a / 6 * torch.cat([torch.zeros(1, 2, dtype=torch.float64), secants])) / (1 + l_a / 6)
    stepwise = torch.stack([sum((q_k[r + 1:k].prod(dim=0) * deltas[r] for r in range(k)),
                                torch.zeros(2, dtype=torch.float64)) for k in range(7)])
    assert torch.allclose(res.bound_stepwise, stepwise, rtol=1e-12)
    assert (res.bound_stepwise >= res.observed * (1 - 1e-12)).all() and (res.bound_stepwise <= res.bound).all()
    G_a = torch.eye(SIDE**2, dtype=torch.float64) - T_a / 6 * Q_a  # the gradient step of flow a
    rho = torch.stack([((x - xt) @ G_a).norm(dim=1) / (x - xt).norm(dim=1) for x, xt in zip(xs[1:-1], xts[1:-1])])
    assert torch.allclose(res.expansions[1:], rho, rtol=1e-12) and (res.expansions[0] == 0).all()
    q_loc = torch.cat([torch.zeros(1, 2, dtype=torch.float64), rho]) / (1 + l_a / 6)
    local = torch.stack([sum((q_loc[r + 1:k].prod(dim=0) * deltas[r] for r in range(k)),
                             torch.zeros(2, dtype=torch.float64)) for k in range(7)])
    assert torch.allclose(res.bound_local, local, rtol=1e-12)
    assert (res.bound_local >= res.observed * (1 - 1e-12)).all() and (res.bound_local <= res.bound_stepwise).all()
    assert (res.bound >= res.observed * (1 - 1e-12)).all() and (res.bound[2:] > res.observed[2:]).all()
    assert (res.lipschitz <= torch.linalg.matrix_norm(Q_a, ord=2)).all()  # the global constant bounds the local one
    assert torch.allclose(res.observed_rmse, errors / SIDE, rtol=1e-12)
    assert torch.allclose(res.bound_rmse, bound / SIDE, rtol=1e-12)


def test_bound_is_attained_when_every_error_is_aligned():
    """R = -a/2 |x|^2 and -b/2 |x|^2 from a positive image: every state is a positive multiple of z, e_k and
    delta_k point the same way and the secant of grad R_a is exactly a, so each inequality is an equality."""
    eye = torch.eye(SIDE**2, dtype=torch.float64)
    net_a, net_b = linear_net(-2.0 * eye, 0.4, 0.9), linear_net(-1.0 * eye, 0.3, 0.9)
    y = torch.rand(2, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1
    res = tdv_sensitivity(net_a, net_b, y, denoising(0.1))
    assert torch.allclose(res.lipschitz, torch.full((2,), 2.0, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(res.bound, res.observed, rtol=1e-12) and (res.observed[1:] > 0).all()
    assert torch.allclose(res.bound_split, res.observed, rtol=1e-12)  # t_a >= t_b and a >= b: the split is tight too
    assert torch.allclose(res.bound_stepwise, res.observed, rtol=1e-12)
    assert torch.allclose(res.bound_local, res.observed, rtol=1e-12)


@pytest.mark.parametrize("which", ["T", "lmbda", "R"])
def test_split_delta_is_exact_when_one_parameter_differs(which):
    """Denoising, so P_tau is a multiple of I: with only T (or only lambda, or only R) differing, the split estimate
    of delta_k is reached (each of its three terms checked alone)."""
    Q_a = symmetric(0, 0.5)
    Q_b, T_b, l_b = {"T": (Q_a, 0.1, 0.8), "lmbda": (Q_a, 0.3, 2.0), "R": (symmetric(1, 0.3), 0.3, 0.8)}[which]
    res = tdv_sensitivity(linear_net(Q_a, 0.3, 0.8), linear_net(Q_b, T_b, l_b), noisy(), denoising(0.1))
    assert torch.allclose(res.deltas_split, res.deltas, rtol=1e-12) and (res.deltas > 0).all()


def tiny_net(seed, T, lmbda, steps=5):
    torch.manual_seed(seed)
    return TDVNetwork(TDV(num_features=4, num_macro_blocks=1), steps=steps, T=T, lmbda=lmbda).double()


def test_first_step_is_an_equality_and_equal_networks_give_zero():
    net_a, net_b = tiny_net(0, 0.05, 0.5), tiny_net(1, 0.03, 0.9)
    physics, y = denoising(15 / 255), noisy(side=24, sigma=15 / 255)  # rescaled by 25/15
    res = tdv_sensitivity(net_a, net_b, y, physics)
    assert torch.allclose(res.observed[1], res.deltas[0], rtol=1e-12) and (res.observed[1] > 0).all()
    assert torch.allclose(res.ratio[0], torch.ones(2, dtype=torch.float64), rtol=1e-12)
    same = tdv_sensitivity(net_a, copy.deepcopy(net_a), y, physics)
    for v in (same.observed, same.bound, same.bound_split, same.bound_stepwise, same.bound_local, same.deltas,
              same.secants, same.expansions):
        assert v.abs().max() < 1e-12


@pytest.mark.parametrize("physics", [denoising(25 / 255), dinv.physics.Inpainting(
    (1, 24, 24), mask=0.7, noise_model=dinv.physics.GaussianNoise(25 / 255), rng=torch.Generator().manual_seed(0))],
                         ids=["denoising", "inpainting"])
def test_bound_holds_for_two_small_tdv_networks(physics):
    physics = physics.to(torch.float64)
    net_a, net_b = tiny_net(0, 0.08, 0.5, steps=8), tiny_net(1, 0.04, 1.2, steps=8)
    y = physics(noisy(side=24, sigma=0.0))
    res = tdv_sensitivity(net_a, net_b, y, physics)
    assert res.observed.shape == res.bound.shape == (9, 2) and res.deltas.shape == (8, 2)
    assert (res.observed[1:] > 0).all()
    assert (res.bound >= res.observed * (1 - 1e-12)).all()
    assert (res.bound_split >= res.bound * (1 - 1e-12)).all() and (res.lipschitz > 0).all()
    assert (res.bound_stepwise >= res.observed * (1 - 1e-12)).all() and (res.bound_stepwise <= res.bound).all()
    assert (res.bound_local >= res.observed * (1 - 1e-12)).all() and (res.bound_local <= res.bound_stepwise).all()
    assert not res.bound.requires_grad  # no autograd graph, though the networks are trainable


def test_bad_input():
    net = tiny_net(0, 0.05, 0.5)
    y, physics = noisy(side=24), denoising(0.1)
    with pytest.raises(TypeError, match="net_b must be a deepinv_ext.algorithms.TDVNetwork"):
        tdv_sensitivity(net, net.R, y, physics)
    with pytest.raises(ValueError, match="same number of steps S, got 5 and 6"):
        tdv_sensitivity(net, tiny_net(1, 0.05, 0.5, steps=6), y, physics)
    other = tiny_net(1, 0.05, 0.5)
    other.sigma_train = 50 / 255
    with pytest.raises(ValueError, match="must share sigma_train"):
        tdv_sensitivity(net, other, y, physics)
    with pytest.raises(TypeError, match="dtype"):
        tdv_sensitivity(net, tiny_net(1, 0.05, 0.5), y.float(), physics)
    with pytest.raises(ValueError, match="finite"):
        gronwall_bound(torch.tensor([1.0, -1.0]), 1.0)
    with pytest.raises(ValueError, match="finite"):
        gronwall_bound(torch.ones(3), float("nan"))
    with pytest.raises(ValueError, match="step dimension"):
        gronwall_bound(torch.tensor(1.0), 1.0)
    with pytest.raises(ValueError, match="do not broadcast"):
        gronwall_bound(torch.ones(4, 3), torch.ones(2))
    with pytest.raises(TypeError, match="real floating tensor"):
        gronwall_bound(torch.ones(3, dtype=torch.int64), 1.0)

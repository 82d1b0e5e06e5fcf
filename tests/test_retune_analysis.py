"""Lipschitz and Jacobian-free analysis of fixed-point layers (algorithms/retune/jacobian.py) and the contractivity
penalty (losses/lipschitz.py)."""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from retune_helpers import ScaleDenoiser, noisy_data, wavelet_layer

from deepinv_ext.algorithms import (
    PnPForwardBackwardLayer,
    ReTune,
    jacobian_free_error,
    layer_lipschitz,
)
from deepinv_ext.losses import LipschitzPenalty


def test_lipschitz_estimate_on_an_analytically_known_layer():
    # T(x) = c * (x - gamma * D^2 x + gamma * D y) with A = diag(d): its Jacobian is c * diag(1 - gamma d^2)
    g = torch.Generator().manual_seed(1)
    d = 0.5 + 0.5 * torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    d[0, 0, 3, 4], d[1, 0, 1, 1] = 0.2, 0.1
    physics = dinv.physics.LinearPhysics(A=lambda x: d * x, A_adjoint=lambda x: d * x)
    c, step = 1.3, 0.9
    layer = PnPForwardBackwardLayer(ScaleDenoiser(c), step=step, data_lipschitz=1.0)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    y = physics.A(torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64))
    exact = c * (1 - step * d**2).abs().flatten(1).max(dim=1).values
    est = layer_lipschitz(layer, x, y, physics, n_iter=200, tol=1e-12, generator=g)
    torch.testing.assert_close(est, exact, rtol=1e-6, atol=0)


def test_lipschitz_below_analytical_bound_and_jacobian_free_error_below_rho_to_the_L():
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x, y = noisy_data(physics)
    layer = wavelet_layer(lam=0.05, step=0.6)  # prox o (1 - 0.6) Id: contraction 0.4
    model = ReTune(layer, depth=2, restarts=0, tol=1e-12, max_restarts=200).eval()
    x_star = model(y, physics)
    rho = float(layer_lipschitz(layer, x_star, y, physics, n_iter=100).max())
    assert rho <= layer.lipschitz_bound() + 1e-9 and rho <= 0.4 + 1e-9
    grad_out = x_star - x
    errors = [jacobian_free_error(layer, x_star, y, physics, grad_out, depth) for depth in (1, 2, 4)]
    for depth, err in zip((1, 2, 4), errors):
        assert err <= rho**depth * (1 + 1e-6)
    assert errors[0] > errors[1] > errors[2] > 0


def test_lipschitz_penalty_value_and_gradient():
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x, y = noisy_data(physics)
    c, step = 3.0, 0.5  # Jacobian c (1 - step) Id: norm 1.5
    model = ReTune(PnPForwardBackwardLayer(ScaleDenoiser(c), step=step, train_denoiser=True, train_step=False,
                                           train_sigma=False),
                   depth=2, restarts=1)
    penalty = LipschitzPenalty(weight=2.0, eps=0.05, max_iter=20)
    value = penalty(x_net=x, x=x, y=y, physics=physics, model=model)
    assert math.isclose(penalty.last_lipschitz, c * (1 - step), rel_tol=1e-4)
    assert math.isclose(float(value[0]), 2.0 * (1.5 - 0.95) ** 2, rel_tol=1e-3)
    (grad_c,) = torch.autograd.grad(value.mean(), model.iteration.denoiser.c)
    assert grad_c > 0  # gradient descent shrinks the expansive denoiser



def test_bad_analysis_arguments_are_named():
    import pytest

    from deepinv_ext.algorithms import jacobian_free_error_bound

    layer = wavelet_layer()
    physics = dinv.physics.Denoising()
    x, y = noisy_data(physics)
    for kwargs, name in (({"n_iter": 0}, "n_iter"), ({"n_iter": 2.0}, "n_iter"), ({"tol": float("nan")}, "tol")):
        with pytest.raises(ValueError, match=name):
            layer_lipschitz(layer, x, y, physics, **kwargs)
    with pytest.raises(ValueError, match="depth"):
        jacobian_free_error_bound(0.5, 2.0)
    with pytest.raises(ValueError, match="lipschitz"):
        jacobian_free_error_bound(float("nan"), 2)
    with pytest.raises(ValueError, match="depth"):
        jacobian_free_error(layer, x, y, physics, torch.ones_like(x), depth=0)
    for kwargs, name in (({"weight": -1.0}, "weight"), ({"eps": float("inf")}, "eps"), ({"max_iter": 0}, "max_iter"),
                         ({"reduced_batchsize": 0}, "reduced_batchsize")):
        with pytest.raises(ValueError, match=name):
            LipschitzPenalty(**kwargs)


def test_old_analysis_module_resolves_with_a_deprecation_warning():
    import pytest

    import deepinv_ext.algorithms.retune_analysis as old

    with pytest.warns(DeprecationWarning, match=r"retune_analysis.LipschitzPenalty moved to deepinv_ext.algorithms"):
        assert old.LipschitzPenalty is LipschitzPenalty
    with pytest.warns(DeprecationWarning, match=r"retune_analysis.layer_lipschitz moved to deepinv_ext.algorithms"):
        assert old.layer_lipschitz is layer_lipschitz

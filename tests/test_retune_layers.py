"""Fixed-point layers (retune_layers): the gradient-step layer reaches the energy minimiser."""

from __future__ import annotations

import deepinv as dinv
import torch
from retune_helpers import noisy_data

from deepinv_ext.algorithms import (
    GradientStepLayer,
    ReTune,
    layer_lipschitz,
)


def test_gradient_step_layer_reaches_the_tikhonov_minimiser():
    # T(x) = x - gamma (x - y + lam x) for denoising with g = ||x||^2 / 2: contraction |1 - gamma (1 + lam)|,
    # fixed point y / (1 + lam)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x, y = noisy_data(physics)
    lam, step = 0.3, 0.5
    layer = GradientStepLayer(dinv.optim.Tikhonov(), step=step, lam=lam).double()
    lam, step = float(layer.lam), float(layer.step)  # the float32-initialised parameters, exactly
    model = ReTune(layer, depth=3, restarts=2, tol=1e-12, max_restarts=200).eval()
    torch.testing.assert_close(model(y, physics), y / (1 + lam), rtol=1e-10, atol=1e-10)
    est = layer_lipschitz(layer, x, y, physics, n_iter=5)
    torch.testing.assert_close(est, torch.full_like(est, abs(1 - step * (1 + lam))), rtol=1e-8, atol=0)
    g = torch.autograd.grad((ReTune(layer, depth=2, restarts=3).train()(y, physics) - x).pow(2).sum(),
                            layer.log_lam)[0]
    assert torch.isfinite(g) and g != 0


"""Fixed-point layers (algorithms/retune/layers.py): the gradient-step layer reaches the energy minimiser."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from retune_helpers import blur_physics, noisy_data, wavelet_layer

from deepinv_ext.algorithms import (
    AnchoredLayer,
    GradientStepLayer,
    PnPForwardBackwardLayer,
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



class _ScaledDenoiser(torch.nn.Module):
    """An expansive 'denoiser' D(v) = s * v (Lipschitz s > 1), standing in for a trained, non-contractive one."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale, dtype=torch.float64))

    def forward(self, x, sigma):
        return self.scale * x


def test_anchored_layer_is_a_contraction_around_an_expansive_pnp_layer():
    physics = blur_physics()
    x, y = noisy_data(physics)
    inner = PnPForwardBackwardLayer(_ScaledDenoiser(1.05), step=1.0, sigma=0.05, train_denoiser=True).double()
    c = 0.1
    layer = AnchoredLayer(inner, contraction=c)
    g = torch.Generator().manual_seed(1)
    lip_inner = layer_lipschitz(inner, x, y, physics, n_iter=200, tol=1e-10, generator=g)
    lip = layer_lipschitz(layer, x, y, physics, n_iter=200, tol=1e-10, generator=torch.Generator().manual_seed(1))
    assert (lip_inner > 1).all()  # the PnP layer alone is expansive: its iterates would diverge
    assert (lip < 1).all()
    torch.testing.assert_close(lip, (1 - c) * lip_inner, rtol=1e-6, atol=0)
    # hence ReTune's restarts reach its fixed point x* = (1-c) T(x*) + c A^T y
    model = ReTune(layer, depth=3, restarts=2, tol=1e-10, max_restarts=2000).eval()
    with torch.no_grad():
        x_fp = model(y, physics)
        assert model.residual_history[-1] < 1e-10
        torch.testing.assert_close(layer(x_fp, y, physics), x_fp, rtol=0, atol=1e-8)
    # and gradients reach the inner layer's parameters through the anchored layer
    loss = (ReTune(layer, depth=2, restarts=3).train()(y, physics) - x).pow(2).sum()
    g = torch.autograd.grad(loss, inner.denoiser.scale)[0]
    assert torch.isfinite(g) and g != 0


def test_anchored_layer_rejects_bad_contraction():
    with pytest.raises(ValueError, match="contraction"):
        AnchoredLayer(wavelet_layer(), contraction=1.0)
    with pytest.raises(TypeError, match="layer"):
        AnchoredLayer(lambda x, y, p: x, contraction=0.1)


@pytest.mark.parametrize("kwargs,error,name", [
    ({"step": float("nan")}, ValueError, "step"), ({"step": 0.0}, ValueError, "step"),
    ({"step": "1"}, TypeError, "step"), ({"data_lipschitz": float("nan")}, ValueError, "data_lipschitz"),
    ({"data_lipschitz": 0.0}, ValueError, "data_lipschitz"), ({"lam": float("inf")}, ValueError, "lam"),
    ({"lam": -1.0}, ValueError, "lam"), ({"train_step": "no"}, TypeError, "train_step"),
    ({"train_lam": 1}, TypeError, "train_lam"),
])
def test_bad_layer_arguments_are_named(kwargs, error, name):
    from deepinv_ext.algorithms import ForwardBackwardLayer
    from deepinv_ext.priors import WaveletL1Prior

    with pytest.raises(error, match=name):
        ForwardBackwardLayer(WaveletL1Prior(level=2), **kwargs)


def test_bad_pnp_and_anchor_arguments_are_named():
    denoiser = dinv.models.MedianFilter()
    for kwargs, name in (({"sigma": float("nan")}, "sigma"), ({"sigma": 0.0}, "sigma"),
                         ({"relaxation": 1.0}, "relaxation"), ({"relaxation": float("nan")}, "relaxation")):
        with pytest.raises(ValueError, match=name):
            PnPForwardBackwardLayer(denoiser, **kwargs)
    with pytest.raises(TypeError, match="train_denoiser"):
        PnPForwardBackwardLayer(denoiser, train_denoiser="yes")
    with pytest.raises(ValueError, match="contraction"):
        AnchoredLayer(wavelet_layer(), contraction=float("nan"))
    with pytest.raises(TypeError, match="train_prior"):
        GradientStepLayer(dinv.optim.TVPrior(), train_prior=None)


class _DuckLayer(torch.nn.Module):
    """Has forward and init like a layer, but does not declare itself a FixedPointLayer."""

    def init(self, y, physics):
        return physics.A_adjoint(y)

    def forward(self, x, y, physics):
        return x


class _DuckPrior:
    """Has prox and grad like a prior, but is no deepinv.optim.Prior."""

    def prox(self, x, *args, gamma=1.0, **kwargs):
        return x

    def grad(self, x, *args, **kwargs):
        return torch.zeros_like(x)


def test_layers_and_priors_are_declared_types_not_probed_methods():
    from deepinv_ext.algorithms import FixedPointLayer, ForwardBackwardLayer

    with pytest.raises(TypeError, match="iteration must be a FixedPointLayer"):
        ReTune(_DuckLayer())
    with pytest.raises(TypeError, match="layer must be a FixedPointLayer"):
        AnchoredLayer(_DuckLayer(), contraction=0.1)
    with pytest.raises(TypeError, match=r"prior must have a prox method \(a deepinv.optim.Prior\)"):
        ForwardBackwardLayer(_DuckPrior())
    with pytest.raises(TypeError, match=r"prior must have a grad method \(a deepinv.optim.Prior\)"):
        GradientStepLayer(_DuckPrior())
    with pytest.raises(TypeError, match="abstract"):
        FixedPointLayer()


def test_old_layers_module_resolves_with_a_deprecation_warning():
    import deepinv_ext.algorithms.retune_layers as old

    with pytest.warns(DeprecationWarning, match=r"retune_layers.AnchoredLayer moved to deepinv_ext.algorithms.retune"):
        assert old.AnchoredLayer is AnchoredLayer

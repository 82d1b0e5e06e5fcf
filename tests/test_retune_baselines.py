"""Baselines of ReTune (algorithms/retune/baselines.py): deepinv DEQ with a Jacobian-free backward."""

from __future__ import annotations

import torch
from retune_helpers import blur_physics, noisy_data

from deepinv_ext.algorithms import ForwardBackwardLayer, deq_baseline
from deepinv_ext.priors import WaveletL1Prior


def test_deq_baseline_backpropagates_one_jacobian_free_step():
    physics = blur_physics(dtype=torch.float32)
    x, y = noisy_data(physics, dtype=torch.float32)
    layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.5, lam=0.05)
    deq = deq_baseline(layer, max_iter=30).train()
    loss = (deq(y, physics) - x).pow(2).sum()
    loss.backward()
    grads = {n: p.grad for n, p in deq.named_parameters()}
    assert grads["params_algo.stepsize.0"] is not None
    assert grads["prior.0.layer.prior.log_weight"] is not None



def test_bad_baseline_arguments_are_named():
    import pytest

    from deepinv_ext.algorithms import full_unrolling

    layer = ForwardBackwardLayer(WaveletL1Prior(level=2))
    with pytest.raises(ValueError, match="restarts"):
        full_unrolling(layer, depth=2, restarts=1.5)  # was truncated to 1
    with pytest.raises(ValueError, match="max_iter"):
        deq_baseline(layer, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        deq_baseline(layer, tol=float("nan"))


def test_layer_prox_prior_needs_a_proximal_gradient_layer():
    import deepinv as dinv
    import pytest

    from deepinv_ext.algorithms import GradientStepLayer, LayerProxPrior

    with pytest.raises(TypeError, match=r"layer must define proximal_step\(v, gamma\)"):
        LayerProxPrior(GradientStepLayer(dinv.optim.Tikhonov()))
    with pytest.raises(TypeError, match=r"layer must define proximal_step\(v, gamma\)"):
        deq_baseline(GradientStepLayer(dinv.optim.Tikhonov()))
    duck = torch.nn.Module()  # a proximal_step attribute alone does not make a forward-backward layer
    duck.proximal_step = lambda v, gamma: v
    with pytest.raises(TypeError, match=r"layer must define proximal_step\(v, gamma\)"):
        LayerProxPrior(duck)


def test_old_baselines_module_resolves_with_a_deprecation_warning():
    import pytest

    import deepinv_ext.algorithms.retune_baselines as old

    with pytest.warns(DeprecationWarning, match=r"retune_baselines.deq_baseline moved to deepinv_ext.algorithms.retune"):
        assert old.deq_baseline is deq_baseline

"""ReTune: restarts carry no gradient, the gradient is that of L-layer unrolling from the detached warm
start, memory is flat in R, the fixed-point stopping rule, unrolled inference, training in deepinv.Trainer."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from retune_helpers import CountingLayer, blur_physics, noisy_data, wavelet_layer
from trainer_helpers import cpu_trainer

from deepinv_ext.algorithms import (
    ForwardBackwardLayer,
    LipschitzPenalty,
    NotConvergedWarning,
    PnPForwardBackwardLayer,
    ReTune,
    SavedTensorMeter,
    full_unrolling,
    standard_unrolling,
)
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.priors import WaveletL1Prior


def test_no_gradient_flows_through_restarts():
    physics = blur_physics()
    _, y = noisy_data(physics)
    layer = CountingLayer(wavelet_layer())
    depth, restarts = 3, 4
    model = ReTune(layer, depth=depth, restarts=restarts).train()
    out = model(y, physics)
    assert (layer.with_grad, layer.without_grad) == (depth, depth * restarts)
    assert model.last_warm_start.grad_fn is None and not model.last_warm_start.requires_grad
    # the warm start is a leaf of the graph: the gradient w.r.t. y flows only through the last L layers
    y_req = y.clone().requires_grad_(True)
    out = model(y_req, physics)
    (g_retune,) = torch.autograd.grad(out.sum(), y_req)
    warm = model.last_warm_start
    y2 = y.clone().requires_grad_(True)
    (g_trunc,) = torch.autograd.grad(model.unroll(warm, y2, physics).sum(), y2)
    torch.testing.assert_close(g_retune, g_trunc, rtol=1e-12, atol=1e-12)


def test_gradients_equal_L_layer_unrolling_from_detached_warm_start():
    physics = blur_physics()
    x, y = noisy_data(physics)
    depth, restarts = 4, 6
    model = ReTune(wavelet_layer(), depth=depth, restarts=restarts).train()
    loss = (model(y, physics) - x).pow(2).sum()
    grads = torch.autograd.grad(loss, list(model.iteration.parameters()))
    # reference: restarts by hand without gradients, then L layers of plain unrolling from the detached result
    layer = model.iteration
    with torch.no_grad():
        z = physics.A_adjoint(y)
        for _ in range(restarts * depth):
            z = layer(z, y, physics)
    z = z.detach()
    for _ in range(depth):
        z = layer(z, y, physics)
    ref = torch.autograd.grad((z - x).pow(2).sum(), list(layer.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    # and they differ from full unrolling through all (R+1)L layers (the restarts do matter for the forward)
    full = full_unrolling(wavelet_layer(), depth, restarts).train()
    full.iteration.load_state_dict(layer.state_dict())
    g_full = torch.autograd.grad((full(y, physics) - x).pow(2).sum(), list(full.iteration.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(grads, g_full)) > 1e-8


def test_training_memory_flat_in_restarts():
    physics = blur_physics(size=32, dtype=torch.float32)
    x, y = noisy_data(physics, size=32, dtype=torch.float32)
    depth = 3
    saved = {}
    for name, model in {"R1": ReTune(wavelet_layer().float(), depth=depth, restarts=1),
                        "R20": ReTune(wavelet_layer().float(), depth=depth, restarts=20),
                        "R20-monitored": ReTune(wavelet_layer().float(), depth=depth, restarts=20, monitor_every=1),
                        "full": full_unrolling(wavelet_layer().float(), depth, 20)}.items():
        model.train()
        with SavedTensorMeter() as meter:
            loss = (model(y, physics) - x).pow(2).sum()
        loss.backward()
        saved[name] = meter.bytes
    assert saved["R1"] > 0
    assert saved["R20"] <= 1.05 * saved["R1"]
    assert saved["R20-monitored"] == saved["R20"]  # the Lipschitz diagnostics keep their graph out of the count
    assert saved["full"] > 5 * saved["R20"]


def test_fixed_point_stopping_rule():
    physics = blur_physics()
    _, y = noisy_data(physics)
    depth, tol = 4, 1e-6
    model = ReTune(wavelet_layer(), depth=depth, restarts=2, tol=tol, max_restarts=500).eval()
    x_hat = model(y, physics)
    assert model.converged.tolist() == [True, True]
    hist = model.residual_history
    assert len(hist) == depth * model.last_restarts
    ends = hist[depth - 1::depth]
    assert ends[-1] < tol and all(r >= tol for r in ends[:-1])  # stops at the first restart below tol
    one_more = ReTune.relative_residual(model.iteration(x_hat, y, physics), x_hat)
    assert one_more < 2 * tol
    # the cap is respected and the history is then the full length
    capped = ReTune(wavelet_layer(), depth=depth, restarts=2, tol=1e-14, max_restarts=3).eval()
    with pytest.warns(NotConvergedWarning, match="2 of 2 images did not converge"):
        capped(y, physics)
    assert capped.converged.tolist() == [False, False]
    assert capped.last_restarts == 3 and len(capped.residual_history) == 3 * depth
    assert capped.residual_history[-1] >= 1e-14


def test_unrolled_inference_runs_R_plus_1_times_L_layers():
    physics = blur_physics()
    _, y = noisy_data(physics)
    layer = CountingLayer(wavelet_layer())
    model = standard_unrolling(layer, depth=5).eval()
    model(y, physics)
    assert layer.without_grad == 5
    ReTune(layer, depth=3, restarts=4, inference="unrolled").eval()(y, physics)
    assert layer.without_grad == 5 + 15


def test_retune_pnp_trains_in_deepinv_trainer_with_penalty(tmp_path):
    torch.manual_seed(0)
    physics = blur_physics(dtype=torch.float32)
    dataset = RandomEllipsesDataset(length=4, size=16, seed=0)
    denoiser = dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None)
    model = ReTune(PnPForwardBackwardLayer(denoiser, step=1.0, relaxation=0.3, train_denoiser=True),
                   depth=2, restarts=3, max_restarts=10, monitor_every=2)
    before = [p.detach().clone() for p in model.parameters()]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    trainer = cpu_trainer(model, physics, torch.optim.Adam(model.parameters(), lr=1e-3), loader, epochs=1,
                          losses=[dinv.loss.SupLoss(), LipschitzPenalty(weight=1.0, max_iter=3)],
                          metrics=dinv.metric.PSNR(), online_measurements=True, save_path=str(tmp_path),
                          compute_train_metrics=True)
    trainer.train()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    assert len(model.monitor_log) == 1 and model.monitor_log[0]["lipschitz"] > 0


def test_monitoring_leaves_the_random_stream_of_the_training_unchanged():
    physics = blur_physics()
    _, y = noisy_data(physics)
    states = []
    for every in (0, 1):
        model = ReTune(wavelet_layer(), depth=2, restarts=2, monitor_every=every).train()
        torch.manual_seed(0)
        model(y, physics)
        states.append(torch.get_rng_state())
        assert len(model.monitor_log) == every
    assert torch.equal(*states)


def test_bad_arguments_raise():
    layer = wavelet_layer()
    with pytest.raises(ValueError, match="depth"):
        ReTune(layer, depth=0)
    with pytest.raises(ValueError, match="restarts"):
        ReTune(layer, restarts=-1)
    with pytest.raises(ValueError, match="inference"):
        ReTune(layer, inference="bogus")
    with pytest.raises(TypeError, match="iteration"):
        ReTune(lambda x, y, p: x)
    with pytest.raises(ValueError, match="step"):
        ForwardBackwardLayer(WaveletL1Prior(), step=2.5, data_lipschitz=1.0)



def test_convergence_is_reported_per_image_and_only_with_a_stopping_rule():
    physics = blur_physics()
    _, y = noisy_data(physics)
    y[1] = 0.0  # the fixed point of the second image is 0, reached at once
    model = ReTune(wavelet_layer(), depth=2, restarts=1, tol=1e-8, max_restarts=2).eval()
    with pytest.warns(NotConvergedWarning, match="1 of 2 images"):
        model(y, physics)
    assert model.converged.tolist() == [False, True]
    model.inference = "unrolled"
    model(y, physics)
    assert model.converged is None


@pytest.mark.parametrize("kwargs,error,name", [
    ({"depth": 2.0}, ValueError, "depth"), ({"depth": True}, ValueError, "depth"),
    ({"restarts": 1.5}, ValueError, "restarts"), ({"tol": float("nan")}, ValueError, "tol"),
    ({"tol": "1e-5"}, TypeError, "tol"), ({"max_restarts": 0}, ValueError, "max_restarts"),
    ({"monitor_every": -1}, ValueError, "monitor_every"), ({"show_progress_bar": "no"}, TypeError, "show_progress_bar"),
])
def test_bad_constructor_arguments_are_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        ReTune(wavelet_layer(), **kwargs)


def test_bad_measurements_are_refused_before_iterating():
    physics = blur_physics()
    _, y = noisy_data(physics)
    model = ReTune(wavelet_layer(), depth=2, restarts=1, max_restarts=2).eval()
    with pytest.raises(ValueError, match=r"y must have the shape \(2, 1, 16, 16\)"):
        model(y[..., :1], physics)  # broadcasts against the blur: refused, not a full image
    with pytest.raises(ValueError, match="y must hold at least one sample"):
        model(y[:0], physics)
    with pytest.raises(ValueError, match="y must be finite"):
        model(torch.full_like(y, float("inf")), physics)
    with pytest.raises(TypeError, match=r"y has dtype torch.float32 but ReTune computes in torch.float64"):
        model(y.float(), physics)
    with pytest.raises(TypeError, match="physics must be a deepinv.physics.LinearPhysics"):
        model(y, dinv.physics.Physics(A=lambda x: x))
    with pytest.raises(ValueError, match="x_init must have the shape"):
        model.fixed_point(y, physics, x_init=y[:1])


def test_package_level_names_resolve_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import deepinv_ext.algorithms.retune as package
        from deepinv_ext.algorithms import LipschitzPenalty as penalty_from_algorithms
        from deepinv_ext.losses import LipschitzPenalty as penalty_from_losses
    assert package.ReTune is ReTune and package.ReTune.__module__ == "deepinv_ext.algorithms.retune.model"
    assert penalty_from_algorithms is penalty_from_losses is LipschitzPenalty
    assert set(package.__all__) <= set(dir(package))

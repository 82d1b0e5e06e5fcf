"""ReTune: restarts carry no gradient, the gradient is that of L-layer unrolling from the detached warm start,
memory is flat in R, the fixed-point stopping rule, and the Lipschitz / Jacobian-free analysis."""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import (
    ForwardBackwardLayer,
    GradientStepLayer,
    LipschitzPenalty,
    PnPForwardBackwardLayer,
    ReTune,
    SavedTensorMeter,
    WaveletL1Prior,
    deq_baseline,
    full_unrolling,
    jacobian_free_error,
    layer_lipschitz,
    standard_unrolling,
)
from deepinv_ext.datasets import RandomEllipsesDataset


def _blur(size: int = 16, dtype=torch.float64) -> dinv.physics.BlurFFT:
    return dinv.physics.BlurFFT(img_size=(1, size, size), filter=gaussian_blur(sigma=(1.0, 1.0)).to(dtype),
                                noise_model=dinv.physics.GaussianNoise(0.02))


def _data(physics, size: int = 16, batch: int = 2, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, size, size, generator=g, dtype=dtype)
    y = physics.A(x) + 0.02 * torch.randn(x.shape, generator=g, dtype=dtype)
    return x, y


def _wavelet_layer(lam: float = 0.05, step: float = 1.5) -> ForwardBackwardLayer:
    return ForwardBackwardLayer(WaveletL1Prior(level=2, weight=1.0), step=step, lam=lam).double()


class _CountingLayer(torch.nn.Module):
    """Wraps a layer and counts its calls with and without gradient tracking."""

    def __init__(self, layer):
        super().__init__()
        self.layer, self.with_grad, self.without_grad = layer, 0, 0

    def init(self, y, physics):
        return self.layer.init(y, physics)

    def forward(self, x, y, physics):
        if torch.is_grad_enabled():
            self.with_grad += 1
        else:
            self.without_grad += 1
        return self.layer(x, y, physics)


class _Scale(dinv.models.Denoiser):
    """D(x) = c x: a 'denoiser' with a known Lipschitz constant c."""

    def __init__(self, c: float):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(float(c), dtype=torch.float64))

    def forward(self, x, sigma=None, **kwargs):
        return self.c * x


def test_no_gradient_flows_through_restarts():
    physics = _blur()
    _, y = _data(physics)
    layer = _CountingLayer(_wavelet_layer())
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
    physics = _blur()
    x, y = _data(physics)
    depth, restarts = 4, 6
    model = ReTune(_wavelet_layer(), depth=depth, restarts=restarts).train()
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
    full = full_unrolling(_wavelet_layer(), depth, restarts).train()
    full.iteration.load_state_dict(layer.state_dict())
    g_full = torch.autograd.grad((full(y, physics) - x).pow(2).sum(), list(full.iteration.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(grads, g_full)) > 1e-8


def test_training_memory_flat_in_restarts():
    physics = _blur(size=32, dtype=torch.float32)
    x, y = _data(physics, size=32, dtype=torch.float32)
    depth = 3
    saved = {}
    for name, model in {"R1": ReTune(_wavelet_layer().float(), depth=depth, restarts=1),
                        "R20": ReTune(_wavelet_layer().float(), depth=depth, restarts=20),
                        "R20-monitored": ReTune(_wavelet_layer().float(), depth=depth, restarts=20, monitor_every=1),
                        "full": full_unrolling(_wavelet_layer().float(), depth, 20)}.items():
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
    physics = _blur()
    _, y = _data(physics)
    depth, tol = 4, 1e-6
    model = ReTune(_wavelet_layer(), depth=depth, restarts=2, tol=tol, max_restarts=500).eval()
    x_hat = model(y, physics)
    hist = model.residual_history
    assert len(hist) == depth * model.last_restarts
    ends = hist[depth - 1::depth]
    assert ends[-1] < tol and all(r >= tol for r in ends[:-1])  # stops at the first restart below tol
    one_more = ReTune.relative_residual(model.iteration(x_hat, y, physics), x_hat)
    assert one_more < 2 * tol
    # the cap is respected and the history is then the full length
    capped = ReTune(_wavelet_layer(), depth=depth, restarts=2, tol=1e-14, max_restarts=3).eval()
    capped(y, physics)
    assert capped.last_restarts == 3 and len(capped.residual_history) == 3 * depth
    assert capped.residual_history[-1] >= 1e-14


def test_unrolled_inference_runs_R_plus_1_times_L_layers():
    physics = _blur()
    _, y = _data(physics)
    layer = _CountingLayer(_wavelet_layer())
    model = standard_unrolling(layer, depth=5).eval()
    model(y, physics)
    assert layer.without_grad == 5
    ReTune(layer, depth=3, restarts=4, inference="unrolled").eval()(y, physics)
    assert layer.without_grad == 5 + 15


def test_lipschitz_estimate_on_an_analytically_known_layer():
    # T(x) = c * (x - gamma * D^2 x + gamma * D y) with A = diag(d): its Jacobian is c * diag(1 - gamma d^2)
    g = torch.Generator().manual_seed(1)
    d = 0.5 + 0.5 * torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    d[0, 0, 3, 4], d[1, 0, 1, 1] = 0.2, 0.1
    physics = dinv.physics.LinearPhysics(A=lambda x: d * x, A_adjoint=lambda x: d * x)
    c, step = 1.3, 0.9
    layer = PnPForwardBackwardLayer(_Scale(c), step=step, data_lipschitz=1.0)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    y = physics.A(torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64))
    exact = c * (1 - step * d**2).abs().flatten(1).max(dim=1).values
    est = layer_lipschitz(layer, x, y, physics, n_iter=200, tol=1e-12, generator=g)
    torch.testing.assert_close(est, exact, rtol=1e-6, atol=0)


def test_lipschitz_below_analytical_bound_and_jacobian_free_error_below_rho_to_the_L():
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x, y = _data(physics)
    layer = _wavelet_layer(lam=0.05, step=0.6)  # prox o (1 - 0.6) Id: contraction 0.4
    model = ReTune(layer, depth=2, restarts=0, tol=1e-12, max_restarts=200).eval()
    x_star = model(y, physics)
    rho = float(layer_lipschitz(layer, x_star, y, physics, n_iter=100).max())
    assert rho <= layer.lipschitz_bound() + 1e-9 and rho <= 0.4 + 1e-9
    grad_out = x_star - x
    errors = [jacobian_free_error(layer, x_star, y, physics, grad_out, depth) for depth in (1, 2, 4)]
    for depth, err in zip((1, 2, 4), errors):
        assert err <= rho**depth * (1 + 1e-6)
    assert errors[0] > errors[1] > errors[2] > 0


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_wavelet_basis_is_orthonormal_and_prox_firmly_nonexpansive(wavelet):
    if wavelet != "haar":
        pytest.importorskip("pywt")
    prior = WaveletL1Prior(level=3, wavelet=wavelet, weight=0.3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    z = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    a, details = prior.transform(x)
    energy = a.pow(2).sum() + sum(dd.pow(2).sum() for dd in details)
    torch.testing.assert_close(energy, x.pow(2).sum())
    torch.testing.assert_close(prior.transform.inverse(a, details), x)
    px, pz = prior.prox(x, gamma=0.5), prior.prox(z, gamma=0.5)
    with torch.no_grad():
        assert float((px - pz).pow(2).sum()) <= float(((px - pz) * (x - z)).sum()) + 1e-12
        assert float(prior.fn(px).sum()) < float(prior.fn(x).sum())  # shrinks the coefficients
    with pytest.raises(ValueError, match="divisible"):
        prior.prox(torch.zeros(1, 1, 12, 12), gamma=0.1)


def test_lipschitz_penalty_value_and_gradient():
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x, y = _data(physics)
    c, step = 3.0, 0.5  # Jacobian c (1 - step) Id: norm 1.5
    model = ReTune(PnPForwardBackwardLayer(_Scale(c), step=step, train_denoiser=True, train_step=False,
                                           train_sigma=False),
                   depth=2, restarts=1)
    penalty = LipschitzPenalty(weight=2.0, eps=0.05, max_iter=20)
    value = penalty(x_net=x, x=x, y=y, physics=physics, model=model)
    assert math.isclose(penalty.last_lipschitz, c * (1 - step), rel_tol=1e-4)
    assert math.isclose(float(value[0]), 2.0 * (1.5 - 0.95) ** 2, rel_tol=1e-3)
    (grad_c,) = torch.autograd.grad(value.mean(), model.iteration.denoiser.c)
    assert grad_c > 0  # gradient descent shrinks the expansive denoiser


def test_retune_pnp_trains_in_deepinv_trainer_with_penalty(tmp_path):
    torch.manual_seed(0)
    physics = _blur(dtype=torch.float32)
    dataset = RandomEllipsesDataset(length=4, size=16, seed=0)
    denoiser = dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None)
    model = ReTune(PnPForwardBackwardLayer(denoiser, step=1.0, relaxation=0.3, train_denoiser=True),
                   depth=2, restarts=3, max_restarts=10, monitor_every=2)
    before = [p.detach().clone() for p in model.parameters()]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    trainer = dinv.Trainer(model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                           train_dataloader=loader, epochs=1,
                           losses=[dinv.loss.SupLoss(), LipschitzPenalty(weight=1.0, max_iter=3)],
                           metrics=dinv.metric.PSNR(), online_measurements=True, save_path=str(tmp_path),
                           verbose=False, show_progress_bar=False)
    trainer.train()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    assert len(model.monitor_log) == 1 and model.monitor_log[0]["lipschitz"] > 0


def test_deq_baseline_backpropagates_one_jacobian_free_step():
    physics = _blur(dtype=torch.float32)
    x, y = _data(physics, dtype=torch.float32)
    layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.5, lam=0.05)
    deq = deq_baseline(layer, max_iter=30).train()
    loss = (deq(y, physics) - x).pow(2).sum()
    loss.backward()
    grads = {n: p.grad for n, p in deq.named_parameters()}
    assert grads["params_algo.stepsize.0"] is not None
    assert grads["prior.0.layer.prior.log_weight"] is not None


def test_bad_arguments_raise():
    layer = _wavelet_layer()
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


def test_gradient_step_layer_reaches_the_tikhonov_minimiser():
    # T(x) = x - gamma (x - y + lam x) for denoising with g = ||x||^2 / 2: contraction |1 - gamma (1 + lam)|,
    # fixed point y / (1 + lam)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x, y = _data(physics)
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

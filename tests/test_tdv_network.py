"""TDV variational network: proximal maps, noise-level rescaling, constraints, checkpointing, Trainer."""

from pathlib import Path

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.algorithms import TDVNetwork, constrain_optimizer, prox_data_fidelity
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.priors import TDV

GRAY = Path(__file__).resolve().parent / "data" / "tdv" / "tdv3-3-25-f32-gray.pth"  # shipped test data


def small_net(dtype=torch.float32, **kwargs) -> TDVNetwork:
    torch.manual_seed(0)
    return TDVNetwork(TDV(num_features=4, num_macro_blocks=1), **({"steps": 3, "T": 0.05, "lmbda": 1.0} | kwargs)
                      ).to(dtype)


def blur_physics(dtype=torch.float64) -> dinv.physics.BlurFFT:
    from deepinv.physics.functional.blur import gaussian_blur
    return dinv.physics.BlurFFT((1, 16, 16), filter=gaussian_blur(sigma=(1.0, 1.0)).to(dtype),
                                noise_model=dinv.physics.GaussianNoise(0.05))


def test_prox_closed_form_and_cg_agree_and_are_optimal():
    torch.manual_seed(0)
    u, y = torch.randn(2, 1, 16, 16, dtype=torch.float64), torch.randn(2, 1, 16, 16, dtype=torch.float64)
    tau = 0.3
    closed = prox_data_fidelity(u, y, dinv.physics.Denoising(), tau)
    identity = dinv.physics.LinearPhysics(A=lambda x: x, A_adjoint=lambda x: x)
    cg = prox_data_fidelity(u, y, identity, tau, tol=1e-12)
    assert torch.allclose(closed, cg, atol=1e-10)
    # blur: CG (tensor tau) against deepinv's FFT closed form, and the optimality condition
    physics = blur_physics()
    y = physics.A(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    solver, max_iter, tol = physics.solver, physics.max_iter, physics.tol
    x_cg = prox_data_fidelity(u, y, physics, torch.tensor(tau, dtype=torch.float64), max_iter=200, tol=1e-12,
                              method="cg")
    assert (physics.solver, physics.max_iter, physics.tol) == (solver, max_iter, tol)  # physics left unchanged
    x_fft = prox_data_fidelity(u, y, physics, torch.tensor(tau, dtype=torch.float64))
    assert torch.allclose(x_cg, x_fft, atol=1e-8)
    assert torch.allclose(prox_data_fidelity(u, y, physics, tau), x_fft, atol=1e-12)
    residual = x_cg - u + tau * physics.A_adjoint(physics.A(x_cg) - y)
    assert residual.abs().max() < 1e-8


def test_network_step_is_the_semi_implicit_scheme():
    net = small_net(torch.float64, sigma_train=None)
    physics = dinv.physics.Denoising()
    z = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    xs = net(z, physics, return_all=True)
    assert len(xs) == net.S + 1 and torch.equal(xs[0], z)
    tau, h = net.lmbda / net.S, net.T / net.S
    for a, b in zip(xs[:-1], xs[1:]):
        expected = (a - h * net.R.grad(a) + tau * z) / (1 + tau)
        assert torch.allclose(b, expected, atol=1e-12)
    g = torch.rand_like(z)  # a gradient the caller has already: used as given, not recomputed
    assert torch.allclose(net.step(z, z, physics, grad=g), (z - h * g + tau * z) / (1 + tau), atol=1e-12)


def test_noise_level_rescaling_rule():
    net = small_net(torch.float64, sigma_train=0.1)
    plain = small_net(torch.float64, sigma_train=None)
    y = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.2], dtype=torch.float64)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.05))
    with torch.no_grad():
        out = net(y, physics, sigma=sigma)
        scale = (0.1 / sigma).view(2, 1, 1, 1)
        assert torch.allclose(out, plain(y * scale, physics) / scale, atol=1e-12)
        # sigma from the physics' noise model; no change at the training level
        assert torch.allclose(net(y, physics), plain(2 * y, physics) / 2, atol=1e-12)
        assert torch.allclose(net(y, physics, sigma=0.1), plain(y, physics), atol=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        net(y, physics, sigma=torch.tensor([0.1, 0.2, 0.3]))


def test_rescaled_output_has_the_image_shape_on_multicoil_mri():
    # y (B, 2, N, H, W) has one more dimension than x (B, 2, H, W): the factor must not be shaped after y
    from deepinv_ext.physics import SigpyMultiCoilMRI

    torch.manual_seed(0)
    net = TDVNetwork(TDV(in_channels=2, num_features=4, num_macro_blocks=1), steps=2, T=0.05, lmbda=1.0,
                     sigma_train=0.1).double()
    plain = TDVNetwork(net.R, steps=2, T=0.05, lmbda=1.0, sigma_train=None).double()
    maps = SigpyMultiCoilMRI.birdcage_maps(3, (16, 16), dtype=torch.complex128)
    mask = (torch.rand(16, 16, generator=torch.Generator().manual_seed(1)) < 0.5).double()
    physics = SigpyMultiCoilMRI(maps, mask=mask, noise_model=dinv.physics.GaussianNoise(0.05))
    x = torch.rand(2, 2, 16, 16, dtype=torch.float64)
    y = physics(x)
    with torch.no_grad():
        out = net(y, physics)
        assert out.shape == x.shape
        assert torch.allclose(out, plain(2 * y, physics) / 2, atol=1e-10)
        sigma = torch.tensor([0.05, 0.2], dtype=torch.float64)
        out = net(y, physics, sigma=sigma)
        assert out.shape == x.shape
        scale = (0.1 / sigma).view(2, 1, 1, 1)
        assert torch.allclose(out, plain(y * scale.unsqueeze(-1), physics) / scale, atol=1e-10)


@pytest.mark.parametrize("kwargs", [{"cg_max_iter": -1}, {"cg_max_iter": 0}, {"cg_max_iter": 5.0},
                                    {"cg_tol": -1e-6}, {"cg_tol": float("nan")}])
def test_bad_cg_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TDVNetwork(TDV(num_features=4, num_macro_blocks=1), **kwargs)


def test_project_and_constrained_optimizer():
    net = small_net(T_range=(0.0, 0.1), lmbda_range=(0.01, 5.0))
    opt = constrain_optimizer(torch.optim.SGD(net.parameters(), lr=100.0), net)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    net.T.grad.fill_(-1.0)  # pushes T above its range
    net.lmbda.grad.fill_(1.0)  # pushes lambda below its range
    opt.step()
    assert net.T.item() == pytest.approx(0.1) and net.lmbda.item() == pytest.approx(0.01)
    w = net.R.K1.weight.detach()
    assert w.mean(dim=(1, 2, 3)).abs().max() < 1e-6
    assert (w.pow(2).sum(dim=(1, 2, 3)).sqrt() <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="T_range"):
        TDVNetwork(TDV(num_features=4, num_macro_blocks=1), T=2.0, T_range=(0.0, 1.0))


def test_checkpointing_gives_the_same_gradients():
    physics = blur_physics()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    y = physics(x)
    grads = []
    for cp in (False, True):
        net = small_net(torch.float64, checkpointing=cp, steps=2)
        loss = (net(y, physics) - x).pow(2).sum()
        grads.append(torch.autograd.grad(loss, list(net.parameters())))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_short_trainer_run_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    net = small_net(steps=3, T=0.01, lmbda=0.5)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    data = RandomEllipsesDataset(8, 24, seed=0)
    loader = DataLoader(data, batch_size=4, shuffle=False)
    x = torch.cat([data[i]["x"][None] for i in range(8)])
    y = physics(x, seed=1)

    def loss() -> float:
        with torch.no_grad():
            return float((net(y, physics) - x).pow(2).mean())

    before = loss()
    opt = constrain_optimizer(torch.optim.Adam(net.parameters(), lr=2e-2), net)
    trainer = cpu_trainer(net, physics, opt, loader, epochs=6, losses=dinv.loss.SupLoss(), online_measurements=True,
                          save_path=str(tmp_path))
    trainer.train()
    assert loss() < 0.9 * before
    assert float(net.T.detach()) >= 0 and float(net.lmbda.detach()) >= 0


def test_from_checkpoint_loads_T_lambda_and_steps():
    ck = torch.load(GRAY, map_location="cpu", weights_only=True)
    net = TDVNetwork.from_checkpoint(GRAY)
    assert net.S == ck["config"]["S"]
    assert float(net.T) == float(ck["model"]["T"]) and float(net.lmbda) == float(ck["model"]["lmbda"])
    published = {k: v for k, v in ck["model"].items() if not k.endswith((".mask", ".blur"))}
    assert set(net.state_dict()) == set(published)  # the published state-dict keys load as they are


def test_stopping_time_derivative_and_optimal_T():
    net = small_net(torch.float64, steps=3, T=0.05, sigma_train=None)
    physics = dinv.physics.Denoising()
    data = RandomEllipsesDataset(2, 16, seed=0)
    x = torch.stack([data[i]["x"] for i in range(2)]).double()
    torch.manual_seed(0)
    y = x + 0.1 * torch.randn_like(x)
    T0 = net.T.item()
    loss, dT = net.stopping_time_derivative(y, physics, x)
    eps = 1e-6
    lp, _ = net.stopping_time_derivative(y, physics, x, T=T0 + eps)
    lm, _ = net.stopping_time_derivative(y, physics, x, T=T0 - eps)
    assert dT == pytest.approx((lp - lm) / (2 * eps), rel=1e-5)
    assert net.T.item() == T0  # restored
    T_star = net.optimal_stopping_time(y, physics, x, iterations=20)
    j_star, d_star = net.stopping_time_derivative(y, physics, x, T=T_star)
    assert abs(d_star) < 1e-3 * abs(dT) + 1e-6
    for T in (0.5 * T_star, 1.5 * T_star + 1e-3):
        assert j_star <= net.stopping_time_derivative(y, physics, x, T=T)[0]


@pytest.mark.parametrize("kwargs,error,name", [
    ({"steps": 2.0}, ValueError, "steps"), ({"steps": True}, ValueError, "steps"), ({"steps": 0}, ValueError, "steps"),
    ({"T": float("nan")}, ValueError, "T"), ({"lmbda": "1"}, TypeError, "lmbda"),
    ({"T_range": (0.0, float("inf"))}, ValueError, "T_range"), ({"lmbda_range": 5.0}, ValueError, "lmbda_range"),
    ({"sigma_train": float("nan")}, ValueError, "sigma_train"), ({"sigma_train": 0.0}, ValueError, "sigma_train"),
    ({"checkpointing": "no"}, TypeError, "checkpointing"),
])
def test_bad_constructor_arguments_are_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        TDVNetwork(TDV(num_features=4, num_macro_blocks=1), **kwargs)


def test_bad_measurements_are_refused_before_the_steps():
    net = small_net(torch.float64, sigma_train=None)
    physics = blur_physics()
    y = physics.A(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"y must have the shape \(2, 1, 16, 16\)"):
        net(y[..., :1], physics)  # broadcasts against the blur
    with pytest.raises(ValueError, match="y must hold at least one sample"):
        net(y[:0], physics)
    with pytest.raises(ValueError, match="y must be finite"):
        net(y * float("nan"), physics)
    with pytest.raises(TypeError, match=r"y has dtype torch.float32 but TDVNetwork computes in torch.float64"):
        net(y.float(), physics)
    with pytest.raises(TypeError, match="physics must be a deepinv.physics.LinearPhysics"):
        net(y, dinv.physics.Physics(A=lambda x: x))
    with pytest.raises(ValueError, match="sigma"):
        small_net(torch.float64)(y, physics, sigma=float("inf"))
    with pytest.raises(TypeError, match="return_all"):
        net(y, physics, return_all="yes")


def test_bad_helper_arguments_are_named(tmp_path):
    u = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    identity = dinv.physics.LinearPhysics(A=lambda x: x, A_adjoint=lambda x: x)
    for kwargs, name in (({"max_iter": 0}, "max_iter"), ({"tol": -1.0}, "tol"), ({"tau": float("nan")}, "tau")):
        with pytest.raises(ValueError, match=name):
            prox_data_fidelity(u, u, identity, **({"tau": 0.5} | kwargs))
    with pytest.raises(TypeError, match="optimizer"):
        constrain_optimizer(None, small_net())
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pth"):
        TDVNetwork.from_checkpoint(empty)
    with pytest.raises(ValueError, match="iterations"):
        small_net(torch.float64).optimal_stopping_time(u, dinv.physics.Denoising(), u, iterations=0)

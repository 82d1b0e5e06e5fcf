"""Tests of the symmetric linear U-Net denoiser."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.denoisers import LinearSymmetricUNet
from deepinv_ext.spectral import OperatorEig


@pytest.fixture
def net():
    torch.manual_seed(0)
    return LinearSymmetricUNet(channels=(4, 8, 8), convs_per_scale=2).double()


def test_symmetric_linear_psd(net):
    x, y = torch.randn(2, 3, 1, 16, 16, dtype=torch.float64)
    Dx, Dy = net(x), net(y)
    lhs, rhs = (x * Dy).flatten(1).sum(1), (Dx * y).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=0)
    # linear and bias-free: D(2x + 3y) = 2Dx + 3Dy, D0 = 0
    assert torch.allclose(net(2 * x + 3 * y), 2 * Dx + 3 * Dy, atol=1e-10)
    assert net(torch.zeros_like(x)).abs().max() == 0
    # decode is the adjoint of encode
    feats = [torch.randn_like(f) for f in net.encode(x)]
    assert torch.allclose(sum((f * g).sum() for f, g in zip(net.encode(x), feats)), (x * net.decode(feats)).sum(),
                          rtol=1e-10)
    assert ((x * Dx).flatten(1).sum(1) >= 0).all()
    assert net.is_symmetric((1, 16, 16))


def test_spectral_bounds_and_calibration_match_eigendecomposition(net):
    eig = OperatorEig(lambda v: net(v), (1, 8, 8))
    b = net.spectral_bounds((1, 8, 8), n_iter=64)
    assert abs(b["lambda_max"] - float(eig.eigenvalues[-1])) < 1e-8
    assert abs(b["lambda_min"] - float(eig.eigenvalues[0])) < 1e-8
    report = net.calibrate_spectrum((0.01, 0.99), shape=(1, 8, 8), n_iter=64)
    lam = OperatorEig(lambda v: net(v), (1, 8, 8)).eigenvalues
    assert lam.min() >= 0.01 - 1e-8 and lam.max() <= 0.99 + 1e-8
    assert abs(report["lambda_min"] - float(lam.min())) < 1e-6
    with pytest.raises(ValueError, match="target"):
        net.calibrate_spectrum((0.5, 1.2), shape=(1, 8, 8))


def test_bad_input_errors(net):
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 10, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\)"):
        net(torch.randn(1, 3, 16, 16, dtype=torch.float64))


def test_trains_as_gaussian_denoiser_in_deepinv_trainer(tmp_path):
    torch.manual_seed(0)
    net = LinearSymmetricUNet(channels=(4, 8), convs_per_scale=1, sigma=0.1)
    data = RandomEllipsesDataset(length=8, size=16, seed=0)
    loader = DataLoader(data, batch_size=4)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    model = dinv.models.ArtifactRemoval(net, mode="direct")
    x = next(iter(loader))["x"]
    g = torch.Generator().manual_seed(1)
    y = x + 0.1 * torch.randn(x.shape, generator=g)

    def mse():
        with torch.no_grad():
            return float(((net(y) - x) ** 2).mean())

    before = mse()
    trainer = cpu_trainer(model, physics, torch.optim.Adam(net.parameters(), lr=1e-2), loader, epochs=15,
                          losses=dinv.loss.SupLoss(), online_measurements=True, save_path=str(tmp_path))
    trainer.train()
    assert mse() < 0.5 * before
    assert net.is_symmetric((1, 16, 16))


def test_forward_refuses_another_precision_but_the_spectral_methods_run_in_their_own(net):
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="x has dtype torch.float32 but LinearSymmetricUNet computes in torch.float64"):
        net(x.float())
    for bad in (x.long(), x.to(torch.complex128)):
        with pytest.raises(TypeError, match="x must be a real floating tensor"):
            net(bad)
    assert net(x[:0]).shape == (0, 1, 16, 16)
    single = LinearSymmetricUNet(channels=(2, 2), convs_per_scale=1)  # float32 weights, float64 Lanczos
    assert single.is_symmetric((1, 8, 8)) and single.spectral_bounds((1, 8, 8), n_iter=8)["lambda_max"] > 0


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), "0.1"])
def test_forward_refuses_a_bad_noise_level_even_though_it_ignores_it(net, sigma):
    with pytest.raises((TypeError, ValueError), match="sigma"):
        net(torch.randn(1, 1, 16, 16, dtype=torch.float64), sigma)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"in_channels": True}, ValueError, "in_channels must be an integer"),
    ({"in_channels": 1.0}, ValueError, "in_channels must be an integer"),
    ({"convs_per_scale": 2.0}, ValueError, "convs_per_scale must be an integer"),
    ({"channels": (2.0, 4)}, ValueError, "channels must be an integer"),
    ({"channels": ()}, ValueError, "channels must be a non-empty tuple"),
    ({"channels": 4}, ValueError, "channels must be a non-empty tuple"),
    ({"sigma": float("nan")}, ValueError, "sigma must be a finite number > 0"),
    ({"sigma": -0.1}, ValueError, "sigma must be a finite number > 0"),
    ({"device": "cuda:99"}, ValueError, "device='cuda:99'"),
])
def test_bad_constructor_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        LinearSymmetricUNet(**{"channels": (2,), **kwargs})


def test_bad_spectral_arguments_are_named(net):
    with pytest.raises(ValueError, match="n_iter must be an integer"):
        net.spectral_bounds((1, 8, 8), n_iter=4.0)
    with pytest.raises(ValueError, match="n_probes must be an integer"):
        net.is_symmetric((1, 8, 8), n_probes=1.5)
    with pytest.raises(ValueError, match="margin must be a finite number"):
        net.calibrate_spectrum(shape=(1, 8, 8), n_iter=4, margin=float("nan"))

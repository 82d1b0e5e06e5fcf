"""Gradient-step denoiser D = Id - grad g: the identity, dtypes, training, GS-DRUNet weights from a local file."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from deepinv.models.GSPnP import GSPnP
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet


@pytest.fixture
def denoiser64() -> GradientStepDenoiser:
    torch.manual_seed(0)
    return GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=6, depth=3)).double()


def test_denoiser_is_identity_minus_gradient_of_potential(denoiser64):
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    sigma = 0.1
    # D(x) = x - grad g(x), with grad g from an independent autograd call on the potential
    z = x.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(denoiser64.potential(z, sigma).sum(), z)
    with torch.no_grad():
        out = denoiser64(x, sigma)
    torch.testing.assert_close(out, x - reference, rtol=1e-12, atol=1e-12)
    # and grad g against central finite differences of g along random directions (per batch element)
    grad = denoiser64.grad(x, sigma, create_graph=False)
    for _ in range(3):
        v = torch.randn_like(x)
        h = 1e-6
        with torch.no_grad():
            fd = (denoiser64.potential(x + h * v, sigma) - denoiser64.potential(x - h * v, sigma)) / (2 * h)
        torch.testing.assert_close(fd, (grad * v).flatten(1).sum(1), rtol=1e-6, atol=1e-9)


def test_gradient_formula_and_deepinv_equivalence():
    """grad g = alpha (x - N) - alpha J_N^T (x - N), as deepinv's GSPnP computes it (in float32)."""
    torch.manual_seed(1)
    net = SmallPotentialNet(in_channels=1, channels=6, depth=3)
    ours, theirs = GradientStepDenoiser(net, alpha=0.7), GSPnP(net, alpha=0.7)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, 0.05), theirs(x, 0.05), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.potential(x, 0.05), theirs.potential(x, 0.05), rtol=1e-5, atol=1e-7)


def test_dtype_is_kept(denoiser64):
    """deepinv's GSPnP casts the input to float32 (and then fails on a float64 network); ours keeps float64."""
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        g, grad = denoiser64.potential_and_grad(x, 0.1)
        assert denoiser64(x, 0.1).dtype == g.dtype == grad.dtype == torch.float64


def test_graph_reaches_weights_only_when_training():
    torch.manual_seed(0)
    denoiser = GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=6, depth=3))
    x = torch.rand(2, 1, 8, 8)
    denoiser(x, 0.1).pow(2).sum().backward()
    grads = [p.grad for p in denoiser.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    with torch.no_grad():
        assert not denoiser(x, 0.1).requires_grad
    # deepinv's default (detach=True) frees the graph it still returns: a loss on its output cannot be trained
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        GSPnP(denoiser.potential_net)(x.clone(), 0.1).pow(2).sum().backward()


def test_potential_has_a_gradient_where_the_residual_vanishes():
    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, sigma):
            return self.scale * x

    denoiser = GradientStepDenoiser(Identity())
    x = torch.rand(1, 1, 4, 4)
    out = denoiser(x, 0.1)
    out.sum().backward()
    assert torch.isfinite(denoiser.potential_net.scale.grad)
    torch.testing.assert_close(out, x)


def test_sigma_per_batch_element(denoiser64):
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        both = denoiser64(x, torch.tensor([0.05, 0.2]))
        torch.testing.assert_close(both[:1], denoiser64(x[:1], 0.05))
        torch.testing.assert_close(both[1:], denoiser64(x[1:], 0.2))
    with pytest.raises(ValueError, match="sigma"):
        denoiser64(x, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="sigma"):
        denoiser64(x, None)


def test_bad_arguments():
    with pytest.raises(TypeError, match="potential_net"):
        GradientStepDenoiser(lambda x, s: x)
    with pytest.raises(ValueError, match="alpha"):
        GradientStepDenoiser(SmallPotentialNet(), alpha=0.0)
    with pytest.raises(ValueError, match="depth"):
        SmallPotentialNet(depth=1)
    with pytest.raises(ValueError, match="shape"):
        GradientStepDenoiser(SmallPotentialNet(in_channels=1))(torch.rand(1, 3, 8, 8), 0.1)


def test_trainer_trains_the_denoiser(tmp_path):
    """A short deepinv.Trainer run (supervised denoising) lowers the test error of the denoiser."""
    torch.manual_seed(0)
    denoiser = GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=8, depth=3))
    model = dinv.models.ArtifactRemoval(denoiser, mode="direct")
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1, rng=torch.Generator().manual_seed(0)))
    data = RandomEllipsesDataset(length=8, size=16, seed=0)
    loader = DataLoader(data, batch_size=4, shuffle=False)

    def mse() -> float:
        x = torch.stack([data[i]["x"] for i in range(len(data))])
        gen = torch.Generator().manual_seed(1)
        y = x + 0.1 * torch.randn(x.shape, generator=gen)
        with torch.no_grad():
            return float((denoiser(y, 0.1) - x).pow(2).mean())

    before = mse()
    trainer = cpu_trainer(model, physics, torch.optim.Adam(denoiser.parameters(), lr=1e-2), loader, epochs=5,
                          losses=dinv.loss.SupLoss(), online_measurements=True, save_path=str(tmp_path))
    trainer.train()
    assert mse() < 0.7 * before


def test_gsdrunet_from_local_weights(tmp_path):
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "nb": 1, "nc": (4, 4, 4, 4)}
    reference = dinv.models.GSDRUNet(out_channels=1, pretrained=None, **kwargs)  # deepinv's, random weights
    path = tmp_path / "gsdrunet.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    ours = GradientStepDenoiser.from_gsdrunet(path, **kwargs)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, 0.05), reference(x, 0.05), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="never downloads"):
        GradientStepDenoiser.from_gsdrunet("download", **kwargs)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        GradientStepDenoiser.from_gsdrunet(tmp_path / "missing.pth", **kwargs)


@pytest.mark.parametrize("method", ["forward", "grad", "potential", "potential_and_grad"])
@pytest.mark.parametrize("sigma, error", [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                          ("0.1", TypeError), (True, TypeError),
                                          (torch.tensor([0.1, -0.1]), ValueError),
                                          (torch.tensor([0.1, float("nan")]), ValueError),
                                          (torch.tensor([0.1j, 0.1j]), TypeError)])
def test_bad_noise_level_is_refused(denoiser64, method, sigma, error):
    """A negative or NaN sigma (a number or one per image) was used as it came: a silently wrong denoiser."""
    with pytest.raises(error, match="sigma"):
        getattr(denoiser64, method)(torch.rand(2, 1, 8, 8, dtype=torch.float64), sigma)


@pytest.mark.parametrize("method", ["forward", "grad", "potential", "potential_and_grad"])
def test_bad_images_are_refused(denoiser64, method):
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match="x has dtype torch.float32 but GradientStepDenoiser computes in torch.float64"):
        getattr(denoiser64, method)(x.float(), 0.1)
    for bad in (x.long(), x > 0.5, x.to(torch.complex128)):
        with pytest.raises(TypeError, match="x must be a real floating tensor"):
            getattr(denoiser64, method)(bad, 0.1)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        getattr(denoiser64, method)(x.numpy(), 0.1)
    out = getattr(denoiser64, method)(x[:0], 0.0)  # an empty batch works (and sigma 0 does)
    assert all(t.shape[0] == 0 for t in (out if isinstance(out, tuple) else (out,)))


@pytest.mark.parametrize("build, error, match", [
    (lambda: GradientStepDenoiser(SmallPotentialNet(), alpha=float("inf")), ValueError, "alpha must be a finite"),
    (lambda: GradientStepDenoiser(SmallPotentialNet(), alpha=True), TypeError, "alpha must be a real number"),
    (lambda: GradientStepDenoiser(SmallPotentialNet(), create_graph="yes"), TypeError, "create_graph must be"),
    (lambda: SmallPotentialNet(in_channels=1.0), ValueError, "in_channels must be an integer"),
    (lambda: SmallPotentialNet(channels=True), ValueError, "channels must be an integer"),
    (lambda: SmallPotentialNet(depth=3.0), ValueError, "depth must be an integer >= 2"),
    (lambda: GradientStepDenoiser.from_gsdrunet(None, nb=1.0, nc=(2, 2, 2, 2)), ValueError, "nb must be an integer"),
    (lambda: GradientStepDenoiser.from_gsdrunet(None, nb=1, nc=(2, 2)), ValueError, "nc must be four integers"),
    (lambda: GradientStepDenoiser.from_gsdrunet(None, nb=1, nc=(2, 2, 2, 2.0)), ValueError, "nc must be an integer"),
    (lambda: GradientStepDenoiser.from_gsdrunet(None, in_channels=1.0, nb=1, nc=(2, 2, 2, 2)), ValueError,
     "in_channels must be an integer"),
    (lambda: GradientStepDenoiser.from_gsdrunet(None, nb=1, nc=(2, 2, 2, 2), device="cuda:99"), ValueError,
     "device='cuda:99'"),
])
def test_bad_constructor_arguments_are_named(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_gsdrunet_weights_file_is_named_when_broken(tmp_path):
    kwargs = {"in_channels": 1, "nb": 1, "nc": (2, 2, 2, 2)}
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all" * 10)
    torch.save({"state_dict": {"student_grad.model.m_head.weight": torch.zeros(1)}}, tmp_path / "foreign.pth")
    torch.save([torch.zeros(1)], tmp_path / "a_list.pth")
    torch.save({"state_dict": 3}, tmp_path / "not_a_state.pth")
    for name in ("empty", "garbage", "foreign", "a_list", "not_a_state"):
        with pytest.raises(ValueError, match=f"GS-DRUNet weights '.*{name}.pth'"):
            GradientStepDenoiser.from_gsdrunet(tmp_path / f"{name}.pth", **kwargs)


def test_bad_noise_level_is_refused_whatever_the_network():
    """The check is the denoiser's own, not SmallPotentialNet's: GS-DRUNet took a negative sigma as it came."""
    denoiser = GradientStepDenoiser.from_gsdrunet(None, in_channels=1, nb=1, nc=(2, 2, 2, 2))
    for sigma in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
            denoiser(torch.rand(1, 1, 8, 8), sigma)

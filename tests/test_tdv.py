"""Total Deep Variation prior: architecture vs the published checkpoint, gradient, padding, constraints, PSNR."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepinv_ext import testing
from deepinv_ext.priors import TDV
from deepinv_ext.priors.tdv import symmetric_pad, symmetric_pad_adjoint

GRAY = Path(__file__).resolve().parent / "data" / "tdv" / "tdv3-3-25-f32-gray.pth"  # shipped: never skips
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tdv"  # the authors' test images
needs_image = pytest.mark.skipif(not (DATA / "water-castle.png").exists(), reason=f"water-castle.png not in {DATA}")

# PSNR of the authors' code (VLOGroup/tdv @ fe220b3, model.VNet with the pure-torch optoth stand-in, CPU, float32)
# on the crop [200:264, 100:196] of water-castle.png (channel mean, + 25/255 * RandomState(0).randn(481, 321)
# float32 drawn on the full image), gray weights, sigma = 25/255. On the full 481x321 image the authors' code
# gives 30.298996 dB and TDVNetwork 30.298996 dB (max abs difference 1.8e-7), measured once on this CPU box.
AUTHORS_PSNR_CROP = 27.009983


def small_prior(dtype=torch.float64, **kwargs) -> TDV:
    torch.manual_seed(0)
    return TDV(**({"num_features": 4, "num_macro_blocks": 2} | kwargs)).to(dtype)


def test_symmetric_pad_matches_numpy_and_adjoint():
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    for p in (1, 2, 3):
        ref = np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode="symmetric")
        assert np.array_equal(symmetric_pad(x, p).numpy(), ref)
        y = torch.randn_like(torch.from_numpy(ref))
        lhs = (symmetric_pad(x, p) * y).sum()
        rhs = (x * symmetric_pad_adjoint(y, p)).sum()
        assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_down_is_blurred_7x7_convolution_and_up_its_adjoint():
    prior = small_prior()
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    b = torch.tensor([1.0, 4, 6, 4, 1], dtype=torch.float64)
    blur = (torch.outer(b, b) / 256).view(1, 1, 5, 5)
    w7 = F.conv2d(w.reshape(-1, 1, 3, 3), blur, padding=4).reshape(4, 4, 7, 7)
    for h, v in ((13, 10), (12, 11)):
        x = torch.randn(2, 4, h, v, dtype=torch.float64)
        xp = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="symmetric"))
        ref = F.conv2d(xp, w7, stride=2)
        down = prior._down(x, w)
        assert torch.allclose(down, ref, atol=1e-12)
        g = torch.randn_like(down)
        up = prior._down_adjoint(g, w, x.shape)
        assert up.shape == x.shape
        assert torch.allclose((down * g).sum(), (x * up).sum(), rtol=1e-12)


def test_grad_matches_autograd_of_fn_float64():
    prior = small_prior()
    with torch.no_grad():  # random, unprojected weights make the check harder than trained ones
        for p in prior.parameters():
            p.normal_(0, 0.5)
    testing.check_prior(prior, torch.rand(2, 1, 19, 14, dtype=torch.float64), rtol=1e-5, solvers=False)
    multi = small_prior(in_channels=3, num_scales=2, multiplier=2, num_macro_blocks=1)
    testing.check_prior(multi, torch.rand(2, 3, 13, 16, dtype=torch.float64), rtol=1e-5, solvers=False)


def test_energy_and_grad_agree_with_fn_and_grad():
    prior = small_prior()
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    e, g = prior.energy_and_grad(x)
    assert torch.allclose(e, prior.fn(x), rtol=1e-12)
    assert torch.allclose(g, prior.grad(x), rtol=1e-12)
    assert prior.energy_map(x).shape == (3, 1, 16, 16)


def test_grad_is_differentiable_in_the_parameters():
    prior = small_prior(num_macro_blocks=1)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    v = torch.randn_like(x)
    (gk,) = torch.autograd.grad((prior.grad(x) * v).sum(), prior.K1.weight)
    # directional derivative d/dt <grad R_{K + t D}(x), v> by central differences
    d = torch.randn_like(gk)
    eps = 1e-6
    with torch.no_grad():
        prior.K1.weight += eps * d
        fp = (prior.grad(x) * v).sum()
        prior.K1.weight -= 2 * eps * d
        fm = (prior.grad(x) * v).sum()
        prior.K1.weight += eps * d
    assert torch.allclose((gk * d).sum(), (fp - fm) / (2 * eps), rtol=1e-5)


@pytest.mark.slow
def test_compiled_sweeps_agree_and_training_stays_eager():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    prior = small_prior(num_macro_blocks=1)
    eager = small_prior(num_macro_blocks=1)
    eager.load_state_dict(prior.state_dict())
    assert prior.compile_sweeps() is prior
    x = torch.rand(2, 1, 16, 20, dtype=torch.float64)
    with torch.no_grad():
        e, g = prior.energy_and_grad(x)
        e0, g0 = eager.energy_and_grad(x)
        assert torch.allclose(g, g0, rtol=1e-10, atol=1e-12 * float(g0.abs().max()))
        assert torch.allclose(e, e0, rtol=1e-10) and torch.allclose(prior.fn(x), eager.fn(x), rtol=1e-10)
    assert counters["stats"]["unique_graphs"] >= 2  # energy_and_grad and energy_map were compiled
    compiled_graphs = counters["stats"]["unique_graphs"]
    # recorded by autograd (parameters require grad): the eager sweep, differentiable in the parameters
    (prior.grad(x) ** 2).sum().backward()
    (eager.grad(x) ** 2).sum().backward()
    assert counters["stats"]["unique_graphs"] == compiled_graphs
    assert torch.equal(prior.K1.weight.grad, eager.K1.weight.grad)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\)"):
        prior.grad(torch.rand(1, 2, 16, 16, dtype=torch.float64))


def test_a_copy_of_a_compiled_prior_compiles_its_own_sweeps():
    """deepcopy and pickling keep compile_sweeps' setting, and the copy's sweeps use the copy's weights (dynamo
    with the eager backend: the tracing without inductor's code generation)."""
    import copy
    import pickle

    prior = small_prior(num_macro_blocks=1).requires_grad_(False).compile_sweeps(mode=None, backend="eager")
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        before = prior.fn(x)
        twin = copy.deepcopy(prior)
        for weight in twin.parameters():
            weight.mul_(2.0)
        assert twin._compiled is None and twin._compile_options == prior._compile_options
        assert not torch.allclose(twin.fn(x), before)
        assert torch.allclose(twin.fn(x), twin._energy_map(x).sum(dim=(1, 2, 3)), rtol=1e-12)
        assert torch.equal(prior.fn(x), before)
        thawed = pickle.loads(pickle.dumps(prior))
        assert torch.allclose(thawed.fn(x), before, rtol=1e-12)


def test_projection_constraints():
    prior = small_prior(num_macro_blocks=1)
    with torch.no_grad():
        prior.K1.weight.normal_(0.3, 2.0)
    prior.project()
    w = prior.K1.weight.detach()
    assert w.mean(dim=(1, 2, 3)).abs().max() < 1e-12
    norms = w.pow(2).sum(dim=(1, 2, 3)).sqrt()
    assert (norms <= 1 + 1e-12).all()
    prior.project()
    assert torch.allclose(prior.K1.weight.detach(), w)  # idempotent
    with torch.no_grad():
        prior.K1.weight.mul_(0.1)  # inside the ball: only the mean is removed
    prior.project()
    assert torch.allclose(prior.K1.weight.detach().pow(2).sum(dim=(1, 2, 3)).sqrt(), 0.1 * norms)
    prior.project(surface=True)
    assert torch.allclose(prior.K1.weight.detach().pow(2).sum(dim=(1, 2, 3)).sqrt(), torch.ones(4, dtype=w.dtype))


def test_bad_input():
    prior = small_prior()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\)"):
        prior.fn(torch.rand(1, 2, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="too small"):
        prior.grad(torch.rand(1, 1, 8, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_scales"):
        TDV(num_scales=1)


def test_architecture_and_parameter_count_match_checkpoint():
    ck = torch.load(GRAY, map_location="cpu", weights_only=True)
    published = {k[2:]: v for k, v in ck["model"].items()
                 if k.startswith("R.") and not k.endswith((".mask", ".blur"))}
    fresh = TDV()  # the default constructor is the published architecture
    assert {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in published.items()}
    assert sum(p.numel() for p in fresh.parameters()) == sum(v.numel() for v in published.values())
    prior = TDV.from_checkpoint(GRAY)
    for k, v in prior.state_dict().items():
        assert torch.equal(v, published[k])
    k1 = prior.K1.weight.detach().double()  # the published first kernel satisfies the constraints
    assert k1.mean(dim=(1, 2, 3)).abs().max() < 1e-6
    assert (k1.pow(2).sum(dim=(1, 2, 3)).sqrt() <= 1 + 1e-5).all()


@needs_image
def test_published_weights_psnr_matches_authors_code_on_crop():
    import deepinv as dinv
    from skimage.io import imread

    from deepinv_ext.algorithms import TDVNetwork

    y = imread(DATA / "water-castle.png").astype(np.float32) / 255
    y = y.mean(axis=2)
    z = y + 25 / 255 * np.random.RandomState(0).randn(*y.shape).astype(np.float32)
    crop = (slice(200, 264), slice(100, 196))
    x = torch.from_numpy(np.ascontiguousarray(y[crop]))[None, None]
    z = torch.from_numpy(np.ascontiguousarray(z[crop]))[None, None]
    net = TDVNetwork.from_checkpoint(GRAY)
    with torch.no_grad():
        out = net(z, dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255)))
    psnr = float(dinv.metric.PSNR()(out, x))
    assert abs(psnr - AUTHORS_PSNR_CROP) < 0.01, f"PSNR {psnr:.6f} dB vs authors' {AUTHORS_PSNR_CROP} dB"


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps_is_refused(eps):
    with pytest.raises(ValueError, match="eps"):
        TDV(num_features=4, num_macro_blocks=1, eps=eps)

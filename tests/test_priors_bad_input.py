"""The input policy (issue 23) on the learned priors and the wavelet prior: bad tensors, steps, constructor arguments
and checkpoint files each end in a TypeError or ValueError of ours that names the argument (or the file)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from helpers_priors import PRIOR_NAMES, image_size, make_prior

from deepinv_ext.priors import (
    NETT,
    TDV,
    AdversarialRegularizer,
    ConvexAdversarialRegularizer,
    ProxConfig,
    ProxConvergenceWarning,
    SparsifyingFilterBank,
    WaveletL1Prior,
)
from deepinv_ext.priors.nett import BoundedUNet
from deepinv_ext.priors.smooth import SmoothLeakyReLU

GRAY = Path(__file__).resolve().parent / "data" / "tdv" / "tdv3-3-25-f32-gray.pth"  # shipped with the tests


def _x(name: str, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(batch, 1, *image_size(name), dtype=torch.float64)


def _call(prior, method: str, x):
    return prior.prox(x, gamma=0.1) if method == "prox" else getattr(prior, method)(x)


METHODS = ("fn", "grad", "energy_and_grad", "prox")


# ------------------------------------------------------------------ tensors at the entry points
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_other_precision_is_refused_with_the_way_out(name, method):
    prior, x = make_prior(name), _x(name)
    with pytest.raises(TypeError, match=r"x has dtype torch.float32 but \w+ computes in torch.float64: pass x.to"):
        _call(prior, method, x.float())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_wrong_kind_of_tensor_or_shape_is_refused(name, method):
    prior, x = make_prior(name), _x(name)
    for bad in (x.long(), x > 0.5, x.to(torch.complex128)):
        with pytest.raises(TypeError, match="x must be a real floating tensor"):
            _call(prior, method, bad)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        _call(prior, method, x.tolist())
    for bad in (x[0], x[None], torch.cat([x, x], dim=1)):
        with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\)"):
            _call(prior, method, bad)


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_empty_batch_works(name):
    prior, x = make_prior(name), _x(name)[:0]
    assert prior.fn(x).shape == (0,)
    assert prior.grad(x).shape == x.shape and prior.prox(x, gamma=0.1).shape == x.shape


def test_phi_and_critic_check_their_input():
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        make_prior("NETT").phi(_x("NETT").float())
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        make_prior("ACR").critic(_x("ACR").float())


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_a_non_finite_input_neither_gives_a_finite_prox_nor_spoils_the_warm_start(name):
    """An inf left in the warm start made every later prox of that shape non-finite."""
    prior, x = make_prior(name), _x(name)
    bad = x.clone()
    bad[0, 0, 1, 1] = math.inf
    with pytest.warns(ProxConvergenceWarning, match="1 of 2 images"):
        assert not torch.isfinite(prior.prox(bad, gamma=0.1)[0]).all()
    assert prior.prox_converged.tolist() == [False, True]
    after = prior.prox(x, gamma=0.1)
    assert torch.isfinite(after).all()
    prior.reset_prox()
    torch.testing.assert_close(after, prior.prox(x, gamma=0.1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gamma, error", [(True, TypeError), ("0.1", TypeError), (torch.tensor(0.1j), TypeError),
                                          (torch.tensor([True, False]), TypeError), (-1e-3, ValueError)])
def test_prox_refuses_a_step_that_is_not_a_real_number(gamma, error):
    prior, x = make_prior("SFB"), _x("SFB")
    with pytest.raises(error, match="gamma"):
        prior.prox(x, gamma=gamma)


# ------------------------------------------------------------------ constructor arguments
CONSTRUCTORS = [
    (TDV, {"in_channels": True}, ValueError, "in_channels must be an integer"),
    (TDV, {"num_features": 8.0}, ValueError, "num_features must be an integer"),
    (TDV, {"num_macro_blocks": True}, ValueError, "num_macro_blocks must be an integer"),
    (TDV, {"multiplier": 2.0}, ValueError, "multiplier must be an integer"),
    (TDV, {"num_scales": 1}, ValueError, "num_scales must be an integer >= 2"),
    (TDV, {"zero_mean": "no"}, TypeError, "zero_mean must be True or False"),
    (TDV, {"eps": math.nan}, ValueError, "eps must be a finite number"),
    (TDV, {"prox_config": {"tol": 1e-3}}, TypeError, "prox_config must be None or a"),
    (AdversarialRegularizer, {"widths": 4}, ValueError, "widths must be a non-empty tuple"),
    (AdversarialRegularizer, {"widths": (2.0, 4)}, ValueError, "widths must be an integer"),
    (AdversarialRegularizer, {"negative_slope": math.nan}, ValueError, "negative_slope must be a finite number"),
    (AdversarialRegularizer, {"negative_slope": -1.0}, ValueError, "negative_slope must be a finite number >= 0"),
    (AdversarialRegularizer, {"negative_slope": True}, TypeError, "negative_slope must be a real number"),
    (AdversarialRegularizer, {"box": (0.0, math.inf)}, ValueError, "box must be a finite number"),
    (AdversarialRegularizer, {"box": "ab"}, ValueError, "box must be None or a pair"),
    (AdversarialRegularizer, {"box": (1.0, 0.0)}, ValueError, "box must be None or a pair"),
    (AdversarialRegularizer, {"smoothing": -0.1}, ValueError, "smoothing must be a finite number >= 0"),
    (ConvexAdversarialRegularizer, {"negative_slope": "0.2"}, TypeError, "negative_slope must be a real number"),
    (ConvexAdversarialRegularizer, {"negative_slope": 1.5}, ValueError, "negative_slope must be .* <= 1"),
    (ConvexAdversarialRegularizer, {"learn_l2": "yes"}, TypeError, "learn_l2 must be True or False"),
    (NETT, {"in_channels": 8.0}, ValueError, "in_channels must be an integer"),
    (NETT, {"in_channels": 0}, ValueError, "in_channels must be an integer >= 1"),
    (NETT, {"in_channels": 1.0, "network": torch.nn.Identity()}, ValueError, "in_channels must be an integer"),
    (NETT, {"width": True}, ValueError, "width must be an integer"),
    (NETT, {"depth": 1.0}, ValueError, "depth must be an integer >= 0"),
    (NETT, {"weights": True}, TypeError, "weights .*must be a real number"),
    (NETT, {"weights": "1"}, TypeError, "weights .*must be a real number"),
    (NETT, {"weights": torch.tensor([1.0, math.nan])}, ValueError, "weights .*must be finite > 0"),
    (NETT, {"weights": torch.ones(2, 1, 1)}, ValueError, r"weights must be a number or broadcast to \(1, H, W\)"),
    (NETT, {"network": "unet"}, TypeError, "network must be None or a torch.nn.Module"),
    (BoundedUNet, {"negative_slope": math.nan}, ValueError, "negative_slope must be a finite number"),
    (SmoothLeakyReLU, {"smoothing": math.inf}, ValueError, "smoothing must be a finite number"),
    (SparsifyingFilterBank, {"kernel_size": 3.0}, ValueError, "kernel_size must be an integer"),
    (ProxConfig, {"history": 0}, ValueError, "history must be an integer >= 1"),
    (ProxConfig, {"history": 8.0}, ValueError, "history must be an integer >= 1"),
    (ProxConfig, {"warm_start": "False"}, TypeError, "warm_start must be True or False"),
    (ProxConfig, {"backtracking": "armijo"}, TypeError, "backtracking must be a"),
    (ProxConfig, {"lipschitz_init": True}, TypeError, "lipschitz_init must be a real number"),
    (ProxConfig, {"tol": "1e-5"}, TypeError, "tol must be a real number"),
    (WaveletL1Prior, {"level": 2.0}, ValueError, "level must be an integer >= 1"),
    (WaveletL1Prior, {"level": True}, ValueError, "level must be an integer >= 1"),
    (WaveletL1Prior, {"weight": math.nan}, ValueError, "weight must be a finite number > 0"),
    (WaveletL1Prior, {"weight": math.inf}, ValueError, "weight must be a finite number > 0"),
    (WaveletL1Prior, {"weight": True}, TypeError, "weight must be a real number"),
    (WaveletL1Prior, {"wavelet": None}, TypeError, "wavelet must be the name of an orthogonal wavelet"),
    (WaveletL1Prior, {"wavelet": "no-such-wavelet"}, ValueError, "wavelet must name a discrete PyWavelets"),
    (WaveletL1Prior, {"trainable": "yes"}, TypeError, "trainable must be True or False"),
]


@pytest.mark.parametrize("cls, kwargs, error, match", CONSTRUCTORS,
                         ids=[f"{c.__name__}-{next(iter(k))}-{i}" for i, (c, k, _, _) in enumerate(CONSTRUCTORS)])
def test_constructor_refuses(cls, kwargs, error, match):
    small = {TDV: {"num_features": 2, "num_macro_blocks": 1}, AdversarialRegularizer: {"widths": (2, 2), "hidden": 2},
             ConvexAdversarialRegularizer: {"num_filters": 2, "num_layers": 2, "sfb_filters": 2},
             NETT: {"width": 2, "depth": 1}, BoundedUNet: {"width": 2, "depth": 1},
             SparsifyingFilterBank: {"num_filters": 2}}.get(cls, {})
    with pytest.raises(error, match=match):
        cls(**{**small, **kwargs})


# ------------------------------------------------------------------ the wavelet prior
def _wavelet() -> tuple[WaveletL1Prior, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return WaveletL1Prior(level=2, weight=0.5).double(), torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("gamma, error", [(-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError),
                                          (True, TypeError), ("1", TypeError),
                                          (torch.tensor([0.1, -0.1], dtype=torch.float64), ValueError),
                                          (torch.ones(3), ValueError)])
def test_wavelet_prox_refuses_a_bad_step(gamma, error):
    """prox(x, gamma=-1) expanded the image instead of shrinking it."""
    prior, x = _wavelet()
    with pytest.raises(error, match="gamma"):
        prior.prox(x, gamma=gamma)


def test_wavelet_prox_takes_one_step_per_image():
    prior, x = _wavelet()
    both = prior.prox(x, gamma=torch.tensor([0.1, 0.3], dtype=torch.float64).reshape(2, 1, 1, 1))
    torch.testing.assert_close(both[1:], prior.prox(x[1:], gamma=0.3))


def test_wavelet_refuses_another_precision_and_wrong_tensors():
    prior, x = _wavelet()
    for method in ("fn", "grad", "prox"):
        with pytest.raises(TypeError, match="x has dtype torch.float32 but WaveletL1Prior computes in torch.float64"):
            getattr(prior, method)(x.float())
        for bad in (x.long(), x.to(torch.complex128)):
            with pytest.raises(TypeError, match="x must be a real floating tensor"):
                getattr(prior, method)(bad)
        with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
            getattr(prior, method)(x[0])


def test_wavelet_grad_is_the_subgradient_and_keeps_nan():
    prior, x = _wavelet()
    z = x.detach().requires_grad_(True)
    (reference,) = torch.autograd.grad(prior.fn(z).sum(), z)
    torch.testing.assert_close(prior.grad(x), reference)
    x[0, 0, 1, 1] = math.nan
    assert not torch.isfinite(prior.grad(x)[0]).all() and torch.isfinite(prior.grad(x)[1]).all()


def test_filter_bank_gradient_of_a_nan_is_not_finite():
    """torch.sign(nan) is 0: the l1 subgradient turned a NaN image into a finite gradient."""
    torch.manual_seed(0)
    prior = SparsifyingFilterBank(num_filters=4, kernel_size=3, init_weight=0.5).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    x[0, 0, 3, 3] = math.nan
    assert not torch.isfinite(prior.grad(x)[0]).all() and torch.isfinite(prior.grad(x)[1]).all()


# ------------------------------------------------------------------ TDV checkpoints
def _files(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pth" for name in ("empty", "garbage", "truncated", "pickled", "no_keys",
                                                         "a_list", "not_tdv", "bad_config", "wrong_model")}
    files["empty"].write_bytes(b"")
    files["garbage"].write_bytes(b"not a checkpoint at all" * 10)
    good = {"config": {"R": {"type": "tdv", "config": {"in_channels": 1, "num_features": 2, "num_mb": 1}}},
            "model": {f"R.{k}": v for k, v in TDV(num_features=2, num_macro_blocks=1).state_dict().items()}}
    torch.save(good, files["truncated"])
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:300])
    with open(files["pickled"], "wb") as fh:  # an object torch's weights-only unpickler refuses
        pickle.dump({"config": Path("tdv.yaml"), "model": {}}, fh, protocol=2)
    torch.save({"weights": torch.zeros(1)}, files["no_keys"])
    torch.save([torch.zeros(1)], files["a_list"])
    torch.save({"config": {"R": {"type": "unet"}}, "model": {}}, files["not_tdv"])
    torch.save({"config": "tdv", "model": {}}, files["bad_config"])
    torch.save({**good, "model": {"R.K1.weight": torch.zeros(2, 1, 3, 3)}}, files["wrong_model"])
    return files


def test_tdv_from_checkpoint_names_the_file_of_every_broken_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        TDV.from_checkpoint(tmp_path / "missing.pth")
    for name, path in _files(tmp_path).items():
        with pytest.raises(ValueError, match=f"TDV checkpoint '.*{name}.pth'") as info:
            TDV.from_checkpoint(path)
        assert "weights_only=False" not in str(info.value), name


def test_tdv_from_checkpoint_names_a_garbage_file_the_unpickler_chokes_on(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a torch checkpoint" * 8)
    with pytest.raises(ValueError, match="garbage.pth"):
        TDV.from_checkpoint(path)


def test_tdv_from_checkpoint_loads_the_published_weights():
    prior = TDV.from_checkpoint(GRAY)
    assert prior.in_channels == 1 and prior.num_features == 32 and prior.num_macro_blocks == 3

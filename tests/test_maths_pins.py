"""Pins of two pieces of maths the methods rest on, each against an independent computation, with the mutant each
pin must catch:

- ACR is input-convex only if the hidden-to-hidden (and output) weights its forward pass uses are non-negative:
  checked on the kernels the forward pass actually hands to ``conv2d``, at the default size and after training
  steps of the critic loss. Mutant: a softplus shifted by -1e-3.
- ``WaveletL1Prior.prox`` is the exact soft-threshold of the detail coefficients: against a multi-level Haar
  transform written here in numpy, against PyWavelets' db2 and against the prior's own transform thresholded by
  hand, with weights per level and orientation. Mutant: a doubled threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deepinv_ext.priors.adversarial as adversarial_module
import deepinv_ext.priors.wavelet as wavelet_module
from deepinv_ext.algorithms import WaveletL1Prior
from deepinv_ext.losses import WassersteinCriticLoss
from deepinv_ext.priors import ConvexAdversarialRegularizer


# ------------------------------------------------------------------ ACR: non-negative hidden weights
class RecordingFunctional:
    """``torch.nn.functional`` as ``deepinv_ext/priors/adversarial.py`` sees it, recording the kernels of its
    ``conv2d`` calls (the critic's hidden-to-hidden and output convolutions; its input convolutions are
    ``nn.Conv2d`` modules and the filter bank lives in another module, so neither is recorded). ``shift`` moves
    its softplus (the mutant)."""

    def __init__(self, shift: float = 0.0) -> None:
        self.kernels: list[torch.Tensor] = []
        self.shift = shift

    def __getattr__(self, name: str):
        return getattr(F, name)

    def conv2d(self, input, weight, *args, **kwargs):
        self.kernels.append(weight.detach().clone())
        return F.conv2d(input, weight, *args, **kwargs)

    def softplus(self, input, *args, **kwargs):
        return F.softplus(input, *args, **kwargs) + self.shift


def forward_hidden_kernels(prior: ConvexAdversarialRegularizer, monkeypatch, shift: float = 0.0) -> list:
    recorder = RecordingFunctional(shift)
    with monkeypatch.context() as patch:
        patch.setattr(adversarial_module, "F", recorder)
        prior.fn(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)))
    return recorder.kernels


def check_non_negative(kernels: list, num_layers: int) -> None:
    assert len(kernels) == num_layers, "one kernel per hidden-to-hidden layer plus the output layer"
    negative = [float(k.min()) for k in kernels if bool((k < 0).any())]
    assert not negative, f"the forward pass used negative hidden weights (minima {negative})"


def trained(prior: ConvexAdversarialRegularizer, steps: int = 3) -> ConvexAdversarialRegularizer:
    """``steps`` Adam steps (a large rate, 0.5) of the Wasserstein critic loss, clean images against noisy ones."""
    g = torch.Generator().manual_seed(0)
    loss = WassersteinCriticLoss(mu=10.0, regularizer=prior, generator=g)
    optimizer = torch.optim.Adam(prior.parameters(), lr=0.5)
    clean = torch.rand(4, 1, 16, 16, generator=g)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(x=clean, x_net=clean + 0.2 * torch.randn(clean.shape, generator=g)).mean().backward()
        optimizer.step()
    return prior


def test_acr_forward_uses_non_negative_hidden_weights_at_default_size(monkeypatch):
    torch.manual_seed(0)
    prior = ConvexAdversarialRegularizer()  # 10 layers, 48 filters, 5x5
    kernels = forward_hidden_kernels(prior, monkeypatch)
    check_non_negative(kernels, 10)
    assert [tuple(k.shape) for k in kernels] == [(48, 48, 5, 5)] * 9 + [(1, 48, 5, 5)]
    assert min(float(v.detach().min()) for v in prior.wz_raw) < -8  # the free parameters are negative: softplus at work


def test_acr_forward_uses_non_negative_hidden_weights_after_training(monkeypatch):
    torch.manual_seed(0)
    prior = ConvexAdversarialRegularizer()
    before = [v.detach().clone() for v in prior.wz_raw]
    trained(prior)
    assert all(float((v.detach() - b).abs().max()) > 0.5 for v, b in zip(prior.wz_raw, before))  # training moved them
    check_non_negative(forward_hidden_kernels(prior, monkeypatch), 10)


def test_acr_pins_fail_on_a_softplus_shifted_by_minus_1e3(monkeypatch):
    torch.manual_seed(0)
    prior = ConvexAdversarialRegularizer()
    with pytest.raises(AssertionError, match="negative hidden weights"):
        check_non_negative(forward_hidden_kernels(prior, monkeypatch, shift=-1e-3), 10)
    trained(prior)
    with pytest.raises(AssertionError, match="negative hidden weights"):
        check_non_negative(forward_hidden_kernels(prior, monkeypatch, shift=-1e-3), 10)


# ------------------------------------------------------------------ wavelet prox: exact soft-threshold
def soft(c: np.ndarray, t) -> np.ndarray:
    """Soft-thresholding written as c minus its clip to [-t, t]."""
    return c - np.clip(c, -t, t)


def haar_prox(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Multi-level orthonormal Haar transform of one image by 2x2 blocks, detail band o of level j soft-thresholded
    at ``thresholds[j, o]`` (o = 0: difference across rows, 1: across columns, 2: diagonal), inverted."""
    if len(thresholds) == 0:
        return x
    a, b, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    approx = (a + b + c + d) / 2
    rows, cols, diag = (soft(band, t) for band, t in zip(((a + b - c - d) / 2, (a - b + c - d) / 2,
                                                          (a - b - c + d) / 2), thresholds[0]))
    approx = haar_prox(approx, thresholds[1:])
    out = np.empty_like(x)
    out[0::2, 0::2] = (approx + rows + cols + diag) / 2
    out[0::2, 1::2] = (approx + rows - cols - diag) / 2
    out[1::2, 0::2] = (approx - rows + cols - diag) / 2
    out[1::2, 1::2] = (approx - rows - cols + diag) / 2
    return out


def band_weights(level: int) -> np.ndarray:
    """Weights w[j, o] of level j (finest first) and orientation o, all different (0.05 ... 0.6)."""
    return np.linspace(0.05, 0.6, level * 3).reshape(level, 3)


def wavelet_prior(wavelet: str, level: int = 3) -> WaveletL1Prior:
    """A float64 prior with the weights of :func:`band_weights` (its documented parameter: log w)."""
    prior = WaveletL1Prior(level=level, wavelet=wavelet).double().requires_grad_(False)
    prior.log_weight.copy_(torch.from_numpy(np.log(band_weights(level))))
    return prior


def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


GAMMA = torch.tensor([0.7, 1.9], dtype=torch.float64)  # one step per image


def check_haar_prox() -> None:
    prior, x = wavelet_prior("haar"), images()
    out = prior.prox(x, gamma=GAMMA)
    w = band_weights(3)
    for i in range(2):
        for ch in range(3):
            expected = haar_prox(x[i, ch].numpy(), float(GAMMA[i]) * w)
            np.testing.assert_allclose(out[i, ch].numpy(), expected, rtol=0, atol=1e-12)


def test_haar_prox_is_the_soft_threshold_of_an_independent_haar_transform():
    check_haar_prox()


def test_db2_prox_is_the_soft_threshold_of_its_own_transform():
    pytest.importorskip("pywt")
    prior, x = wavelet_prior("db2"), images()
    approx, details = prior.transform(x)
    w = band_weights(3)
    shrunk = [torch.from_numpy(np.stack([soft(d[i].numpy(), float(GAMMA[i]) * w[j].reshape(1, 3, 1, 1))
                                         for i in range(2)])) for j, d in enumerate(details)]
    torch.testing.assert_close(prior.prox(x, gamma=GAMMA), prior.transform.inverse(approx, shrunk),
                               rtol=0, atol=1e-12)


def test_db2_transform_is_pywavelets_periodised_dwt_shifted_by_one_pixel():
    """One level of the transform equals PyWavelets' ``mode="periodization"`` DWT of the image rolled by one pixel
    up and left (a phase convention; both are orthonormal), so the prox is PyWavelets' soft-threshold there."""
    pywt = pytest.importorskip("pywt")
    prior, x = wavelet_prior("db2", level=1), images()
    out = prior.prox(x, gamma=GAMMA)
    t = band_weights(1)[0]
    for i in range(2):
        for ch in range(3):
            rolled = np.roll(x[i, ch].numpy(), (-1, -1), axis=(0, 1))
            approx, (horizontal, vertical, diagonal) = pywt.dwt2(rolled, "db2", mode="periodization")
            bands = [soft(b, float(GAMMA[i]) * t[o]) for o, b in enumerate((horizontal, vertical, diagonal))]
            expected = pywt.idwt2((approx, tuple(bands)), "db2", mode="periodization")
            np.testing.assert_allclose(out[i, ch].numpy(), np.roll(expected, (1, 1), axis=(0, 1)), atol=1e-12)


def test_wavelet_prox_pin_fails_on_a_doubled_threshold(monkeypatch):
    original = wavelet_module._soft
    monkeypatch.setattr(wavelet_module, "_soft", lambda c, t: original(c, 2 * t))
    with pytest.raises(AssertionError):
        check_haar_prox()

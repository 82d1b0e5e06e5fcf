"""Small layers, physics and data shared by the ReTune tests."""

from __future__ import annotations

import deepinv as dinv
import torch
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import FixedPointLayer, ForwardBackwardLayer
from deepinv_ext.priors import WaveletL1Prior


def blur_physics(size: int = 16, dtype=torch.float64) -> dinv.physics.BlurFFT:
    return dinv.physics.BlurFFT(img_size=(1, size, size), filter=gaussian_blur(sigma=(1.0, 1.0)).to(dtype),
                                noise_model=dinv.physics.GaussianNoise(0.02))


def noisy_data(physics, size: int = 16, batch: int = 2, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, size, size, generator=g, dtype=dtype)
    y = physics.A(x) + 0.02 * torch.randn(x.shape, generator=g, dtype=dtype)
    return x, y


def wavelet_layer(lam: float = 0.05, step: float = 1.5) -> ForwardBackwardLayer:
    return ForwardBackwardLayer(WaveletL1Prior(level=2, weight=1.0), step=step, lam=lam).double()


class CountingLayer(FixedPointLayer):
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


class ScaleDenoiser(dinv.models.Denoiser):
    """D(x) = c x: a 'denoiser' with a known Lipschitz constant c."""

    def __init__(self, c: float):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(float(c), dtype=torch.float64))

    def forward(self, x, sigma=None, **kwargs):
        return self.c * x


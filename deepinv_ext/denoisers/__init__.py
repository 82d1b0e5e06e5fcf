"""Denoisers: :class:`deepinv.models.Denoiser` subclasses, ``denoiser(x, sigma)``."""

from deepinv_ext.denoisers.gradient_step import GradientStepDenoiser, SmallPotentialNet
from deepinv_ext.denoisers.linear_unet import LinearSymmetricUNet

__all__ = ["GradientStepDenoiser", "SmallPotentialNet", "LinearSymmetricUNet"]

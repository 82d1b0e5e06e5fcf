"""Denoisers: :class:`deepinv.models.Denoiser` subclasses, ``denoiser(x, sigma)``."""

# --- gradient-step PnP (issue 6)
from deepinv_ext.denoisers.gradient_step import GradientStepDenoiser, SmallPotentialNet  # noqa: F401

# --- spectral PnP (issue 7)
from deepinv_ext.denoisers.linear_unet import LinearSymmetricUNet  # noqa: F401

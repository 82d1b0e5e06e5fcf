"""Denoisers: :class:`deepinv.models.Denoiser` subclasses, ``denoiser(x, sigma)``."""

# --- spectral PnP (issue 7)
from deepinv_ext.denoisers.linear_unet import LinearSymmetricUNet  # noqa: F401

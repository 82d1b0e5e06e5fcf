"""Deprecated: moved to :mod:`deepinv_ext.priors.wavelet`."""
from deepinv_ext._deprecation import moved_module

__getattr__ = moved_module(__name__, "deepinv_ext.priors.wavelet")

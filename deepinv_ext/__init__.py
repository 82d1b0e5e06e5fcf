r"""deepinv-ext: learned variational regularisation for DeepInverse.

Areas mirror deepinv's: :mod:`deepinv_ext.physics`, :mod:`deepinv_ext.priors`, :mod:`deepinv_ext.denoisers`,
:mod:`deepinv_ext.algorithms`, :mod:`deepinv_ext.losses`, :mod:`deepinv_ext.datasets`; the plugin registry is
:mod:`deepinv_ext.plugins` and the contract checks are :mod:`deepinv_ext.testing`.
"""

from importlib.metadata import PackageNotFoundError, version

from deepinv_ext import datasets, plugins

try:
    __version__ = version("deepinv-ext")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["datasets", "plugins", "__version__"]

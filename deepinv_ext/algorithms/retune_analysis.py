"""Deprecated: moved to :mod:`deepinv_ext.algorithms.retune.jacobian` (Lipschitz estimate, Jacobian-free error),
:mod:`deepinv_ext.algorithms.retune.memory` (``SavedTensorMeter``) and :mod:`deepinv_ext.losses.lipschitz`
(``LipschitzPenalty``); every name resolves through :mod:`deepinv_ext.algorithms`."""
from deepinv_ext._deprecation import moved_module

__getattr__ = moved_module(__name__, "deepinv_ext.algorithms")

"""Training losses (``deepinv.loss.Loss`` subclasses) that deepinv lacks.

``RegularizerTrainingModel``, the model wrapper the regulariser losses train in, lives in
:mod:`deepinv_ext.algorithms` (it is a reconstructor) and is re-exported here.
"""

from deepinv_ext.algorithms.regularizer_training import RegularizerTrainingModel
from deepinv_ext.losses.adversarial import WassersteinCriticLoss
from deepinv_ext.losses.lipschitz import LipschitzPenalty
from deepinv_ext.losses.nett import NETTLoss

__all__ = ["WassersteinCriticLoss", "NETTLoss", "LipschitzPenalty", "RegularizerTrainingModel"]

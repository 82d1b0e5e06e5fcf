"""Training losses (``deepinv.loss.Loss`` subclasses) that deepinv lacks, with the model wrapper they train in."""

from deepinv_ext.losses.adversarial import WassersteinCriticLoss
from deepinv_ext.losses.nett import NETTLoss
from deepinv_ext.losses.pseudo_inverse import RegularizerTrainingModel

__all__ = ["WassersteinCriticLoss", "NETTLoss", "RegularizerTrainingModel"]

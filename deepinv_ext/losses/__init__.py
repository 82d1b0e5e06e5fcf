"""Training losses (``deepinv.loss.Loss`` subclasses) that deepinv lacks, with the model wrapper they train in."""

# --- AR/ACR/NETT (issue 5)
from deepinv_ext.losses.adversarial import WassersteinCriticLoss  # noqa: F401
from deepinv_ext.losses.nett import NETTLoss  # noqa: F401
from deepinv_ext.losses.pseudo_inverse import RegularizerTrainingModel  # noqa: F401

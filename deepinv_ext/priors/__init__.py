"""Learned priors: ``deepinv.optim.Prior`` subclasses with an energy ``fn(x)``, its gradient ``grad(x)`` and a real
proximal operator ``prox(x, gamma)`` (:class:`SmoothLearnedPrior`)."""

from deepinv_ext.priors.accelerated import accelerated_descent
from deepinv_ext.priors.adversarial import AdversarialRegularizer, ConvexAdversarialRegularizer
from deepinv_ext.priors.filter_bank import SparsifyingFilterBank
from deepinv_ext.priors.nett import NETT
from deepinv_ext.priors.real_imag import RealImagPrior
from deepinv_ext.priors.scaled import ScaledPrior
from deepinv_ext.priors.smooth import ProxConfig, ProxConvergenceWarning, SmoothLearnedPrior
from deepinv_ext.priors.step_size import ArmijoStepSize, Backtracking
from deepinv_ext.priors.tdv import TDV
from deepinv_ext.priors.wavelet import OrthoWavelet2d, WaveletL1Prior

__all__ = [
    # the base of smooth learned priors, its inner prox solve and step-size rule
    "SmoothLearnedPrior", "ProxConfig", "ProxConvergenceWarning", "ScaledPrior", "RealImagPrior", "accelerated_descent",
    "ArmijoStepSize", "Backtracking",
    # learned priors
    "TDV", "AdversarialRegularizer", "ConvexAdversarialRegularizer", "NETT", "SparsifyingFilterBank",
    # the wavelet l1 prior (ReTune's)
    "WaveletL1Prior", "OrthoWavelet2d",
]

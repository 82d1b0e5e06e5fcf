"""Learned priors: ``deepinv.optim.Prior`` subclasses with an energy ``fn(x)``, its gradient ``grad(x)`` and a real
proximal operator ``prox(x, gamma)`` (:class:`SmoothLearnedPrior`)."""

from deepinv_ext.priors.accelerated import Backtracking, accelerated_descent
from deepinv_ext.priors.adversarial import AdversarialRegularizer, ConvexAdversarialRegularizer
from deepinv_ext.priors.filter_bank import SparsifyingFilterBank
from deepinv_ext.priors.nett import NETT
from deepinv_ext.priors.smooth import ProxConfig, ProxConvergenceWarning, SmoothLearnedPrior
from deepinv_ext.priors.tdv import TDV

__all__ = ["AdversarialRegularizer", "Backtracking", "ConvexAdversarialRegularizer", "NETT", "ProxConfig",
           "ProxConvergenceWarning", "SmoothLearnedPrior", "SparsifyingFilterBank", "TDV", "accelerated_descent"]

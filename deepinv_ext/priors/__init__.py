"""Learned priors (``deepinv.optim.Prior`` subclasses with an energy ``fn(x)`` and its gradient ``grad(x)``)."""

from deepinv_ext.priors.adversarial import AdversarialRegularizer, ConvexAdversarialRegularizer
from deepinv_ext.priors.filter_bank import SparsifyingFilterBank
from deepinv_ext.priors.nett import NETT
from deepinv_ext.priors.tdv import TDV

__all__ = ["AdversarialRegularizer", "ConvexAdversarialRegularizer", "NETT", "SparsifyingFilterBank", "TDV"]

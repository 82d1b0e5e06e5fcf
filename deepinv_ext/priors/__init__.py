"""Learned priors (``deepinv.optim.Prior`` subclasses with an energy ``fn(x)`` and its gradient ``grad(x)``)."""

# --- AR/ACR/NETT (issue 5)
from deepinv_ext.priors.adversarial import AdversarialRegularizer, ConvexAdversarialRegularizer  # noqa: F401
from deepinv_ext.priors.nett import NETT  # noqa: F401

# --- TDV (issue 4)
from deepinv_ext.priors.tdv import TDV  # noqa: F401

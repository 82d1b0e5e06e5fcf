r"""ReTune: restarted truncated unrolling, a fixed-point network trained at equilibrium with the memory of :math:`L`
layers :footcite:p:`davy2025restarted`.

- :class:`ReTune` (:mod:`~deepinv_ext.algorithms.retune.model`): the reconstructor, trained with :math:`R`
  gradient-free restarts of :math:`L` layers, evaluated at its fixed point;
- the layers it iterates (:mod:`~deepinv_ext.algorithms.retune.layers`): :class:`FixedPointLayer` and
  :class:`ProximalGradientLayer` (the declared types), :class:`ForwardBackwardLayer`,
  :class:`PnPForwardBackwardLayer`, :class:`GradientStepLayer`, :class:`AnchoredLayer`;
- training at equilibrium (:mod:`~deepinv_ext.algorithms.retune.jacobian`, :mod:`~deepinv_ext.algorithms.retune.memory`):
  the layer's Lipschitz constant, the error of the Jacobian-free gradient and its bound :math:`\rho^L`, the activation
  memory of a training step (the contractivity penalty is :class:`deepinv_ext.losses.LipschitzPenalty`);
- the baselines trained on the same layer (:mod:`~deepinv_ext.algorithms.retune.baselines`): standard and full
  unrolling, deepinv's Jacobian-free DEQ, the untrained layer.

The prior of the paper's wavelet experiments is :class:`deepinv_ext.priors.WaveletL1Prior`.
"""

from deepinv_ext.algorithms.retune.baselines import (
    LayerProxPrior,
    deq_baseline,
    full_unrolling,
    standard_unrolling,
    untrained,
)
from deepinv_ext.algorithms.retune.jacobian import (
    jacobian_free_error,
    jacobian_free_error_bound,
    layer_lipschitz,
)
from deepinv_ext.algorithms.retune.layers import (
    AnchoredLayer,
    FixedPointLayer,
    ForwardBackwardLayer,
    GradientStepLayer,
    PnPForwardBackwardLayer,
    ProximalGradientLayer,
)
from deepinv_ext.algorithms.retune.memory import SavedTensorMeter
from deepinv_ext.algorithms.retune.model import ReTune

__all__ = [
    "ReTune",
    # layers
    "FixedPointLayer", "ProximalGradientLayer", "ForwardBackwardLayer", "PnPForwardBackwardLayer", "GradientStepLayer",
    "AnchoredLayer",
    # training at equilibrium
    "layer_lipschitz", "jacobian_free_error", "jacobian_free_error_bound", "SavedTensorMeter",
    # baselines
    "LayerProxPrior", "standard_unrolling", "full_unrolling", "deq_baseline", "untrained",
]

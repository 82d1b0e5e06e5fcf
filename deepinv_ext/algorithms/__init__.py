"""Reconstruction algorithms (``deepinv.models.Reconstructor`` subclasses): ``model(y, physics) -> x``."""

from deepinv_ext._convergence import NotConvergedWarning
from deepinv_ext.algorithms.gs_pnp import GradientStepPnP
from deepinv_ext.algorithms.parameter_choice import (
    AffineParameterRule,
    RelativeChangeStop,
    discrepancy_lambda,
    gradient_balance_lambda,
)
from deepinv_ext.algorithms.retune import ReTune
from deepinv_ext.algorithms.retune_analysis import (
    LipschitzPenalty,
    SavedTensorMeter,
    jacobian_free_error,
    jacobian_free_error_bound,
    layer_lipschitz,
)
from deepinv_ext.algorithms.retune_baselines import (
    LayerProxPrior,
    deq_baseline,
    full_unrolling,
    standard_unrolling,
    untrained,
)
from deepinv_ext.algorithms.retune_layers import (
    AnchoredLayer,
    FixedPointLayer,
    ForwardBackwardLayer,
    GradientStepLayer,
    PnPForwardBackwardLayer,
)
from deepinv_ext.algorithms.retune_wavelet import OrthoWavelet2d, WaveletL1Prior
from deepinv_ext.algorithms.spectral_pnp import SpectralPnP
from deepinv_ext.algorithms.tdv_network import TDVNetwork, constrain_optimizer, prox_data_fidelity
from deepinv_ext.algorithms.variational import VariationalSolver

__all__ = [
    # variational solvers and parameter choice
    "NotConvergedWarning", "VariationalSolver", "AffineParameterRule", "gradient_balance_lambda", "discrepancy_lambda",
    "RelativeChangeStop",
    # TDV
    "TDVNetwork", "constrain_optimizer", "prox_data_fidelity",
    # plug-and-play
    "GradientStepPnP", "SpectralPnP",
    # ReTune
    "ReTune", "FixedPointLayer", "ForwardBackwardLayer", "PnPForwardBackwardLayer", "GradientStepLayer", "AnchoredLayer",
    "WaveletL1Prior", "OrthoWavelet2d", "LayerProxPrior", "standard_unrolling", "full_unrolling", "deq_baseline",
    "untrained", "layer_lipschitz", "jacobian_free_error", "jacobian_free_error_bound", "SavedTensorMeter",
    "LipschitzPenalty",
]

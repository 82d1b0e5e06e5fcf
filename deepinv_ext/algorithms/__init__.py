"""Reconstruction algorithms (``deepinv.models.Reconstructor`` subclasses): ``model(y, physics) -> x``."""

from deepinv_ext._convergence import NotConvergedWarning
from deepinv_ext.algorithms.bilevel import BilevelReconstructor
from deepinv_ext.algorithms.data_fidelity import prox_data_fidelity
from deepinv_ext.algorithms.fista import FISTASolver
from deepinv_ext.algorithms.gs_pnp import GradientStepPnP
from deepinv_ext.algorithms.hypergradient import Hypergradient, HypergradientBound, mixed_derivative_norm
from deepinv_ext.algorithms.maid import MAID
from deepinv_ext.algorithms.parameter_choice import (
    AffineParameterRule,
    RelativeChangeStop,
    discrepancy_lambda,
    gradient_balance_lambda,
    noise_norm_gaussian,
    noise_norm_log_poisson,
    select_lambda_and_budget,
)
from deepinv_ext.algorithms.regularizer_training import RegularizerTrainingModel
from deepinv_ext.algorithms.retune import (
    AnchoredLayer,
    FixedPointLayer,
    ForwardBackwardLayer,
    GradientStepLayer,
    LayerProxPrior,
    PnPForwardBackwardLayer,
    ProximalGradientLayer,
    ReTune,
    SavedTensorMeter,
    deq_baseline,
    full_unrolling,
    jacobian_free_error,
    jacobian_free_error_bound,
    layer_lipschitz,
    standard_unrolling,
    untrained,
)
from deepinv_ext.algorithms.spectral_pnp import SpectralPnP
from deepinv_ext.algorithms.tdv_network import TDVNetwork, constrain_optimizer
from deepinv_ext.algorithms.variational import VariationalSolver
from deepinv_ext.losses.lipschitz import LipschitzPenalty
from deepinv_ext.priors.wavelet import OrthoWavelet2d, WaveletL1Prior

__all__ = [
    # variational solvers and parameter choice
    "NotConvergedWarning", "VariationalSolver", "FISTASolver", "AffineParameterRule", "gradient_balance_lambda",
    "discrepancy_lambda", "noise_norm_gaussian", "noise_norm_log_poisson", "select_lambda_and_budget",
    "RelativeChangeStop",
    # the data-fidelity prox every solver shares
    "prox_data_fidelity",
    # TDV
    "TDVNetwork", "constrain_optimizer",
    # plug-and-play
    "GradientStepPnP", "SpectralPnP",
    # ReTune (deepinv_ext.algorithms.retune; its prior and its penalty live in priors/ and losses/)
    "ReTune", "FixedPointLayer", "ProximalGradientLayer", "ForwardBackwardLayer", "PnPForwardBackwardLayer",
    "GradientStepLayer", "AnchoredLayer", "LayerProxPrior", "standard_unrolling", "full_unrolling", "deq_baseline",
    "untrained", "layer_lipschitz", "jacobian_free_error", "jacobian_free_error_bound", "SavedTensorMeter",
    "WaveletL1Prior", "OrthoWavelet2d", "LipschitzPenalty",
    # training a regulariser in deepinv.Trainer
    "RegularizerTrainingModel",
    # bilevel learning: implicit hypergradients, certified bounds, MAID
    "BilevelReconstructor", "MAID", "HypergradientBound", "Hypergradient", "mixed_derivative_norm",
]

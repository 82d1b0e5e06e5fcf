"""Reconstruction algorithms (``deepinv.models.Reconstructor`` subclasses): ``model(y, physics) -> x``."""

# --- gradient-step PnP (issue 6)
from deepinv_ext.algorithms.gs_pnp import GradientStepPnP  # noqa: F401
from deepinv_ext.algorithms.parameter_choice import AffineParameterRule  # noqa: F401

# --- ReTune (issue 8)
from deepinv_ext.algorithms.retune import ReTune  # noqa: F401
from deepinv_ext.algorithms.retune_analysis import (  # noqa: F401
    LipschitzPenalty,
    SavedTensorMeter,
    jacobian_free_error,
    jacobian_free_error_bound,
    layer_lipschitz,
)
from deepinv_ext.algorithms.retune_baselines import (  # noqa: F401
    LayerProxPrior,
    deq_baseline,
    full_unrolling,
    standard_unrolling,
    untrained,
)
from deepinv_ext.algorithms.retune_layers import (  # noqa: F401
    FixedPointLayer,
    ForwardBackwardLayer,
    GradientStepLayer,
    PnPForwardBackwardLayer,
)
from deepinv_ext.algorithms.retune_wavelet import OrthoWavelet2d, WaveletL1Prior  # noqa: F401

# --- spectral PnP (issue 7)
from deepinv_ext.algorithms.spectral_pnp import SpectralPnP  # noqa: F401

# --- TDV (issue 4)
from deepinv_ext.algorithms.tdv_network import TDVNetwork, constrain_optimizer, prox_data_fidelity  # noqa: F401
from deepinv_ext.algorithms.variational import VariationalSolver  # noqa: F401

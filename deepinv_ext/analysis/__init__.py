"""Tools that study a learned regulariser: its nonlinear eigenfunctions (:mod:`.eigenfunctions`) and the sensitivity
of a learned TDV flow to its parameters, hence to its training data (:mod:`.sensitivity`)."""

from deepinv_ext.analysis.eigenfunctions import EigenfunctionResult, nonlinear_eigenfunction
from deepinv_ext.analysis.sensitivity import SensitivityBound, gronwall_bound, tdv_sensitivity

__all__ = ["EigenfunctionResult", "SensitivityBound", "gronwall_bound", "nonlinear_eigenfunction", "tdv_sensitivity"]

"""The sparsifying filter bank: gradient, convexity, and anisotropic TV as a special case."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.priors.filter_bank import SparsifyingFilterBank, smooth_abs
from deepinv_ext.testing import check_prior


@pytest.mark.parametrize("smoothing", [0.0, 0.05])
def test_gradient_matches_autograd(smoothing):
    torch.manual_seed(0)
    prior = SparsifyingFilterBank(num_filters=7, kernel_size=5, init_weight=0.3, smoothing=smoothing).double()
    check_prior(prior, torch.rand(3, 1, 11, 9, dtype=torch.float64), rtol=1e-10, solvers=False)


def test_finite_differences_give_anisotropic_tv():
    """With the two forward differences as filters and weight 1, the energy of an image that vanishes on its
    border is its anisotropic total variation."""
    prior = SparsifyingFilterBank(num_filters=2, kernel_size=3, init_weight=1.0).double()
    with torch.no_grad():
        prior.filters.weight.zero_()
        prior.filters.weight[0, 0, 1, 1], prior.filters.weight[0, 0, 1, 2] = -1.0, 1.0
        prior.filters.weight[1, 0, 1, 1], prior.filters.weight[1, 0, 2, 1] = -1.0, 1.0
    x = torch.zeros(2, 1, 12, 12, dtype=torch.float64)
    x[:, :, 1:-1, 1:-1] = torch.rand(2, 1, 10, 10, dtype=torch.float64)
    tv = (x.diff(dim=-1).abs().sum(dim=(1, 2, 3)) + x.diff(dim=-2).abs().sum(dim=(1, 2, 3)))
    torch.testing.assert_close(prior.fn(x), tv)


def test_midpoint_convexity_with_random_filters():
    torch.manual_seed(1)
    prior = SparsifyingFilterBank(num_filters=16, kernel_size=3, init_weight=2.0).double()
    with torch.no_grad():
        prior.filters.weight.mul_(10)
    g = torch.Generator().manual_seed(2)
    a = torch.randn(1000, 1, 8, 8, generator=g, dtype=torch.float64)
    b = torch.randn(1000, 1, 8, 8, generator=g, dtype=torch.float64)
    gap = prior.fn((a + b) / 2) - (prior.fn(a) + prior.fn(b)) / 2
    assert (gap <= 1e-10 * prior.fn(a).abs().max()).all()
    assert (gap < -1e-3).any()  # not linear: the absolute value bends


def test_smooth_abs():
    t = torch.linspace(-3, 3, 61, dtype=torch.float64)
    torch.testing.assert_close(smooth_abs(t), t.abs())
    s = smooth_abs(t, 0.5)
    assert (s <= t.abs()).all() and (t.abs() - s <= 0.5 + 1e-12).all() and float(s[30]) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="num_filters"):
        SparsifyingFilterBank(num_filters=0)
    with pytest.raises(ValueError, match="init_weight"):
        SparsifyingFilterBank(init_weight=0.0)
    with pytest.raises(ValueError, match="smoothing"):
        SparsifyingFilterBank(smoothing=-1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        SparsifyingFilterBank().fn(torch.rand(2, 3, 8, 8))

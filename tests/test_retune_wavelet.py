"""The orthonormal wavelet transform and the weighted l1 prior (priors/wavelet.py)."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.priors import WaveletL1Prior


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_wavelet_basis_is_orthonormal_and_prox_firmly_nonexpansive(wavelet):
    if wavelet != "haar":
        pytest.importorskip("pywt")
    prior = WaveletL1Prior(level=3, wavelet=wavelet, weight=0.3).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    z = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    a, details = prior.transform(x)
    energy = a.pow(2).sum() + sum(dd.pow(2).sum() for dd in details)
    torch.testing.assert_close(energy, x.pow(2).sum())
    torch.testing.assert_close(prior.transform.inverse(a, details), x)
    px, pz = prior.prox(x, gamma=0.5), prior.prox(z, gamma=0.5)
    with torch.no_grad():
        assert float((px - pz).pow(2).sum()) <= float(((px - pz) * (x - z)).sum()) + 1e-12
        assert float(prior.fn(px).sum()) < float(prior.fn(x).sum())  # shrinks the coefficients
    with pytest.raises(ValueError, match="divisible"):
        prior.prox(torch.zeros(1, 1, 12, 12, dtype=torch.float64), gamma=0.1)



def test_old_wavelet_module_resolves_with_a_deprecation_warning():
    import deepinv_ext.algorithms.retune_wavelet as old

    with pytest.warns(DeprecationWarning, match=r"retune_wavelet.WaveletL1Prior moved to deepinv_ext.priors.wavelet"):
        assert old.WaveletL1Prior is WaveletL1Prior


def test_the_prior_is_still_importable_from_algorithms_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from deepinv_ext.algorithms import OrthoWavelet2d as from_algorithms
        from deepinv_ext.algorithms import WaveletL1Prior as prior_from_algorithms
        from deepinv_ext.priors import OrthoWavelet2d
    assert prior_from_algorithms is WaveletL1Prior and from_algorithms is OrthoWavelet2d

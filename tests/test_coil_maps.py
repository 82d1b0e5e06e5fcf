"""Tests of ESPIRiT coil maps (Cartesian and gridded non-Cartesian) against SigPy's known birdcage maps."""

from __future__ import annotations

import pytest
import sigpy
import torch

from deepinv_ext.physics.coil_maps import estimate_coil_maps
from deepinv_ext.physics.functional import radial_dcf, radial_trajectory
from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI

N, COILS, CALIB = 32, 4, 16


@pytest.fixture(scope="module")
def data():
    maps = SigpyMultiCoilMRI.birdcage_maps(COILS, (N, N), dtype=torch.complex128)
    phantom = torch.from_numpy(sigpy.shepp_logan((N, N))).to(torch.complex128)
    x = torch.view_as_real(torch.stack([phantom, phantom.flip(-1) * 1j])).permute(0, 3, 1, 2).contiguous()
    return maps, phantom, x


def _check(est: torch.Tensor, maps: torch.Tensor, phantom: torch.Tensor, coil_images: torch.Tensor) -> None:
    """Maps right up to a common per-pixel phase: |<s_est, s_true>| = 1, and the coil-combined image magnitude
    is the phantom's (normalised error < 5% inside the object)."""
    inside = phantom.abs() > 1e-3
    corr = (est.conj() * maps).sum(dim=1).abs()
    assert float(corr[0][inside].min()) > 0.95
    combined = (est.conj() * coil_images).sum(dim=1)[0]
    error = (combined.abs() - phantom.abs())[inside].norm() / phantom.abs()[inside].norm()
    assert float(error) < 0.05, float(error)


def test_espirit_cartesian_batched(data):
    maps, phantom, x = data
    physics = SigpyMultiCoilMRI(maps)
    y = physics.A(x)
    est = estimate_coil_maps(y, calib_size=CALIB)
    assert est.shape == (2, COILS, N, N) and est.is_complex()
    coil_images = physics.ifft(physics.to_torch_complex(y))
    _check(est[:1], maps[None], phantom, coil_images[:1])
    _check(est[1:], maps[None], phantom.flip(-1), coil_images[1:])  # each sample gets its own maps


def test_espirit_non_cartesian_gridded(data):
    maps, phantom, x = data
    traj = radial_trajectory((N, N), n_spokes=48, dtype=torch.float64)
    y = SigpyMultiCoilMRI(maps, trajectory=traj, dcf=None).A(x[:1])
    est = estimate_coil_maps(y, calib_size=CALIB, trajectory=traj, img_size=(N, N),
                             dcf=radial_dcf(traj, (N, N), 2 * N))
    cartesian = SigpyMultiCoilMRI(maps)
    _check(est, maps[None], phantom, cartesian.ifft(cartesian.to_torch_complex(cartesian.A(x[:1]))))


def test_bad_inputs(data):
    maps, _, x = data
    y = SigpyMultiCoilMRI(maps).A(x)
    with pytest.raises(ValueError, match="NaN"):
        estimate_coil_maps(y * float("nan"))
    with pytest.raises(ValueError, match="y must have shape"):
        estimate_coil_maps(y[:, 0])
    with pytest.raises(ValueError, match="trajectory"):
        estimate_coil_maps(y.flatten(-2))
    with pytest.raises(ValueError, match="calib_size"):
        estimate_coil_maps(y, calib_size=2 * N)

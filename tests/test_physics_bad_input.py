"""The input policy on the physics and generators of deepinv_ext.physics: every bad argument or tensor ends in a
TypeError or ValueError raised by deepinv-ext that names it (never an error from inside torch, ASTRA or SigPy, nor
a silently wrong result)."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.physics import (
    AstraCT,
    RadialTrajectoryGenerator,
    RandomViewsGenerator,
    SigpyMultiCoilMRI,
    SpiralTrajectoryGenerator,
    estimate_coil_maps,
)
from deepinv_ext.physics.functional import pipe_menon_dcf, radial_trajectory

pytest.importorskip("astra")

NAN, INF = float("nan"), float("inf")


def _ct(**kwargs) -> AstraCT:
    return AstraCT(**({"img_size": 8, "angles": 6, "backend": "sparse", "cache_dir": None} | kwargs))


def _maps(dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    return SigpyMultiCoilMRI.birdcage_maps(2, (8, 8), dtype=dtype)


def _traj() -> torch.Tensor:
    return radial_trajectory((8, 8), n_spokes=4, n_readout=8)


def _mri(**kwargs) -> SigpyMultiCoilMRI:
    return SigpyMultiCoilMRI(**({"coil_maps": _maps(), "trajectory": _traj(), "dcf": None} | kwargs))


# ------------------------------------------------------------------------------------ constructors
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(angles="6"), TypeError, "angles"),
    (dict(angles=[0.0, INF]), ValueError, "angles"),
    (dict(angles=torch.tensor([1 + 1j])), TypeError, "angles"),
    (dict(n_detectors=12.0), ValueError, "n_detectors"),
    (dict(n_detectors=True), ValueError, "n_detectors"),
    (dict(detector_spacing="1"), TypeError, "detector_spacing"),
    (dict(detector_spacing=True), TypeError, "detector_spacing"),
    (dict(detector_spacing=INF), ValueError, "detector_spacing"),
    (dict(geometry="fanbeam", source_radius=INF), ValueError, "source_radius"),
    (dict(geometry="fanbeam", source_radius="20"), TypeError, "source_radius"),
    (dict(geometry="fanbeam", detector_radius=INF), ValueError, "detector_radius"),
    (dict(geometry="fanbeam", detector_radius=NAN), ValueError, "detector_radius"),
    (dict(cache_dir=3), TypeError, "cache_dir"),
    (dict(cache_dir=True), TypeError, "cache_dir"),
    (dict(sparse_max_nnz=1e5), ValueError, "sparse_max_nnz"),
    (dict(sparse_max_nnz=-1), ValueError, "sparse_max_nnz"),
    (dict(check_finite="yes"), TypeError, "check_finite"),
    (dict(check_finite=1), TypeError, "check_finite"),
    (dict(max_iter=5.0), ValueError, "max_iter"),
    (dict(tol=NAN), ValueError, "tol"),
    (dict(noise_model="gaussian"), TypeError, "noise_model"),
    (dict(device="gpu"), ValueError, "device"),
])
def test_astra_ct_constructor(kwargs, error, match):
    with pytest.raises(error, match=match):
        _ct(**kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(coil_maps=_maps()[:0]), ValueError, "coil_maps"),
    (dict(coil_maps="maps"), TypeError, "coil_maps"),
    (dict(trajectory=None, mask=torch.ones(8, 8, dtype=torch.bool)), TypeError, "mask"),
    (dict(trajectory=None, mask=torch.ones(8, 8, dtype=torch.complex64)), TypeError, "mask"),
    (dict(trajectory=None, mask="mask"), TypeError, "mask"),
    (dict(trajectory=_traj()[:0]), ValueError, "trajectory"),
    (dict(trajectory=_traj().long()), TypeError, "trajectory"),
    (dict(dcf=torch.ones(32, dtype=torch.complex64)), TypeError, "dcf"),
    (dict(dcf=-torch.ones(32)), ValueError, "dcf"),
    (dict(dcf=torch.full((32,), NAN)), ValueError, "dcf"),
    (dict(oversamp=NAN), ValueError, "oversamp"),
    (dict(oversamp=0.5), ValueError, "oversamp"),
    (dict(oversamp="1.25"), TypeError, "oversamp"),
    (dict(width=4.0), ValueError, "width"),
    (dict(width=1), ValueError, "width"),
    (dict(max_iter=5.0), ValueError, "max_iter"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(tol=-1.0), ValueError, "tol"),
    (dict(tol="1e-6"), TypeError, "tol"),
    (dict(noise_model=3), TypeError, "noise_model"),
    (dict(device="gpu"), ValueError, "device"),
])
def test_mri_constructor(kwargs, error, match):
    with pytest.raises(error, match=match):
        _mri(**kwargs)


_RADIAL = {"img_size": (8, 8), "n_spokes": 4, "dcf": False}
_SPIRAL = {"img_size": (8, 8), "n_interleaves": 2, "n_turns": 2, "n_samples": 24, "dcf": False}


@pytest.mark.parametrize("cls,base,kwargs,error,match", [
    (RandomViewsGenerator, {"full_angles": 18, "n_views": 3}, dict(full_angles=180.0), TypeError, "full_angles"),
    (RandomViewsGenerator, {"full_angles": 18, "n_views": 3}, dict(full_angles="180"), TypeError, "full_angles"),
    (RandomViewsGenerator, {"full_angles": 18, "n_views": 1}, dict(full_angles=[0.0, NAN]), ValueError,
     "full_angles"),
    (RandomViewsGenerator, {"full_angles": 18, "n_views": 3}, dict(rng=3), TypeError, "rng"),
    (RandomViewsGenerator, {"full_angles": 18, "n_views": 3}, dict(device="gpu"), ValueError, "device"),
    (RadialTrajectoryGenerator, _RADIAL, dict(img_size=(8.0, 8)), ValueError, "img_size"),
    (RadialTrajectoryGenerator, _RADIAL, dict(n_spokes=4.0), ValueError, "n_spokes"),
    (RadialTrajectoryGenerator, _RADIAL, dict(n_spokes=True), ValueError, "n_spokes"),
    (RadialTrajectoryGenerator, _RADIAL, dict(n_readout=12.5), ValueError, "n_readout"),
    (RadialTrajectoryGenerator, _RADIAL, dict(golden_angle="yes"), TypeError, "golden_angle"),
    (RadialTrajectoryGenerator, _RADIAL, dict(random_rotation=None), TypeError, "random_rotation"),
    (RadialTrajectoryGenerator, _RADIAL, dict(dcf=1), TypeError, "dcf"),
    (RadialTrajectoryGenerator, _RADIAL, dict(rng=3), TypeError, "rng"),
    (RadialTrajectoryGenerator, _RADIAL, dict(dtype=torch.int64), TypeError, "dtype"),
    (RadialTrajectoryGenerator, _RADIAL, dict(dtype=torch.float16), TypeError, "dtype"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(n_interleaves=2.0), ValueError, "n_interleaves"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(n_turns=NAN), ValueError, "n_turns"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(n_turns=True), TypeError, "n_turns"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(n_samples=-1), ValueError, "n_samples"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(n_samples=24.0), ValueError, "n_samples"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(alpha=INF), ValueError, "alpha"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(dtype="float32"), TypeError, "dtype"),
    (SpiralTrajectoryGenerator, _SPIRAL, dict(device="gpu"), ValueError, "device"),
])
def test_generator_constructor(cls, base, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**(base | kwargs))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a CUDA device")
@pytest.mark.parametrize("make", [
    lambda: _ct(device="cuda"), lambda: _mri(device="cuda:1"), lambda: RandomViewsGenerator(18, 3, device="cuda"),
    lambda: RadialTrajectoryGenerator(**_RADIAL, device="cuda"),
    lambda: SpiralTrajectoryGenerator(**_SPIRAL, device="cuda"),
])
def test_cuda_device_without_cuda_is_named(make):
    with pytest.raises(ValueError, match="device='cuda.*no CUDA device"):
        make()


@pytest.mark.parametrize("generator", [
    RandomViewsGenerator(18, 3), RadialTrajectoryGenerator(**_RADIAL), SpiralTrajectoryGenerator(**_SPIRAL)])
@pytest.mark.parametrize("batch_size", [2.5, 0, True, -1, 2.0])
def test_generator_step_batch_size(generator, batch_size):
    """``batch_size=0`` is refused: the physics take no empty set of views or trajectories."""
    with pytest.raises(ValueError, match="batch_size"):
        generator.step(batch_size=batch_size)


# ------------------------------------------------------------------------------------ AstraCT calls
def _ct_calls(physics: AstraCT):
    y = torch.rand(2, 1, 6, physics.n_detectors)
    return [(physics.A, torch.rand(2, 1, 8, 8), "x"), (physics.A_adjoint, y, "y"), (physics.A_dagger, y, "y"),
            (physics.fbp, y, "y")]


@pytest.mark.parametrize("index", range(4))
def test_astra_ct_call_refuses_bad_tensors(index):
    method, t, name = _ct_calls(_ct())[index]
    for bad, error, match in [
        (t[..., :1], ValueError, f"{name} must have shape"),  # broadcasts, but is not the operator's shape
        (t[0], ValueError, f"{name} must have shape"),
        (t.tolist(), TypeError, f"{name} must be a torch.Tensor"),
        (t.long(), TypeError, f"{name} must be a real floating tensor"),
        (t > 0.5, TypeError, f"{name} must be a real floating tensor"),
        (t.to(torch.complex64), TypeError, f"{name} must be a real floating tensor"),
        (t.half(), TypeError, "float32 or float64"),
        (t.to("meta"), ValueError, f"{name} is on meta but the physics is on cpu"),
    ]:
        with pytest.raises(error, match=match):
            method(bad)


@pytest.mark.parametrize("backend", ["sparse", "astra"])
@pytest.mark.parametrize("geometry", ["parallel", "fanbeam"])
def test_astra_ct_empty_batch_float64_and_nan(backend, geometry):
    physics = _ct(backend=backend, geometry=geometry)
    for method, t, name in _ct_calls(physics):
        empty = method(t[:0])
        assert empty.shape[0] == 0 and empty.dtype == t.dtype
        assert method(t.double()).dtype == torch.float64  # sparse: in float64; astra: float32 and cast back
        bad = t.clone()
        bad[0, 0, 0, 0] = NAN
        with pytest.raises(ValueError, match=f"{name} must be finite, got 1 NaN or infinite entries"):
            method(bad)
    lenient = _ct(backend=backend, geometry=geometry, check_finite=False)
    x = torch.rand(2, 1, 8, 8)
    x[0, 0, 4, 4] = NAN
    assert torch.isnan(lenient.A(x)).any()  # propagated, visible


def test_astra_ct_update_refuses_bad_views():
    physics = _ct()
    with pytest.raises(TypeError, match="angles"):
        physics.update(angles="0, 30")
    with pytest.raises(TypeError, match="angles"):
        physics.update(angles=torch.tensor([True, False]))


# ------------------------------------------------------------------------------------ MRI calls
@pytest.mark.parametrize("cartesian", [True, False])
def test_mri_calls_refuse_bad_tensors(cartesian):
    physics = _mri(trajectory=None) if cartesian else _mri()
    x = torch.randn(2, 2, 8, 8)
    y = physics.A(x)
    for method, t, name in [(physics.A, x, "x"), (physics.A_adjoint, y, "y"), (physics.A_dagger, y, "y")]:
        for bad, error, match in [
            (t[:, :1], ValueError, f"{name} must have shape"),
            (t[..., :1], ValueError, f"{name} must have shape"),
            (t.tolist(), TypeError, f"{name} must be a torch.Tensor"),
            (t.long(), TypeError, f"{name} must be a real floating tensor"),
            (t > 0, TypeError, f"{name} must be a real floating tensor"),
            (t.to(torch.complex64), TypeError, f"{name} must be a real floating tensor"),
            (t.half(), TypeError, "float32 or float64"),
            (t[:0], ValueError, f"{name} must hold at least one sample"),
            (t.to("meta"), ValueError, f"{name} is on meta but the physics is on cpu"),
        ]:
            with pytest.raises(error, match=match):
                method(bad)
        nan = t.clone()
        nan.view(-1)[0] = NAN
        if method == physics.A_dagger:
            with pytest.raises(ValueError, match="y must be finite"):
                method(nan)
        else:
            assert torch.isnan(method(nan)).any()  # the operators propagate NaN: visible


@pytest.mark.parametrize("cartesian", [True, False])
def test_mri_result_has_the_input_dtype(cartesian):
    """The products with the coil maps run in the higher precision; the result has the input's dtype."""
    for maps_dtype in (torch.complex64, torch.complex128):
        physics = _mri(coil_maps=_maps(maps_dtype), trajectory=None if cartesian else _traj().double())
        for dtype in (torch.float32, torch.float64):
            y = physics.A(torch.randn(1, 2, 8, 8, dtype=dtype))
            assert y.dtype == dtype and physics.A_adjoint(y).dtype == dtype
            assert physics.A_dagger(y, mode="dcf").dtype == dtype


def test_mri_to_a_real_dtype_keeps_the_coil_maps_complex():
    """torch's Module.to(torch.float32) would cast complex buffers to real, dropping the imaginary part."""
    physics = _mri(coil_maps=_maps(torch.complex128), trajectory=None)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    expected = physics.A(x)
    physics.to(torch.float32)
    assert physics.coil_maps.dtype == torch.complex64
    torch.testing.assert_close(physics.A(x.float()), expected.float(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ functions
def test_trajectory_functions_and_coil_maps_refuse_bad_arguments():
    with pytest.raises(ValueError, match="trajectory"):
        pipe_menon_dcf(torch.zeros(0, 2), (8, 8))
    with pytest.raises(ValueError, match="trajectory leaves"):
        pipe_menon_dcf(10 * _traj(), (8, 8))
    with pytest.raises(ValueError, match="max_iter"):
        pipe_menon_dcf(_traj(), (8, 8), max_iter=2.0)
    y = SigpyMultiCoilMRI(_maps()).A(torch.randn(1, 2, 8, 8))
    for kwargs, error, match in [(dict(calib_size=4.0), ValueError, "calib_size"),
                                 (dict(thresh=NAN), ValueError, "thresh"), (dict(crop=1.5), ValueError, "crop"),
                                 (dict(kernel_width=6.0), ValueError, "kernel_width"),
                                 (dict(kernel_width=5), ValueError, "kernel_width"),
                                 (dict(max_iter=True), ValueError, "max_iter")]:
        with pytest.raises(error, match=match):
            estimate_coil_maps(y, **({"calib_size": 4} | kwargs))
    for bad, error, match in [(y.long(), TypeError, "y must be a real floating"), (y[:0], ValueError, "y must hold"),
                              (y.half(), TypeError, "float32 or float64")]:
        with pytest.raises(error, match=match):
            estimate_coil_maps(bad, calib_size=4)

"""AstraCT on the CPU: adjointness, agreement with ASTRA called directly, autograd, deepinv behaviour, errors."""

from __future__ import annotations

import deepinv as dinv
import numpy as np
import pytest
import torch

from deepinv_ext.physics import AstraCT

astra = pytest.importorskip("astra")


PROJECTORS = [("parallel", "line"), ("parallel", "strip"), ("parallel", "linear"),
              ("fanbeam", "line_fanflat"), ("fanbeam", "strip_fanflat")]


def _rand(*shape, dtype=torch.float32, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _adjoint_error(physics, x, y):
    lhs = (physics.A(x).double() * y.double()).sum()
    return float(((lhs - (x.double() * physics.A_adjoint(y).double()).sum()) / lhs).abs())


@pytest.mark.parametrize("backend", ["astra", "sparse"])
@pytest.mark.parametrize("geometry,projector", PROJECTORS)
def test_adjoint_float32_and_matches_astra_directly(geometry, projector, backend, tmp_path):
    physics = AstraCT((24, 20), angles=20, geometry=geometry, projector=projector, backend=backend,
                      cache_dir=tmp_path)
    x = _rand(2, 2, 24, 20)
    y = _rand(2, 2, 20, physics.n_detectors, seed=1)
    assert _adjoint_error(physics, x, y) < 1e-5
    # the same projection and back-projection as ASTRA's own 2D calls
    vol_geom = astra.create_vol_geom(24, 20)
    angles = np.deg2rad(physics.angles.numpy())
    if geometry == "parallel":
        proj_geom = astra.create_proj_geom("parallel", 1.0, physics.n_detectors, angles)
    else:
        proj_geom = astra.create_proj_geom("fanflat", 1.0, physics.n_detectors, angles,
                                           float(physics.source_radius), float(physics.detector_radius))
    pid = astra.create_projector(projector, proj_geom, vol_geom)
    try:
        sid, sino = astra.create_sino(x[1, 0].numpy(), pid)
        bid, back = astra.create_backprojection(y[1, 0].numpy(), pid)
        astra.data2d.delete([sid, bid])
    finally:
        astra.projector.delete(pid)
    assert np.allclose(physics.A(x)[1, 0].numpy(), sino, rtol=1e-5, atol=1e-5)
    assert np.allclose(physics.A_adjoint(y)[1, 0].numpy(), back, rtol=1e-5, atol=1e-4)


def test_sparse_float64_gradcheck_default_tolerances():
    physics = AstraCT(8, angles=6, backend="sparse", cache_dir=None)
    x = _rand(1, 1, 8, 8, dtype=torch.float64).requires_grad_(True)
    y = _rand(1, 1, 6, physics.n_detectors, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(physics.A, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(physics.A_adjoint, (y,), fast_mode=True)
    assert _adjoint_error(physics, x.detach(), y.detach()) < 1e-13


def test_astra_backend_gradcheck_float32_tolerances():
    physics = AstraCT(8, angles=6, backend="astra")
    x = _rand(1, 1, 8, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(physics.A, (x,), eps=1e-2, atol=1e-3, rtol=1e-2)
    # float64 input is computed in float32 by ASTRA and returned in float64
    assert physics.A(x.detach().double()).dtype == torch.float64


def test_backward_is_the_other_operator():
    physics = AstraCT(16, angles=10, backend="astra")
    x = _rand(2, 1, 16, 16).requires_grad_(True)
    y = _rand(2, 1, 10, physics.n_detectors, seed=3)
    (physics.A(x) * y).sum().backward()
    assert torch.allclose(x.grad, physics.A_adjoint(y))


def test_sparse_and_astra_backends_agree_and_auto_choice(tmp_path):
    sparse = AstraCT(16, angles=12, backend="sparse", cache_dir=tmp_path)
    direct = AstraCT(16, angles=12, backend="astra")
    x = _rand(3, 1, 16, 16)
    assert torch.allclose(sparse.A(x), direct.A(x), atol=1e-5)
    assert AstraCT(16, angles=12, cache_dir=tmp_path).backend == "sparse"
    assert AstraCT(16, angles=12, sparse_max_nnz=0).backend == "astra"


def test_layout_defaults_and_angles():
    physics = AstraCT(32, angles=20, cache_dir=None)
    assert physics.n_detectors == int(np.ceil(np.hypot(32, 32)))  # covers the diagonal
    assert torch.allclose(physics.angles, torch.arange(20, dtype=torch.float64) * 9.0)
    fan = AstraCT(32, angles=20, geometry="fanbeam", cache_dir=None)
    assert float(fan.angles[-1]) == 342.0 and fan.n_detectors > physics.n_detectors
    explicit = AstraCT((32, 24), angles=torch.tensor([0.0, 45.0, 90.0]), cache_dir=None)
    assert explicit.A(_rand(1, 3, 32, 24)).shape == (1, 3, 3, explicit.n_detectors)


def test_view_subset_of_full_matrix_equals_fresh_operator(tmp_path):
    full = AstraCT(16, angles=24, backend="sparse", cache_dir=tmp_path)
    x = _rand(2, 1, 16, 16)
    full.A(x)
    subset = full.full_angles[::4]
    full.update(angles=subset)
    fresh = AstraCT(16, angles=subset, n_detectors=full.n_detectors, backend="sparse", cache_dir=tmp_path)
    assert torch.equal(full.A(x), fresh.A(x))
    y = _rand(2, 1, 6, full.n_detectors)
    assert torch.equal(full.A_adjoint(y), fresh.A_adjoint(y))
    # angles passed to A update the operator (deepinv's physics(x, **params))
    assert full.A(x, angles=full.full_angles).shape[2] == 24


@pytest.mark.parametrize("backend", ["astra", "sparse"])
def test_state_dict_clone_and_to(backend):
    a = AstraCT(16, angles=12, backend=backend, cache_dir=None)
    b = AstraCT(16, angles=12, backend=backend, cache_dir=None)
    b.angles.add_(7.0)  # in place: the ASTRA projector must be rebuilt
    x = _rand(2, 1, 16, 16)
    assert not torch.allclose(a.A(x), b.A(x))
    assert set(a.state_dict()) >= {"angles", "full_angles", "detector_spacing", "source_radius", "detector_radius"}
    a.load_state_dict(b.state_dict())
    assert torch.equal(a.A(x), b.A(x))
    c = a.clone()
    assert torch.equal(c.A(x), a.A(x))
    c.to("cpu")
    assert torch.equal(c.A(x), a.A(x))
    assert not any("sparse" in k or "matrix" in k for k in c.state_dict())  # the matrix stays out of it


def test_noise_norm_and_pseudo_inverse():
    physics = AstraCT(12, angles=30, backend="sparse", cache_dir=None,
                      noise_model=dinv.physics.GaussianNoise(sigma=0.5))
    x = _rand(2, 1, 12, 12, dtype=torch.float64)
    noise = physics(x) - physics.A(x)
    assert 0.4 < float(noise.std()) < 0.6
    matrix = physics._matrix().matrix.to_dense().double()
    sqnorm = float(physics.compute_sqnorm(x[:1], max_iter=100, tol=1e-9, verbose=False))
    assert abs(sqnorm - float(torch.linalg.matrix_norm(matrix, 2)) ** 2) / sqnorm < 1e-3
    y = physics.A(x)
    x_ls = physics.A_dagger(y, max_iter=100, tol=1e-10)
    assert float((physics.A(x_ls) - y).norm() / y.norm()) < 1e-3


@pytest.mark.parametrize("kwargs,match", [
    (dict(projector="bogus"), "projector"),
    (dict(projector="linear", geometry="fanbeam"), "projector"),
    (dict(geometry="helical"), "geometry"),
    (dict(backend="gpu"), "backend"),
    (dict(detector_spacing=-1.0), "detector_spacing"),
    (dict(geometry="fanbeam", source_radius=5.0), "source_radius"),
    (dict(angles=0), "angles"),
    (dict(angles=torch.tensor([0.0, float("nan")])), "angles"),
    (dict(n_detectors=0), "n_detectors"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AstraCT(16, **({"angles": 8} | kwargs))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a CUDA device")
def test_cuda_projector_without_cuda_device():
    with pytest.raises(ValueError, match="CUDA"):
        AstraCT(16, angles=8, projector="cuda")


def test_bad_inputs():
    physics = AstraCT(16, angles=8, backend="astra")
    with pytest.raises(ValueError, match="x must have shape"):
        physics.A(_rand(1, 1, 16, 15))
    with pytest.raises(ValueError, match="x must have shape"):
        physics.A(_rand(16, 16))
    bad = _rand(1, 1, 16, 16)
    bad[0, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        physics.A(bad)
    with pytest.raises(TypeError, match="float32 or float64"):
        physics.A(torch.ones(1, 1, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="y must have shape"):
        physics.A_adjoint(_rand(1, 1, 9, physics.n_detectors))
    with pytest.raises(ValueError, match="filter"):
        physics.fbp(_rand(1, 1, 8, physics.n_detectors), filter="butterworth")

"""AstraCT on the CPU: adjointness, agreement with ASTRA called directly, autograd, deepinv behaviour, errors."""

from __future__ import annotations

import deepinv as dinv
import numpy as np
import pytest
import torch
from deepinv.physics.forward import adjoint_function

from deepinv_ext.physics import AstraCT
from deepinv_ext.physics.functional import view_index

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
    assert set(a.state_dict()) == {"angles", "full_angles"}  # the other geometry constants are plain floats
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


@pytest.mark.parametrize("img_size", [(16.5, 16), 16.0, 0, (16,), True, (16, True)])
def test_img_size_must_be_positive_ints(img_size):
    with pytest.raises(ValueError, match="img_size"):
        AstraCT(img_size, angles=8, cache_dir=None)


def test_a_float_count_of_views_is_refused_not_read_as_one_angle():
    with pytest.raises(TypeError, match=r"angles.*\[8\.0\]"):
        AstraCT(16, angles=8.0, cache_dir=None)
    with pytest.raises(TypeError, match="scalar"):
        AstraCT(16, angles=torch.tensor(8.0), cache_dir=None)
    assert AstraCT(16, angles=[8.0], cache_dir=None).angles.tolist() == [8.0]
    assert AstraCT(torch.Size([1, 16, 12]), angles=4, cache_dir=None).img_size == (16, 12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a CUDA device")
def test_cuda_projector_without_cuda_device():
    with pytest.raises(ValueError, match="projector='cuda'.*pass device='cuda'"):
        AstraCT(16, angles=8, projector="cuda")
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA device"):
        AstraCT(16, angles=8, projector="cuda", device="cuda")


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
    with pytest.raises(TypeError, match="x must be a real floating tensor"):
        physics.A(torch.ones(1, 1, 16, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        physics.A(torch.ones(1, 1, 16, 16, dtype=torch.float16))
    with pytest.raises(ValueError, match="y must have shape"):
        physics.A_adjoint(_rand(1, 1, 9, physics.n_detectors))
    with pytest.raises(ValueError, match="filter"):
        physics.fbp(_rand(1, 1, 8, physics.n_detectors), filter="butterworth")


# ------------------------------------------------------------------------------------ torch.func (functorch)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("backend", ["astra", "sparse"])
def test_torch_func_vjp_vmap_jvp(backend, per_sample):
    physics = AstraCT(12, angles=12, backend=backend, cache_dir=None)
    if per_sample:
        physics.update(angles=torch.stack([physics.full_angles[::3], physics.full_angles[1::3]]))
    xs = _rand(3, 2, 2, 12, 12)
    # vmap folds the vmapped dimension into the batch (any in_dims): the same as one call per copy
    expected = torch.stack([physics.A(x) for x in xs])
    assert torch.allclose(torch.func.vmap(physics.A)(xs), expected)
    assert torch.allclose(torch.func.vmap(physics.A, in_dims=1, out_dims=1)(xs.transpose(0, 1)),
                          expected.transpose(0, 1))
    ys = _rand(*expected.shape, seed=1)
    assert torch.allclose(torch.func.vmap(physics.A_adjoint)(ys), torch.stack([physics.A_adjoint(y) for y in ys]))
    # forward mode: A is linear, its jvp is A of the tangent
    value, tangent = torch.func.jvp(physics.A, (xs[0],), (xs[1],))
    assert torch.equal(value, physics.A(xs[0])) and torch.allclose(tangent, physics.A(xs[1]))
    # deepinv's automatic adjoint goes through torch.func.vjp
    adjoint = adjoint_function(physics.A, xs[0].shape, dtype=xs.dtype)
    assert torch.allclose(adjoint(ys[0]), physics.A_adjoint(ys[0]), atol=1e-5)


def test_torch_func_checks_finite_inputs_under_vjp():
    physics = AstraCT(8, angles=4, backend="sparse", cache_dir=None)
    bad = _rand(1, 1, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        torch.func.vjp(physics.A, bad)


# ------------------------------------------------------------------------------------ clone
@pytest.mark.parametrize("geometry", ["parallel", "fanbeam"])
def test_clone_is_independent_and_works_after_deepinv_overwrites_buffers(geometry):
    physics = AstraCT(12, angles=8, geometry=geometry, backend="astra")
    x = _rand(2, 1, 12, 12)
    y = physics.A(x)
    clone = physics.clone()
    assert torch.equal(clone.A(x), y)
    physics.angles.fill_(0.0)  # deepinv's test_clone writes 0 and 1 into every buffer
    assert torch.equal(clone.A(x), y) and not torch.equal(physics.A(x), y)
    for buffer in clone.buffers():
        buffer.fill_(1.0)
    assert torch.isfinite(clone.A(x)).all() and torch.isfinite(physics.clone().A(x)).all()
    # the detector and source distances are constants of the acquisition, not buffers a test can zero
    assert isinstance(physics.detector_spacing, float) and isinstance(physics.source_radius, float)


# ------------------------------------------------------------------------------------ normalize
def test_normalize_scales_a_and_adjoint_and_keeps_fbp_an_inverse():
    state = torch.random.get_rng_state()
    unit = AstraCT(16, angles=24, backend="sparse", cache_dir=None, normalize=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # the norm is computed with its own seed
    raw = AstraCT(16, angles=24, backend="sparse", cache_dir=None)
    assert not raw.normalize and "operator_norm" not in raw.state_dict() and "operator_norm" in unit.state_dict()
    x = _rand(2, 1, 16, 16, dtype=torch.float64)
    matrix = raw._matrix().matrix.to_dense().double()
    norm = float(torch.linalg.matrix_norm(matrix, 2))
    assert float(unit.operator_norm) == pytest.approx(norm, rel=1e-6)
    assert float(unit.compute_sqnorm(x[:1], max_iter=200, tol=1e-10, verbose=False)) == pytest.approx(1.0, rel=1e-6)
    y = unit.A(x)
    assert torch.allclose(y, raw.A(x) / norm)
    assert torch.allclose(unit.A_adjoint(y), raw.A_adjoint(y) / norm)
    # deepinv's semantics: fbp inverts the normalised operator (multiplied by the norm), for both geometries
    assert torch.allclose(unit.fbp(y), raw.fbp(raw.A(x)))
    fan, fan_raw = (AstraCT(16, angles=24, geometry="fanbeam", backend="sparse", cache_dir=None, normalize=n)
                    for n in (True, False))
    assert torch.allclose(fan.A_dagger(fan.A(x), fbp=True), fan_raw.fbp(fan_raw.A(x)))
    # least squares needs nothing
    x_ls = unit.A_dagger(y, max_iter=200, tol=1e-10)
    assert float((unit.A(x_ls) - y).norm() / y.norm()) < 1e-2
    # float32 works too, and the norm stays that of the views given at construction
    unit.update(angles=unit.full_angles[::2])
    assert unit.A(x.float()).dtype == torch.float32 and float(unit.operator_norm) == pytest.approx(norm, rel=1e-6)


class _Identity(torch.nn.Module):
    def forward(self, x, sigma=None):
        return x


def test_normalized_operator_in_deepinv_adjoint_artifact_removal_and_pgd():
    x = _rand(2, 1, 16, 16)
    ratios, errors = {}, {}
    for normalize in (False, True):
        physics = AstraCT(16, angles=30, backend="sparse", cache_dir=None, normalize=normalize)
        y = physics(x)
        model = dinv.models.ArtifactRemoval(_Identity(), mode="adjoint")
        ratios[normalize] = float(model(y, physics).norm() / x.norm())
        # deepinv's PGD with its default step size 1 (L2 + Tikhonov)
        pgd = dinv.optim.PGD(data_fidelity=dinv.optim.L2(), prior=dinv.optim.Tikhonov(), lambda_reg=1e-3,
                             max_iter=30)
        try:
            with torch.no_grad():
                errors[normalize] = float((pgd(y, physics) - x).norm() / x.norm())
        except ValueError as err:  # the iterates overflowed: AstraCT refuses the NaN
            assert "NaN" in str(err)
            errors[normalize] = float("inf")
    assert ratios[True] <= 1.0 < 100 * ratios[True] < ratios[False]  # A^T A x stays on the scale of x
    assert errors[True] < 0.5 and not errors[False] < 1.0  # diverges without normalisation


def test_normalize_must_be_a_bool():
    with pytest.raises(TypeError, match="normalize"):
        AstraCT(8, angles=4, normalize="yes")


# ------------------------------------------------------------------------------------ keywords
def test_misspelt_keyword_is_refused():
    with pytest.raises(TypeError, match=r"'angels' \(did you mean 'angles'\?\).*noise_model"):
        AstraCT(16, angels=20)
    physics = AstraCT(8, angles=4, cache_dir=None, max_iter=7, tol=1e-3, noise_model=dinv.physics.GaussianNoise(0.1))
    assert physics.max_iter == 7  # deepinv's own keywords still go through


# ------------------------------------------------------------------------------------ per-sample views
def _separate(physics, views, **kwargs):
    return [AstraCT(physics.img_size, angles=v, n_detectors=physics.n_detectors, cache_dir=None, **kwargs)
            for v in views]


@pytest.mark.parametrize("backend", ["sparse", "astra"])
@pytest.mark.parametrize("subset", [True, False])
def test_per_sample_views_equal_one_operator_per_sample(backend, subset):
    physics = AstraCT(16, angles=24, backend=backend, cache_dir=None)
    full = physics.full_angles
    views = torch.stack([full[::4], full[1::4], full[3::4]]) if subset else torch.stack(
        [full[::4] + 1.0, full[1::4] + 2.0, full[3::4] + 0.5])  # not among full_angles: one matrix per sample
    physics.update(angles=views)
    x = _rand(3, 2, 16, 16, dtype=torch.float64)
    y = _rand(3, 2, 6, physics.n_detectors, dtype=torch.float64, seed=1)
    singles = _separate(physics, views, backend=backend)
    tol = 1e-12 if backend == "sparse" else 1e-5
    assert torch.allclose(physics.A(x), torch.cat([p.A(x[i: i + 1]) for i, p in enumerate(singles)]), atol=tol)
    assert torch.allclose(physics.A_adjoint(y), torch.cat([p.A_adjoint(y[i: i + 1]) for i, p in enumerate(singles)]),
                          atol=tol)
    assert _adjoint_error(physics, x, y) < (1e-13 if backend == "sparse" else 1e-5)
    for geometry_fbp in (physics.fbp(y), physics.A_dagger(y, fbp=True)):
        expected = torch.cat([p.fbp(y[i: i + 1]) for i, p in enumerate(singles)])
        assert torch.allclose(geometry_fbp, expected, atol=1e-5)


def test_per_sample_views_fanbeam_fbp_and_gradcheck():
    physics = AstraCT(10, angles=12, geometry="fanbeam", backend="sparse", cache_dir=None)
    views = torch.stack([physics.full_angles[::2], physics.full_angles[1::2]])
    physics.update(angles=views)
    y = physics.A(_rand(2, 1, 10, 10, dtype=torch.float64))
    singles = _separate(physics, views, geometry="fanbeam", backend="sparse")
    assert torch.allclose(physics.fbp(y), torch.cat([p.fbp(y[i: i + 1]) for i, p in enumerate(singles)]))
    x = _rand(2, 1, 10, 10, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(physics.A, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(physics.A_adjoint, (y.detach().requires_grad_(True),), fast_mode=True)


def test_shared_views_with_a_leading_one_and_bad_views():
    physics = AstraCT(12, angles=12, backend="sparse", cache_dir=None)
    x = _rand(3, 1, 12, 12)
    shared = physics.A(x, angles=physics.full_angles[::2])
    assert torch.equal(physics.A(x, angles=physics.full_angles[None, ::2]), shared)  # (1, n) is shared
    physics.update(angles=physics.full_angles[::2].repeat(2, 1))
    with pytest.raises(ValueError, match="angles holds 2 per-sample"):
        physics.A(x)
    with pytest.raises(ValueError, match="angles must be"):
        physics.update(angles=torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="finite"):
        physics.update(angles=torch.tensor([[0.0, float("inf")]]))


def test_views_stored_in_float32_still_use_the_full_matrix():
    """deepinv's HDF5Dataset loads generator parameters in float32: they must still match full_angles."""
    physics = AstraCT(12, angles=7, backend="sparse", cache_dir=None)  # 180/7 degrees: not exact in float32
    views = physics.full_angles.float()[None, ::2].repeat(2, 1)
    assert not torch.equal(views.double(), physics.full_angles[None, ::2].repeat(2, 1))
    physics.update(angles=views)
    assert view_index(physics._views(), physics.full_angles) is not None  # one batched product with the full matrix
    assert view_index(physics._views() + 1e-3, physics.full_angles) is None  # a different view is not matched

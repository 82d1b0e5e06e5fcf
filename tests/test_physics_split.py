"""deepinv_ext.physics.split: an AstraCT split into view blocks (and a SigpyMultiCoilMRI into coil blocks) gives the
single operator's A (concatenated), A^T (summed), FBP and solver results, in one process and in 2 processes under
torchrun (gloo, CPU), each process building only its own blocks."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import deepinv as dinv
import pytest
import torch
from deepinv.distributed import DistributedContext, distribute
from deepinv.optim import L2
from distributed_split_script import BLOCKS, SIZE, VIEWS, fista, problem
from recipe_helpers import needs_gloo, torchrun

from deepinv_ext.physics import AstraCT, SigpyMultiCoilMRI
from deepinv_ext.physics.functional import radial_trajectory
from deepinv_ext.physics.split import (
    ConcatenatedLinearPhysics,
    PhysicsBlocks,
    coil_blocks,
    split_coils,
    split_fbp,
    split_views,
    view_blocks,
)
from deepinv_ext.testing import check_physics
from deepinv_ext.testing.comparison import relative_error

needs_astra = pytest.mark.skipif(importlib.util.find_spec("astra") is None, reason="ASTRA is not installed")
SCRIPT = Path(__file__).with_name("distributed_split_script.py")


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _ct(geometry="parallel", normalize=False, size=(24, 20), views=20):
    return AstraCT(size, angles=views, geometry=geometry, backend="sparse", cache_dir=None, normalize=normalize)


@needs_astra
@pytest.mark.parametrize("geometry,normalize", [("parallel", False), ("fanbeam", False), ("parallel", True)])
@pytest.mark.parametrize("n_blocks", [1, 3, 6])
def test_view_blocks_stack_to_the_single_operator(geometry, normalize, n_blocks):
    physics = _ct(geometry, normalize)
    blocks = view_blocks(physics, n_blocks)
    assert sum(blocks.sizes) == 20 and max(blocks.sizes) - min(blocks.sizes) <= 1
    stacked = blocks.stack()
    joined = ConcatenatedLinearPhysics(stacked, blocks)
    x, y = _rand(2, 1, 24, 20), _rand(2, 1, 20, physics.n_detectors, seed=1)
    parts = blocks.split(y)
    for k, block in enumerate(stacked.physics_list):  # contiguous runs of the views, in order
        assert torch.equal(block.angles, physics.angles[sum(blocks.sizes[:k]): sum(blocks.sizes[: k + 1])])
        assert torch.equal(parts[k], y[..., sum(blocks.sizes[:k]): sum(blocks.sizes[: k + 1]), :])
    assert relative_error(torch.cat(list(stacked.A(x)), dim=-2), physics.A(x)) < 1e-6
    assert relative_error(joined.A(x), physics.A(x)) < 1e-6
    assert relative_error(stacked.A_adjoint(parts), physics.A_adjoint(y)) < 1e-6
    assert relative_error(joined.A_adjoint(y), physics.A_adjoint(y)) < 1e-6
    assert abs(float(stacked.adjointness_test(x.double()))) < 1e-10  # float64: the sparse backend is exact
    assert relative_error(split_fbp(joined, y, filter="hann"), physics.fbp(y, filter="hann")) < 1e-6
    assert torch.equal(blocks.join(parts), y)


@needs_astra
def test_split_operator_passes_the_physics_contract_and_deepinv_tests():
    physics = AstraCT(10, angles=10, backend="sparse", cache_dir=None)
    blocks = view_blocks(physics, 3)
    joined = ConcatenatedLinearPhysics(blocks.stack(), blocks)
    # adjointness, batch = per sample, float64 gradcheck, clear errors, deepinv's own physics tests
    check_physics(joined, _rand(2, 1, 10, 10, dtype=torch.float64))


@needs_astra
def test_solvers_through_the_split_operator_match_the_single_operator():
    physics = AstraCT(SIZE, angles=VIEWS, backend="sparse", cache_dir=None)
    blocks = view_blocks(physics, 5)  # uneven: 5, 5, 5, 5, 4 views
    stacked = blocks.stack()
    joined = ConcatenatedLinearPhysics(stacked, blocks)
    y = physics.A(problem()["x"]).double()  # float64: the solvers' results compared tightly
    assert relative_error(fista(joined, y), fista(physics, y)) < 1e-10
    single = physics.A_dagger(y, solver="CG", max_iter=10, tol=1e-10)
    assert relative_error(joined.A_dagger(y, solver="CG", max_iter=10, tol=1e-10), single) < 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deepinv: no implicit backward for TensorList inputs
        assert relative_error(stacked.A_dagger(blocks.split(y), solver="CG", max_iter=10, tol=1e-10), single) < 1e-10
    y32 = y.float()  # and in float32, to its rounding
    assert relative_error(fista(joined, y32), fista(physics, y32)) < 1e-4


@needs_astra
def test_distribute_in_one_process_with_deepinv_data_fidelity():
    physics = AstraCT(SIZE, angles=VIEWS, backend="sparse", cache_dir=None)
    blocks = view_blocks(physics, 5)
    data = problem()
    y = physics.A(data["x"])
    with DistributedContext(device_mode="cpu") as ctx:  # no torchrun: one process holds every block
        dphysics = blocks.distribute(ctx)
        assert dphysics.local_indexes == list(range(5))
        joined = ConcatenatedLinearPhysics(dphysics, blocks)
        fidelity = distribute(L2(), ctx)
        grad = fidelity.grad(data["x0"], blocks.split(y), dphysics)
        fn = fidelity.fn(data["x0"], blocks.split(y), dphysics)
        assert relative_error(grad, L2().grad(data["x0"], y, physics)) < 1e-5
        assert relative_error(fn, L2().fn(data["x0"], y, physics)) < 1e-5
        assert relative_error(joined.A_adjoint(y), physics.A_adjoint(y)) < 1e-6
        # uneven blocks: deepinv's local mean of the blocks' FBPs, rescaled per block, is the whole FBP
        assert relative_error(split_fbp(joined, y), physics.fbp(y)) < 1e-6


@pytest.mark.parametrize("geometry", ["cartesian", "radial"])
@pytest.mark.parametrize("n_blocks", [2, 5])
def test_coil_blocks_stack_to_the_single_operator(geometry, n_blocks):
    maps = SigpyMultiCoilMRI.birdcage_maps(5, (16, 16))
    kwargs = {"trajectory": radial_trajectory((16, 16), n_spokes=8)} if geometry == "radial" else {
        "mask": (_rand(16, 16) > 0.5).float()}
    physics = SigpyMultiCoilMRI(maps, **kwargs)
    blocks = coil_blocks(physics, n_blocks)
    stacked = split_coils(physics, n_blocks)
    joined = ConcatenatedLinearPhysics(stacked, blocks)
    x = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    y = physics.A(x)
    assert blocks.dim == 2 and sum(blocks.sizes) == 5
    assert relative_error(torch.cat(list(stacked.A(x)), dim=2), y) < 1e-6
    assert relative_error(joined.A_adjoint(y), physics.A_adjoint(y)) < 1e-6
    assert abs(float(joined.adjointness_test(x.double()))) < 1e-12
    assert relative_error(joined.A_dagger(y, solver="CG", max_iter=5, tol=1e-10),
                          physics.A_dagger(y, mode="cg", max_iter=5, tol=1e-10)) < 1e-4


@needs_astra
@pytest.mark.parametrize("n_blocks", [0, -1, 2.0, True, "2", 21])
def test_bad_number_of_blocks(n_blocks):
    with pytest.raises(ValueError, match="n_blocks"):
        view_blocks(_ct(), n_blocks)


def test_bad_input_errors_name_the_argument():
    mri = SigpyMultiCoilMRI(SigpyMultiCoilMRI.birdcage_maps(2, (8, 8)))
    with pytest.raises(TypeError, match="AstraCT"):
        view_blocks(mri, 2)
    with pytest.raises(TypeError, match="SigpyMultiCoilMRI"):
        coil_blocks(dinv.physics.Denoising(), 2)
    with pytest.raises(ValueError, match="number of coils"):
        coil_blocks(mri, 3)
    blocks = coil_blocks(mri, 2)
    with pytest.raises(ValueError, match="index"):
        blocks(2, "cpu")
    with pytest.raises(ValueError, match="along axis 2"):
        blocks.split(torch.zeros(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="2 blocks"):
        blocks.join([torch.zeros(1, 2, 1, 8, 8)])
    with pytest.raises(TypeError, match="stacked"):
        ConcatenatedLinearPhysics(mri, blocks)
    with pytest.raises(TypeError, match="PhysicsBlocks"):
        ConcatenatedLinearPhysics(blocks.stack(), blocks.sizes)
    with pytest.raises(ValueError, match="holds 2 blocks"):
        ConcatenatedLinearPhysics(blocks.stack(), PhysicsBlocks(blocks, (1, 1, 1), dim=2))
    with pytest.raises(TypeError, match="build"):
        PhysicsBlocks("not a factory", (1, 1), dim=2)
    with pytest.raises(TypeError, match="dim"):
        PhysicsBlocks(blocks, (1, 1), dim=2.0)
    with pytest.raises(TypeError, match="AstraCT view blocks"):
        split_fbp(ConcatenatedLinearPhysics(blocks.stack(), blocks), torch.zeros(1, 2, 2, 8, 8))


@needs_astra
def test_views_per_sample_are_refused():
    physics = _ct()
    physics.update(angles=physics.full_angles[None, :10].repeat(2, 1))
    with pytest.raises(ValueError, match="shared by the batch"):
        split_views(physics, 2)


@needs_astra
@needs_gloo
def test_two_processes_build_only_their_blocks_and_match_the_single_operator(tmp_path):
    torchrun(str(SCRIPT), str(tmp_path))  # 2 processes, gloo
    for rank in (0, 1):  # round robin: process r builds blocks r, r + 2 and nothing else
        built = torch.load(tmp_path / f"built{rank}.pt")
        assert built["built"] == built["local"] == list(range(rank, BLOCKS, 2))
    got = torch.load(tmp_path / "results.pt")
    assert got["world_size"] == 2
    physics = AstraCT(SIZE, angles=VIEWS, backend="sparse", cache_dir=None)
    data = problem()
    y = physics.A(data["x"])
    expected = {"A": y, "AT": physics.A_adjoint(y), "fn": L2().fn(data["x0"], y, physics),
                "grad": L2().grad(data["x0"], y, physics),
                "cg": physics.A_dagger(y.double(), solver="CG", max_iter=10, tol=1e-10),
                "fista": fista(physics, y.double())}
    for name, value in expected.items():  # the solvers in float64
        assert relative_error(got[name], value) < (1e-8 if name in ("cg", "fista") else 1e-5), name

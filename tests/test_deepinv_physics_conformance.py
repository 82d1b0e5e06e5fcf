"""deepinv's own physics test functions (deepinv.tests.test_physics), run through deepinv's code on our physics.

Each configuration is handed to deepinv's tests by ``deepinv_ext.testing.physics.run_deepinv_physics_tests``, which
replaces deepinv's ``find_operator`` for the run; one pytest item per (configuration, deepinv test function).
"""

from __future__ import annotations

import inspect

import deepinv as dinv
import pytest
import torch
from deepinv.physics.generator import EquispacedMaskGenerator

from deepinv_ext import testing
from deepinv_ext.physics import AstraCT, SigpyMultiCoilMRI
from deepinv_ext.physics.functional import radial_trajectory, spiral_trajectory
from deepinv_ext.testing import physics as testing_physics

pytest.importorskip("astra")
deepinv_physics_tests = pytest.importorskip("deepinv.tests.test_physics")

#: deepinv tests that take an operator name but do not apply to one linear physics of ours, and why
NOT_APPLICABLE = {
    "test_upsampling": "pairs deepinv's Downsampling operators with their Upsampling adjoints",
    "test_nonlinear_operators": "non-linear operators (find_nonlinear_operator)",
    "test_phase_retrieval": "phase-retrieval operators (find_phase_retrieval_operator)",
    "test_ultrasound_planewave": "deepinv's ultrasound operators",
}


def _ct(geometry: str, backend: str, normalize: bool = False):
    def factory(device: torch.device, size: tuple) -> AstraCT:
        return AstraCT(size[-2:], angles=10, geometry=geometry, backend=backend, cache_dir=None,
                       normalize=normalize, device=device)

    return factory


def _mri(kind: str):
    def factory(device: torch.device, size: tuple) -> SigpyMultiCoilMRI | None:
        if size[0] != 2:  # real and imaginary parts
            return None
        h, w = size[-2:]
        maps = SigpyMultiCoilMRI.birdcage_maps(3, (h, w)).to(device)
        if kind == "cartesian":
            mask = EquispacedMaskGenerator((h, w), acceleration=2, center_fraction=0.25).step(1, seed=0)["mask"]
            return SigpyMultiCoilMRI(maps, mask=mask.to(device), device=device)
        if kind == "radial":
            trajectory = radial_trajectory((h, w), n_spokes=6, n_readout=2 * min(h, w))
        else:
            trajectory = spiral_trajectory((h, w), n_interleaves=3, n_turns=2, n_samples=4 * min(h, w))
        return SigpyMultiCoilMRI(maps, trajectory=trajectory.to(device), dcf=None, device=device)

    return factory


#: name: (factory, image shape (C, H, W), real buffers test_operators_differentiability differentiates through (the
#: trajectory gets no gradient; complex coil maps are not checked by deepinv), whether it
#: runs on CUDA here (ASTRA's CUDA projector has no exact adjoint; SigPy's NUFFT needs CuPy))
CONFIGS = {
    "AstraCT-sparse-parallel": (_ct("parallel", "sparse"), (1, 12, 12), (), True),
    "AstraCT-sparse-fanbeam": (_ct("fanbeam", "sparse"), (1, 12, 12), (), True),
    "AstraCT-astra-parallel": (_ct("parallel", "astra"), (1, 12, 12), (), False),
    "AstraCT-astra-fanbeam": (_ct("fanbeam", "astra"), (1, 12, 12), (), False),
    "AstraCT-sparse-parallel-normalized": (_ct("parallel", "sparse", normalize=True), (1, 12, 12), (), True),
    "SigpyMultiCoilMRI-cartesian": (_mri("cartesian"), (2, 8, 8), ("mask", "coil_maps"), True),
    "SigpyMultiCoilMRI-radial": (_mri("radial"), (2, 8, 8), (), False),
    "SigpyMultiCoilMRI-spiral": (_mri("spiral"), (2, 8, 8), (), False),
}
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.gpu)]
_SQNORMS: dict[str, float] = {}


def _sqnorm(config: str) -> float:
    """Reference squared norm: 1 for a normalised operator, else from the dense matrix (an independent check of
    deepinv's power method on our operator)."""
    if config not in _SQNORMS:
        factory, size, _, _ = CONFIGS[config]
        physics = factory(torch.device("cpu"), size)
        _SQNORMS[config] = 1.0 if getattr(physics, "normalize", False) else testing_physics.dense_sqnorm(
            physics, torch.zeros(1, *size, dtype=torch.float64))
    return _SQNORMS[config]


def test_every_applicable_deepinv_test_is_run():
    takes_a_name = {name for name, fn in inspect.getmembers(deepinv_physics_tests, inspect.isfunction)
                    if name.startswith("test_") and "name" in inspect.signature(fn).parameters}
    assert takes_a_name - set(NOT_APPLICABLE) == set(testing_physics.DEEPINV_PHYSICS_TESTS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("test", list(testing_physics.DEEPINV_PHYSICS_TESTS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_deepinv_physics_test(config, test, device):
    factory, size, params, on_cuda = CONFIGS[config]
    if device == "cuda" and not (torch.cuda.is_available() and on_cuda):
        pytest.skip("needs a CUDA device" if on_cuda else f"{config} is not run on CUDA (see CONFIGS)")
    results = testing_physics.run_deepinv_physics_tests(factory, size, device=device, dtype=torch.float32,
                                                 sqnorm=_sqnorm(config), params=params, tests=[test])
    skipped = {label: r for label, r in results.items() if r != "passed"}
    if test.startswith("test_multiscale_") and config.startswith("SigpyMultiCoilMRI"):
        assert skipped, "deepinv's multiscale tests ask for 3-channel images, which MRI physics cannot take"
        pytest.skip(str(skipped))
    assert not skipped, skipped


def test_the_runner_reports_a_failing_physics():
    """A broken adjoint fails deepinv's adjointness test, named in the error."""

    class Broken(AstraCT):
        def A_adjoint(self, y, **kwargs):
            return 1.1 * super().A_adjoint(y, **kwargs)

    def factory(device, size):
        return Broken(size[-2:], angles=6, backend="sparse", cache_dir=None)

    with pytest.raises(AssertionError, match="test_operators_adjointness"):
        testing_physics.run_deepinv_physics_tests(factory, (1, 8, 8), tests=["test_operators_adjointness"])
    with pytest.raises(ValueError, match="tests must be among"):
        testing_physics.run_deepinv_physics_tests(factory, (1, 8, 8), tests=["test_bogus"])


class _OldStyle(torch.autograd.Function):
    """A linear map y = 2x as an autograd Function in the old style (forward takes ctx): no torch.func support."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class _OldStylePhysics(dinv.physics.LinearPhysics):
    def A(self, x, **kwargs):
        if x.shape[-2:] != (4, 4):
            raise ValueError(f"x must be (B, C, 4, 4), got {tuple(x.shape)}")
        return _OldStyle.apply(x)

    def A_adjoint(self, y, **kwargs):
        return _OldStyle.apply(y)


def test_check_physics_runs_deepinv_tests():
    """A physics that passes the other contract checks but not deepinv's (its autograd Function cannot be used by
    deepinv's adjoint_function) fails check_physics, and passes with deepinv_tests=False."""
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    testing.check_physics(_OldStylePhysics(), x, deepinv_tests=False)
    with pytest.raises(AssertionError, match="test_operators_adjointness.*setup_context"):
        testing.check_physics(_OldStylePhysics(), x)


def test_check_physics_with_a_factory_runs_the_multiscale_tests():
    factory, size, _, _ = CONFIGS["AstraCT-sparse-parallel"]
    physics = factory(torch.device("cpu"), size)
    x = torch.rand(2, *size, dtype=torch.float64)
    testing.check_physics(physics, x, factory=factory)  # the multiscale tests build 16x16 and 32x32 operators
    calls = []
    testing.check_physics(physics, x, factory=lambda device, s: calls.append(s) or factory(device, s))
    assert {(1, 32, 32), (3, 16, 16)} <= set(calls)

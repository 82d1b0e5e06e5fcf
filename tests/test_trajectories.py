"""Tests of the radial/spiral trajectory generators, density compensation and deepinv's Cartesian masks."""

from __future__ import annotations

import math

import pytest
import torch
from deepinv.physics.generator import EquispacedMaskGenerator, RandomMaskGenerator

from deepinv_ext.physics import RadialTrajectoryGenerator, SpiralTrajectoryGenerator
from deepinv_ext.physics.functional import (
    GOLDEN_ANGLE,
    pipe_menon_dcf,
    radial_dcf,
    radial_trajectory,
    spiral_trajectory,
)


def test_radial_geometry_uniform_and_golden():
    n, spokes, ro = 32, 20, 64
    k = radial_trajectory((n, n), spokes, ro, dtype=torch.float64).reshape(spokes, ro, 2)
    assert float(k.norm(dim=-1).max()) <= n / 2
    assert torch.all(k[:, ro // 2].abs() < 1e-12)  # every spoke passes through the centre
    end = k[:, 0]  # r = -n/2: angle theta_j + pi
    angles = torch.atan2(-end[:, 1], -end[:, 0]) % math.pi
    torch.testing.assert_close(angles, torch.arange(spokes, dtype=torch.float64) * math.pi / spokes)
    g = radial_trajectory((n, n), spokes, ro, golden_angle=True, dtype=torch.float64).reshape(spokes, ro, 2)
    ga = torch.atan2(-g[:, 0, 1], -g[:, 0, 0])
    steps = torch.remainder(ga[1:] - ga[:-1], 2 * math.pi)
    torch.testing.assert_close(steps, torch.full_like(steps, GOLDEN_ANGLE))


def test_random_rotation_statistics_and_seed():
    gen = RadialTrajectoryGenerator((16, 16), n_spokes=4, n_readout=16, dcf=False)
    traj = gen.step(batch_size=400, seed=0)["trajectory"].double()
    torch.testing.assert_close(gen.step(batch_size=400, seed=0)["trajectory"].double(), traj)
    end = traj[:, 0]  # first sample of the first spoke, at radius n/2
    torch.testing.assert_close(end.norm(dim=-1), torch.full((400,), 8.0, dtype=torch.float64))
    theta = torch.atan2(end[:, 1], end[:, 0])
    # uniform on the circle: the first two circular moments vanish (std of each ~ 1/sqrt(2 * 400) = 0.035)
    for m in (1, 2):
        assert abs(float(torch.cos(m * theta).mean())) < 0.15 and abs(float(torch.sin(m * theta).mean())) < 0.15
    counts = torch.histc(theta, bins=8, min=-math.pi, max=math.pi)
    assert float(counts.min()) > 25  # expected 50 a bin


def test_spiral_geometry_and_density():
    n = 32
    k = spiral_trajectory((n, n), n_interleaves=4, n_turns=4, n_samples=256, dtype=torch.float64)
    r = k.reshape(4, 256, 2).norm(dim=-1)
    assert torch.all(r[:, 1:] >= r[:, :-1]) and float(r.max()) <= n / 2
    dense = spiral_trajectory((n, n), 4, 4, 256, alpha=2.0, dtype=torch.float64).norm(dim=-1)
    assert (dense < n / 4).float().mean() > (r.flatten() < n / 4).float().mean() + 0.2
    out = SpiralTrajectoryGenerator((n, n), n_interleaves=4, n_turns=4, n_samples=256, dcf=False).step(3, seed=1)
    assert out["trajectory"].shape == (3, 1024, 2) and "dcf" not in out


def test_density_compensation_is_a_ramp_for_radial():
    n = 16
    gen = RadialTrajectoryGenerator((n, n), n_spokes=26, dcf=True, dtype=torch.float64)
    out = gen.step(batch_size=2, seed=0)
    assert out["dcf"].shape == (2, 26 * 2 * n)
    r = gen.base.norm(dim=-1)
    pm = pipe_menon_dcf(gen.base, (n, n))[0]
    outer = (r > 2) & (r < n / 2 - 2)  # Pipe-Menon's weights grow like |k| away from the centre and the rim
    corr = torch.corrcoef(torch.stack([pm[outer], r[outer]]))[0, 1]
    assert float(corr) > 0.9, float(corr)
    ramp = radial_dcf(gen.base, (n, n), 2 * n)[0]
    assert float((pm[outer] / ramp[outer]).std() / (pm[outer] / ramp[outer]).mean()) < 0.2


@pytest.mark.parametrize("acc", [4, 6])
@pytest.mark.parametrize("cls", [EquispacedMaskGenerator, RandomMaskGenerator])
def test_deepinv_cartesian_masks_statistics(cls, acc):
    """The Cartesian masks we use are deepinv's: sampled fraction 1/acc, centre fully sampled."""
    n = 96
    mask = cls((n, n), acceleration=acc, center_fraction=0.08).step(batch_size=8, seed=0)["mask"]
    columns = mask[:, 0, 0]  # (B, W): lines along H
    assert torch.all(mask == columns[:, None, None])
    assert abs(float(columns.mean()) - 1 / acc) < 0.02
    centre = int(0.08 * n)
    start = (n - centre + 1) // 2
    assert torch.all(columns[:, start: start + centre] == 1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="img_size"):
        radial_trajectory((16,), 8)
    with pytest.raises(ValueError, match="n_spokes"):
        radial_trajectory((16, 16), 0)
    with pytest.raises(ValueError, match="alpha"):
        spiral_trajectory((16, 16), 2, alpha=0.5)
    with pytest.raises(ValueError, match="trajectory"):
        pipe_menon_dcf(torch.zeros(4, 3), (16, 16))


@pytest.mark.parametrize("cls,kwargs", [(RadialTrajectoryGenerator, {"n_spokes": 4, "n_readout": 8}),
                                        (SpiralTrajectoryGenerator, {"n_interleaves": 2, "n_turns": 2,
                                                                     "n_samples": 24})])
def test_batched_trajectories_drive_sigpy_mri_per_sample(cls, kwargs):
    """One trajectory (and weights) per sample, deepinv's convention: SigpyMultiCoilMRI applies each to its image."""
    from deepinv_ext.physics import SigpyMultiCoilMRI

    gen = cls((8, 8), dcf=True, dtype=torch.float64, **kwargs)
    params = gen.step(batch_size=3, seed=0)
    assert params["trajectory"].shape[0] == params["dcf"].shape[0] == 3
    assert not torch.allclose(params["trajectory"][0], params["trajectory"][1])
    maps = SigpyMultiCoilMRI.birdcage_maps(2, (8, 8), dtype=torch.complex128)
    physics = SigpyMultiCoilMRI(maps, trajectory=gen.base.double())
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = physics(x, **params)  # deepinv's physics(x, **params), as its Trainer calls it
    for i in range(3):
        single = SigpyMultiCoilMRI(maps, trajectory=params["trajectory"][i], dcf=params["dcf"][i])
        torch.testing.assert_close(y[i: i + 1], single.A(x[i: i + 1]))
        torch.testing.assert_close(physics.A_dagger(y, mode="dcf")[i: i + 1], single.A_dagger(y[i: i + 1], mode="dcf"))

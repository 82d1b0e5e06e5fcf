"""Tests of SigpyMultiCoilMRI: adjointness, autograd, deepinv's conventions, pseudo-inverses, buffers, errors."""

from __future__ import annotations

import pytest
import sigpy
import torch
from deepinv.physics import GaussianNoise, MultiCoilMRI
from deepinv.physics.forward import adjoint_function
from deepinv.physics.generator import EquispacedMaskGenerator

from deepinv_ext.physics.functional import radial_dcf, radial_trajectory
from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI
from deepinv_ext.testing import check_physics

N = 16


def _maps(n_coils: int = 3, size: int = N) -> torch.Tensor:
    return SigpyMultiCoilMRI.birdcage_maps(n_coils, (size, size), dtype=torch.complex128)


def _phantom(size: int = N, batch: int = 1) -> torch.Tensor:
    img = torch.from_numpy(sigpy.shepp_logan((size, size))).to(torch.complex128)
    return torch.view_as_real(img).permute(2, 0, 1)[None].repeat(batch, 1, 1, 1).contiguous()


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _radial(spokes: int = 12, size: int = N) -> torch.Tensor:
    return radial_trajectory((size, size), n_spokes=spokes, dtype=torch.float64)


def test_cartesian_matches_deepinv_multicoil():
    masks = EquispacedMaskGenerator((N, N), acceleration=4, center_fraction=0.125).step(2, seed=0)["mask"]
    maps = _maps()
    ours, ref = SigpyMultiCoilMRI(maps, mask=masks), MultiCoilMRI(mask=masks, coil_maps=maps, img_size=(N, N))
    x = _rand(2, 2, N, N)
    y = ours.A(x)
    assert y.shape == (2, 2, 3, N, N)
    torch.testing.assert_close(y, ref.A(x))
    torch.testing.assert_close(ours.A_adjoint(y), ref.A_adjoint(y))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adjointness_cartesian_and_nufft(dtype):
    masks = EquispacedMaskGenerator((N, N), acceleration=4, center_fraction=0.125).step(4, seed=1)["mask"]
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    base = _radial().to(dtype)
    per_sample = torch.stack([base, base.flip(-1), -base, 0.7 * base])  # 4 = the batch of adjointness_test
    for physics in (SigpyMultiCoilMRI(_maps().to(cdtype), mask=masks),
                    SigpyMultiCoilMRI(_maps().to(cdtype), trajectory=base, dcf=None),
                    SigpyMultiCoilMRI(_maps().to(cdtype), trajectory=per_sample, dcf=None)):
        if dtype == torch.float64:  # deepinv's test: relative to <v, Au>, a random number that may be near 0
            torch.manual_seed(0)
            error = float(physics.adjointness_test(_rand(1, 2, N, N).to(dtype)))
        else:  # in float32 relative to |v| |Au|, which does not flake on a small <v, Au>
            u = _rand(4, 2, N, N, seed=1).to(dtype)
            au = physics.A(u)
            v = _rand(*au.shape, seed=2).to(dtype)
            error = float((torch.sum(v * au) - torch.sum(physics.A_adjoint(v) * u)).abs() / (v.norm() * au.norm()))
        assert error < 1e-5, error


def test_contract_cartesian():
    masks = EquispacedMaskGenerator((8, 8), acceleration=2, center_fraction=0.25).step(1, seed=0)["mask"]
    check_physics(SigpyMultiCoilMRI(_maps(2, 8), mask=masks), _rand(2, 2, 8, 8))


def test_gradcheck_per_sample_trajectories_and_double_backward():
    base = radial_trajectory((8, 8), n_spokes=4, n_readout=8, dtype=torch.float64)
    physics = SigpyMultiCoilMRI(_maps(2, 8), trajectory=torch.stack([base, base.flip(-1)]), dcf=None)
    x = _rand(2, 2, 8, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(physics.A, (x,), fast_mode=True)
    y = physics.A(x.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(physics.A_adjoint, (y,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda v: physics.A(v).pow(2).sum(), (x,), fast_mode=True)
    # the batch is per sample: each image meets its own trajectory
    single = SigpyMultiCoilMRI(_maps(2, 8), trajectory=base.flip(-1), dcf=None)
    torch.testing.assert_close(physics.A(x.detach())[1:], single.A(x.detach()[1:]))


def test_nufft_on_grid_is_deepinv_fft():
    """On Cartesian grid coordinates SigPy's NUFFT is deepinv's centred unitary FFT (up to gridding error)."""
    k = torch.stack(torch.meshgrid(torch.arange(N) - N // 2, torch.arange(N) - N // 2, indexing="ij"), -1)
    maps = _maps()
    nufft_physics = SigpyMultiCoilMRI(maps, trajectory=k.reshape(-1, 2).double(), dcf=None)
    fft_physics = SigpyMultiCoilMRI(maps)
    x = _phantom()
    y_nufft, y_fft = nufft_physics.A(x), fft_physics.A(x).flatten(-2)
    assert float((y_nufft - y_fft).norm() / y_fft.norm()) < 1e-2


def test_pseudo_inverses():
    x = _phantom()
    full = SigpyMultiCoilMRI(_maps())  # normalised maps, full sampling: A^H A = I
    torch.testing.assert_close(full.A_dagger(full.A(x), mode="dcf"), x)
    assert abs(float(full.compute_sqnorm(x, verbose=False)) - 1.0) < 1e-3
    masks = EquispacedMaskGenerator((N, N), acceleration=4, center_fraction=0.125).step(1, seed=0)["mask"]
    physics = SigpyMultiCoilMRI(_maps(), mask=masks, max_iter=200, tol=1e-10)
    y = physics.A(x)
    x_cg = physics.A_dagger(y)  # CG-SENSE: the normal equations hold
    residual = physics.A_adjoint(physics.A(x_cg) - y).norm() / physics.A_adjoint(y).norm()
    assert float(residual) < 1e-3
    assert float((x_cg - x).norm()) < float((physics.A_dagger(y, mode="dcf") - x).norm())


def test_density_compensated_adjoint_approximates_image():
    size = 24
    yy, xx = torch.meshgrid(torch.arange(size) - size // 2, torch.arange(size) - size // 2, indexing="ij")
    blob = torch.exp(-(yy**2 + xx**2) / (2 * 3.0**2)).double()
    x = torch.stack([blob, 0.5 * blob])[None]
    traj = radial_trajectory((size, size), 40).double()
    physics = SigpyMultiCoilMRI(_maps(3, size), trajectory=traj, dcf=radial_dcf(traj, (size, size), 2 * size),
                                dagger="dcf")
    error_dcf = float((physics.A_dagger(physics.A(x)) - x).norm() / x.norm())
    plain = physics.A_adjoint(physics.A(x))
    assert error_dcf < 0.05, error_dcf
    assert error_dcf < float((plain - x).norm() / x.norm())


def test_buffers_clone_update_and_noise():
    base = _radial()
    physics = SigpyMultiCoilMRI(_maps(), trajectory=base, dcf=None,
                                noise_model=GaussianNoise(0.1, rng=torch.Generator().manual_seed(0)))
    assert {"mask", "coil_maps", "trajectory", "dcf"} <= set(physics.state_dict())
    twin = physics.clone()
    twin.update(trajectory=base.flip(-1), dcf=torch.ones(base.shape[0], dtype=torch.float64))
    x = _rand(2, 2, N, N)
    assert not torch.allclose(twin.A(x), physics.A(x))
    torch.testing.assert_close(twin.A(x), SigpyMultiCoilMRI(_maps(), trajectory=base.flip(-1), dcf=None).A(x))
    noisy = physics(x) - physics.A(x)
    assert abs(float(noisy.std()) - 0.1) < 0.01
    cart = SigpyMultiCoilMRI(_maps(), mask=torch.zeros(N, N), noise_model=GaussianNoise(0.1))
    assert float(cart(x).abs().max()) == 0.0  # noise on sampled locations only, as deepinv
    moved = physics.to(torch.float32)
    assert moved.trajectory.dtype == torch.float32 and moved.A(x.float()).dtype == torch.float32


def test_bad_inputs():
    maps = _maps()
    with pytest.raises(TypeError, match="coil_maps"):
        SigpyMultiCoilMRI(maps.real)
    with pytest.raises(ValueError, match="coil_maps"):
        SigpyMultiCoilMRI(maps * float("nan"))
    with pytest.raises(ValueError, match="mask"):
        SigpyMultiCoilMRI(maps, mask=torch.ones(N, N + 2))
    with pytest.raises(ValueError, match="either mask"):
        SigpyMultiCoilMRI(maps, mask=torch.ones(N, N), trajectory=_radial())
    with pytest.raises(ValueError, match="trajectory"):
        SigpyMultiCoilMRI(maps, trajectory=3 * _radial(), dcf=None)
    physics = SigpyMultiCoilMRI(maps, trajectory=_radial(), dcf=None)
    with pytest.raises(ValueError, match="x must have shape"):
        physics.A(_rand(1, 2, N, N + 1))
    y = physics.A(_rand(1, 2, N, N))
    with pytest.raises(ValueError, match="coils"):
        physics.A_adjoint(y[:, :, :2])
    with pytest.raises(ValueError, match="NaN"):
        physics.A_dagger(y * float("nan"))
    with pytest.raises(ValueError, match="coil_maps"):
        physics.update(coil_maps=_maps(3, N + 2))
    with pytest.raises(ValueError, match="mask"):
        physics.update(mask=torch.ones(N, N))


def test_short_variational_solve_lowers_the_objective():
    """deepinv-ext's VariationalSolver (Tikhonov prior) on a radial multi-coil problem: the energy decreases."""
    import deepinv as dinv

    from deepinv_ext.algorithms import VariationalSolver

    physics = SigpyMultiCoilMRI(_maps(), trajectory=_radial(20), dcf=None)
    x = _phantom()
    y = physics.A(x) + 0.01 * _rand(*physics.A(x).shape, seed=3)
    solver = VariationalSolver(dinv.optim.prior.Tikhonov(), weight=50.0, max_iter=15, cg_init_iter=0)
    with torch.no_grad():
        rec = solver(y, physics)
    energies = torch.stack(solver.history)[:, 0]
    assert torch.all(energies[1:] <= energies[:-1] + 1e-9)
    assert float(energies[-1]) < 0.5 * float(energies[0])
    assert float((rec - x).norm()) < float((physics.A_adjoint(y) - x).norm())


@pytest.mark.parametrize("kind", ["cartesian", "shared", "per_sample"])
def test_torch_func_vjp_vmap_jvp(kind):
    base = radial_trajectory((8, 8), n_spokes=4, n_readout=8, dtype=torch.float64)
    if kind == "cartesian":
        masks = EquispacedMaskGenerator((8, 8), acceleration=2, center_fraction=0.25).step(1, seed=0)["mask"]
        physics = SigpyMultiCoilMRI(_maps(2, 8), mask=masks)
    else:
        trajectory = base if kind == "shared" else torch.stack([base, base.flip(-1)])
        physics = SigpyMultiCoilMRI(_maps(2, 8), trajectory=trajectory, dcf=None)
    xs = _rand(3, 2, 2, 8, 8)
    expected = torch.stack([physics.A(x) for x in xs])
    torch.testing.assert_close(torch.func.vmap(physics.A)(xs), expected)
    torch.testing.assert_close(torch.func.vmap(physics.A, in_dims=1, out_dims=1)(xs.transpose(0, 1)),
                               expected.transpose(0, 1))
    ys = _rand(*expected.shape, seed=1)
    torch.testing.assert_close(torch.func.vmap(physics.A_adjoint)(ys),
                               torch.stack([physics.A_adjoint(y) for y in ys]))
    value, tangent = torch.func.jvp(physics.A, (xs[0],), (xs[1],))
    torch.testing.assert_close(value, physics.A(xs[0]))
    torch.testing.assert_close(tangent, physics.A(xs[1]))
    adjoint = adjoint_function(physics.A, xs[0].shape, dtype=xs.dtype)  # deepinv's, through torch.func.vjp
    torch.testing.assert_close(adjoint(ys[0]), physics.A_adjoint(ys[0]))


def test_vmap_over_the_trajectory():
    """The trajectory can be vmapped too (each vmapped copy meets its own trajectory)."""
    from deepinv_ext.physics.functional.nufft import nufft

    base = radial_trajectory((8, 8), n_spokes=4, n_readout=8, dtype=torch.float64)
    coords = torch.stack([base, base.flip(-1), -base])
    x = torch.complex(_rand(2, 2, 8, 8), _rand(2, 2, 8, 8, seed=1))
    out = torch.func.vmap(nufft, in_dims=(None, 0))(x, coords)
    torch.testing.assert_close(out, torch.stack([nufft(x, c) for c in coords]))


def test_misspelt_keyword_is_refused():
    with pytest.raises(TypeError, match="dfc"):
        SigpyMultiCoilMRI(_maps(2, 8), trajectory=_radial(4, 8), dfc=None)

"""The one data-fidelity prox: the normal equations per image, closed forms where they apply, the physics untouched."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import GradientStepPnP, TDVNetwork
from deepinv_ext.algorithms.data_fidelity import prox_data_fidelity
from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet
from deepinv_ext.priors import TDV

F64 = torch.float64


def _data(batch=3):
    g = torch.Generator().manual_seed(0)
    u = torch.rand(batch, 1, 12, 12, generator=g, dtype=F64)
    y = torch.rand(batch, 1, 12, 12, generator=g, dtype=F64)
    return u, y


def _blurs():
    kernel = gaussian_blur(sigma=(1.0, 1.0), dtype=F64)
    return dinv.physics.BlurFFT((1, 12, 12), filter=kernel), dinv.physics.Blur(filter=kernel, padding="circular")


def _normal_equations_residual(x, u, y, physics, tau):
    lhs = x + tau * physics.A_adjoint(physics.A(x))
    rhs = u + tau * physics.A_adjoint(y)
    return ((lhs - rhs).flatten(1).norm(dim=1) / rhs.flatten(1).norm(dim=1)).max()


@pytest.mark.parametrize("tau", [0.7, torch.tensor([0.2, 1.0, 5.0], dtype=F64).view(3, 1, 1, 1)],
                         ids=["number", "per-image"])
def test_the_prox_solves_the_normal_equations_and_leaves_the_physics_alone(tau):
    u, y = _data()
    fft, cg = _blurs()
    settings = (cg.solver, cg.max_iter, cg.tol)
    x_cg = prox_data_fidelity(u, y, cg, tau, max_iter=300, tol=1e-12)
    x_fft = prox_data_fidelity(u, y, fft, tau)
    assert _normal_equations_residual(x_cg, u, y, cg, tau) < 1e-10
    assert _normal_equations_residual(x_fft, u, y, fft, tau) < 1e-12
    torch.testing.assert_close(x_cg, x_fft, rtol=1e-9, atol=1e-10)
    assert (cg.solver, cg.max_iter, cg.tol) == settings


def test_a_step_varying_over_the_pixels_is_not_given_to_the_singular_value_decomposition():
    """The SVD closed form needs a step constant over each image; a pixel-wise tau goes to CG and still solves
    (Id + tau A^T A) x = u + tau A^T y."""
    u, y = _data(2)
    fft, _ = _blurs()
    tau = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1), dtype=F64) + 0.5
    x = prox_data_fidelity(u, y, fft, tau, max_iter=300, tol=1e-12)
    assert _normal_equations_residual(x, u, y, fft, tau) < 1e-10


def test_gs_pnp_and_the_tdv_network_use_this_prox():
    u, y = _data()
    _, cg = _blurs()
    tau = torch.tensor([0.2, 1.0, 5.0], dtype=F64)
    torch.manual_seed(0)
    gs = GradientStepPnP(GradientStepDenoiser(SmallPotentialNet(1, 4, 2)).double(), lambda_=0.5, sigma_denoiser=0.05,
                         prox_max_iter=3, prox_tol=1e-14)  # CG stops on max_iter
    assert torch.equal(gs.prox_data(u, y, cg, tau), prox_data_fidelity(u, y, cg, tau.view(3, 1, 1, 1), 3, 1e-14))
    net = TDVNetwork(TDV(num_features=4, num_macro_blocks=1), steps=2, T=0.0, lmbda=3.0, cg_max_iter=3,
                     cg_tol=1e-14).double()
    with torch.no_grad():
        step = net.step(u, y, cg)
    assert torch.equal(step, prox_data_fidelity(u, y, cg, net.lmbda / net.S, 3, 1e-14))


def test_the_package_level_name_is_this_function():
    import deepinv_ext.algorithms as algorithms

    assert algorithms.prox_data_fidelity is prox_data_fidelity

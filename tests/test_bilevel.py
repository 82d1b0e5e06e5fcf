"""Bilevel learning (deepinv_ext.algorithms.bilevel): the implicit hypergradient against finite differences of the
upper-level loss (for lambda and for the weights of every smooth prior), against the closed form of Tikhonov
denoising with deepinv's own prior, the Jacobian-free and unrolled options, and training in deepinv.Trainer."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from deepinv.physics.functional.blur import gaussian_blur
from helpers_priors import PRIOR_NAMES, image_size, make_prior
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from trainer_helpers import cpu_trainer

from deepinv_ext.algorithms import BilevelReconstructor, VariationalSolver
from deepinv_ext.priors import ScaledPrior

TIGHT = {"grad_tol": 1e-10, "max_iter": 5000, "cg_tol": 1e-12, "cg_max_iter": 500}


def _problem(size: tuple[int, int], batch: int = 2, sigma: float = 0.1):
    g = torch.Generator().manual_seed(1)
    x_true = torch.rand(batch, 1, *size, dtype=torch.float64, generator=g)
    return x_true, x_true + sigma * torch.randn(x_true.shape, dtype=torch.float64, generator=g)


def _upper(model, y, physics, x_true) -> torch.Tensor:
    return 0.5 * (model(y, physics) - x_true).pow(2).sum()


def _flat_grad(model, y, physics, x_true) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(_upper(model, y, physics, x_true), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def _finite_difference(model, y, physics, x_true, direction, h=1e-4) -> float:
    """Central differences of the upper-level loss along ``direction``, Richardson-extrapolated (error O(h^4))."""
    params = [p for p in model.parameters() if p.requires_grad]
    theta = parameters_to_vector(params).detach().clone()

    def at(t):
        with torch.no_grad():
            vector_to_parameters(theta + t * direction, params)
            return float(_upper(model, y, physics, x_true))

    d1 = (at(h) - at(-h)) / (2 * h)
    d2 = (at(h / 2) - at(-h / 2)) / h
    with torch.no_grad():
        vector_to_parameters(theta, params)
    return (4 * d2 - d1) / 3


@pytest.mark.parametrize("which", ["lambda", "weights"])
@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_implicit_hypergradient_matches_finite_differences(name, which):
    """In float64, <hypergradient, d> equals the finite difference of the upper-level loss along d to 1e-4 relative,
    for d on log(lambda) alone and d on the prior's weights alone (denoising, lambda = 0.2, tight solves)."""
    x_true, y = _problem(image_size(name))
    model = BilevelReconstructor(make_prior(name), lam=0.2, **TIGHT).double()
    physics = dinv.physics.Denoising()
    grad = _flat_grad(model, y, physics, x_true)
    direction = torch.randn(grad.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    first_is_lam = model.regularizer.log_lam is next(p for p in model.parameters() if p.requires_grad)
    assert first_is_lam
    if which == "lambda":
        direction = torch.zeros_like(direction)
        direction[0] = 1.0
    else:
        direction[0] = 0.0
    fd = _finite_difference(model, y, physics, x_true, direction)
    assert abs(float(grad @ direction) - fd) <= 1e-4 * abs(fd), (float(grad @ direction), fd)


def test_implicit_hypergradient_through_a_blur_matches_finite_differences():
    """A non-trivial operator (a float64 Gaussian blur, with the filter-bank prior): the Hessian A^T A + lambda
    nabla^2 R enters the conjugate-gradient solve."""
    x_true, _ = _problem((12, 12))
    physics = dinv.physics.BlurFFT((1, 12, 12), filter=gaussian_blur(sigma=(1.0, 1.0)).double())
    y = physics.A(x_true) + 0.01 * torch.randn(x_true.shape, dtype=torch.float64,
                                               generator=torch.Generator().manual_seed(3))
    model = BilevelReconstructor(make_prior("SFB"), lam=0.05, **TIGHT).double()
    grad = _flat_grad(model, y, physics, x_true)
    direction = torch.randn(grad.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    fd = _finite_difference(model, y, physics, x_true, direction)
    assert abs(float(grad @ direction) - fd) <= 1e-4 * abs(fd)
    assert model.adjoint.iterations > 2 and float(model.adjoint.residual.max()) < 1e-8


def test_closed_form_of_tikhonov_denoising_with_deepinv_prior():
    """deepinv's Tikhonov prior: x(lambda, y) = y / (1 + lambda), so d loss / d y and d loss / d log(lambda) are
    known exactly; both come out of one backward pass."""
    x_true, y = _problem((5, 4))
    y = y.requires_grad_(True)
    model = BilevelReconstructor(dinv.optim.prior.Tikhonov(), lam=0.7, **TIGHT).double()
    loss = _upper(model, y, dinv.physics.Denoising(), x_true)
    loss.backward()
    lam = 0.7
    residual = (y / (1 + lam) - x_true).detach()
    assert torch.allclose(y.grad, residual / (1 + lam), atol=1e-8)
    exact = float((residual * (-y.detach() / (1 + lam) ** 2)).sum() * lam)  # chain rule through lambda = e^rho
    assert abs(float(model.regularizer.log_lam.grad) - exact) < 1e-7 * abs(exact)
    assert model.residual.max() < 1e-10


def test_jacobian_free_is_one_differentiable_gradient_step():
    """JFB's derivative is that of x - (1/L) grad E(x) at the solution with x held fixed, and for denoising with a
    small lambda (Hessian close to the identity) a descent direction of the exact hypergradient."""
    x_true, y = _problem((10, 9))
    physics = dinv.physics.Denoising()
    exact = _flat_grad(BilevelReconstructor(make_prior("SFB"), lam=0.05, **TIGHT).double(), y, physics, x_true)
    model = BilevelReconstructor(make_prior("SFB"), lam=0.05, hypergradient="jfb", **TIGHT).double()
    jfb = _flat_grad(model, y, physics, x_true)
    params = [p for p in model.parameters() if p.requires_grad]
    x = model(y, physics).detach()
    step = 1.0 / model.solver.lipschitz.reshape(-1, 1, 1, 1)
    by_hand = torch.autograd.grad(0.5 * (x - step * model.energy_grad(x, y, physics) - x_true).pow(2).sum(), params)
    assert torch.allclose(jfb, torch.cat([g.reshape(-1) for g in by_hand]), rtol=1e-10, atol=1e-14)
    assert float(jfb @ exact) > 0.5 * float(jfb.norm() * exact.norm())


def test_unrolled_differentiates_the_iterations():
    """Unrolling records the solver (memory growing with iterations); its derivative tends to the implicit one as
    the iterations converge, and differs from it after a truncated solve."""
    x_true, y = _problem((10, 9))
    physics = dinv.physics.Denoising()
    implicit = _flat_grad(BilevelReconstructor(make_prior("NETT"), lam=0.2, **TIGHT).double(), y, physics, x_true)
    long = BilevelReconstructor(make_prior("NETT"), lam=0.2, hypergradient="unrolled", grad_tol=1e-12,
                                max_iter=300).double()
    assert isinstance(long.solver, VariationalSolver) and long.solver.differentiable
    unrolled = _flat_grad(long, y, physics, x_true)
    assert torch.allclose(unrolled, implicit, rtol=1e-3, atol=1e-3 * float(implicit.abs().max()))
    short = BilevelReconstructor(make_prior("NETT"), lam=0.2, hypergradient="unrolled", max_iter=1).double()
    assert not torch.allclose(_flat_grad(short, y, physics, x_true), implicit, rtol=1e-2)


def test_trainer_lowers_the_upper_level_loss():
    """deepinv.Trainer with a supervised MSE loss trains a filter bank and lambda by implicit differentiation: the
    training loss falls, lambda moves, and the lower level met its tolerance."""
    from deepinv_ext.testing import example_images

    torch.manual_seed(0)
    prior = make_prior("SFB", dtype=torch.float32)
    model = BilevelReconstructor(prior, lam=0.05, grad_tol=1e-3, max_iter=300, cg_max_iter=50)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1, rng=torch.Generator().manual_seed(0)))
    loader = torch.utils.data.DataLoader(example_images(4, 16, generator=torch.Generator().manual_seed(0)),
                                         batch_size=4)
    trainer = cpu_trainer(model, physics, torch.optim.Adam(model.parameters(), lr=0.02), loader, epochs=8,
                          losses=dinv.loss.SupLoss(), online_measurements=True)
    lam0 = model.regularizer.lam.item()
    trainer.train()
    losses = trainer.loss_history["SupLoss"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert model.regularizer.lam.item() != lam0
    assert bool(model.solver.converged.all())


def test_no_graph_without_anything_to_learn():
    """Under no_grad, or with every parameter frozen and a y that needs no gradient, the output carries no graph (the
    implicit derivative is attached only when something asks for it)."""
    x_true, y = _problem((5, 4))
    model = BilevelReconstructor(dinv.optim.prior.Tikhonov(), lam=0.5, learn_lam=False).double()
    assert not model(y, dinv.physics.Denoising()).requires_grad
    assert model(y.requires_grad_(True), dinv.physics.Denoising()).requires_grad
    learned = BilevelReconstructor(dinv.optim.prior.Tikhonov(), lam=0.5).double()
    with torch.no_grad():
        assert not learned(y, dinv.physics.Denoising()).requires_grad
    assert learned.residual.max() < learned.grad_tol


def test_refusals():
    with pytest.raises(ValueError, match="hypergradient"):
        BilevelReconstructor(dinv.optim.prior.Tikhonov(), hypergradient="neumann")
    with pytest.raises(TypeError, match="fn and grad"):
        BilevelReconstructor(torch.nn.Identity())
    with pytest.raises(ValueError, match="grad_tol"):
        BilevelReconstructor(dinv.optim.prior.Tikhonov(), grad_tol=0.0)
    assert not ScaledPrior(make_prior("SFB"), 0.5).learn_lam

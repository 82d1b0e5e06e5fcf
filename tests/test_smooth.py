"""SmoothLearnedPrior: gradient kept differentiable in the parameters, and a real, warm-started, per-image prox."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from helpers_priors import PRIOR_NAMES, image_size, make_prior

from deepinv_ext._batch import batch_sqnorm
from deepinv_ext.priors import (
    NETT,
    TDV,
    AdversarialRegularizer,
    ConvexAdversarialRegularizer,
    ProxConfig,
    ProxConvergenceWarning,
    SmoothLearnedPrior,
    SparsifyingFilterBank,
)
from deepinv_ext.priors.scaled import ScaledPrior


def _x(name: str, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(batch, 1, *image_size(name), dtype=torch.float64)


@pytest.mark.parametrize("cls", [TDV, AdversarialRegularizer, ConvexAdversarialRegularizer, NETT,
                                 SparsifyingFilterBank])
def test_every_smooth_learned_prior_uses_the_base(cls):
    """A solver calls ``prior.energy_and_grad(x)`` on any SmoothLearnedPrior: an override may add arguments only as
    keywords with defaults. The autograd priors override neither ``grad`` nor ``energy_and_grad``."""
    assert issubclass(cls, SmoothLearnedPrior)
    params = list(inspect.signature(cls.energy_and_grad).parameters.values())[2:]  # after self, x
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in params), params
    if cls in (AdversarialRegularizer, ConvexAdversarialRegularizer, NETT):
        assert "grad" not in vars(cls) and "energy_and_grad" not in vars(cls)


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_energy_and_grad_is_fn_and_grad_and_leaves_x_alone(name):
    """energy_and_grad(x) is (fn(x), grad(x)); unlike deepinv's Potential.grad it never sets requires_grad on the
    caller's x, even when it records a graph to the parameters."""
    prior, x = make_prior(name), _x(name)
    energy, grad = prior.energy_and_grad(x)
    torch.testing.assert_close(energy, prior.fn(x))
    torch.testing.assert_close(grad, prior.grad(x))
    assert grad.requires_grad and not x.requires_grad


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_grad_keeps_the_graph_to_the_parameters_when_x_needs_no_grad(name):
    """Inside an unrolled solver x often needs no gradient while the prior trains: grad(x) must still depend on the
    parameters (and match the double-backward of fn); under no_grad nothing is recorded."""
    prior, x = make_prior(name), _x(name)
    g = prior.grad(x)
    assert g.requires_grad, "grad(x) was detached from the parameters"
    params = [p for p in prior.parameters()]
    probe = torch.randn_like(x)
    got = torch.autograd.grad((g * probe).sum(), params, allow_unused=True)
    z = x.clone().requires_grad_(True)
    (gz,) = torch.autograd.grad(prior.fn(z).sum(), z, create_graph=True)
    want = torch.autograd.grad((gz * probe).sum(), params, allow_unused=True)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    e, g2 = prior.energy_and_grad(x)
    assert e.requires_grad and g2.requires_grad
    with torch.no_grad():
        assert not prior.grad(x).requires_grad
        e, g3 = prior.energy_and_grad(x)
        assert not e.requires_grad and not g3.requires_grad
    for p in params:
        p.requires_grad_(False)
    assert not prior.grad(x).requires_grad  # frozen prior, plain x: nothing to record


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_prox_meets_its_stated_tolerance(name):
    """u = prox_{gamma R}(x) has ||u - x + gamma grad R(u)|| < tol ||x|| per image, and the counts are recorded."""
    prior, x = make_prior(name, prox_config=ProxConfig(tol=1e-8, warm_start=False)), _x(name)
    gamma = 0.5
    with torch.no_grad():
        u = prior.prox(x, gamma=gamma)
        residual = torch.sqrt(batch_sqnorm(u - x + gamma * prior.grad(u))) / torch.sqrt(batch_sqnorm(x))
    assert (residual < 1e-8).all(), residual
    assert prior.prox_converged.all()
    iterations = prior.prox_iterations[-1]
    assert iterations.shape == (2,) and (iterations > 0).all()
    # a prox decreases the prox energy from u = x
    e_u = 0.5 * batch_sqnorm(u - x) + gamma * prior.fn(u)
    assert (e_u <= gamma * prior.fn(x) + 1e-12).all()


@pytest.mark.parametrize("name", ["ACR", "NETT"])
def test_prox_per_image_gamma_and_deepinv_call_signature(name):
    """gamma per image gives each image its own prox; deepinv's iterators call prox(x, g_param, gamma=...)."""
    prior, x = make_prior(name, prox_config=ProxConfig(tol=1e-10, warm_start=False)), _x(name)
    gammas = torch.tensor([0.2, 2.0], dtype=torch.float64)
    with torch.no_grad():
        both = prior.prox(x, torch.tensor([[1.0]]), gamma=gammas.view(2, 1, 1, 1))
        first = prior.prox(x[:1], gamma=0.2)
        second = prior.prox(x[1:], gamma=2.0)
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-8, rtol=0)
    assert not torch.allclose(prior.prox(x, gamma=0.2), prior.prox(x, gamma=2.0))
    torch.testing.assert_close(prior.prox(x, gamma=0.0), x)


def test_prox_is_warm_started_from_the_previous_output():
    prior, x = make_prior("ACR", prox_config=ProxConfig(tol=1e-8)), _x("ACR")
    with torch.no_grad():
        u = prior.prox(x, gamma=1.0)
        cold = int(prior.prox_iterations[-1].max())
        again = prior.prox(x, gamma=1.0)
        assert int(prior.prox_iterations[-1].max()) < cold  # started at u: at most a few steps
        torch.testing.assert_close(again, u, atol=1e-7, rtol=0)
        prior.prox(x[:1], gamma=1.0)  # another shape: from x
        assert int(prior.prox_iterations[-1].max()) > 0
    prior.reset_prox()
    assert len(prior.prox_iterations) == 0


def test_prox_warns_when_it_does_not_converge():
    prior, x = make_prior("NETT"), _x("NETT")
    with pytest.warns(ProxConvergenceWarning, match="did not reach"):
        prior.prox(x, gamma=1.0, tol=1e-14, max_iter=2)
    assert not prior.prox_converged.all()
    assert (prior.prox_iterations[-1] <= 2).all()


@pytest.mark.parametrize("gamma", [-1.0, math.nan, math.inf, torch.tensor([1.0, -0.5]), torch.ones(3)])
def test_prox_rejects_bad_gamma(gamma):
    prior, x = make_prior("SFB"), _x("SFB")
    with pytest.raises(ValueError, match="gamma"):
        prior.prox(x, gamma=gamma)


@pytest.mark.parametrize("kwargs", [{"tol": 0.0}, {"tol": -1e-3}, {"tol": math.nan}, {"max_iter": 0},
                                    {"max_iter": 2.5}])
def test_prox_rejects_bad_tolerance_or_budget(kwargs):
    prior, x = make_prior("SFB"), _x("SFB")
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        prior.prox(x, **kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ProxConfig(**kwargs)


def test_prox_records_nothing_under_no_grad_and_is_differentiable_otherwise():
    """Under no_grad the inner solve builds no graph; with autograd the prox is differentiable (by unrolling) in
    x, gamma and the parameters, and its derivative in gamma matches the implicit-function value."""
    prior, x = make_prior("ACR", prox_config=ProxConfig(tol=1e-10, warm_start=False)), _x("ACR", batch=1)
    with torch.no_grad():
        assert not prior.prox(x, gamma=0.5).requires_grad
    gamma = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    u = prior.prox(x, gamma=gamma)
    assert u.requires_grad
    w = torch.randn_like(x)
    (dgamma,) = torch.autograd.grad((u * w).sum(), gamma)
    eps = 1e-4  # central differences: O(eps^2) truncation, far above the inner tolerance's noise
    with torch.no_grad():
        fd = ((prior.prox(x, gamma=0.5 + eps) - prior.prox(x, gamma=0.5 - eps)) * w).sum() / (2 * eps)
    assert abs(float(dgamma) - float(fd)) <= 1e-4 * abs(float(fd))


@pytest.mark.parametrize("name", ["TDV", "NETT"])
def test_scaled_prior_is_lambda_times_the_prior(name):
    """ScaledPrior(R, lam) is a SmoothLearnedPrior whose energy, gradient and prox are those of lam R (TDV's
    hand-derived gradient is the one used)."""
    prior, x = make_prior(name, prox_config=ProxConfig(tol=1e-8, warm_start=False)), _x(name)
    scaled = ScaledPrior(prior, 0.5)
    assert isinstance(scaled, SmoothLearnedPrior)
    energy, grad = scaled.energy_and_grad(x)
    want_energy, want_grad = prior.energy_and_grad(x)
    torch.testing.assert_close(energy, 0.5 * want_energy)
    torch.testing.assert_close(grad, 0.5 * want_grad)
    torch.testing.assert_close(scaled.fn(x), 0.5 * prior.fn(x))
    torch.testing.assert_close(scaled.grad(x), 0.5 * prior.grad(x))
    with torch.no_grad():
        u = scaled.prox(x, gamma=0.4)
        residual = torch.sqrt(batch_sqnorm(u - x + 0.2 * prior.grad(u))) / torch.sqrt(batch_sqnorm(x))
    assert (residual < 1e-8).all(), residual
    assert {n for n, _ in scaled.named_parameters()} == {f"prior.{n}" for n, _ in prior.named_parameters()}
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        scaled.fn(x.float())


def test_scaled_prior_refuses_a_bad_prior_or_weight():
    with pytest.raises(TypeError, match="prior must have fn and grad methods"):
        ScaledPrior(torch.nn.Identity(), 1.0)
    for lam in (0.0, -1.0, float("nan"), True):
        with pytest.raises((TypeError, ValueError), match="lam"):
            ScaledPrior(make_prior("SFB"), lam)
    with pytest.raises(TypeError, match="learn_lam"):
        ScaledPrior(make_prior("SFB"), 1.0, learn_lam=1)


def test_scaled_prior_learns_lambda_of_any_prior_with_fn_and_grad():
    """learn_lam=True: lambda = e^rho with rho a parameter in the prior's dtype, d(lambda R)/d rho = lambda R; a
    deepinv prior (Tikhonov) without energy_and_grad is scaled through its fn and grad."""
    import deepinv as dinv

    x = _x("SFB")
    scaled = ScaledPrior(make_prior("SFB"), 0.25, learn_lam=True)
    assert scaled.log_lam.dtype == torch.float64 and scaled.lam.item() == pytest.approx(0.25)
    energy, grad = scaled.energy_and_grad(x)
    (d_rho,) = torch.autograd.grad(energy.sum(), scaled.log_lam)
    assert torch.allclose(d_rho, energy.sum().detach())
    assert torch.allclose(grad, 0.25 * scaled.prior.grad(x))
    tikhonov = ScaledPrior(dinv.optim.prior.Tikhonov(), 2.0)
    energy, grad = tikhonov.energy_and_grad(x)
    assert torch.allclose(energy, x.pow(2).sum(dim=(1, 2, 3))) and torch.equal(grad, 2.0 * x)

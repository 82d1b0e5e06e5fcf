"""Gradient-step PnP: monotone objective with backtracking, stationarity of the fixed point, the data prox, the
parameter-choice rule, batching and training."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from deepinv.optim import BacktrackingConfig
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import AffineParameterRule, GradientStepPnP, NotConvergedWarning
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet

# these tests run solvers on small budgets on purpose and check iterates, gradients or outputs; the tests that are
# about convergence assert the solvers' per-image `converged` flags (or expect the warning) themselves
pytestmark = pytest.mark.filterwarnings("ignore::deepinv_ext.algorithms.NotConvergedWarning")

SIZE = 16


def _denoiser(dtype=torch.float32) -> GradientStepDenoiser:
    torch.manual_seed(0)
    return GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=6, depth=3)).to(dtype)


def _problem(dtype=torch.float32, batch: int = 2, noise: float = 0.02, blur: float = 1.0):
    physics = dinv.physics.BlurFFT((1, SIZE, SIZE), filter=gaussian_blur(sigma=(blur, blur), dtype=dtype))
    data = RandomEllipsesDataset(length=batch, size=SIZE, seed=3)
    x = torch.stack([data[i]["x"] for i in range(batch)]).to(dtype)
    gen = torch.Generator().manual_seed(0)
    y = physics.A(x) + noise * torch.randn(x.shape, generator=gen).to(dtype)
    return physics, x, y


def test_objective_is_non_increasing_with_backtracking_and_not_without():
    physics, _, y = _problem()
    denoiser = _denoiser()
    # a step far above 1/(lambda L): backtracking must shrink it to keep F decreasing
    kwargs = {"lambda_": 1.0, "sigma_denoiser": 0.05, "stepsize": 100.0, "max_iter": 20, "tol": 1e-9}
    with torch.no_grad():
        model = GradientStepPnP(denoiser, backtracking=BacktrackingConfig(gamma=0.1, eta=0.5), **kwargs)
        model(y, physics)
        history = model.history
        without = GradientStepPnP(denoiser, backtracking=False, **kwargs)
        without(y, physics)
    assert (history["objective"].diff(dim=0) <= 0).all(), "F(x_k) increased with backtracking"
    assert history["backtracks"].sum() > 0 and (history["stepsize"][-1] < 100.0).all()
    assert (without.history["objective"].diff(dim=0) > 0).any(), "the test problem needs no backtracking"
    # the recorded objective is the true F of the returned iterate
    with torch.no_grad():
        x_hat = model(y, physics)
        torch.testing.assert_close(model.objective(x_hat, y, physics), model.history["objective"][-1])


def test_steps_vanish_and_fixed_point_is_stationary():
    """Theorem 3: ||x_{k+1} - x_k|| -> 0 and the limit is a stationary point of F (grad F ~ 0)."""
    dtype = torch.float64
    physics, _, y = _problem(dtype, blur=0.6)  # a mild blur: f strongly convex, so convergence is fast
    denoiser = _denoiser(dtype)
    model = GradientStepPnP(denoiser, lambda_=0.1, sigma_denoiser=0.05, max_iter=150, tol=1e-10, crit="iterate")
    x0 = physics.A_adjoint(y)
    with torch.no_grad():
        x_hat = model(y, physics, init=x0)
    history = model.history
    assert model.converged.shape == (2,) and model.converged.all()
    assert (history["objective"].diff(dim=0) <= 0).all()
    steps = history["step"]
    assert (steps[-1] < 1e-6 * steps[0]).all(), f"steps did not vanish: {steps[0]} -> {steps[-1]}"
    grad_end = model.grad_objective(x_hat, y, physics).flatten(1).norm(dim=1)
    grad_start = model.grad_objective(x0, y, physics).flatten(1).norm(dim=1)
    assert (grad_end < 1e-5 * grad_start).all(), f"|grad F| at the fixed point {grad_end} vs start {grad_start}"
    # and it is a fixed point of the PnP map prox_{tau f}(x - tau lambda grad g(x))
    tau = history["stepsize"][-1]
    step = model.prox_data(x_hat - (tau * model.lambda_).view(-1, 1, 1, 1) * denoiser.grad(x_hat, 0.05, False),
                           y, physics, tau)
    assert float((step - x_hat).abs().max()) < 1e-8


def test_cg_prox_matches_closed_form_and_leaves_physics_alone():
    physics_fft, x, y = _problem(torch.float64)
    physics_cg = dinv.physics.Blur(filter=gaussian_blur(sigma=(1.0, 1.0), dtype=torch.float64), padding="circular")
    settings = (physics_cg.solver, physics_cg.max_iter, physics_cg.tol)
    model = GradientStepPnP(_denoiser(torch.float64), lambda_=0.5, sigma_denoiser=0.05, prox_tol=1e-12,
                            prox_max_iter=500)
    z, tau = torch.rand_like(x), torch.tensor([0.5, 20.0], dtype=torch.float64)
    closed = model.prox_data(z, y, physics_fft, tau)
    torch.testing.assert_close(model.prox_data(z, y, physics_cg, tau), closed, rtol=1e-6, atol=1e-6)
    assert (physics_cg.solver, physics_cg.max_iter, physics_cg.tol) == settings
    # the prox solves (Id + tau A^T A) p = z + tau A^T y
    lhs = closed + tau.view(-1, 1, 1, 1) * physics_fft.A_adjoint(physics_fft.A(closed))
    torch.testing.assert_close(lhs, z + tau.view(-1, 1, 1, 1) * physics_fft.A_adjoint(y))


def test_batch_equals_one_image_at_a_time():
    physics, _, y = _problem(batch=2)
    model = GradientStepPnP(_denoiser(), lambda_=1.0, sigma_denoiser=0.05, stepsize=20.0, max_iter=25)
    with torch.no_grad():
        both = model(y, physics)
        hist = model.history["objective"]
        one = model(y[1:], physics)
    assert (hist.diff(dim=0) <= 0).all() and (model.history["objective"].diff(dim=0) <= 0).all()
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hist[: len(model.history["objective"]), 1], model.history["objective"][:, 0])


def test_denoised_output_is_the_last_denoised_iterate():
    physics, _, y = _problem()
    denoiser = _denoiser()
    model = GradientStepPnP(denoiser, lambda_=0.5, sigma_denoiser=0.05, max_iter=10, output="denoised")
    with torch.no_grad():
        x_k = GradientStepPnP(denoiser, lambda_=0.5, sigma_denoiser=0.05, max_iter=10)(y, physics)
        out = model(y, physics)
        torch.testing.assert_close(out, denoiser(x_k, 0.05))
    assert (model.history["objective"].diff(dim=0) <= 0).all()


def test_training_reaches_the_denoiser_weights():
    physics, x, y = _problem()
    model = GradientStepPnP(_denoiser(), lambda_=0.5, sigma_denoiser=0.05, max_iter=5, differentiable=True)
    (model(y, physics) - x).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_parameter_rule():
    rule = AffineParameterRule(c=0.04, eps=1e-4)
    assert rule(0.0) == rule.limit == 1e-4
    assert rule(5.0) == pytest.approx(0.2001)
    deltas = torch.tensor([0.0, 0.01, 0.1, 1.0])
    values = rule(deltas)
    assert (values.diff() > 0).all() and float(values[0]) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="delta"):
        rule(-0.1)
    with pytest.raises(ValueError, match="eps"):
        AffineParameterRule(c=1.0, eps=0.0)
    with pytest.raises(ValueError, match="c must"):
        AffineParameterRule(c=-1.0)


class _FlippedGradient(GradientStepPnP):
    """A mutant: the gradient of the potential with the wrong sign."""

    @staticmethod
    def _grad_from(g, leaf):
        return -GradientStepPnP._grad_from(g, leaf)


@pytest.mark.parametrize("dtype,lambda_,batch,crit", [(torch.float64, 10.0, 2, "objective"),
                                                      (torch.float64, 10.0, 2, "iterate"),
                                                      (torch.float32, 3.0, 8, "objective")])
def test_a_gradient_with_the_wrong_sign_stalls_and_is_not_reported_converged(dtype, lambda_, batch, crit):
    """No candidate lowers F as predicted: backtracking shrinks the step until the objective cannot show a change,
    and that must be a stall (not converged, warned), neither "converged to the precision of the dtype" nor a
    tiny step that passed the Armijo test on round-off (float32: image 3 of this batch), nor a shrunken candidate
    within tol of x_k (crit="iterate")."""
    physics, _, y = _problem(dtype, batch=batch)
    model = _FlippedGradient(_denoiser(dtype), lambda_=lambda_, sigma_denoiser=0.05, max_iter=20, tol=1e-7, crit=crit,
                             backtracking=BacktrackingConfig(eta=0.5, max_iter=60))
    with torch.no_grad(), pytest.warns(NotConvergedWarning, match="found no step"):
        x_hat = model(y, physics)
    assert not model.converged.any() and model.history["backtracking_failed"].all()
    torch.testing.assert_close(x_hat, physics.A_adjoint(y), rtol=0, atol=0)


def test_a_budget_too_small_is_not_reported_as_convergence():
    physics, _, y = _problem()
    model = GradientStepPnP(_denoiser(), lambda_=0.5, sigma_denoiser=0.05, max_iter=2, tol=1e-12)
    with torch.no_grad(), pytest.warns(NotConvergedWarning, match="2 reached max_iter=2"):
        model(y, physics)
    assert model.converged.tolist() == [False, False] and model.history["converged"].tolist() == [False, False]


@pytest.mark.parametrize("kwargs,error,name", [
    ({"max_iter": 10.0}, ValueError, "max_iter"), ({"max_iter": 0}, ValueError, "max_iter"),
    ({"prox_max_iter": True}, ValueError, "prox_max_iter"), ({"tol": float("nan")}, ValueError, "tol"),
    ({"sigma_denoiser": float("inf")}, ValueError, "sigma_denoiser"), ({"lambda_": "1"}, TypeError, "lambda_"),
    ({"stepsize": -1.0}, ValueError, "stepsize"), ({"prox_tol": 0.0}, ValueError, "prox_tol"),
    ({"show_progress_bar": "no"}, TypeError, "show_progress_bar"),
    ({"backtracking": BacktrackingConfig(gamma=1.0)}, ValueError, "gamma"),
    ({"backtracking": BacktrackingConfig(eta=float("nan"))}, ValueError, "eta"),
    ({"backtracking": BacktrackingConfig(max_iter=2.0)}, ValueError, "backtracking.max_iter"),
])
def test_bad_constructor_arguments_are_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        GradientStepPnP(_denoiser(), **({"lambda_": 1.0, "sigma_denoiser": 0.05} | kwargs))


def test_bad_measurements_are_refused_before_iterating():
    physics, _, y = _problem()
    model = GradientStepPnP(_denoiser(), lambda_=1.0, sigma_denoiser=0.05, max_iter=2)
    with pytest.raises(ValueError, match=r"y must have the shape \(2, 1, 16, 16\)"):
        model(y[..., :1], physics)  # broadcasts against the blur
    with pytest.raises(ValueError, match="y must hold at least one sample"):
        model(y[:0], physics)
    with pytest.raises(TypeError, match=r"y has dtype torch.float64 but GradientStepPnP computes in torch.float32"):
        model(y.double(), physics)
    with pytest.raises(TypeError, match="y must be a real floating tensor"):
        model(y.to(torch.complex64), physics)
    with pytest.raises(TypeError, match="init has dtype"):
        model(y, physics, init=y.double())


def test_bad_arguments():
    physics, _, y = _problem()
    denoiser = _denoiser()
    with pytest.raises(TypeError, match="denoiser"):
        GradientStepPnP(dinv.models.MedianFilter(), lambda_=1.0, sigma_denoiser=0.05)
    with pytest.raises(ValueError, match="lambda_"):
        GradientStepPnP(denoiser, lambda_=0.0, sigma_denoiser=0.05)
    with pytest.raises(ValueError, match="crit"):
        GradientStepPnP(denoiser, lambda_=1.0, sigma_denoiser=0.05, crit="cost")
    model = GradientStepPnP(denoiser, lambda_=1.0, sigma_denoiser=0.05, max_iter=2)
    with pytest.raises(ValueError, match="y must be finite"):
        model(torch.full_like(y, float("nan")), physics)
    with pytest.raises(TypeError, match="LinearPhysics"):
        model(y, dinv.physics.Physics(A=lambda x: x))
    with pytest.raises(ValueError, match="init"):
        model(y, physics, init=torch.zeros(2, 1, SIZE + 1, SIZE))


def test_every_accepted_step_meets_the_armijo_condition():
    """F(x_k) - F(x_{k+1}) >= gamma / tau_k ||x_{k+1} - x_k||^2 on every iteration (from the recorded history), on
    a problem where plain decrease would accept steps that this sufficient decrease refuses."""
    physics, _, y = _problem(torch.float64)
    config = BacktrackingConfig(gamma=0.45, eta=0.5, max_iter=30)
    model = GradientStepPnP(_denoiser(torch.float64), lambda_=1.0, sigma_denoiser=0.05, stepsize=100.0, max_iter=30,
                            tol=1e-12, backtracking=config)
    with torch.no_grad():
        model(y, physics)
    h = model.history
    decrease = -h["objective"].diff(dim=0)
    demanded = config.gamma / h["stepsize"] * h["step"] ** 2
    assert (h["backtracks"] > 0).any() and (h["step"] > 0).all()
    assert (decrease >= demanded).all(), (decrease - demanded).min()


@pytest.mark.parametrize("crit,expected", [("objective", [False, True]), ("iterate", [True, False])])
def test_the_stopping_test_is_the_relative_change_of_its_criterion(crit, expected):
    """check_conv: |F_k - F_{k+1}| / |F_{k+1}| (objective) or |x_{k+1} - x_k| / |x_k| (iterate) below tol, per image."""
    model = GradientStepPnP(_denoiser(), lambda_=1.0, sigma_denoiser=0.05, tol=1e-3, crit=crit)
    x, F = torch.ones(2, 1, 4, 4), torch.full((2,), 2.0)
    x_new = x * torch.tensor([1 + 5e-4, 1 + 2e-3]).view(2, 1, 1, 1)
    F_new = F * torch.tensor([1 - 2e-3, 1 - 5e-4])
    assert model.check_conv(x, x_new, F, F_new).tolist() == expected

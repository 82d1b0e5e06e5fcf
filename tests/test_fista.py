"""FISTASolver: FISTA for a nonsmooth prior, every image of a batch stopped on its own (deepinv 0.5's FISTA stops a
batch by the mean of its images' changes), converging to the minimiser of 1/2 |Ax - y|^2 + lambda g(x)."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext.algorithms import NotConvergedWarning
from deepinv_ext.algorithms.fista import FISTASolver


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 1, 12, 12, dtype=torch.float64)
    x[..., 3:9, 3:9] = 1.0
    x[1] *= 0.5
    physics = dinv.physics.BlurFFT((1, 12, 12), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(0.6, 0.6)))
    physics = physics.to(torch.float64)
    y = physics.A(x) + torch.tensor([0.01, 0.05, 0.2], dtype=torch.float64)[:, None, None, None] * torch.randn(
        x.shape, generator=g, dtype=torch.float64)
    return physics, y


def test_a_batch_gives_the_results_of_its_images_one_by_one():
    physics, y = _problem()
    solver = FISTASolver(dinv.optim.L1Prior(), lambda_reg=0.02, lipschitz=1.01, max_iter=1000, tol=1e-5)
    batch = solver(y, physics)
    iterations = []
    for b in range(y.shape[0]):
        torch.testing.assert_close(solver(y[b:b + 1], physics), batch[b:b + 1], rtol=0, atol=1e-12)
        iterations.append(solver.iterations)
    assert len(set(iterations)) > 1, "the images should need different numbers of iterations"
    assert solver.converged.tolist() == [True]


def test_converges_to_the_minimiser():
    """The fixed point of the proximal-gradient map, reached by deepinv's PGD run long."""
    physics, y = _problem()
    prior, lam = dinv.optim.L1Prior(), 0.02
    x_hat = FISTASolver(prior, lambda_reg=lam, lipschitz=1.01, max_iter=3000, tol=1e-12)(y, physics)
    step = x_hat - physics.A_adjoint(physics.A(x_hat) - y) / 1.01
    torch.testing.assert_close(prior.prox(step, gamma=lam / 1.01), x_hat, rtol=0, atol=1e-9)
    pgd = dinv.optim.PGD(prior=prior, data_fidelity=dinv.optim.data_fidelity.L2(), lambda_reg=lam,
                         stepsize=1 / 1.01, max_iter=5000, early_stop=False)
    torch.testing.assert_close(pgd(y, physics), x_hat, rtol=0, atol=1e-6)


def test_snapshots_warning_and_step_condition():
    physics, y = _problem()
    solver = FISTASolver(dinv.optim.L1Prior(), lambda_reg=0.02, lipschitz=1.01, max_iter=4, tol=1e-12,
                         record=(0, 2, 4))
    with pytest.warns(NotConvergedWarning, match="3 of 3 images did not converge \\(3 reached max_iter=4\\)"):
        x = solver(y, physics, x_init=physics.A_adjoint(y))
    assert sorted(solver.snapshots) == [0, 2, 4] and torch.equal(solver.snapshots[4], x)
    torch.testing.assert_close(solver.snapshots[0], physics.A_adjoint(y))
    assert solver.iterations == 4 and not solver.converged.any()
    assert solver.step_condition(physics, torch.rand(1, 1, 12, 12, dtype=torch.float64))
    assert not FISTASolver(dinv.optim.L1Prior(), 0.02, lipschitz=0.5).step_condition(
        physics, torch.rand(1, 1, 12, 12, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, error, name", [
    ({"prior": object()}, TypeError, "prox"),
    ({"lipschitz": 0.0}, ValueError, "lipschitz"),
    ({"lambda_reg": float("nan")}, ValueError, "lambda_reg"),
    ({"max_iter": 2.0}, ValueError, "max_iter"),
    ({"tol": -1.0}, ValueError, "tol"),
    ({"record": (5,)}, ValueError, "record"),
])
def test_bad_arguments_are_named(kwargs, error, name):
    args = {"prior": dinv.optim.L1Prior(), "lambda_reg": 0.1, "lipschitz": 1.0, "max_iter": 3} | kwargs
    with pytest.raises(error, match=name):
        FISTASolver(**args)


def test_contract_example_passes_the_reconstructor_checks():
    import warnings

    from deepinv_ext.testing import check_reconstructor

    before = torch.random.get_rng_state()
    example = FISTASolver.contract_example(torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), before)  # draws from its generator only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)  # 5 iterations: a contract check, not a solve
        check_reconstructor(**example)

"""ACR in the variational solver: monotone energy and convergence on a tiny CT problem."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.physics import AstraCT
from deepinv_ext.priors.adversarial import ConvexAdversarialRegularizer

variational = pytest.importorskip("deepinv_ext.algorithms.variational")


class _Scaled(torch.nn.Module):
    """lam * R, for the solver's energy w/2 |Ax - y|^2 + R with w = 1."""

    def __init__(self, prior, lam):
        super().__init__()
        self.prior, self.lam = prior, lam

    def fn(self, x):
        return self.lam * self.prior.fn(x)

    def grad(self, x):
        return self.lam * self.prior.grad(x)


@pytest.mark.parametrize("smoothing", [0.0, 0.05])
def test_acr_solve_monotone_and_converges(smoothing):
    torch.manual_seed(0)
    prior = ConvexAdversarialRegularizer(num_filters=6, kernel_size=3, num_layers=3, eps=1e-2,
                                         smoothing=smoothing).double()
    physics = AstraCT(16, angles=10, backend="sparse", cache_dir=None)
    x = torch.stack([RandomEllipsesDataset(2, 16, seed=0)[i]["x"] for i in range(2)]).double()
    y = physics.A(x) + 0.1 * torch.randn(2, 1, 10, physics.n_detectors, dtype=torch.float64)
    solver = variational.VariationalSolver(_Scaled(prior, 5.0), weight=1.0, max_iter=3000, tol=1e-6,
                                           lipschitz_init=100.0)
    out = solver(y, physics)
    assert torch.isfinite(out).all()
    assert solver.monotone()
    assert solver.iterations < 3000  # stopped by the relative-change rule (tol 1e-6), not by max_iter

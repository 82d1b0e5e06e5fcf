"""normalised_descent: K normalised gradient steps on a regulariser from artefact images."""

from __future__ import annotations

import torch

from deepinv_ext.losses.descent import normalised_descent
from deepinv_ext.priors.nett import NETT


class DistanceToClean(torch.nn.Module):
    """R(x) = 1/2 ||x - c||^2: gradient descent on it runs straight to c."""

    def __init__(self, clean):
        super().__init__()
        self.clean = clean

    def phi(self, x):
        return x - self.clean

    def fn(self, x):
        return 0.5 * (x - self.clean).pow(2).flatten(1).sum(1)

    def grad(self, x):
        return x - self.clean


def test_steps_run_straight_to_the_minimiser_of_a_quadratic():
    """With R = 1/2||x - c||^2 the K steps from z end at c + (1 - gamma)(z - c), gamma in [0, 1] per sample."""
    torch.manual_seed(0)
    clean = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    artefact = clean + 0.3 * torch.randn_like(clean)
    found = normalised_descent(DistanceToClean(clean), artefact, clean, 3)
    d, m = (artefact - clean).flatten(1), (found - clean).flatten(1)
    shrink = (m * d).sum(1) / (d * d).sum(1)
    torch.testing.assert_close(m, shrink[:, None] * d)
    assert (shrink >= 0).all() and (shrink <= 1).all() and shrink.std() > 0.05
    assert not found.requires_grad


def test_steps_lower_a_network_regulariser_within_the_artefact_distance():
    torch.manual_seed(0)
    clean = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    artefact = clean + 0.3 * torch.randn_like(clean)
    prior = NETT(width=4, depth=1).double()
    found = normalised_descent(prior, artefact, clean, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (prior.fn(found) < prior.fn(artefact)).all()
    assert ((found - artefact).flatten(1).norm(dim=1) <= (artefact - clean).flatten(1).norm(dim=1) + 1e-9).all()
    again = normalised_descent(prior, artefact, clean, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(found, again)  # the generator fixes the step lengths


def test_steps_must_be_a_positive_integer():
    import pytest

    x = torch.zeros(1, 1, 4, 4)
    for steps in (0, 1.5, True):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            normalised_descent(DistanceToClean(x), x + 1, x, steps)

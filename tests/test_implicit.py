"""The implicit derivative of a prox equals the derivative of its closed form (quadratic R)."""

import torch

from deepinv_ext.priors.implicit import implicit_prox


def test_implicit_derivative_matches_the_closed_form():
    # R(u) = r/2 ||u||^2: prox_{gamma R}(x) = x / (1 + gamma r), differentiable in x, gamma and r
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    gamma = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    r = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=g)
    closed = x / (1 + gamma.view(-1, 1, 1, 1) * r)
    reference = torch.autograd.grad((closed * w).sum(), (x, gamma, r))
    u = implicit_prox(closed.detach(), x, gamma, lambda z: r * z, tol=1e-12, max_iter=50)
    assert torch.equal(u, closed.detach())
    ours = torch.autograd.grad((u * w).sum(), (x, gamma, r))
    for a, b in zip(ours, reference):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


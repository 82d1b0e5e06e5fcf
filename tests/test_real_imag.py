"""RealImagPrior: R(u) + R(v) of complex images (B, 2, H, W), its gradient, and its refusals."""

import pytest
import torch

from deepinv_ext.priors import NETT, TDV, RealImagPrior


@pytest.mark.parametrize("make", [lambda: NETT(width=4, depth=1), lambda: TDV(num_features=4, num_macro_blocks=1)])
def test_energy_and_gradient_are_those_of_the_two_parts(make):
    prior = make().double()
    x = torch.rand(3, 2, 16, 16, dtype=torch.float64)
    complex_prior = RealImagPrior(prior)
    energy, grad = complex_prior.energy_and_grad(x)
    parts = [x[:, :1], x[:, 1:]]
    assert torch.allclose(energy, prior.fn(parts[0]) + prior.fn(parts[1]))
    assert torch.allclose(complex_prior.fn(x), energy)
    assert torch.allclose(grad, torch.cat([prior.grad(p) for p in parts], dim=1))
    assert torch.allclose(complex_prior.grad(x), grad)
    y = x.clone().requires_grad_(True)  # the gradient of the energy itself, by autograd
    auto = torch.autograd.grad(complex_prior.fn(y).sum(), y)[0]
    assert torch.allclose(grad, auto, atol=1e-10)


def test_refusals():
    with pytest.raises(TypeError, match="SmoothLearnedPrior"):
        RealImagPrior(object())
    prior = RealImagPrior(NETT(width=4, depth=1))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        prior.fn(torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError):
        prior.fn(torch.zeros(2, 2, 8, 8, dtype=torch.int64))

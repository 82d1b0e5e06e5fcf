"""NETT prior and loss: energy/gradient contract, coercivity, training inside deepinv.Trainer."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from perturbation_helpers import fit, stripes_and_noise
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.algorithms import RegularizerTrainingModel
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.losses.descent import normalised_descent
from deepinv_ext.losses.nett import NETTLoss
from deepinv_ext.priors.nett import NETT
from deepinv_ext.testing import check_plugin, check_prior


def test_loss_contract():
    check_plugin(NETTLoss, "loss")


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_energy_and_gradient(p):
    torch.manual_seed(0)
    weights = torch.rand(1, 8, 8, dtype=torch.float64) + 0.5
    prior = NETT(p=p, weights=weights, width=4, depth=1).double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    check_prior(prior, x, solvers=False)
    e, g = prior.energy_and_grad(x)
    torch.testing.assert_close(e, prior.fn(x))
    torch.testing.assert_close(g, prior.grad(x))


def test_coercive_lower_bound():
    """R(x) >= v_min (||x||_p - b N^(1/p))_+^p for any weights of the network (bounded residual)."""
    torch.manual_seed(0)
    prior = NETT(p=2.0, width=4, depth=1, bound=2.0).double()
    with torch.no_grad():
        for q in prior.network.parameters():
            q.mul_(50.0)  # saturate the network: the bound must still hold
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64) * torch.logspace(0, 3, 16, dtype=torch.float64)[:, None,
                                                                                                      None, None]
    n = x[0].numel()
    lower = (x.flatten(1).norm(dim=1) - 2.0 * n ** 0.5).clamp(min=0) ** 2
    energy = prior.fn(x)
    assert (energy >= lower * (1 - 1e-12)).all()
    assert energy[-1] > 1e4 * energy[0].clamp(min=1e-12) or energy[-1] > 1e6


@pytest.mark.parametrize("size", [(37, 31), (6, 6), (5, 9)])
def test_any_image_size_is_padded_and_cropped(size):
    """Sides not divisible by 2**depth: D is evaluated on a replicate-padded image and cropped back, so that R is
    defined on any size, its gradient is autograd's, and D stays bounded (coercivity)."""
    torch.manual_seed(0)
    prior = NETT(in_channels=3, width=4, depth=2, bound=0.5).double()
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    check_prior(prior, x, solvers=False)
    d = prior.network(100 * x)
    assert d.shape == x.shape and d.abs().max() <= 0.5
    # D on any size = D on the image replicate-padded to a multiple of 4 (bottom, right), cropped back
    h, w = size
    padded = torch.nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode="replicate")
    torch.testing.assert_close(prior.network(x), prior.network(padded)[..., :h, :w])


def test_bad_input():
    with pytest.raises(ValueError, match="p must"):
        NETT(p=0.5)
    with pytest.raises(ValueError, match="weights"):
        NETT(weights=-1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        NETT(width=4).fn(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="regularizer"):
        NETTLoss()(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), model=torch.nn.Identity())


def test_trainer_lowers_nett_loss():
    torch.manual_seed(0)
    model = RegularizerTrainingModel(NETT(width=8, depth=1))
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.2))
    data = RandomEllipsesDataset(length=16, size=16, seed=0)
    clean = torch.stack([data[i]["x"] for i in range(16)])
    artefact = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    loss = NETTLoss()
    before = float(loss(clean, artefact, model=model).mean())
    trainer = cpu_trainer(model, physics, torch.optim.Adam(model.parameters(), lr=3e-3),
                          DataLoader(data, batch_size=8, shuffle=True), epochs=10, losses=[loss],
                          online_measurements=True)
    trainer.train()
    after = float(loss(clean, artefact, model=model).mean())
    assert after < 0.7 * before, (before, after)
    # the trained regulariser ranks the clean images below the noisy ones
    prior = model.regularizer
    with torch.no_grad():
        assert (prior.fn(clean) < prior.fn(artefact)).float().mean() > 0.9


def test_noise_level_teaches_phi_the_perturbations():
    """With noise_level > 0, Phi also learns to return Gaussian perturbations of clean images (R grows off the
    artefact directions); trained on stripe artefacts alone, it does not."""
    clean, stripes, noise = stripes_and_noise()
    errors = {}
    for level in (0.0, 0.2):
        torch.manual_seed(0)
        prior = NETT(width=8, depth=1)
        fit(NETTLoss(regularizer=prior, noise_level=level), prior, clean, clean + stripes, steps=150, lr=3e-3)
        with torch.no_grad():
            errors[level] = float((prior.phi(clean + noise) - noise).pow(2).mean() / noise.pow(2).mean())
    assert errors[0.2] < 0.7 * errors[0.0], errors  # measured: 0.26 against 0.54
    with pytest.raises(ValueError, match="noise_level"):
        NETTLoss(noise_level=-0.1)



def test_descent_term_adds_the_end_points():
    """The loss with descent_steps is Li et al.'s loss plus 1/N ||Phi(z') - (z' - x)||^2 at the descent's end
    points z' (same random draws)."""
    torch.manual_seed(0)
    prior = NETT(width=4, depth=1).double()
    clean = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    artefact = clean + 0.2 * torch.randn_like(clean)
    plain = NETTLoss(regularizer=prior)(x=clean, x_net=artefact)
    torch.manual_seed(1)
    with_descent = NETTLoss(regularizer=prior, descent_steps=2)(x=clean, x_net=artefact)
    torch.manual_seed(1)
    found = normalised_descent(prior, artefact, clean, 2)
    term = (prior.phi(found) - (found - clean)).pow(2).flatten(1).mean(dim=1)
    torch.testing.assert_close(with_descent, plain + term)
    assert (term > 0).all()
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="descent_steps"):
            NETTLoss(descent_steps=bad)


def test_nett_loss_refuses_bad_batches_and_regularizers():
    torch.manual_seed(0)
    prior = NETT(width=2, depth=1).double()
    loss = NETTLoss(regularizer=prior)
    clean, artefact = torch.rand(2, 2, 1, 8, 8, dtype=torch.float64)
    assert loss(x=clean[:0], x_net=artefact[:0]).shape == (0,)  # an empty batch works
    with pytest.raises(TypeError, match="x has dtype torch.float32 but NETT computes in"):
        loss(x=clean.float(), x_net=artefact.float())
    with pytest.raises(TypeError, match="x_net has dtype torch.float32"):
        loss(x=clean, x_net=artefact.float())
    with pytest.raises(TypeError, match="x must be a real floating tensor"):
        loss(x=clean.long(), x_net=artefact)
    with pytest.raises(ValueError, match="x and x_net must have the same shape"):
        loss(x=clean, x_net=artefact[:1])
    with pytest.raises(TypeError, match="regularizer must be a torch.nn.Module with the method"):
        NETTLoss(regularizer="nett")
    with pytest.raises(TypeError, match=r"regularizer must be a torch.nn.Module with the method\(s\) phi, grad"):
        NETTLoss(regularizer=prior.network, descent_steps=1)
    with pytest.raises(TypeError, match="model.regularizer must be a torch.nn.Module with the method"):
        NETTLoss()(x=clean, x_net=artefact, model=RegularizerTrainingModel(torch.nn.Identity()))

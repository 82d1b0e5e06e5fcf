"""AR and ACR priors and the Wasserstein critic loss: energy/gradient contracts, convexity, gradient penalty,
training inside deepinv.Trainer."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from perturbation_helpers import fit, stripes_and_noise
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.algorithms import RegularizerTrainingModel
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.losses.adversarial import WassersteinCriticLoss
from deepinv_ext.priors.adversarial import AdversarialRegularizer, ConvexAdversarialRegularizer
from deepinv_ext.testing import check_prior


def _acr(**kwargs) -> ConvexAdversarialRegularizer:
    torch.manual_seed(1)
    args = {"num_filters": 6, "kernel_size": 3, "num_layers": 4, "eps": 1e-2, "sfb_filters": 5, "sfb_kernel_size": 3}
    args.update(kwargs)
    return ConvexAdversarialRegularizer(**args).double()


def _scramble(prior: torch.nn.Module, scale: float = 3.0) -> None:
    """Large random parameters (far from the initialisation): convexity must not depend on training."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_acr_energy_and_gradient(smoothing):
    prior = _acr(smoothing=smoothing)
    x = torch.rand(3, 1, 10, 9, dtype=torch.float64)
    check_prior(prior, x, solvers=False)


def test_one_energy_per_batch_element():
    """deepinv's ICNN broadcasts to (B, B); ours returns (B,) and the batch gradient is the per-sample one."""
    for prior in (_acr(), AdversarialRegularizer(widths=(4, 8), hidden=4).double()):
        x = torch.rand(4, 1, 12, 12, dtype=torch.float64)
        assert prior.fn(x).shape == (4,)
        single = torch.cat([prior.grad(x[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(prior.grad(x), single)


def test_bad_input():
    with pytest.raises(ValueError, match="x must have shape"):
        _acr().fn(torch.rand(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="negative_slope"):
        ConvexAdversarialRegularizer(negative_slope=-0.1)
    with pytest.raises(ValueError, match="eps"):
        ConvexAdversarialRegularizer(eps=-1.0)
    with pytest.raises(ValueError, match="eps"):
        AdversarialRegularizer(eps=-1.0)
    with pytest.raises(ValueError, match="mu"):
        WassersteinCriticLoss(mu=-1.0)


def test_ar_eps_makes_energy_coercive():
    """With eps > 0 the AR energy grows without bound along every ray (the critic grows at most linearly)."""
    torch.manual_seed(0)
    prior = AdversarialRegularizer(widths=(4, 8), hidden=8).double()
    d = torch.randn(8, 1, 12, 12, dtype=torch.float64)
    plain = prior.fn(1e4 * d)
    prior.eps = 1e-2
    far, near = prior.fn(1e4 * d), prior.fn(1e2 * d)
    torch.testing.assert_close(far - plain, 1e-2 * (1e4 * d).pow(2).sum(dim=(1, 2, 3)))
    assert (far > near).all() and (near > prior.fn(torch.zeros_like(d))).all()
    # box form: no bias inside [0, 1], coercive outside
    boxed = AdversarialRegularizer(widths=(4, 8), hidden=8, eps=1e-2, box=(0.0, 1.0)).double()
    boxed.load_state_dict(prior.state_dict())
    inside = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    prior.eps = 0.0
    torch.testing.assert_close(boxed.fn(inside), prior.fn(inside))
    assert (boxed.fn(1e4 * d) > boxed.fn(1e2 * d)).all()
    check_prior(boxed, 2 * inside - 0.5, solvers=False)


@pytest.mark.parametrize("smoothing", [0.0, 0.05])
def test_acr_midpoint_convexity_random_pairs(smoothing):
    prior = _acr(smoothing=smoothing)
    _scramble(prior)
    g = torch.Generator().manual_seed(3)
    a = 2 * torch.rand(2000, 1, 8, 8, generator=g, dtype=torch.float64) - 0.5
    b = a + torch.randn(a.shape, generator=g, dtype=torch.float64) * torch.rand(2000, 1, 1, 1, generator=g,
                                                                                dtype=torch.float64)
    gap = prior.midpoint_convexity_gap(a, b)
    # strong convexity of eps*||x||^2: gap <= -eps/4 ||a - b||^2
    bound = -prior.eps / 4 * (a - b).pow(2).sum(dim=(1, 2, 3))
    scale = prior.fn(a).abs() + prior.fn(b).abs()
    assert (gap <= bound + 1e-10 * scale).all(), float((gap - bound).max())


def test_acr_parts_add_up():
    """The energy is the ICNN, plus the filter bank, plus (eps + beta)||x||^2; without the extras, the ICNN and
    eps||x||^2 alone."""
    x = torch.rand(3, 1, 10, 10, dtype=torch.float64)
    full = _acr()
    _scramble(full, scale=1.0)
    beta = torch.nn.functional.softplus(full.l2_raw)
    expected = full.critic(x) + full.filter_bank.fn(x) + (full.eps + beta) * x.pow(2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(full.fn(x), expected)
    assert float(full.l2_weight.detach()) > full.eps
    plain = _acr(sfb_filters=0, learn_l2=False)
    assert plain.filter_bank is None and not any("l2" in k or "filter_bank" in k for k in plain.state_dict())
    torch.testing.assert_close(plain.fn(x), plain.critic(x) + plain.eps * x.pow(2).sum(dim=(1, 2, 3)))
    check_prior(full, x, solvers=False)


def test_acr_convex_along_random_lines():
    prior = _acr()
    _scramble(prior)
    g = torch.Generator().manual_seed(4)
    a = torch.rand(20, 1, 8, 8, generator=g, dtype=torch.float64)
    d = torch.randn(20, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.linspace(-2, 2, 101, dtype=torch.float64).reshape(1, 101, 1, 1, 1)
    values = prior.fn((a[:, None] + t * d[:, None]).reshape(-1, 1, 8, 8)).reshape(20, 101)
    second = values[:, 2:] - 2 * values[:, 1:-1] + values[:, :-2]
    assert (second >= -1e-9 * values.abs().amax(dim=1, keepdim=True)).all()


def test_convexity_check_detects_negative_weights():
    """The convexity test can fail: a network with negative hidden weights is caught."""
    prior = _acr(eps=0.0, sfb_filters=0, learn_l2=False)
    _scramble(prior)
    prior.hidden_weights = lambda: [-torch.nn.functional.softplus(v) for v in prior.wz_raw] + [
        torch.nn.functional.softplus(prior.out_raw)]
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2000, 1, 8, 8, generator=g, dtype=torch.float64)
    b = a + torch.randn(a.shape, generator=g, dtype=torch.float64)
    assert (prior.midpoint_convexity_gap(a, b) > 1e-8).any()


def test_gradient_penalty_one_sided():
    torch.manual_seed(0)
    critic = AdversarialRegularizer(widths=(4, 8), hidden=8).double()
    clean, artefact = torch.rand(2, 6, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        critic.head[-1].weight.mul_(1e-6)  # nearly constant critic: gradient norm << 1
    one = WassersteinCriticLoss(mu=10.0, regularizer=critic).components(clean, artefact)
    two = WassersteinCriticLoss(mu=10.0, one_sided=False, regularizer=critic).components(clean, artefact)
    assert (one["grad_norm"] < 1).all() and (one["penalty"] == 0).all()
    torch.testing.assert_close(two["penalty"], (two["grad_norm"] - 1) ** 2)
    with torch.no_grad():
        critic.head[-1].weight.mul_(1e9)  # steep critic: the one-sided penalty is active
    steep = WassersteinCriticLoss(mu=10.0, regularizer=critic).components(clean, artefact)
    assert (steep["grad_norm"] > 1).all()
    torch.testing.assert_close(steep["penalty"], (steep["grad_norm"] - 1) ** 2)


def _train(loss, model, epochs: int, physics, data, lr: float = 1e-3):
    trainer = cpu_trainer(model, physics, torch.optim.Adam(model.parameters(), lr=lr),
                          DataLoader(data, batch_size=8, shuffle=True), epochs=epochs, losses=[loss],
                          online_measurements=True)
    trainer.train()


def _critic_stats(critic, clean, artefact, mu):
    parts = WassersteinCriticLoss(mu=mu, regularizer=critic,
                                  generator=torch.Generator().manual_seed(0)).components(clean, artefact)
    return float((parts["clean"] - parts["artefact"]).mean()), float(parts["grad_norm"].mean())


@pytest.mark.parametrize("cls", [AdversarialRegularizer, ConvexAdversarialRegularizer])
def test_trainer_lowers_critic_loss(cls):
    torch.manual_seed(0)
    critic = cls(widths=(8, 8, 16), hidden=16) if cls is AdversarialRegularizer else cls(
        num_filters=8, kernel_size=3, num_layers=3)
    model = RegularizerTrainingModel(critic)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.2))
    data = RandomEllipsesDataset(length=16, size=16, seed=0)
    clean = torch.stack([data[i]["x"] for i in range(16)])
    artefact = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    loss = WassersteinCriticLoss(mu=10.0)
    before = float(loss(clean, artefact, model=model).mean())
    _train(loss, model, epochs=6, physics=physics, data=data, lr=1e-2)
    after = float(loss(clean, artefact, model=model).mean())
    assert after < before - 0.05, (before, after)
    wasserstein, _ = _critic_stats(critic, clean, artefact, 10.0)
    assert wasserstein < 0  # the critic ranks the clean images below the noisy ones


def test_gradient_penalty_keeps_critic_lipschitz():
    """Trained without the penalty the critic's gradient norm grows past 1; with it, it stays near 1."""
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.2))
    data = RandomEllipsesDataset(length=16, size=16, seed=0)
    clean = torch.stack([data[i]["x"] for i in range(16)])
    artefact = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    norms = {}
    for mu in (0.0, 10.0):
        torch.manual_seed(0)
        model = RegularizerTrainingModel(AdversarialRegularizer(widths=(8, 8, 16), hidden=16))
        _train(WassersteinCriticLoss(mu=mu), model, epochs=8, physics=physics, data=data, lr=1e-2)
        norms[mu] = _critic_stats(model.regularizer, clean, artefact, 1.0)[1]
    assert norms[0.0] > 2.0 and norms[10.0] < 1.5, norms


def test_noise_level_replaces_half_the_artefacts_by_noisy_clean_images():
    g = torch.Generator().manual_seed(0)
    clean, artefact = torch.rand(2, 6, 1, 8, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(WassersteinCriticLoss().artefacts(clean, artefact), artefact)
    mixed = WassersteinCriticLoss(noise_level=0.3, generator=torch.Generator().manual_seed(1)).artefacts(
        clean, artefact)
    torch.testing.assert_close(mixed[3:], artefact[3:])
    residual = (mixed[:3] - clean[:3]).flatten(1)
    assert (residual.std(dim=1) < 0.3 * 1.5).all() and (residual.abs().amax(dim=1) > 0).all()
    with pytest.raises(ValueError, match="noise_level"):
        WassersteinCriticLoss(noise_level=-1.0)


def test_noise_level_makes_the_critic_rise_on_noise():
    """Trained against stripe artefacts alone, the critic barely rises on Gaussian noise (measured: 0.05); trained
    with half the artefacts replaced by noisy clean images, it does (0.46), and still rises on the stripes."""
    clean, stripes, noise = stripes_and_noise()
    rise = {}
    for level in (0.0, 0.2):
        torch.manual_seed(0)
        critic = AdversarialRegularizer(widths=(8, 8, 16), hidden=16)
        fit(WassersteinCriticLoss(mu=10.0, regularizer=critic, noise_level=level), critic, clean, clean + stripes,
            steps=100, lr=1e-2)
        with torch.no_grad():
            rise[level] = float((critic.fn(clean + noise) - critic.fn(clean)).mean())
            assert float((critic.fn(clean + stripes) - critic.fn(clean)).mean()) > 1.0
    assert rise[0.2] > 3 * rise[0.0] and rise[0.2] > 0.2, rise


def test_descent_steps_replace_half_the_artefacts_by_descended_ones():
    """descent_steps: the first half of the artefact batch moves down the critic (normalised steps, within the
    artefact distance), the second half stays; after the noise when both are on; the critic is required."""
    g = torch.Generator().manual_seed(0)
    clean, artefact = torch.rand(2, 6, 1, 16, 16, generator=g, dtype=torch.float64)
    critic = AdversarialRegularizer(widths=(4, 4, 8), hidden=8).double()
    loss = WassersteinCriticLoss(descent_steps=2, generator=torch.Generator().manual_seed(1))
    found = loss.artefacts(clean, artefact, critic)
    torch.testing.assert_close(found[3:], artefact[3:])
    with torch.no_grad():
        assert (critic.fn(found[:3]) < critic.fn(artefact[:3])).all()
    moved = (found[:3] - artefact[:3]).flatten(1).norm(dim=1)
    assert (moved > 0).all() and (moved <= (artefact[:3] - clean[:3]).flatten(1).norm(dim=1) + 1e-9).all()
    both = WassersteinCriticLoss(noise_level=0.3, descent_steps=2, generator=torch.Generator().manual_seed(1))
    noisy = WassersteinCriticLoss(noise_level=0.3, generator=torch.Generator().manual_seed(1))
    start = noisy.artefacts(clean, artefact)
    found = both.artefacts(clean, artefact, critic)
    assert ((found[:3] - start[:3]).flatten(1).norm(dim=1) <= (start[:3] - clean[:3]).flatten(1).norm(dim=1)
            + 1e-9).all()
    with pytest.raises(ValueError, match="critic"):
        loss.artefacts(clean, artefact)
    for bad in (-1, 0.5, True):
        with pytest.raises(ValueError, match="descent_steps"):
            WassersteinCriticLoss(descent_steps=bad)


def _critic() -> AdversarialRegularizer:
    torch.manual_seed(0)
    return AdversarialRegularizer(widths=(2, 2), hidden=2).double()


def test_critic_loss_refuses_an_empty_batch():
    """The gradient penalty pairs samples: an empty batch raised an IndexError from inside."""
    clean = torch.rand(0, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must hold at least one sample"):
        WassersteinCriticLoss(regularizer=_critic())(x=clean, x_net=clean)


def test_critic_loss_refuses_bad_batches():
    loss = WassersteinCriticLoss(regularizer=_critic())
    clean, artefact = torch.rand(2, 2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match="x has dtype torch.float32 but AdversarialRegularizer computes in"):
        loss(x=clean.float(), x_net=artefact.float())
    with pytest.raises(TypeError, match="x_net has dtype torch.float32"):
        loss(x=clean, x_net=artefact.float())
    with pytest.raises(TypeError, match="x_net must be a real floating tensor"):
        loss(x=clean, x_net=artefact.long())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        loss(x=clean.tolist(), x_net=artefact)
    with pytest.raises(ValueError, match="x and x_net must have the same shape"):
        loss(x=clean, x_net=artefact[:1])
    artefact[0, 0, 0, 0] = float("nan")
    assert not torch.isfinite(loss(x=clean, x_net=artefact)).all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"one_sided": "no"}, TypeError, "one_sided must be True or False"),
    ({"regularizer": "critic"}, TypeError, "regularizer must be a torch.nn.Module with the method"),
    ({"regularizer": torch.nn.Identity()}, TypeError, "regularizer must be a torch.nn.Module with the method"),
    ({"generator": 0}, TypeError, "generator must be None or a torch.Generator"),
    ({"mu": float("nan")}, ValueError, "mu must be a finite number"),
    ({"descent_steps": 1.0}, ValueError, "descent_steps must be an integer"),
])
def test_critic_loss_constructor_names_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        WassersteinCriticLoss(**kwargs)

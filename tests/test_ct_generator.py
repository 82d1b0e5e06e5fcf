"""RandomViewsGenerator: random view subsets, and training with them inside deepinv's Trainer."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.physics import AstraCT, RandomViewsGenerator

pytest.importorskip("astra")


def test_draws_sorted_subsets_reproducibly():
    generator = RandomViewsGenerator(torch.arange(40.0) * 4.5, n_views=10)
    a = generator.step(batch_size=3, seed=1)["angles"]
    b = generator.step(batch_size=3, seed=1)["angles"]
    c = generator.step(batch_size=3)["angles"]
    assert a.shape == (3, 10) and torch.equal(a, b) and not torch.equal(a, c)
    assert bool((a[:, 1:] > a[:, :-1]).all()) and set(a.flatten().tolist()) <= set(generator.full_angles.tolist())


@pytest.mark.parametrize("n_views", [0, 41, 2.5])
def test_bad_n_views(n_views):
    with pytest.raises(ValueError, match="n_views"):
        RandomViewsGenerator(40, n_views=n_views)


class _FBPNet(dinv.models.Reconstructor):
    """FBP followed by a learned 3x3 convolution."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, y, physics, **kwargs):
        return self.conv(physics.A_dagger(y, fbp=True))


def test_trainer_epoch_with_random_views(tmp_path):
    physics = AstraCT(32, angles=60, backend="sparse", cache_dir=tmp_path)
    generator = RandomViewsGenerator(physics, n_views=15, rng=torch.Generator().manual_seed(0))
    seen = []
    original = physics.update_parameters

    def spy(**kwargs):
        if kwargs.get("angles") is not None:
            seen.append(kwargs["angles"].clone())
        original(**kwargs)

    physics.update_parameters = spy
    model = _FBPNet()
    before = model.conv.weight.detach().clone()
    loader = DataLoader(RandomEllipsesDataset(length=6, size=32), batch_size=2)
    trainer = cpu_trainer(model, physics, torch.optim.Adam(model.parameters(), lr=1e-2), loader,
                          physics_generator=generator, online_measurements=True, epochs=1, losses=dinv.loss.SupLoss())
    trainer.train()
    assert not torch.equal(before, model.conv.weight)
    assert len(seen) >= 3 and all(s.shape == (2, 15) for s in seen)  # one set of views per sample
    assert len({tuple(s.flatten().tolist()) for s in seen}) > 1  # a new subset per batch
    assert physics.angles.shape[-1] == 15 and len(list(tmp_path.glob("*.npz"))) == 1  # one matrix, the full set

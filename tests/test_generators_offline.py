"""Batched generator parameters: deepinv's generate_dataset -> HDF5Dataset -> offline Trainer round trip.

deepinv's generators return one parameter per sample (a leading batch dimension), which generate_dataset stores
beside each measurement and HDF5Dataset(load_physics_generator_params=True) returns per item; the Trainer then
updates the physics with the collated batch of parameters before the model sees the measurements.
"""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.physics import AstraCT, RadialTrajectoryGenerator, RandomViewsGenerator, SigpyMultiCoilMRI

pytest.importorskip("h5py")


class _AdjointNet(dinv.models.Reconstructor):
    """A^T y followed by a learned 1x1 convolution: the model depends on the (per-sample) physics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, y, physics, **kwargs):
        return self.conv(physics.A_adjoint(y))


class _MRIImages(torch.utils.data.Dataset):
    """Ellipse phantoms as (real, imaginary) images."""

    def __init__(self, size: int) -> None:
        self.base = RandomEllipsesDataset(length=5, size=size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        x = self.base[i]["x"]
        return {"x": torch.cat([x, 0.5 * x])}


def _round_trip(tmp_path, physics, generator, dataset, channels, key):
    """generate_dataset with the generator, reload with the parameters, train one epoch offline; returns the
    stored parameters, the reloaded dataset and the physics calls the Trainer made."""
    path = dinv.datasets.generate_dataset(train_dataset=dataset, physics=physics, save_dir=str(tmp_path),
                                          physics_generator=generator, batch_size=2, verbose=False)
    data = dinv.datasets.HDF5Dataset(path, split="train", load_physics_generator_params=True, use_dict_output=True)
    assert len(data) == len(dataset)
    seen = []
    original = physics.update_parameters

    def spy(**kwargs):
        if kwargs.get(key) is not None:
            seen.append(kwargs[key].clone())
        original(**kwargs)

    physics.update_parameters = spy
    model = _AdjointNet(channels)
    before = model.conv.weight.detach().clone()
    trainer = cpu_trainer(model, physics, torch.optim.Adam(model.parameters(), lr=1e-2),
                          DataLoader(data, batch_size=2), epochs=1, losses=dinv.loss.SupLoss(),
                          online_measurements=False, save_path=str(tmp_path / "ckpt"))
    trainer.train()
    assert not torch.equal(before, model.conv.weight)
    return data, seen


def test_random_views_generator_returns_one_set_of_views_per_sample():
    generator = RandomViewsGenerator(24, n_views=6, rng=torch.Generator().manual_seed(0))
    angles = generator.step(batch_size=4, seed=3)["angles"]
    assert angles.shape == (4, 6) and len({tuple(a.tolist()) for a in angles}) == 4  # independent draws
    assert torch.equal(generator.step(batch_size=4, seed=3)["angles"], angles)
    assert bool((angles[:, 1:] > angles[:, :-1]).all())
    with pytest.raises(ValueError, match="batch_size"):
        generator.step(batch_size=0)


def test_ct_views_offline(tmp_path):
    physics = AstraCT(16, angles=24, backend="sparse", cache_dir=None)
    generator = RandomViewsGenerator(physics, n_views=6, rng=torch.Generator().manual_seed(0))
    dataset = RandomEllipsesDataset(length=5, size=16)
    data, seen = _round_trip(tmp_path, physics, generator, dataset, channels=1, key="angles")
    item = data[3]
    assert item["params"]["angles"].shape == (6,)  # one set of views per sample
    # the stored sinogram is the projection of the stored image on the stored views
    single = AstraCT(16, angles=item["params"]["angles"].double(), n_detectors=physics.n_detectors,
                     backend="sparse", cache_dir=None)
    torch.testing.assert_close(item["y"][None], single.A(item["x"][None]), rtol=1e-4, atol=1e-4)
    assert [tuple(s.shape) for s in seen] == [(2, 6), (2, 6), (1, 6)]  # the Trainer's batches of views
    assert len({tuple(s[0].tolist()) for s in seen}) == 3


def test_mri_trajectories_offline(tmp_path):
    generator = RadialTrajectoryGenerator((8, 8), n_spokes=4, n_readout=8, dcf=True,
                                          rng=torch.Generator().manual_seed(0))
    maps = SigpyMultiCoilMRI.birdcage_maps(2, (8, 8))
    physics = SigpyMultiCoilMRI(maps, trajectory=generator.base)
    data, seen = _round_trip(tmp_path, physics, generator, _MRIImages(8), channels=2, key="trajectory")
    item = data[1]
    assert item["params"]["trajectory"].shape == (32, 2) and item["params"]["dcf"].shape == (32,)
    single = SigpyMultiCoilMRI(maps, trajectory=item["params"]["trajectory"], dcf=item["params"]["dcf"])
    torch.testing.assert_close(item["y"][None], single.A(item["x"][None]), rtol=1e-4, atol=1e-4)
    assert [tuple(s.shape) for s in seen] == [(2, 32, 2), (2, 32, 2), (1, 32, 2)]

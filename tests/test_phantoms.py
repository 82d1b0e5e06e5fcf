"""Random ellipse and Shepp-Logan datasets: reproducibility, range, and a real deepinv.Trainer epoch."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader
from trainer_helpers import cpu_trainer

from deepinv_ext.datasets import RandomEllipsesDataset, SheppLoganPhantomDataset


def test_items_are_reproducible_and_in_range():
    a, b = RandomEllipsesDataset(length=6, size=32, seed=3), RandomEllipsesDataset(length=6, size=32, seed=3)
    for i in (5, 0, 2):  # any order of access
        x = a[i]["x"]
        assert x.shape == (1, 32, 32) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
        assert torch.equal(x, b[i]["x"])
    assert not torch.equal(a[0]["x"], a[1]["x"])
    assert not torch.equal(a[0]["x"], RandomEllipsesDataset(length=6, size=32, seed=4)[0]["x"])
    assert torch.equal(a[-1]["x"], a[5]["x"])
    with pytest.raises(IndexError):
        a[6]


def test_phantoms_are_not_trivial():
    data = RandomEllipsesDataset(length=8, size=64, seed=0)
    images = torch.stack([data[i]["x"] for i in range(len(data))])
    assert (images.flatten(1).std(1) > 0.01).all(), "some phantoms are (almost) constant"


def test_same_items_across_dataloader_workers():
    data = RandomEllipsesDataset(length=4, size=16, seed=1)
    loaded = torch.cat([batch["x"] for batch in DataLoader(data, batch_size=1, num_workers=2)])
    assert torch.equal(loaded, torch.stack([data[i]["x"] for i in range(4)]))


def test_texture_puts_linear_ramps_on_the_same_ellipses():
    """Where the piecewise-constant phantom is flat (one set of ellipses over a 3x3 neighbourhood), the textured one
    is affine: its second differences vanish there while its first differences do not."""
    kwargs = dict(length=16, size=64, seed=0, dtype=torch.float64)
    plain = torch.stack([item["x"][0] for item in RandomEllipsesDataset(**kwargs)])
    textured = torch.stack([item["x"][0] for item in RandomEllipsesDataset(texture=0.5, **kwargs)])
    windows = plain.unfold(1, 3, 1).unfold(2, 3, 1)  # (B, 62, 62, 3, 3)
    flat = (windows.amax((-1, -2)) == windows.amin((-1, -2))) & (windows[..., 1, 1] > 0) & (windows[..., 1, 1] < 1)
    inner = textured.unfold(1, 3, 1).unfold(2, 3, 1)
    flat &= (inner.amin((-1, -2)) > 0) & (inner.amax((-1, -2)) < 1)  # no clipping in the window
    assert flat.sum() > 1000, "too few flat interior pixels to test"
    second_x = inner[..., 0, 1] - 2 * inner[..., 1, 1] + inner[..., 2, 1]
    second_y = inner[..., 1, 0] - 2 * inner[..., 1, 1] + inner[..., 1, 2]
    assert second_x[flat].abs().max() < 1e-12 and second_y[flat].abs().max() < 1e-12
    first = (inner[..., 2, 1] - inner[..., 0, 1]).abs() + (inner[..., 1, 2] - inner[..., 1, 0]).abs()
    assert (first[flat] > 1e-6).float().mean() > 0.9, "the textured phantom is flat where the plain one is"
    assert not torch.equal(plain, textured)


@pytest.mark.parametrize("kwargs", [{"length": 0}, {"size": 1}, {"seed": -1}, {"texture": -0.1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RandomEllipsesDataset(**kwargs)


def test_float64_and_transform():
    data = RandomEllipsesDataset(length=2, size=8, dtype=torch.float64, transform=lambda x: 2 * x)
    assert data[0]["x"].dtype == torch.float64
    assert torch.allclose(data[0]["x"], 2 * RandomEllipsesDataset(length=2, size=8, dtype=torch.float64)[0]["x"])


def test_shepp_logan_matches_deepinv():
    ours = SheppLoganPhantomDataset(size=32, length=2)
    theirs = dinv.utils.SheppLoganDataset(size=32, use_dict_output=True)[0]["x"]
    assert len(ours) == 2 and torch.equal(ours[1]["x"], theirs)


def test_trainer_epoch_with_deepinv_model_and_metrics(tmp_path):
    torch.manual_seed(0)
    train = DataLoader(RandomEllipsesDataset(length=16, size=32, seed=0), batch_size=4, shuffle=True)
    test = DataLoader(RandomEllipsesDataset(length=4, size=32, seed=1), batch_size=4)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    model = dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None), mode="direct")
    metrics = [dinv.metric.PSNR(), dinv.metric.SSIM()]

    def evaluate():
        return dinv.test(model, test, physics, metrics=metrics, online_measurements=True, device="cpu",
                         verbose=False, show_progress_bar=False, non_blocking_transfers=False)

    initial = evaluate()
    trainer = cpu_trainer(model, physics, torch.optim.Adam(model.parameters(), lr=3e-3), train, epochs=2,
                          online_measurements=True, metrics=metrics, save_path=tmp_path, compute_train_metrics=True)
    trainer.train()
    assert list(tmp_path.glob("*/ckp_1.pth.tar")), "the Trainer saved no checkpoint"
    results = evaluate()
    assert results["PSNR"] > initial["PSNR"] + 0.5, (initial, results)
    assert 0 < results["SSIM"] <= 1


@pytest.mark.parametrize("cls, kwargs, error, match", [
    (RandomEllipsesDataset, {"seed": 1.5}, ValueError, "seed must be an integer >= 0"),
    (RandomEllipsesDataset, {"seed": True}, ValueError, "seed must be an integer >= 0"),
    (RandomEllipsesDataset, {"length": 8.0}, ValueError, "length must be an integer >= 1"),
    (RandomEllipsesDataset, {"size": 16.0}, ValueError, "size must be an integer >= 2"),
    (RandomEllipsesDataset, {"size": "16"}, ValueError, "size must be an integer >= 2"),
    (RandomEllipsesDataset, {"dtype": torch.int64}, TypeError, "dtype must be a real floating torch.dtype"),
    (RandomEllipsesDataset, {"dtype": torch.complex64}, TypeError, "dtype must be a real floating torch.dtype"),
    (RandomEllipsesDataset, {"dtype": "float32"}, TypeError, "dtype must be a real floating torch.dtype"),
    (RandomEllipsesDataset, {"mean_ellipses": float("nan")}, ValueError, "mean_ellipses must be a finite number"),
    (RandomEllipsesDataset, {"mean_ellipses": -1.0}, ValueError, "mean_ellipses must be a finite number >= 0"),
    (RandomEllipsesDataset, {"texture": float("inf")}, ValueError, "texture must be a finite number"),
    (RandomEllipsesDataset, {"interior": "yes"}, TypeError, "interior must be True or False"),
    (RandomEllipsesDataset, {"transform": 2}, TypeError, "transform must be None or callable"),
    (SheppLoganPhantomDataset, {"size": 0}, ValueError, "size must be an integer >= 2"),
    (SheppLoganPhantomDataset, {"size": 8.0}, ValueError, "size must be an integer >= 2"),
    (SheppLoganPhantomDataset, {"length": 1.5}, ValueError, "length must be an integer >= 1"),
    (SheppLoganPhantomDataset, {"dtype": torch.int64}, TypeError, "dtype must be a real floating torch.dtype"),
])
def test_bad_arguments_are_named(cls, kwargs, error, match):
    """seed=1.5 was truncated to 1, dtype=torch.int64 gave all-zero images, size 0 gave an empty phantom."""
    with pytest.raises(error, match=match):
        cls(**{"size": 8, **kwargs})


def test_index_must_be_an_integer():
    for data in (RandomEllipsesDataset(length=2, size=8), SheppLoganPhantomDataset(size=8, length=2)):
        for index in (1.0, "0", True):
            with pytest.raises(TypeError, match="index must be an integer"):
                data[index]
        with pytest.raises(IndexError):
            data[2]
        assert torch.equal(data[-1]["x"], data[1]["x"])


def test_random_ellipses_names_bad_arguments():
    import numpy as np

    from deepinv_ext.datasets import random_ellipses

    rng = np.random.default_rng(0)
    for kwargs, error, match in (({"size": 8.0}, ValueError, "size"), ({"size": 0}, ValueError, "size"),
                                 ({"rng": 0}, TypeError, "rng must be a numpy.random.Generator"),
                                 ({"mean_ellipses": float("nan")}, ValueError, "mean_ellipses"),
                                 ({"texture": float("nan")}, ValueError, "texture")):
        with pytest.raises(error, match=match):
            random_ellipses(**{"size": 8, "rng": rng, **kwargs})

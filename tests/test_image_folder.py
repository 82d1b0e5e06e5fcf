"""ImageFolderDataset: a folder of test images, in colour or converted to gray (BT.601 luma or channel mean)."""

import gc
from pathlib import Path

import deepinv as dinv
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from deepinv_ext.algorithms import TDVNetwork
from deepinv_ext.datasets.folder import ImageFolderDataset, bt601_luma, matlab_luma
from deepinv_ext.testing import check_dataset, check_plugin

CBSD68 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "natural" / "CBSD68"

# (R, G, B) -> BT.601 luma by hand:
#   (100, 150, 200): 0.299*100 + 0.587*150 + 0.114*200 = 29.9 + 88.05 + 22.8 = 140.75 -> 141
#     (Rec. 709, skimage's rgb2gray: 142.98; channel mean: 150; truncation: 140)
#   (1, 13, 5): 0.299 + 7.631 + 0.57 = 8.5, a tie -> 9 (rounded up; round-half-even and truncation give 8; any
#     weight 0.001 smaller gives 8)
#   (1, 2, 9): 0.299 + 1.174 + 1.026 = 2.499 -> 2 (any weight 0.001 larger gives 3)
PIXELS = np.array([[[100, 150, 200], [1, 13, 5], [1, 2, 9]]], dtype=np.uint8)


def write(folder: Path, name: str, pixels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


def test_bt601_matches_hand_computed_pixels(tmp_path):
    write(tmp_path, "a.png", PIXELS)
    x = ImageFolderDataset(tmp_path, gray="bt601", dtype=torch.float64)[0]["x"]
    assert x.shape == (1, 1, 3)
    assert x.flatten().tolist() == [141 / 255, 9 / 255, 2 / 255]


def test_mean_and_colour_match_hand_computed_pixels(tmp_path):
    write(tmp_path, "a.png", PIXELS)
    mean = ImageFolderDataset(tmp_path, gray="mean", dtype=torch.float64)[0]["x"]
    assert torch.allclose(mean.flatten(), torch.tensor([150, 19 / 3, 4], dtype=torch.float64) / 255)
    colour = ImageFolderDataset(tmp_path, dtype=torch.float64)[0]["x"]
    assert colour.shape == (3, 1, 3) and colour[:, 0, 0].tolist() == [100 / 255, 150 / 255, 200 / 255]


def test_matlab_luma_matches_hand_computed_pixels(tmp_path):
    """MATLAB's unrounded weights: (0, 112, 182) -> 86.5006 -> 87 (BT.601: 86.492 -> 86); (51, 0, 11) -> 16.49997 -> 16
    (BT.601: 16.503 -> 17); a weight off by 1e-5 flips one of the two."""
    pixels = np.array([[[0, 112, 182], [51, 0, 11], [100, 150, 200]]], dtype=np.uint8)
    write(tmp_path, "a.png", pixels)
    x = ImageFolderDataset(tmp_path, gray="matlab", dtype=torch.float64)[0]["x"]
    assert x.flatten().tolist() == [87 / 255, 16 / 255, 141 / 255]
    assert bt601_luma(torch.from_numpy(pixels).permute(2, 0, 1)).flatten().tolist() == [86, 17, 141]


def test_bt601_luma_of_gray_is_identity_and_batched():
    v = torch.arange(256).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(bt601_luma(v), v[:, :1]) and torch.equal(matlab_luma(v), v[:, :1])


@pytest.mark.parametrize("value, error, match", [
    (torch.rand(3, 2, 2), TypeError, "integer tensor"),
    (torch.zeros(2, 2, 2, dtype=torch.uint8), ValueError, r"\(\.\.\., 3, H, W\)"),
    (torch.full((3, 1, 1), 256), ValueError, "0..255"),
])
def test_bt601_luma_refuses_bad_input(value, error, match):
    with pytest.raises(error, match=match):
        bt601_luma(value)


def test_files_in_natural_order_across_extensions_and_subfolders(tmp_path):
    for k, name in enumerate(("10.png", "2.jpg", "1.png", "sub/3.bmp")):
        write(tmp_path / Path(name).parent, Path(name).name, np.full((8, 8, 3), 10 * k, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    data = ImageFolderDataset(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in data.x_paths] == ["1.png", "2.jpg", "10.png", "sub/3.bmp"]
    assert [p.name for p in ImageFolderDataset(tmp_path, pattern="*.png").x_paths] == ["1.png", "10.png"]
    assert data[-1]["x"].shape == (3, 8, 8)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match="holds no image file with an extension in .jpg, .jpeg, .png"):
        ImageFolderDataset(tmp_path)
    write(tmp_path, "a.png", PIXELS)
    with pytest.raises(FileNotFoundError, match=r"no image file matching '\*\.jpg'"):
        ImageFolderDataset(tmp_path, pattern="*.jpg")
    with pytest.raises(ValueError, match=r"gray must be None \(colour\) or one of \('bt601', 'matlab', 'mean'\), got 'luma'"):
        ImageFolderDataset(tmp_path, gray="luma")
    with pytest.raises(TypeError, match="dtype"):
        ImageFolderDataset(tmp_path, dtype=torch.uint8)
    with pytest.raises(TypeError, match="index must be an integer"):
        ImageFolderDataset(tmp_path)[0.0]
    with pytest.raises(IndexError):
        ImageFolderDataset(tmp_path)[1]


def test_works_with_deepinv_test(tmp_path):
    g = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write(tmp_path, name, g.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    example = TDVNetwork.contract_example(torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    metrics = dinv.test(example["model"].eval(), DataLoader(ImageFolderDataset(tmp_path, gray="bt601"), batch_size=1),
                        example["physics"], metrics=dinv.metric.PSNR(), online_measurements=True, device="cpu",
                        verbose=False, show_progress_bar=False, compare_no_learning=True,
                        non_blocking_transfers=False)
    assert np.isfinite(metrics["PSNR"]) and 15 < metrics["PSNR no learning"] < 25  # sigma 0.1: about 20 dB


def test_contract_example_passes_check_dataset_and_cleans_up():
    before = torch.random.get_rng_state()
    example = ImageFolderDataset.contract_example(torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), before)
    data = example["dataset"]
    check_dataset(data)
    check_plugin(ImageFolderDataset, kind="dataset")  # as the registry will run it (entry point dataset.image_folder)
    again = ImageFolderDataset.contract_example(torch.Generator().manual_seed(3))["dataset"]
    assert torch.equal(data[1]["x"], again[1]["x"]) and data[0]["x"].shape == (1, 12, 10)
    folder = data.root
    del data, example
    gc.collect()  # the dataset holds its own bound method (its transform): a cycle
    assert not folder.exists()


@pytest.mark.skipif(not CBSD68.is_dir(), reason="../shared/data/natural/CBSD68 absent")
def test_cbsd68_gray_agrees_with_pil_luma():
    """PIL's ``convert("L")`` is BT.601 in 16-bit fixed point: it may differ by one gray level on rare pixels."""
    data = ImageFolderDataset(CBSD68, gray="bt601", dtype=torch.float64)
    assert len(data) == 68 and data.x_paths[0].name == "0000.png"
    ours = data[0]["x"][0] * 255
    pil = torch.from_numpy(np.asarray(Image.open(data.x_paths[0]).convert("L"), dtype=np.float64))
    assert ours.shape == pil.shape == (321, 481)
    assert (ours - pil).abs().max() <= 1 and ((ours - pil) != 0).double().mean() < 1e-3

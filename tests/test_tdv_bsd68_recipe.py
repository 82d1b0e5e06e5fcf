"""recipes/tdv_bsd68.py: Table 1's TDV column (smoke run on tests/data), its noise rule, PSNR variants and resume."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from recipe_helpers import load_recipe

from deepinv_ext.checkpoint import OptionsChangedError
from deepinv_ext.datasets.folder import ImageFolderDataset

DATA = Path(__file__).resolve().parent / "data"  # camera_96.png: the smoke run never skips


def smoke(tmp_path, *extra):
    return load_recipe("tdv_bsd68").main(["--smoke", "--data", str(DATA), "--output", str(tmp_path), *extra])


def test_smoke_run_denoises_and_writes_its_outputs(tmp_path):
    results = smoke(tmp_path)
    rows = results["table"]
    assert [r["sigma"] for r in rows] == [25.0, 15.0, 50.0] and results["images"] == 1
    assert [r["paper"] for r in rows] == [29.37, 31.76, 26.40]
    for r in rows:
        assert r["raw"] > r["noisy"] + 5, r  # a real denoiser, at every level
        assert r["raw"] <= r["clip"] and abs(r["8bit"] - r["clip"]) < 0.2, r
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "tdv_bsd68.png").exists() and (tmp_path / "run.json").exists()
    assert len((tmp_path / "per_image.jsonl").read_text().splitlines()) == 3


def test_noise_follows_the_stated_seed_rule(tmp_path):
    """The record's noisy PSNR is that of x + sigma/255 n with n from the seed (seed*1e5 + 100 sigma)*1e5 + index."""
    smoke(tmp_path, "--sigmas", "15", "--seed", "7", "--crop", "32")
    record = json.loads((tmp_path / "per_image.jsonl").read_text())
    x = ImageFolderDataset(DATA, gray="bt601")[0]["x"][None]
    x = x[..., 32:64, 32:64]  # the centre 32x32 of camera_96
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed((7 * 100000 + 1500) * 100000 + 0))
    mse = (15 / 255 * n).double().pow(2).mean()
    assert record["noisy"] == pytest.approx(-10 * math.log10(mse), abs=1e-4)


def test_psnr_variants_by_hand():
    run = load_recipe("tdv_bsd68_run")
    x = torch.zeros(1, 1, 2, 2)
    x_hat = torch.tensor([-0.1, 0.112, 0.31, 1.2]).reshape(1, 1, 2, 2)
    expected = {"raw": (0.1**2 + 0.112**2 + 0.31**2 + 1.2**2) / 4, "clip": (0 + 0.112**2 + 0.31**2 + 1) / 4,
                "8bit": (0 + (29 / 255) ** 2 + (79 / 255) ** 2 + 1) / 4}  # 0.112 * 255 = 28.56, 0.31 * 255 = 79.05
    got = run.psnrs(x_hat, x)
    for k, mse in expected.items():
        assert got[k] == pytest.approx(-10 * math.log10(mse), abs=1e-3), k


def test_rerun_resumes_and_refuses_other_options(tmp_path, monkeypatch):
    def smoke32(*extra):
        return smoke(tmp_path, "--crop", "32", *extra)

    smoke32("--sigmas", "25")
    records = tmp_path / "per_image.jsonl"
    first = json.loads(records.read_text())
    run = load_recipe("tdv_bsd68_run")
    calls = []
    denoise = run.denoise
    monkeypatch.setattr(run, "denoise", lambda *a: calls.append(a) or denoise(*a))
    again = smoke32("--sigmas", "25")
    assert len(calls) == 1  # the figure's image only: the record was reused
    assert again["table"][0]["raw"] == first["raw"] and len(records.read_text().splitlines()) == 1
    smoke32("--sigmas", "25", "50")  # another level: only its records are added
    assert [json.loads(line)["sigma"] for line in records.read_text().splitlines()] == [25.0, 50.0]
    with pytest.raises(OptionsChangedError, match="seed"):
        smoke32("--sigmas", "25", "--seed", "1")
    with pytest.raises(OptionsChangedError, match="gray"):
        smoke32("--sigmas", "25", "--gray", "mean")
    with pytest.raises(OptionsChangedError, match="crop"):
        smoke(tmp_path, "--sigmas", "25")


@pytest.mark.parametrize("argv, match", [
    (["--color", "--gray", "mean"], "does not go with --color"),
    (["--data", "/no/such/folder"], "no such folder of images"),
    (["--checkpoint", "/no/such.pth"], "no such file"),
    (["--sigmas", "0"], r"must lie in \(0, 1000\)"),
    (["--limit", "0"], "--limit must be a positive integer"),
])
def test_option_errors_are_clear(argv, match, capsys):
    with pytest.raises(SystemExit):
        load_recipe("tdv_bsd68").parse_args(["--data", str(DATA), *argv] if "--data" not in argv else argv)
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_colour_weights_on_gray_images_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="takes 3-channel images"):
        smoke(tmp_path, "--checkpoint", str(DATA / "tdv" / "tdv3-3-25-f32-color.pth"))

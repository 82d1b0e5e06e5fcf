"""recipes/ct_fbp.py runs end to end on a tiny problem and writes its table, figure and provenance record; with
--view-blocks (the operator split into view blocks, in one process or under torchrun) it gives the same results."""

from __future__ import annotations

import json

import pytest
from recipe_helpers import load_recipe, needs_gloo, torchrun

from deepinv_ext.testing.comparison import relative_error

pytest.importorskip("astra")


def test_ct_fbp_recipe_tiny(tmp_path):
    recipe = load_recipe("ct_fbp")
    out = recipe.main(["--output", str(tmp_path), "--size", "32", "--views", "48", "--factors", "1", "4",
                       "--ellipses", "1", "--ls-iters", "5"])
    assert (tmp_path / "ct_fbp.png").exists() and (tmp_path / "run.json").exists()
    psnr = {(r["image"], r["factor"], r["method"]): r["psnr"] for r in out["results"]}
    assert len(psnr) == 8
    # fewer views, worse FBP
    assert psnr[("Shepp-Logan", 1, "FBP")] > psnr[("Shepp-Logan", 4, "FBP")]


def test_ct_fbp_recipe_view_blocks_give_the_same_reconstructions(tmp_path):
    recipe = load_recipe("ct_fbp")
    single = recipe.main(["--smoke", "--output", str(tmp_path / "single")])
    split = recipe.main(["--smoke", "--view-blocks", "2", "--output", str(tmp_path / "split")])
    assert split["reconstructions"].keys() == single["reconstructions"].keys()
    for (factor, method), rec in single["reconstructions"].items():
        tol = 1e-5 if method == "FBP" else 5e-4  # least squares: 10 float32 CG steps amplify the rounding (7e-5)
        assert relative_error(split["reconstructions"][factor, method], rec) < tol, (factor, method)
    assert json.loads((tmp_path / "split" / "run.json").read_text())["config"]["view_blocks"] == 2
    with pytest.raises(SystemExit):  # a block per view at most, at the sparsest sampling (96 / 8 = 12 views)
        recipe.parse_args(["--smoke", "--view-blocks", "13"])


@needs_gloo
def test_ct_fbp_recipe_view_blocks_under_torchrun(tmp_path):
    options = ["--size", "32", "--views", "48", "--factors", "1", "4", "--ellipses", "1", "--ls-iters", "5"]
    torchrun("ct_fbp", *options, "--view-blocks", "3", "--output", str(tmp_path / "split"))
    single = load_recipe("ct_fbp").main([*options, "--output", str(tmp_path / "single")])
    record = json.loads((tmp_path / "split" / "run.json").read_text())
    assert "previous" not in record  # process 0 alone wrote it
    for got, expected in zip(record["config"]["results"], single["results"], strict=True):
        assert got["image"] == expected["image"] and abs(got["psnr"] - expected["psnr"]) < 1e-3

"""recipes/ct_fbp.py runs end to end on a tiny problem and writes its table, figure and provenance record."""

from __future__ import annotations

import pytest
from recipe_helpers import load_recipe

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

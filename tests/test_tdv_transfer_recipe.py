"""recipes/tdv_transfer.py runs end to end on its smoke sizes (one CT and one MRI task), writes its outputs and leaves
autograd on for its caller."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_helpers import load_recipe

pytest.importorskip("astra")


def test_tdv_transfer_smoke(tmp_path, capsys):
    recipe = load_recipe("tdv_transfer")
    rows = recipe.main(["--smoke", "--ct-factors", "4", "--mri-factors", "4", "--output", str(tmp_path)])
    assert {(r["task"], r["method"]) for r in rows} == {("CT 4x", "FBP"), ("CT 4x", "TDV"), ("MRI 4x", "zero-filled"),
                                                        ("MRI 4x", "CG-SENSE"), ("MRI 4x", "TDV")}
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(rows))
    assert (tmp_path / "tdv_transfer.png").exists() and (tmp_path / "run.json").exists()
    assert "smoke run: checks skipped" in capsys.readouterr().out
    assert torch.is_grad_enabled()  # the recipe's inference-only mode ends with it

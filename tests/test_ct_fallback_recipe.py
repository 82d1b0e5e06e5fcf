"""The CT recipes that promise deepinv's ``Tomography`` where ASTRA is missing keep that promise: the choice is made
at construction (``AstraCT`` would import ASTRA only at its first projection, too late for a fallback)."""

import sys

import deepinv as dinv
import pytest
import torch
from recipe_helpers import load_recipe

from deepinv_ext.physics import AstraCT


@pytest.fixture
def without_astra(monkeypatch):
    """``import astra`` raises ImportError, as on a machine without the ``[ct]`` extra."""
    monkeypatch.setitem(sys.modules, "astra", None)


def test_quickstart_falls_back_to_tomography_without_astra(without_astra):
    experiment = load_recipe("quickstart_run")
    physics = experiment.ct_physics(32, 30)
    assert isinstance(physics, dinv.physics.Tomography)
    x = torch.rand(2, 1, 32, 32)
    assert experiment.fbp(physics, physics.A(x)).shape == x.shape


def test_spectral_pnp_falls_back_to_tomography_without_astra(without_astra, capsys):
    spectral = load_recipe("spectral_pnp_ct_train")
    physics, dtype = spectral.make_ct(32, 30)
    assert isinstance(physics, dinv.physics.Tomography) and dtype == torch.float32
    assert "ASTRA is not installed" in capsys.readouterr().out
    x = torch.rand(2, 1, 32, 32)
    assert spectral.fbp(physics, physics.A(x)).shape == x.shape


def test_both_use_astra_where_it_imports():
    pytest.importorskip("astra")
    assert isinstance(load_recipe("quickstart_run").ct_physics(32, 30), AstraCT)
    physics, dtype = load_recipe("spectral_pnp_ct_train").make_ct(32, 30)
    assert isinstance(physics, AstraCT) and dtype == torch.float64


def test_quickstart_smoke_runs_without_astra(without_astra, tmp_path):
    table = load_recipe("quickstart").main(["--smoke", "--output", str(tmp_path)])
    assert all(row["PSNR"] > 10 for row in table.values()), table

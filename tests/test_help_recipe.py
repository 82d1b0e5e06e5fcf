"""The recipes that are split by job answer ``--help`` (and option errors) before torch, deepinv or ASTRA load."""

from __future__ import annotations

import subprocess
import sys

import pytest
from recipe_helpers import RECIPES

SPLIT = ["ct_learned_regularizers", "retune", "spectral_pnp_ct", "gs_pnp_convergence"]
PROBE = ("import runpy, sys; sys.argv = [{path!r}, '--help']\n"
         "try:\n    runpy.run_path({path!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('HEAVY', sorted(m for m in ('torch', 'deepinv', 'astra') if m in sys.modules))")


@pytest.mark.parametrize("name", SPLIT)
def test_help_before_heavy_imports(name):
    path = str(RECIPES / f"{name}.py")
    out = subprocess.run([sys.executable, "-c", PROBE.format(path=path)], capture_output=True, text=True,
                         cwd=RECIPES, check=True).stdout
    assert "usage:" in out and "--smoke" in out
    assert out.strip().endswith("HEAVY []"), out[-200:]

"""Load a recipe script of ``recipes/`` as a module (recipes are scripts, not part of the package), and run one
under ``torchrun``.

A recipe split by job imports its sibling scripts by name (``python recipes/x.py`` puts ``recipes/`` on the path),
so ``recipes/`` goes on ``sys.path`` here too, and each recipe is registered under its own name: a sibling that
imports it gets the same module.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` (and, on demand, the recipes it imports) and return the module."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    return importlib.import_module(name)


def torchrun(*command: str, processes: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``command`` (a script and its arguments, a recipe's name standing for ``recipes/<name>.py``, or
    ``-m module ...``) under ``torchrun --standalone`` with ``processes`` CPU processes (gloo, one torch thread each);
    check that it succeeded (a hang ends in the timeout) and return it (``stdout``, ``stderr``)."""
    first, *rest = command
    if first != "-m" and not first.endswith(".py"):
        first = str(RECIPES / f"{first}.py")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", first, *rest], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def max_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts with the same keys (1 process against 2)."""
    return max(float((a[k] - b[k]).abs().max()) for k in a)

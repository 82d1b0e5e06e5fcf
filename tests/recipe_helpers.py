"""Load a recipe script of ``recipes/`` as a module (recipes are scripts, not part of the package).

A recipe split by job imports its sibling scripts by name (``python recipes/x.py`` puts ``recipes/`` on the path),
so ``recipes/`` goes on ``sys.path`` here too, and each recipe is registered under its own name: a sibling that
imports it gets the same module.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` (and, on demand, the recipes it imports) and return the module."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    return importlib.import_module(name)

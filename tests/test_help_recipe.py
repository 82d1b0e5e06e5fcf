"""Every recipe answers ``--help`` (and option errors) before torch, deepinv, ASTRA or matplotlib load, and every
option of every recipe has a help text."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from recipe_helpers import RECIPES, load_recipe

ENTRY_POINTS = ["bilevel_regularizers", "ct_fbp", "ct_learned_regularizers", "gs_pnp_convergence", "quickstart", "retune", "spectral_pnp_ct",
                "tdv_bsd68", "tdv_eigenfunctions", "tdv_sensitivity",
                "tdv_denoising", "tdv_transfer"]
HEAVY = ("torch", "deepinv", "astra", "matplotlib")
PROBE = ("import runpy, sys; sys.argv = [{path!r}, '--help']\n"
         "try:\n    runpy.run_path({path!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('HEAVY', sorted(m for m in {heavy!r} if m in sys.modules))")


def test_every_recipe_is_listed():
    """A new recipe (a script with a ``--smoke`` run) joins the lists of this module."""
    scripts = {p.stem for p in RECIPES.glob("*.py") if "--smoke" in p.read_text() and "def parse_args" in p.read_text()}
    assert scripts == set(ENTRY_POINTS)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_before_heavy_imports(name):
    path = str(RECIPES / f"{name}.py")
    out = subprocess.run([sys.executable, "-c", PROBE.format(path=path, heavy=HEAVY)], capture_output=True,
                         text=True, cwd=RECIPES, check=True).stdout
    assert "usage:" in out and "--smoke" in out
    assert out.strip().endswith("HEAVY []"), out[-200:]


class _Parser(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser")
        self.parser = parser


def recipe_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a recipe's ``parse_args`` builds, caught at its first parse."""

    def catch(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    with pytest.raises(_Parser) as caught:
        load_recipe(name).parse_args([])
    return caught.value.parser


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_option_has_help(name, monkeypatch):
    parser = recipe_parser(name, monkeypatch)
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert options, name
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in options if not (a.help or "").strip()]
    assert not missing, f"{name}: options without help: {missing}"

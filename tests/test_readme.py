"""The README stays current: its plugin table names every plugin deepinv-ext registers, and its commands exist."""

from pathlib import Path

from deepinv_ext import plugins

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_plugin_table_is_complete():
    missing = [p.key for p in plugins.available() if p.distribution == "deepinv-ext"
               and f"| {p.kind} | `{p.name}` |" not in README]
    assert not missing, f"README's plugin table lacks {missing}"


def test_quickstart_and_test_commands():
    assert "python recipes/quickstart.py" in README and "python -m pytest -q" in README

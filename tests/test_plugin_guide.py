"""The plugin guide works as written (issue 25): the package files of ``docs/source/user_guide/plugins.rst`` (its
code blocks captioned with a path), written out as they stand, install without a network (``pip install --no-deps
--no-build-isolation --target``), ``deepinv-ext plugins`` lists the plugin, and the guide's own tests
(``deepinv_ext.testing``'s contract check) pass on it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "source" / "user_guide" / "plugins.rst"
#: a captioned code block: ``.. code-block:: LANG`` + ``:caption: PATH`` + a blank line + the indented body
BLOCK = re.compile(r"^\.\. code-block:: \w+\n   :caption: (\S+)\n\n((?:   .*\n|\n)+)", re.M)


def guide_files() -> dict[str, str]:
    """The files of the guide's package, ``{path: text}``, from its captioned code blocks."""
    return {path: textwrap.dedent(body).strip() + "\n" for path, body in BLOCK.findall(GUIDE.read_text())}


def test_the_guide_has_the_package_files():
    files = guide_files()
    assert {Path(p).name for p in files} >= {"pyproject.toml", "__init__.py", "physics.py"}, sorted(files)
    assert any(Path(p).parts[1] == "tests" for p in files), "the guide's package has no tests"
    assert len({Path(p).parts[0] for p in files}) == 1, "the guide's files lie in more than one package folder"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """The guide's package written under a temporary folder and pip-installed (no network) into another."""
    src, site = tmp_path_factory.mktemp("guide_src"), tmp_path_factory.mktemp("guide_site")
    files = guide_files()
    for path, text in files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(text)
    package = src / Path(next(iter(files))).parts[0]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(package)], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return package, site, env


def test_deepinv_ext_plugins_lists_it(installed):
    _, _, env = installed
    script = Path(sys.executable).with_name("deepinv-ext")  # the console script of this environment
    command = [str(script)] if script.exists() else [sys.executable, "-m", "deepinv_ext.cli"]
    out = subprocess.run([*command, "plugins", "--kind", "physics"], env=env, check=True, capture_output=True,
                         text=True).stdout
    assert re.search(r"^physics\s+my_ct\s+my_ct_plugin\.physics:MyCT\s+my-ct-plugin\s*$", out, re.M), out


def test_the_guides_tests_pass(installed, monkeypatch):
    """The guide's own test file (registration, and ``testing.check_plugin``), run in this process with the
    installed package on the path, as ``python -m pytest my-ct-plugin/tests`` runs it (without a second start of
    torch and deepinv)."""
    package, site, _ = installed
    monkeypatch.syspath_prepend(str(site))
    tests = sorted((package / "tests").glob("test_*.py"))
    assert tests, "the guide's package has no test file"
    names = set(sys.modules)
    try:
        for path in tests:
            spec = importlib.util.spec_from_file_location(f"guide_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            functions = [f for name, f in vars(module).items() if name.startswith("test_") and callable(f)]
            assert functions, f"{path.name} defines no test"
            for function in functions:
                function()
    finally:
        for name in set(sys.modules) - names:  # the guide's package is not left imported for the next tests
            if name.split(".")[0] in {"my_ct_plugin", *(f"guide_{p.stem}" for p in tests)}:
                del sys.modules[name]

"""Shared fixtures: tiny third-party plugin packages, pip-installed into a temporary folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.0.1"

[project.entry-points."deepinv_ext.plugins"]
{entries}

[tool.setuptools]
py-modules = ["{module}"]
"""

MODULE = '''
import torch
import deepinv as dinv


class ScaledIdentity(dinv.physics.LinearPhysics):
    """y = scale * x, a physics plugin from a third party."""

    def __init__(self, scale: float = 2.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))

    def A(self, x, **kwargs):
        return self.scale * x

    def A_adjoint(self, y, **kwargs):
        return self.scale * y


class QuadraticPrior(dinv.optim.Prior):
    """R(x) = weight / 2 ||x||^2 per batch element."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def fn(self, x, *args, **kwargs):
        return 0.5 * self.weight * x.flatten(1).pow(2).sum(1)

    def grad(self, x, *args, **kwargs):
        return self.weight * x
'''


def _pip_install(root: Path, dist: str, module: str, entries: dict[str, str], target: Path) -> None:
    src = root / dist
    src.mkdir()
    lines = "\n".join(f'"{k}" = "{module}:{v}"' for k, v in entries.items())
    (src / "pyproject.toml").write_text(textwrap.dedent(PACKAGE.format(dist=dist, module=module, entries=lines)))
    (src / f"{module}.py").write_text(MODULE)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)],
        check=True,
    )


@pytest.fixture(scope="session")
def third_party_site(tmp_path_factory) -> Path:
    """A folder holding two pip-installed third-party plugin distributions.

    ``dix-plugin-a`` registers ``physics.scaled_identity`` and ``prior.quadratic``; ``dix-plugin-b`` registers
    ``prior.quadratic`` too, so the two clash on that name.
    """
    root = tmp_path_factory.mktemp("plugin_src")
    target = tmp_path_factory.mktemp("plugin_site")
    _pip_install(root, "dix-plugin-a", "dix_plugin_a",
                 {"physics.scaled_identity": "ScaledIdentity", "prior.quadratic": "QuadraticPrior"}, target)
    _pip_install(root, "dix-plugin-b", "dix_plugin_b", {"prior.quadratic": "QuadraticPrior"}, target)
    return target


@pytest.fixture
def with_third_party(third_party_site, monkeypatch) -> Path:
    """Put the third-party plugin folder on ``sys.path`` for one test."""
    monkeypatch.syspath_prepend(str(third_party_site))
    return third_party_site


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run every test on one intra-op thread.

    The tests use tiny tensors; on a 2-core machine shared with other processes, OpenMP barriers between two threads
    stall small convolutions and sparse products by 10-50x, and one thread is never slower at these sizes.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

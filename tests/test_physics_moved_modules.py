"""The physics modules moved into deepinv's layout (operators, functional/, generator/): every name of an old module
path still resolves, to the same object, with a DeprecationWarning naming its new home; the package-level names and
the library itself use no old path."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

FUNCTIONAL = "deepinv_ext.physics.functional"
MOVED = {  # old module -> {name of its former __all__: the module it lives in now}
    "deepinv_ext.physics.fbp": dict.fromkeys(
        ("FILTERS", "fourier_filter", "filter_sinogram", "fan_beam_fbp"), f"{FUNCTIONAL}.fbp"),
    "deepinv_ext.physics.sparse_ct": dict.fromkeys(
        ("CacheWrittenWarning", "SystemMatrix", "cache_folder", "clear_cache", "default_cache_dir", "load_or_build"),
        f"{FUNCTIONAL}.system_matrix"),
    "deepinv_ext.physics.ct_generator": {"RandomViewsGenerator": "deepinv_ext.physics.generator.ct"},
    "deepinv_ext.physics.trajectories": {
        **dict.fromkeys(("RadialTrajectoryGenerator", "SpiralTrajectoryGenerator"), "deepinv_ext.physics.generator.mri"),
        **dict.fromkeys(("GOLDEN_ANGLE", "radial_trajectory", "spiral_trajectory"), f"{FUNCTIONAL}.trajectories"),
        **dict.fromkeys(("pipe_menon_dcf", "radial_dcf"), f"{FUNCTIONAL}.density"),
    },
}
CASES = [(old, name, new) for old, names in MOVED.items() for name, new in names.items()]


@pytest.mark.parametrize(("old", "name", "new"), CASES, ids=[f"{o.rsplit('.', 1)[1]}.{n}" for o, n, _ in CASES])
def test_an_old_path_resolves_to_the_new_object_with_a_deprecation_warning(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_an_unknown_name_of_an_old_path_is_still_an_attribute_error():
    module = importlib.import_module("deepinv_ext.physics.trajectories")
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_the_package_and_its_subpackages_import_no_old_path():
    """A fresh interpreter: importing the physics package, its public names and subpackages warns of nothing moved."""
    code = (
        "import warnings\n"
        "warnings.filterwarnings('error', category=DeprecationWarning, module='deepinv_ext')\n"
        "from deepinv_ext.physics import *\n"
        "from deepinv_ext.physics.functional import *\n"
        "from deepinv_ext.physics.generator import *\n"
        "from deepinv_ext.physics import AstraCT, RandomViewsGenerator, RadialTrajectoryGenerator\n"
        "AstraCT.contract_example(); RandomViewsGenerator.contract_example()\n"
        "RadialTrajectoryGenerator.contract_example()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]

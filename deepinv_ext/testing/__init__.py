r"""Contract checks that every deepinv-ext plugin passes, usable by third-party plugin authors in their own tests.

Each ``check_*`` function raises :class:`AssertionError` (with a message saying what failed and by how much) or
returns quietly. A plugin class can declare a small example of itself for these checks with a static or class
method ``contract_example()`` returning the keyword arguments of the check of its kind (for a physics:
``{"physics": ..., "x": ...}``); :func:`check_plugin` then checks it from the registry alone, which is how the
deepinv-ext test suite checks every registered plugin:

.. code-block:: python

    import pytest
    from deepinv_ext import plugins, testing

    @pytest.mark.parametrize("info", plugins.available(), ids=lambda p: p.key)
    def test_contract(info):
        testing.check_plugin(info)

The checks live by kind in :mod:`~deepinv_ext.testing.physics`, :mod:`~deepinv_ext.testing.priors` and
:mod:`~deepinv_ext.testing.models`; :mod:`~deepinv_ext.testing.examples` has the seeded building blocks of a
``contract_example`` and :mod:`~deepinv_ext.testing.bad_input` the bad-input harness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deepinv_ext.plugins import PluginInfo, load
from deepinv_ext.testing.bad_input import BadInputCase, bad_input_cases, check_bad_input
from deepinv_ext.testing.examples import declared_example, example_generator, example_images, seeded_init
from deepinv_ext.testing.models import check_dataset, check_denoiser, check_loss, check_reconstructor
from deepinv_ext.testing.physics import check_physics
from deepinv_ext.testing.priors import check_prior

__all__ = ["check_physics", "check_prior", "check_denoiser", "check_reconstructor", "check_loss", "check_dataset",
           "check_plugin", "BadInputCase", "bad_input_cases", "check_bad_input", "example_generator", "example_images",
           "seeded_init"]


_CHECKS: dict[str, Callable[..., None]] = {
    "physics": check_physics, "prior": check_prior, "denoiser": check_denoiser, "algorithm": check_reconstructor,
    "loss": check_loss, "dataset": check_dataset,
}


def check_plugin(plugin: PluginInfo | Any, kind: str | None = None) -> None:
    r"""Run the contract check of a plugin's kind on the example it declares with ``contract_example()``.

    :param deepinv_ext.plugins.PluginInfo, object plugin: a registered plugin (loaded from the registry), or the
        object itself together with ``kind``.
    :param str kind: the plugin's kind, when ``plugin`` is the object.
    :raises AssertionError: the plugin declares no ``contract_example`` or fails its check.
    :raises ValueError: ``kind`` is not a plugin kind.

    |sep|

    :Examples:

        From the registry, or a class of one's own with its kind:

        >>> from deepinv_ext import plugins, testing
        >>> from deepinv_ext.datasets import SheppLoganPhantomDataset
        >>> info = next(p for p in plugins.available("dataset") if p.name == "shepp_logan")
        >>> testing.check_plugin(info)
        >>> testing.check_plugin(SheppLoganPhantomDataset, kind="dataset")
    """
    if isinstance(plugin, PluginInfo):
        kind, obj = plugin.kind, load(plugin.kind, plugin.name, plugin.distribution)
    else:
        obj = plugin
    if kind not in _CHECKS:
        raise ValueError(f"kind must be one of {tuple(_CHECKS)}, got {kind!r}")
    _CHECKS[kind](**declared_example(obj))

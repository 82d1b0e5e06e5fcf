"""Every plugin registered by deepinv-ext passes the contract check of its kind (deepinv_ext.testing)."""

import pytest

from deepinv_ext import plugins, testing

OURS = [p for p in plugins.available() if p.distribution == "deepinv-ext"]


def test_registry_lists_our_plugins():
    assert {"dataset.ellipses", "dataset.shepp_logan", "dataset.skimage_images"} <= {p.key for p in OURS}


@pytest.mark.parametrize("info", OURS, ids=lambda p: p.key)
def test_plugin_contract(info):
    testing.check_plugin(info)

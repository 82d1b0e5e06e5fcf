"""Every plugin registered by deepinv-ext passes the contract check of its kind (deepinv_ext.testing)."""

import pytest

from deepinv_ext import plugins, testing

OURS = [p for p in plugins.available() if p.distribution == "deepinv-ext"]


def test_registry_lists_our_plugins():
    assert {"dataset.ellipses", "dataset.shepp_logan", "dataset.skimage_images"} <= {p.key for p in OURS}


@pytest.mark.parametrize("info", OURS, ids=lambda p: p.key)
def test_plugin_contract(info):
    testing.check_plugin(info)


def _state_of(value):
    """The tensors of a contract example, for comparing two builds of it."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach()]
    if isinstance(value, torch.nn.Module):
        return [t.detach() for t in value.state_dict().values() if isinstance(t, torch.Tensor)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _state_of(v)]
    if hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, str):
        return [t for i in range(min(len(value), 2)) for t in _state_of(value[i])]
    return []


@pytest.mark.parametrize("info", OURS, ids=lambda p: p.key)
def test_contract_example_is_side_effect_free_and_seeded(info):
    """contract_example(generator) takes a generator, leaves the global random stream as it was, and builds the same
    example from generators in the same state (and, where it draws anything, another one from another seed)."""
    import inspect

    import torch

    cls = plugins.load(info.kind, info.name)
    assert "generator" in inspect.signature(cls.contract_example).parameters
    before = torch.random.get_rng_state()
    first = cls.contract_example(generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), before), "contract_example touched the global random state"
    again = cls.contract_example(generator=torch.Generator().manual_seed(3))
    a, b = _state_of(first), _state_of(again)
    assert len(a) == len(b) and all(torch.equal(s, t) for s, t in zip(a, b)), "not reproducible from the generator"


@pytest.mark.parametrize("info", OURS, ids=lambda p: p.key)
def test_entry_point_names_the_objects_home_not_a_deprecated_path(info):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        plugins.load(info.kind, info.name)

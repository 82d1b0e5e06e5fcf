"""The seeded building blocks of contract examples (deepinv_ext.testing.examples)."""

import pytest
import torch

from deepinv_ext.testing.examples import declared_example, example_generator, example_images, seeded_init


def test_seeded_init_depends_on_the_generator_only_and_restores_the_global_stream():
    before = torch.random.get_rng_state()
    with seeded_init(torch.Generator().manual_seed(5)):
        a = torch.nn.Linear(3, 3).weight.detach().clone()
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(123)  # whatever the global state, the same generator state gives the same weights
    with seeded_init(torch.Generator().manual_seed(5)):
        b = torch.nn.Linear(3, 3).weight.detach().clone()
    with seeded_init(torch.Generator().manual_seed(6)):
        c = torch.nn.Linear(3, 3).weight.detach().clone()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_example_generator_defaults_to_seed_zero_and_refuses_other_objects():
    assert torch.equal(torch.rand(3, generator=example_generator()), torch.rand(3, generator=example_generator()))
    g = torch.Generator().manual_seed(1)
    assert example_generator(g) is g
    with pytest.raises(TypeError, match="generator"):
        example_generator(1)


def test_example_images_are_dict_items_in_the_unit_range_and_reproducible():
    images = example_images(3, 12, channels=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert len(images) == 3 and images[1]["x"].shape == (2, 12, 12) and images[1]["x"].dtype == torch.float64
    x = torch.stack([images[i]["x"] for i in range(3)])
    assert x.amin(dim=(-2, -1)).eq(0).all() and x.amax(dim=(-2, -1)).eq(1).all()
    assert not torch.equal(x[0], x[1])  # not one image repeated
    again = example_images(3, 12, channels=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(again[2]["x"], images[2]["x"])
    with pytest.raises(ValueError, match="size"):
        example_images(2, 2)


def test_declared_example_passes_a_generator_only_to_methods_that_take_one():
    class Old:
        @staticmethod
        def contract_example():
            return {"old": True}

    class New:
        @classmethod
        def contract_example(cls, generator=None):
            return {"draw": torch.rand(1, generator=generator)}

    assert declared_example(Old) == {"old": True}
    assert torch.equal(declared_example(New)["draw"], torch.rand(1, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(AssertionError, match="contract_example"):
        declared_example(object())

"""accepted_keywords / check_keywords: keyword checks that follow **kwargs along constructor chains."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext._signature import accepted_keywords, check_keywords


class Base:
    def __init__(self, a: int = 1, *, b: int = 2) -> None:
        pass


class Forwards(Base):
    def __init__(self, c: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)


class NoInit(Forwards):
    pass


class Stops(Forwards):
    def __init__(self, d: int = 4) -> None:
        super().__init__()


def test_follows_kwargs_along_the_mro():
    assert accepted_keywords(Base) == {"a", "b"}
    assert accepted_keywords(Forwards) == {"a", "b", "c"}
    assert accepted_keywords(NoInit) == {"a", "b", "c"}  # a class without __init__ uses the next one
    assert accepted_keywords(Stops) == {"d"}  # no **kwargs: the chain ends


def test_object_and_torch_modules_accept_nothing_more():
    class Plain:
        pass

    class Forwarding(torch.nn.Module):
        def __init__(self, e: int = 0, **kwargs) -> None:
            super().__init__(**kwargs)

    assert accepted_keywords(Plain) == set()
    assert accepted_keywords(Forwarding) == {"e"}
    assert {"noise_model", "max_iter", "tol", "solver", "device"} <= accepted_keywords(dinv.physics.LinearPhysics)


def test_callables():
    def f(x, y=1, *args, z=2):
        pass

    assert accepted_keywords(f) == {"x", "y", "z"}
    assert accepted_keywords(lambda x, **kwargs: x) is None  # accepts anything
    assert accepted_keywords(Base().__init__) == {"a", "b"}  # a bound method: without self

    class Unreadable:
        __signature__ = "not a signature"  # inspect.signature raises: unknown, so anything is accepted

        def __call__(self, **kwargs):
            pass

    assert accepted_keywords(Unreadable()) is None


def test_check_keywords_names_the_key_a_suggestion_and_the_accepted_ones():
    check_keywords(Forwards, {"a": 1, "c": 2}, "Forwards")
    check_keywords(lambda **kwargs: None, {"anything": 1}, "f")
    with pytest.raises(TypeError, match=r"Forwards got an unexpected keyword argument 'cc' \(did you mean 'c'\?\); "
                                        r"accepted keywords: a, b, c"):
        check_keywords(Forwards, {"cc": 1}, "Forwards")
    with pytest.raises(TypeError, match=r"arguments 'zzz', 'qqq'"):
        check_keywords(Forwards, {"zzz": 1, "qqq": 2}, "Forwards")

"""The bad-input harness passes a plugin that follows the input policy and catches each way of breaking it."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext import testing
from deepinv_ext._validation import check_tensor, checked_device, finite_number, positive_int


class ToyScale(dinv.physics.LinearPhysics):
    """``A x = factor * x`` on ``(B, 1, size, size)`` images, with every check of the input policy."""

    def __init__(self, size: int = 4, factor: float = 2.0, device: str = "cpu") -> None:
        super().__init__()
        self.size, self.factor = positive_int(size, "size"), finite_number(factor, "factor", strict=True)
        checked_device(device)

    def _checked(self, t, name):
        check_tensor(t, name, shape=(None, 1, self.size, self.size))
        return t

    def A(self, x, **kwargs):
        return self.factor * self._checked(x, "x")

    def A_adjoint(self, y, **kwargs):
        return self.factor * self._checked(y, "y")

    @classmethod
    def contract_example(cls):
        return {"physics": cls(size=4), "x": torch.rand(2, 1, 4, 4, dtype=torch.float64)}


class Truncating(ToyScale):
    def __init__(self, size: int = 4, factor: float = 2.0, device: str = "cpu") -> None:
        super().__init__(int(size), factor, device)


class Unchecked(ToyScale):
    def _checked(self, t, name):
        return t


class Vague(ToyScale):
    def _checked(self, t, name):
        if t.ndim != 4:
            raise ValueError("bad shape")
        return t


class Swallowing(ToyScale):
    def A(self, x, **kwargs):
        return torch.nan_to_num(super().A(x))


class Casting(ToyScale):
    def A(self, x, **kwargs):
        return super().A(x).double()


def _case(cls, text):
    found = [c for c in testing.bad_input_cases(cls, kind="physics") if text in str(c)]
    assert len(found) == 1, [str(c) for c in testing.bad_input_cases(cls, kind="physics")]
    return found[0]


def test_a_plugin_that_follows_the_policy_passes_every_case():
    cases = testing.bad_input_cases(ToyScale, kind="physics")
    assert len(cases) == 28  # size: 5, factor: 3, device: 2; A and A_adjoint: 9 tensor mistakes each
    outcomes = [testing.check_bad_input(c) for c in cases]
    assert outcomes.count("worked") == 6  # empty batch, NaN, other precision, for A and A_adjoint


@pytest.mark.parametrize("cls, text, message", [
    (Truncating, "__init__(size=2.5)", "accepted silently"),
    (Unchecked, "A(x=last dimension one short)", "accepted silently"),
    (Unchecked, "A(x=numpy array)", "accepted silently"),
    (Unchecked, "A_adjoint(y=complex tensor)", "accepted silently"),
    (Vague, "A(x=one dimension fewer)", "does not name 'x'"),
    (Swallowing, "A(x=a NaN)", "swallowed"),
    (Casting, "A(x=other precision)", "cast silently"),
])
def test_each_way_of_breaking_the_policy_is_caught(cls, text, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_bad_input(_case(cls, text))


def test_an_error_raised_underneath_is_not_a_clear_error():
    class TorchChecks(ToyScale):
        def _checked(self, t, name):
            return t.reshape(-1, 1, self.size, self.size)  # torch's RuntimeError, or a ValueError from torch
    with pytest.raises(AssertionError, match="crashed|not by the plugin"):
        testing.check_bad_input(_case(TorchChecks, "A(x=last dimension one short)"))


def test_exempt_leaves_cases_out():
    cases = testing.bad_input_cases(ToyScale, kind="physics", exempt=("__init__(factor=",))
    assert len(cases) == 25 and not any("factor" in str(c) for c in cases)

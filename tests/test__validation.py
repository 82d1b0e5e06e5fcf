"""The argument checks shared by the learned priors."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext._validation import check_image, finite_number, positive_int


def test_check_image():
    check_image(torch.zeros(2, 3, 4, 5), 3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_image([[0.0]], 1)
    for bad in (torch.zeros(3, 4, 5), torch.zeros(2, 1, 4, 5)):
        with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
            check_image(bad, 3)


def test_positive_int():
    assert positive_int(3, "n") == 3 and positive_int(0, "n", minimum=0) == 0
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            positive_int(bad, "n")


def test_finite_number():
    assert finite_number(0, "a") == 0.0 and isinstance(finite_number(2, "a"), float)
    assert finite_number(1, "p", minimum=1) == 1.0 and finite_number(1e-9, "w", strict=True) == 1e-9
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="b must be a finite number >= 0"):
            finite_number(bad, "b")
    with pytest.raises(ValueError, match="w must be a finite number > 0"):
        finite_number(0, "w", strict=True)
    with pytest.raises(ValueError, match="p must be a finite number >= 1"):
        finite_number(0.5, "p", minimum=1)

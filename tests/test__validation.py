"""The argument checks shared by the learned priors."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext._validation import check_image, positive_int


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


def test_nonnegative_number():
    from deepinv_ext._validation import nonnegative_number

    assert nonnegative_number(0, "a") == 0.0 and isinstance(nonnegative_number(2, "a"), float)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="b must be a finite number >= 0"):
            nonnegative_number(bad, "b")

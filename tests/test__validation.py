"""The argument checks shared by the learned priors."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext._validation import check_image, finite_number, iteration_set, positive_int


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


def test_floating_dtype():
    from deepinv_ext._validation import floating_dtype

    assert floating_dtype(torch.float64) is torch.float64 and floating_dtype(torch.float16, "d") is torch.float16
    for bad in (torch.int64, torch.bool, torch.uint8, torch.complex64, "float32", None, float):
        with pytest.raises(TypeError, match="dtype must be a real floating torch.dtype"):
            floating_dtype(bad)


def test_boolean():
    from deepinv_ext._validation import boolean

    assert boolean(True, "flag") is True and boolean(False, "flag") is False
    for bad in ("False", 0, 1, None):
        with pytest.raises(TypeError, match="flag must be True or False"):
            boolean(bad, "flag")


def test_check_measurement():
    import deepinv as dinv

    from deepinv_ext._validation import check_measurement

    physics = dinv.physics.BlurFFT((1, 8, 8), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0)))
    y = physics.A(torch.rand(2, 1, 8, 8))
    torch.testing.assert_close(check_measurement(y, physics), physics.A_adjoint(y))
    module = torch.nn.Linear(1, 1)  # float32 parameters
    check_measurement(y, physics, torch.zeros(2, 1, 8, 8), model=module)
    with pytest.raises(ValueError, match=r"y must have the shape \(2, 1, 8, 8\) of the measurements of BlurFFT"):
        check_measurement(y[..., :1], physics)  # broadcasts: A(A^T y) has the full shape
    with pytest.raises(ValueError, match=r"y of shape \(2, 1, 4, 4\) does not fit BlurFFT"):
        check_measurement(y[..., :4, :4], physics)  # the adjoint itself fails inside torch
    with pytest.raises(ValueError, match="y must hold at least one sample"):
        check_measurement(y[:0], physics)
    with pytest.raises(ValueError, match="y must be finite"):
        check_measurement(y * float("nan"), physics)
    with pytest.raises(TypeError, match="y has dtype torch.float64 but Linear computes in torch.float32"):
        check_measurement(y.double(), physics, model=module)
    with pytest.raises(TypeError, match="physics must be a deepinv.physics.LinearPhysics"):
        check_measurement(y, dinv.physics.Physics(A=lambda x: x))
    with pytest.raises(ValueError, match=r"x_init must have the shape \(2, 1, 8, 8\)"):
        check_measurement(y, physics, torch.zeros(2, 1, 8, 9))
    with pytest.raises(TypeError, match="x_init has dtype torch.float64 but y has torch.float32"):
        check_measurement(y, physics, torch.zeros(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="start must be finite"):
        check_measurement(y, physics, torch.full((2, 1, 8, 8), float("nan")), x_name="start")


def test_check_measurement_refuses_a_y_without_its_channel_axis():
    """An operator that takes any shape (denoising, and deepinv's blurs for some kernels) passes a y of shape
    (B, H, W) through A(A^T y).shape == y.shape, but its image is not (B, C, H, W)."""
    import deepinv as dinv

    from deepinv_ext._validation import check_measurement

    physics = dinv.physics.Denoising()
    y = physics(torch.rand(2, 1, 8, 8))
    assert check_measurement(y, physics).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"y of shape \(2, 8, 8\).*channel axis of y"):
        check_measurement(y[:, 0], physics)


def test_iteration_set_sorts_distinct_iterations_and_refuses_others():
    assert iteration_set([5, 0, 5, 2], max_iter=5) == (0, 2, 5)
    assert iteration_set((), max_iter=0) == ()
    for bad in ((6,), (-1,), (True,), (1.0,), 3, "12"):
        with pytest.raises(ValueError, match=r"record must hold iterations in \[0, max_iter=5\]"):
            iteration_set(bad, max_iter=5)

r"""Contract checks for a physics plugin: adjointness, gradients, batching, devices, and deepinv's own physics
tests (``deepinv.tests.test_physics``) run on it.

:func:`check_physics` is the entry point; :func:`run_deepinv_physics_tests` hands any physics factory to deepinv's
test functions and is public for plugin authors who want only that part.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import deepinv as dinv
import torch

from deepinv_ext.testing.comparison import relative_error

#: deepinv's physics test functions (``deepinv.tests.test_physics``) that take an operator ``name`` and apply to
#: any linear physics, each with the values of its other parameter as deepinv parametrises it
DEEPINV_PHYSICS_TESTS: dict[str, dict[str, tuple]] = {
    "test_operators_adjointness": {}, "test_adjointness_test": {"num_samples": (1, 3)},
    "test_operators_norm": {"verbose": (True, False)},
    "test_pseudo_inverse": {"implicit_backward_solver": (True, False)},
    "test_operators_differentiability": {}, "test_device_consistency": {}, "test_physics_state_dict": {},
    "test_adjoint_autograd": {}, "test_clone": {}, "test_operator_multiscale_wrapper": {},
    "test_operator_cropper": {}, "test_decomposable": {}, "test_concatenation": {},
    "test_multiscale_coarse_adjointness": {}, "test_multiscale_A_adjoint_A": {},
}
#: the operator name under which the physics is handed to deepinv's tests: it contains none of the names those
#: tests single out ("MRI", "pansharpen", "radio", "pet", "3d", "composition", "valid", ...)
_DEEPINV_NAME = "plugin_under_test"

#: ``factory(device, img_size)``: a new physics for images of shape ``img_size`` (``(C, ...)``) on ``device``, or
#: ``None`` when it cannot make one of that size (the tests that need it are then skipped)
PhysicsFactory = Callable[[torch.device, tuple], "dinv.physics.LinearPhysics | None"]


class _DeepinvOperator:
    r"""Context in which deepinv's ``find_operator(name, ...)`` returns ``factory``'s physics for
    :data:`_DEEPINV_NAME`, in the tuple format of deepinv's own (physics, image size, squared norm, dtype[, names of
    the differentiable parameters]); the name joins deepinv's ``OPERATORS``, and the working directory is a
    temporary one (``test_physics_state_dict`` writes ``./cache_test_physics``)."""

    def __init__(self, module: Any, factory: PhysicsFactory, img_size: tuple, dtype: torch.dtype,
                 sqnorm: float | None, params: tuple[str, ...]) -> None:
        self.module, self.factory, self.img_size = module, factory, tuple(img_size)
        self.dtype, self.sqnorm, self.params = dtype, sqnorm, list(params)

    def find_operator(self, name: str, device: Any, imsize: tuple | None = None,
                      get_physics_param: bool = False) -> tuple:
        import pytest

        if name != _DEEPINV_NAME:
            return self.original(name, device, imsize=imsize, get_physics_param=get_physics_param)
        size = self.img_size if imsize is None else tuple(imsize)
        physics = self.factory(torch.device(device), size)
        if physics is None:
            pytest.skip(f"the factory makes no physics for images of shape {size}")
        found = (physics, size, self.sqnorm, self.dtype)
        return found + (list(self.params),) if get_physics_param else found

    def __enter__(self) -> _DeepinvOperator:

        self.original, self.operators = self.module.find_operator, self.module.OPERATORS
        self.module.find_operator, self.module.OPERATORS = self.find_operator, [*self.operators, _DEEPINV_NAME]
        self.cwd, self.tmp = os.getcwd(), tempfile.TemporaryDirectory()
        os.chdir(self.tmp.name)
        return self

    def __exit__(self, *exc: Any) -> None:

        os.chdir(self.cwd)
        self.tmp.cleanup()
        self.module.find_operator, self.module.OPERATORS = self.original, self.operators


def run_deepinv_physics_tests(factory: PhysicsFactory, img_size: tuple, *, device: torch.device | str = "cpu",
                               dtype: torch.dtype = torch.float32, sqnorm: float | None = None,
                               params: tuple[str, ...] = (), tests: tuple[str, ...] | list[str] | None = None,
                               ) -> dict[str, str]:
    r"""Run deepinv's own physics test functions on ``factory``'s physics, through deepinv's code.

    deepinv's tests (``deepinv.tests.test_physics``, shipped in its wheel) find their operator by name with
    ``find_operator``; here that function is replaced, for the duration of the run, by one that returns
    ``factory``'s physics (:class:`_DeepinvOperator`), and each test of :data:`DEEPINV_PHYSICS_TESTS` is called
    with deepinv's fixtures (``device``, ``rng = torch.Generator(device).manual_seed(0)``) and each value of its
    parametrisation. A test that calls ``pytest.skip`` (or needs a size the factory cannot make) is skipped.

    :param Callable factory: ``factory(device, img_size)`` returns a new physics (deepinv's tests mutate it) for
        images of shape ``img_size`` (without the batch dimension), or ``None`` if it cannot.
    :param tuple img_size: shape ``(C, ...)`` of the images of the default physics.
    :param torch.device, str device: where deepinv's tests run.
    :param torch.dtype dtype: dtype of the images deepinv's tests draw.
    :param float, None sqnorm: reference :math:`\|A\|^2` for ``test_operators_norm`` (absolute tolerance 1e-2);
        ``None`` skips that test.
    :param tuple[str] params: names of the buffers ``test_operators_differentiability`` differentiates through
        (deepinv's ``find_operator`` lists them per operator), e.g. ``("mask",)``.
    :param tuple[str] tests: the tests to run (default: all of :data:`DEEPINV_PHYSICS_TESTS`).
    :return: ``{"test_name[param=value]": "passed" or "skipped: reason"}``.
    :raises AssertionError: naming every test that failed, with its error.
    """
    import pytest
    from deepinv.tests import test_physics as module

    names = tuple(DEEPINV_PHYSICS_TESTS) if tests is None else tuple(tests)
    unknown = sorted(set(names) - set(DEEPINV_PHYSICS_TESTS))
    if unknown:
        raise ValueError(f"tests must be among {tuple(DEEPINV_PHYSICS_TESTS)}, got {unknown}")
    device = torch.device(device)
    results: dict[str, str] = {}
    failures: list[str] = []
    with _DeepinvOperator(module, factory, img_size, dtype, sqnorm, params):
        for test in names:
            grid = DEEPINV_PHYSICS_TESTS[test]
            variants = [{k: v} for k, values in grid.items() for v in values] or [{}]
            for variant in variants:
                label = test + "".join(f"[{k}={v}]" for k, v in variant.items())
                if test == "test_operators_norm" and sqnorm is None:
                    results[label] = "skipped: no reference squared norm"
                    continue
                if test == "test_adjointness_test" and dtype != torch.float32:
                    results[label] = "skipped: its adjointness_test(img_size=...) draws float32 images whatever the dtype"
                    continue
                fn = getattr(module, test)
                fixtures = {"name": _DEEPINV_NAME, "device": device,
                            "rng": torch.Generator(device).manual_seed(0)} | variant
                kwargs = {k: v for k, v in fixtures.items() if k in inspect.signature(fn).parameters}
                try:
                    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                        # the verbose variants print; test_concatenation composes the physics with deepinv's own
                        # decomposable ones on purpose, and deepinv warns that the product is not decomposable
                        warnings.filterwarnings("ignore", "At least one input physics is a DecomposablePhysics")
                        fn(**kwargs)
                    results[label] = "passed"
                except pytest.skip.Exception as skip:
                    results[label] = f"skipped: {skip.msg}"
                except Exception as err:  # an assertion of deepinv's test, or an error of the physics
                    failures.append(f"{label}: {type(err).__name__}: {err}")
    if failures:
        raise AssertionError("deepinv's physics tests failed:\n  " + "\n  ".join(failures))
    return results


def _copy(physics: dinv.physics.LinearPhysics) -> dinv.physics.LinearPhysics:
    """A deep copy of ``physics``: :func:`copy.deepcopy`, or deepinv's ``clone()`` (0.2 s, it walks the whole
    object graph) when the physics holds what deepcopy cannot copy (a ``torch.Generator``)."""

    try:
        return copy.deepcopy(physics)
    except (TypeError, RuntimeError):
        return physics.clone()


def dense_sqnorm(physics: dinv.physics.LinearPhysics, x: torch.Tensor, limit: int = 4096) -> float | None:
    r""":math:`\|A\|_2^2` from the dense matrix of ``A`` on images shaped like ``x[0]`` (``A`` applied to the
    canonical basis, one batch), or ``None`` beyond ``limit`` pixels."""
    n = x[0].numel()
    if n > limit:
        return None
    basis = torch.eye(n, dtype=x.dtype, device=x.device).reshape(n, *x.shape[1:])
    with torch.no_grad():
        matrix = physics.A(basis).reshape(n, -1).T.double()
    return float(torch.linalg.matrix_norm(matrix, ord=2)) ** 2


def check_physics(physics: dinv.physics.LinearPhysics, x: torch.Tensor, *, adjoint_tol: float = 1e-5,
                  batch_tol: float = 1e-5, gradcheck: bool = True, gradcheck_kwargs: dict | None = None,
                  wrong_shape: torch.Tensor | None = None, deepinv_tests: bool = True,
                  factory: PhysicsFactory | None = None, sqnorm: float | None = None,
                  params: tuple[str, ...] = ()) -> None:
    r"""Check a linear physics on a batch ``x`` of at least two images.

    - adjointness: deepinv's Monte-Carlo estimate of :math:`\|A - (A^\top)^\top\|_F / \|A\|_F` below
      ``adjoint_tol``;
    - batch = per sample: :math:`A(x)_i = A(x_i)` and the same for :math:`A^\top`;
    - device and dtype of ``x`` kept by :math:`A` and :math:`A^\top`;
    - autograd: ``torch.autograd.gradcheck`` of :math:`A` and :math:`A^\top` on the first image (pass ``x`` in
      float64, or float32 with loose ``gradcheck_kwargs`` for float32-only backends; ``gradcheck=False`` skips it);
    - a clear error (``ValueError`` or ``TypeError``) on ``wrong_shape`` (default: ``x`` with one column less);
    - deepinv's own physics tests (``deepinv.tests.test_physics``: adjointness and ``adjoint_function`` through
      :mod:`torch.func`, norm, pseudo-inverse, differentiability, device moves, state dict, clone, autograd adjoint,
      multiscale and cropping wrappers, composition), run through deepinv's code on new copies of the physics
      (:func:`run_deepinv_physics_tests`), with ``device`` and dtype of ``x``; ``deepinv_tests=False`` skips them.

    :param deepinv.physics.LinearPhysics physics: the operator.
    :param torch.Tensor x: images ``(B, C, ...)``, ``B >= 2``, on the device and in the dtype to check.
    :param float adjoint_tol: bound on deepinv's adjointness error.
    :param float batch_tol: bound on the relative difference between batched and per-sample calls.
    :param bool gradcheck: run ``torch.autograd.gradcheck``.
    :param dict gradcheck_kwargs: tolerances for ``gradcheck``.
    :param torch.Tensor wrong_shape: an input that ``A`` must refuse.
    :param bool deepinv_tests: also run deepinv's physics tests.
    :param Callable factory: ``factory(device, img_size)`` making a new physics for images of shape ``img_size``
        (or ``None``), for deepinv's tests that need other sizes (multiscale); default: clones of ``physics``, for
        ``x``'s size only (the tests needing another size are skipped).
    :param float sqnorm: :math:`\|A\|^2` for deepinv's norm test; default: from the dense matrix of ``A`` when the
        image has at most 4096 entries (else that test is skipped).
    :param tuple[str] params: buffers deepinv's differentiability test differentiates ``A`` through (e.g.
        ``("mask",)``); default none.

    |sep|

    :Examples:

        Silent when the physics passes (here without deepinv's own tests, the slow part); an operator whose adjoint
        is wrong fails:

        >>> import deepinv as dinv
        >>> import torch
        >>> from deepinv_ext.physics import AstraCT
        >>> from deepinv_ext.testing import check_physics
        >>> physics = AstraCT(8, angles=6, backend="sparse", cache_dir=None)
        >>> x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
        >>> check_physics(physics, x, deepinv_tests=False)
        >>> wrong = dinv.physics.LinearPhysics(A=lambda x: 2 * x, A_adjoint=lambda y: y)
        >>> try:
        ...     check_physics(wrong, x, deepinv_tests=False)
        ... except AssertionError as err:
        ...     print(str(err).startswith("adjointness error"))
        True
    """
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least two images to check batching, got shape {tuple(x.shape)}")
    y = physics.A(x)
    x_adj = physics.A_adjoint(y)
    for name, out, ref in (("A", y, x), ("A_adjoint", x_adj, x)):
        assert out.device == ref.device, f"{name} moved the data from {ref.device} to {out.device}"
        assert out.dtype == ref.dtype, f"{name} changed the dtype from {ref.dtype} to {out.dtype}"
        assert torch.isfinite(out).all(), f"{name} returned non-finite values"
    assert x_adj.shape == x.shape, f"A_adjoint(A(x)) has shape {tuple(x_adj.shape)}, expected {tuple(x.shape)}"

    error = float(physics.adjointness_test(x, num_samples=4))
    assert abs(error) < adjoint_tol, f"adjointness error {error:.2e} above {adjoint_tol:.0e}"

    for name, op, batch in (("A", physics.A, x), ("A_adjoint", physics.A_adjoint, y)):
        single = torch.cat([op(batch[i: i + 1]) for i in range(batch.shape[0])])
        err = relative_error(op(batch), single)
        assert err < batch_tol, f"{name} on the batch differs from {name} per sample by {err:.2e} (relative)"

    if gradcheck:
        kwargs = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3} | (gradcheck_kwargs or {})
        x0 = x[:1].detach().clone().requires_grad_(True)
        y0 = y[:1].detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(physics.A, (x0,), **kwargs), "gradcheck of A failed"
        assert torch.autograd.gradcheck(physics.A_adjoint, (y0,), **kwargs), "gradcheck of A_adjoint failed"

    bad = x[..., :-1] if wrong_shape is None else wrong_shape
    try:
        physics.A(bad)
    except (ValueError, TypeError):
        pass
    else:
        raise AssertionError(f"A accepted an input of shape {tuple(bad.shape)} without a ValueError/TypeError")

    if deepinv_tests:
        img_size = tuple(x.shape[1:])
        if factory is None:
            pristine = physics.clone()  # deepinv's tests mutate the physics they get: each gets a new copy

            def factory(device: torch.device, size: tuple) -> dinv.physics.LinearPhysics | None:
                return _copy(pristine).to(device) if tuple(size) == img_size else None

        reference = dense_sqnorm(physics, x[:1]) if sqnorm is None else sqnorm
        run_deepinv_physics_tests(factory, img_size, device=x.device, dtype=x.dtype, sqnorm=reference,
                                   params=params)

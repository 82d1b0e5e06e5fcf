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
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import os
import tempfile
from collections.abc import Callable
from typing import Any

import deepinv as dinv
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_ext.plugins import PluginInfo, load
from deepinv_ext.testing.bad_input import BadInputCase, bad_input_cases, check_bad_input

__all__ = ["check_physics", "check_prior", "check_denoiser", "check_reconstructor", "check_loss", "check_dataset",
           "check_plugin", "BadInputCase", "bad_input_cases", "check_bad_input"]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(torch.finfo(b.dtype).tiny))


#: deepinv's physics test functions (``deepinv.tests.test_physics``) that take an operator ``name`` and apply to
#: any linear physics, each with the values of its other parameter as deepinv parametrises it
_DEEPINV_PHYSICS_TESTS: dict[str, dict[str, tuple]] = {
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


def _run_deepinv_physics_tests(factory: PhysicsFactory, img_size: tuple, *, device: torch.device | str = "cpu",
                               dtype: torch.dtype = torch.float32, sqnorm: float | None = None,
                               params: tuple[str, ...] = (), tests: tuple[str, ...] | list[str] | None = None,
                               ) -> dict[str, str]:
    r"""Run deepinv's own physics test functions on ``factory``'s physics, through deepinv's code.

    deepinv's tests (``deepinv.tests.test_physics``, shipped in its wheel) find their operator by name with
    ``find_operator``; here that function is replaced, for the duration of the run, by one that returns
    ``factory``'s physics (:class:`_DeepinvOperator`), and each test of :data:`_DEEPINV_PHYSICS_TESTS` is called
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
    :param tuple[str] tests: the tests to run (default: all of :data:`_DEEPINV_PHYSICS_TESTS`).
    :return: ``{"test_name[param=value]": "passed" or "skipped: reason"}``.
    :raises AssertionError: naming every test that failed, with its error.
    """
    import pytest
    from deepinv.tests import test_physics as module

    names = tuple(_DEEPINV_PHYSICS_TESTS) if tests is None else tuple(tests)
    unknown = sorted(set(names) - set(_DEEPINV_PHYSICS_TESTS))
    if unknown:
        raise ValueError(f"tests must be among {tuple(_DEEPINV_PHYSICS_TESTS)}, got {unknown}")
    device = torch.device(device)
    results: dict[str, str] = {}
    failures: list[str] = []
    with _DeepinvOperator(module, factory, img_size, dtype, sqnorm, params):
        for test in names:
            grid = _DEEPINV_PHYSICS_TESTS[test]
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
                    with contextlib.redirect_stdout(io.StringIO()):  # the verbose variants print
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


def _dense_sqnorm(physics: dinv.physics.LinearPhysics, x: torch.Tensor, limit: int = 4096) -> float | None:
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
      (:func:`_run_deepinv_physics_tests`), with ``device`` and dtype of ``x``; ``deepinv_tests=False`` skips them.

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

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT
        >>> from deepinv_ext.testing import check_physics
        >>> physics = AstraCT(8, angles=6, backend="sparse", cache_dir=None)
        >>> check_physics(physics, torch.rand(2, 1, 8, 8, dtype=torch.float64))  # silent when it passes
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
        err = _relative_error(op(batch), single)
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

        reference = _dense_sqnorm(physics, x[:1]) if sqnorm is None else sqnorm
        _run_deepinv_physics_tests(factory, img_size, device=x.device, dtype=x.dtype, sqnorm=reference,
                                   params=params)


_DEEPINV_ALGORITHMS: tuple[str, ...] = ("PGD", "HQS", "DRS", "ADMM", "PDCP", "FISTA")


def _deepinv_test_blur(x: torch.Tensor) -> dinv.physics.Blur:
    r"""The blur of deepinv's ``test_priors_algo`` (Gaussian, :math:`\sigma = (2, 0.1)`, 45 degrees, circular
    padding) for images like ``x``; on images smaller than its 15x15 kernel the kernel is cropped to the largest odd
    size that fits and renormalised (deepinv's ``Blur`` refuses a kernel that wraps around more than once)."""
    kernel = dinv.physics.functional.gaussian_blur(sigma=(2, 0.1), angle=45.0)
    small = min(x.shape[-2:])
    side = min(kernel.shape[-1], small if small % 2 else small - 1)
    start = (kernel.shape[-1] - side) // 2
    kernel = kernel[..., start:start + side, start:start + side]
    return dinv.physics.Blur((kernel / kernel.sum()).to(x.dtype), padding="circular", device=x.device)


def _run_in_deepinv_algorithm(prior: dinv.optim.Prior, x: torch.Tensor, algorithm: str,
                              max_iter: int = 1000) -> dinv.optim.BaseOptim:
    r"""Run ``prior`` in deepinv's ``algorithm`` on the blurred ``x`` as deepinv's own ``test_priors_algo``
    (``deepinv/tests/test_optim.py``) does: L2 data fidelity, stepsize 1, lambda 1, ``g_param`` 1, ``thres_conv``
    1e-4, early stop, at most ``max_iter`` iterations (PDCP: dual stepsize 1, started at :math:`(A^\top y, A^\top y,
    y)`); returns the algorithm, whose ``has_converged`` is deepinv's criterion."""
    physics = _deepinv_test_blur(x)
    y = physics(x)
    kwargs: dict[str, Any] = {"prior": prior, "data_fidelity": dinv.optim.L2(), "max_iter": max_iter,
                              "thres_conv": 1e-4, "stepsize": 1.0, "lambda_reg": 1.0, "early_stop": True,
                              "g_param": torch.tensor([[1.0]], device=x.device)}
    init = None
    if algorithm == "PDCP":
        x0 = physics.A_adjoint(y)
        kwargs["stepsize_dual"], init = 1.0, (x0, x0, y)
    solver = getattr(dinv.optim, algorithm)(**kwargs)
    with torch.no_grad():
        solver(y, physics, init=init)
    return solver


def _parameters_moving_the_gradient(prior: dinv.optim.Prior, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    r"""The trainable parameters on which :math:`\nabla R(x)` depends at ``x`` (those that can move a minimiser),
    with an error if ``grad(x)`` is detached from all of them although ``x`` needs no gradient."""
    named = [(n, p) for n, p in prior.named_parameters() if p.requires_grad]
    if not named:
        return []
    with torch.enable_grad():
        g = prior.grad(x.detach())
        assert g.requires_grad, ("grad(x) is detached from the prior's parameters when x needs no gradient: the "
                                 "prior cannot be trained inside unrolled or deep-equilibrium solvers")
        probe = torch.randn(g.shape, generator=torch.Generator().manual_seed(0), dtype=g.dtype).to(g.device)
        used = torch.autograd.grad((g * probe).sum(), [p for _, p in named], allow_unused=True)
    return [(n, p) for (n, p), d in zip(named, used) if d is not None]


def _check_gradients_through_a_solve(prior: dinv.optim.Prior, x: torch.Tensor) -> None:
    r"""Three iterations of deepinv's PGD, unrolled (``unfold=True``, no trainable step or weight: only the prior
    trains), on the blur of :func:`_deepinv_test_blur`: every parameter that moves :math:`\nabla R` gets a finite
    gradient of a loss on the output."""
    named = _parameters_moving_the_gradient(prior, x)
    if not named:
        return
    physics = _deepinv_test_blur(x)
    y = physics(x).detach()
    solver = dinv.optim.PGD(prior=prior, data_fidelity=dinv.optim.L2(), stepsize=1.0, lambda_reg=1.0, max_iter=3,
                            unfold=True, trainable_params=[], early_stop=False)
    with torch.enable_grad():
        out = solver(y, physics)
        assert out.requires_grad, "the output of an unrolled PGD does not depend on the prior's parameters"
        grads = torch.autograd.grad(out.pow(2).sum(), [p for _, p in named], allow_unused=True)
    missing = [n for (n, _), d in zip(named, grads) if d is None]
    assert not missing, f"no gradient through an unrolled PGD reached the parameters {missing}"
    bad = [n for (n, _), d in zip(named, grads) if not torch.isfinite(d).all()]
    assert not bad, f"non-finite gradients through an unrolled PGD for the parameters {bad}"


def check_prior(prior: dinv.optim.Prior, x: torch.Tensor, *, rtol: float = 1e-5, solvers: bool = True,
                algorithms: tuple[str, ...] = _DEEPINV_ALGORITHMS, max_iter: int = 1000) -> None:
    r"""Check a prior's energy and gradient on a batch ``x`` (float64 recommended), and that it works inside
    deepinv's solvers.

    - ``fn(x)`` returns one finite value per batch element, shape ``(B,)``;
    - ``grad(x)`` has the shape of ``x`` and equals the autograd gradient of :math:`\sum_b fn(x)_b` to ``rtol``
      (relative, in the max norm);
    - the energy of each batch element does not depend on the others (``fn`` on the batch = ``fn`` per sample);
    - with ``solvers`` (the slow part): the prior converges in each of deepinv's ``algorithms`` (default PGD, HQS,
      DRS, ADMM, PDCP and FISTA) on a blur of ``x``, by the criterion and settings of deepinv's own
      ``test_priors_algo`` (``has_converged`` within ``max_iter`` iterations at ``thres_conv = 1e-4``, stepsize,
      lambda and ``g_param`` 1; the blur kernel is cropped on images smaller than 15x15); and, if it has trainable
      parameters, ``grad(x)`` stays differentiable in them when ``x`` needs no gradient and every parameter that
      moves :math:`\nabla R` gets a finite gradient through three unrolled iterations of deepinv's PGD.

    :param deepinv.optim.Prior prior: the prior.
    :param torch.Tensor x: images ``(B, C, H, W)``, ``B >= 1``.
    :param float rtol: tolerance of the gradient and batching checks.
    :param bool solvers: run the solver checks (``False`` skips them: the fast checks only).
    :param tuple[str, ...] algorithms: names of the ``deepinv.optim`` algorithms to converge in.
    :param int max_iter: the iteration budget of each algorithm.
    """
    energy = prior.fn(x)
    assert energy.shape == (x.shape[0],), f"fn(x) has shape {tuple(energy.shape)}, expected ({x.shape[0]},)"
    assert torch.isfinite(energy).all(), "fn(x) is not finite"
    single = torch.cat([prior.fn(x[i: i + 1]).reshape(1) for i in range(x.shape[0])])
    err = _relative_error(energy, single)
    assert err < rtol, f"fn on the batch differs from fn per sample by {err:.2e} (relative)"
    z = x.detach().clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(prior.fn(z).sum(), z)
    grad = prior.grad(x)
    assert grad.shape == x.shape, f"grad(x) has shape {tuple(grad.shape)}, expected {tuple(x.shape)}"
    err = _relative_error(grad, reference)
    assert err < rtol, f"grad differs from the autograd gradient of fn by {err:.2e} (relative), above {rtol:.0e}"
    if not solvers:
        return
    failed = [name for name in algorithms if not _run_in_deepinv_algorithm(prior, x, name, max_iter).has_converged]
    if failed and type(prior).prox is dinv.optim.Potential.prox:
        raise AssertionError(f"no convergence within {max_iter} iterations (deepinv's criterion) in {failed}: "
                             f"{type(prior).__name__} has no prox of its own, and deepinv's fallback (fixed-step "
                             "gradient steps) does not solve it; give it a prox (e.g. subclass "
                             "deepinv_ext.priors.SmoothLearnedPrior) or pass solvers=False")
    assert not failed, f"no convergence within {max_iter} iterations (deepinv's criterion) in {failed}"
    _check_gradients_through_a_solve(prior, x)


def _run_in_trainer(model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset,
                    losses: list | None = None, batch_size: int = 2) -> None:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    device = next((b.device for b in physics.buffers()), torch.device("cpu"))
    if trainable:  # deepinv's Trainer needs an optimizer; a model without parameters is only tested
        trainer = dinv.Trainer(model=model, physics=physics, optimizer=torch.optim.Adam(trainable, lr=1e-4),
                               train_dataloader=loader, epochs=1, max_batch_steps=1,
                               losses=losses or dinv.loss.SupLoss(), online_measurements=True, device=device,
                               save_path=None, verbose=False, show_progress_bar=False, compute_train_metrics=False)
        trainer.train()
    metrics = dinv.test(model, loader, physics, metrics=dinv.metric.PSNR(), online_measurements=True,
                        device=device, verbose=False, show_progress_bar=False, compare_no_learning=False)
    values = [float(v) for k, v in metrics.items() if "PSNR" in k]
    assert values and all(v == v for v in values), f"deepinv.test returned no finite PSNR: {metrics}"


def check_reconstructor(model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset, *,
                        batch_size: int = 2) -> None:
    r"""Check that ``model(y, physics)`` returns an image of the right shape, trains one step inside
    :class:`deepinv.Trainer` (supervised loss, online measurements; skipped for a model without trainable
    parameters) and is evaluated by :func:`deepinv.test`."""
    x = next(iter(DataLoader(dataset, batch_size=batch_size)))["x"]
    x = x.to(next((b.device for b in physics.buffers()), x.device))
    with torch.no_grad():
        out = model(physics(x), physics)
    assert out.shape == x.shape, f"model(y, physics) has shape {tuple(out.shape)}, expected {tuple(x.shape)}"
    assert torch.isfinite(out).all(), "model(y, physics) is not finite"
    _run_in_trainer(model, physics, dataset, batch_size=batch_size)


def check_denoiser(denoiser: dinv.models.Denoiser, dataset: Dataset, *, sigma: float = 0.1,
                   batch_size: int = 2) -> None:
    r"""Check a denoiser: ``denoiser(x, sigma)`` keeps the shape, and the denoiser trains and tests inside
    deepinv as deepinv itself wraps one, :class:`deepinv.models.ArtifactRemoval` on :class:`Denoising` physics."""
    x = next(iter(DataLoader(dataset, batch_size=batch_size)))["x"]
    with torch.no_grad():
        out = denoiser(x + sigma * torch.randn_like(x), sigma)
    assert out.shape == x.shape, f"denoiser(x, sigma) has shape {tuple(out.shape)}, expected {tuple(x.shape)}"
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma))
    model = dinv.models.ArtifactRemoval(denoiser, mode="direct")
    check_reconstructor(model, physics, dataset, batch_size=batch_size)


def check_loss(loss: dinv.loss.Loss, model: torch.nn.Module, physics: dinv.physics.Physics, dataset: Dataset,
               *, batch_size: int = 2) -> None:
    r"""Check that a training loss is a :class:`deepinv.loss.Loss` and trains ``model`` one step inside
    :class:`deepinv.Trainer`."""
    assert isinstance(loss, dinv.loss.Loss), f"a loss plugin must subclass deepinv.loss.Loss, got {type(loss)}"
    _run_in_trainer(model, physics, dataset, losses=[loss], batch_size=batch_size)


def check_dataset(dataset: Dataset, *, indices: tuple[int, ...] = (0, 1)) -> None:
    r"""Check a dataset: items are dicts with an image ``"x"`` of shape ``(C, H, W)``, finite, and item ``i`` is
    the same on every call."""
    for i in indices:
        first, again = dataset[i], dataset[i]
        assert isinstance(first, dict) and "x" in first, f"item {i} must be a dict with key 'x', got {type(first)}"
        assert first["x"].ndim == 3, f"item {i}: x must be (C, H, W), got shape {tuple(first['x'].shape)}"
        assert torch.isfinite(first["x"]).all(), f"item {i} is not finite"
        assert torch.equal(first["x"], again["x"]), f"item {i} differs between two calls"


_CHECKS: dict[str, Callable[..., None]] = {
    "physics": check_physics, "prior": check_prior, "denoiser": check_denoiser, "algorithm": check_reconstructor,
    "loss": check_loss, "dataset": check_dataset,
}


def check_plugin(plugin: PluginInfo | Any, kind: str | None = None) -> None:
    r"""Run the contract check of a plugin's kind on the example it declares with ``contract_example()``.

    :param plugin: a :class:`deepinv_ext.plugins.PluginInfo` (loaded from the registry), or the object itself
        together with ``kind``.
    :param str kind: the plugin's kind, when ``plugin`` is the object.
    :raises AssertionError: the plugin declares no ``contract_example`` or fails its check.
    """
    if isinstance(plugin, PluginInfo):
        kind, obj = plugin.kind, load(plugin.kind, plugin.name, plugin.distribution)
    else:
        obj = plugin
    if kind not in _CHECKS:
        raise ValueError(f"kind must be one of {tuple(_CHECKS)}, got {kind!r}")
    example = getattr(obj, "contract_example", None)
    assert callable(example), f"{obj!r} declares no contract_example(): the registry cannot check it"
    _CHECKS[kind](**example())

r"""Contract checks for a prior plugin: energy and gradient against autograd, batching, convergence inside
deepinv's own algorithms (as deepinv's ``test_priors_algo`` runs them), and gradients through a solve."""

from __future__ import annotations

from typing import Any

import deepinv as dinv
import torch

from deepinv_ext.testing.comparison import relative_error

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
    :raises AssertionError: naming the property that fails and by how much.

    |sep|

    :Examples:

        deepinv's Tikhonov prior :math:`R(x) = \tfrac12 \|x\|^2` passes the fast checks; a prior whose gradient
        is not that of its energy fails:

        >>> import deepinv as dinv
        >>> import torch
        >>> from deepinv_ext.testing import check_prior
        >>> x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
        >>> check_prior(dinv.optim.Tikhonov(), x, solvers=False)
        >>> class Wrong(dinv.optim.Tikhonov):
        ...     def grad(self, x, *args, **kwargs):
        ...         return 2 * x
        >>> try:
        ...     check_prior(Wrong(), x, solvers=False)
        ... except AssertionError as err:
        ...     print(str(err).split(" by ")[0])
        grad differs from the autograd gradient of fn
    """
    energy = prior.fn(x)
    assert energy.shape == (x.shape[0],), f"fn(x) has shape {tuple(energy.shape)}, expected ({x.shape[0]},)"
    assert torch.isfinite(energy).all(), "fn(x) is not finite"
    single = torch.cat([prior.fn(x[i: i + 1]).reshape(1) for i in range(x.shape[0])])
    err = relative_error(energy, single)
    assert err < rtol, f"fn on the batch differs from fn per sample by {err:.2e} (relative)"
    z = x.detach().clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(prior.fn(z).sum(), z)
    grad = prior.grad(x)
    assert grad.shape == x.shape, f"grad(x) has shape {tuple(grad.shape)}, expected {tuple(x.shape)}"
    err = relative_error(grad, reference)
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

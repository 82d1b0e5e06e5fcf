r"""The base of deepinv-ext's smooth learned priors: an energy, its gradient and a real proximal operator.

:class:`SmoothLearnedPrior` is a :class:`deepinv.optim.Prior` whose subclasses define the energy ``fn(x)`` (one value
per batch element) and, where they have a hand-derived one, ``energy_and_grad(x)``; the base gives

- ``grad(x)`` and ``energy_and_grad(x)`` by autograd (:func:`autograd_grad`, :func:`autograd_energy_and_grad`),
  **differentiable in the prior's parameters** whenever autograd is enabled and ``x`` or a parameter requires grad,
  so that the prior trains inside unrolled (:func:`deepinv.unfolded.unfolded_builder`), deep-equilibrium and
  bilevel schemes even when ``x`` itself needs no gradient; nothing is recorded under :func:`torch.no_grad`;
- ``prox(x, gamma)``: the batched inner solve of

  .. math::

      \operatorname{prox}_{\gamma R}(x) = \arg\min_u \; E_x(u) = \frac12\|u - x\|_2^2 + \gamma R(u),

  by accelerated gradient descent with per-image Lipschitz backtracking and monotone restart
  (:func:`deepinv_ext.priors.accelerated.accelerated_descent`, the minimiser of
  :class:`deepinv_ext.algorithms.VariationalSolver`), warm-started from the previous output when the input has the
  same shape (else from :math:`x`), stopping each image when the relative residual of the optimality condition,
  :math:`\|u - x + \gamma \nabla R(u)\|_2 / \max(\|x\|_2, \text{tiny})`, tested at the point returned, is below
  ``tol``.
  The per-image inner-iteration counts of every call are kept in ``prox_iterations``, and a
  :class:`ProxConvergenceWarning` is raised when an image did not meet the tolerance within ``max_iter`` steps.
  For a non-convex :math:`R` the prox is a stationary point of :math:`E_x` (unique for :math:`\gamma <
  1/\text{Lip}(\nabla R)`, where :math:`E_x` is strongly convex).

  **Differentiation**: the inner iterations are never recorded. When autograd is enabled and :math:`x`,
  :math:`\gamma` or a parameter requires grad, the output carries the implicit derivative of the prox
  (:mod:`deepinv_ext.priors.implicit`: conjugate gradients on :math:`I + \gamma\nabla^2 R` at the solution, to the
  prox's own tolerance), so memory does not grow with the inner iterations and the derivative does not depend on
  the warm start (an unrolled derivative would: a warm-started solve that stops at once has none). It needs
  :math:`I + \gamma\nabla^2 R(u^\star)` invertible (:math:`R` convex, or :math:`\gamma` below
  :math:`1/\mathrm{Lip}(\nabla R)`), and is a first derivative only (no double backward through the prox).

deepinv's own fallback (:meth:`deepinv.optim.Potential.prox`: 50 fixed-step gradient steps, stopped on a change of
1e-3) neither adapts the step to the prior nor reports failure; this prox does both.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from deepinv.optim import Prior
from torch import Tensor, nn

from deepinv_ext._batch import batch_sqnorm, per_sample
from deepinv_ext._convergence import NotConvergedWarning
from deepinv_ext._validation import (
    boolean,
    check_dtype,
    check_image,
    check_tensor,
    finite_number,
    finite_values,
    positive_int,
)
from deepinv_ext.priors.accelerated import accelerated_descent
from deepinv_ext.priors.implicit import implicit_prox
from deepinv_ext.priors.step_size import Backtracking

__all__ = ["ProxConfig", "ProxConvergenceWarning", "SmoothLeakyReLU", "SmoothLearnedPrior", "autograd_energy_and_grad",
           "autograd_grad", "smooth_leaky_relu"]


def smooth_leaky_relu(x: Tensor, negative_slope: float = 0.2, smoothing: float = 0.0) -> Tensor:
    r"""Leaky ReLU, or for ``smoothing = s > 0`` its smooth version
    :math:`a x + (1 - a)\, s \log(1 + e^{x/s})`; both convex and non-decreasing (ICNN activations). With
    :math:`s > 0` a network built of it has a Lipschitz gradient, so that the prox and gradient solvers reach their
    tolerances (with :math:`s = 0` the gradient jumps at the kinks and an inner solve may stall).

    :param torch.Tensor x: input.
    :param float negative_slope: slope :math:`a` for negative inputs.
    :param float smoothing: the softplus width :math:`s \ge 0`.
    """
    if smoothing <= 0:
        return F.leaky_relu(x, negative_slope)
    return negative_slope * x + (1 - negative_slope) * smoothing * F.softplus(x / smoothing)


class SmoothLeakyReLU(nn.Module):
    r""":func:`smooth_leaky_relu` as a module (no parameters: a network's state dict does not change with it).

    :param float negative_slope: slope :math:`a \ge 0` for negative inputs.
    :param float smoothing: softplus width :math:`s \ge 0` (0: the plain leaky ReLU).
    :raises ValueError: a negative or non-finite slope or width.
    """

    def __init__(self, negative_slope: float = 0.2, smoothing: float = 0.0) -> None:
        super().__init__()
        self.negative_slope = finite_number(negative_slope, "negative_slope")
        self.smoothing = finite_number(smoothing, "smoothing")

    def forward(self, x: Tensor) -> Tensor:
        return smooth_leaky_relu(x, self.negative_slope, self.smoothing)


class ProxConvergenceWarning(NotConvergedWarning):
    """An inner proximal solve stopped (at ``max_iter``, or stalled) without meeting its tolerance."""


def _records(x: Tensor, parameters: Iterable[Tensor]) -> bool:
    """Whether autograd should record a gradient of ``x``: it is enabled and ``x`` or a parameter needs grad."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in parameters))


def _parameters_of(fn: Callable, parameters: Iterable[Tensor] | None) -> Iterable[Tensor]:
    if parameters is not None:
        return parameters
    owner = getattr(fn, "__self__", None)
    return owner.parameters() if isinstance(owner, nn.Module) else ()


def autograd_energy_and_grad(fn: Callable[[Tensor], Tensor], x: Tensor, parameters: Iterable[Tensor] | None = None,
                             *, create_graph: bool | None = None) -> tuple[Tensor, Tensor]:
    r""":math:`(fn(x), \nabla_x \sum_b fn(x)_b)` in one forward and one reverse sweep, also inside
    :func:`torch.no_grad`.

    By default the graph is kept (``create_graph=True``: the gradient is differentiable in ``x`` and in the
    parameters, twice differentiable where the network is) whenever autograd is enabled and ``x`` or one of
    ``parameters`` requires grad; otherwise both results are detached and nothing is recorded. ``x`` itself is never
    changed (a copy that requires grad is differentiated when ``x`` does not).

    :param Callable fn: the energy, one value per batch element.
    :param torch.Tensor x: the point.
    :param Iterable[torch.Tensor] parameters: the parameters ``fn`` depends on (default: those of the module ``fn``
        is a bound method of, if any).
    :param bool create_graph: keep the graph (``True``), never (``False``), or decide as above (``None``).
    :return: the energies ``(B,)`` and the gradient, shape of ``x``.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors.smooth import autograd_energy_and_grad
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> energy, grad = autograd_energy_and_grad(lambda z: 0.5 * z.pow(2).sum(dim=1), x)
    >>> energy.tolist(), torch.equal(grad, x), x.requires_grad
    ([2.5, 12.5], True, False)
    """
    keep = _records(x, _parameters_of(fn, parameters)) if create_graph is None else create_graph
    with torch.enable_grad():
        z = x if x.requires_grad else x.detach().requires_grad_(True)
        energy = fn(z)
        (grad,) = torch.autograd.grad(energy.sum(), z, create_graph=keep)
    return (energy if keep else energy.detach()), grad


def autograd_grad(fn: Callable[[Tensor], Tensor], x: Tensor, parameters: Iterable[Tensor] | None = None) -> Tensor:
    r""":math:`\nabla_x \sum_b fn(x)_b` by autograd, kept differentiable as in :func:`autograd_energy_and_grad`.

    :param Callable fn: the energy, one value per batch element.
    :param torch.Tensor x: the point.
    :param Iterable[torch.Tensor] parameters: the parameters ``fn`` depends on (default: those of its module).
    """
    return autograd_energy_and_grad(fn, x, parameters)[1]


@dataclass
class ProxConfig:
    r"""Settings of :meth:`SmoothLearnedPrior.prox`.

    :param float tol: tolerance of the per-image stopping rule (relative optimality residual, > 0).
    :param int max_iter: maximum inner iterations.
    :param bool warm_start: start from the previous output when the input has its shape, dtype and device.
    :param float lipschitz_init: first Lipschitz estimate of :math:`\nabla E_x` (later calls start from the last one).
    :param Backtracking backtracking: backtracking constants.
    :param int history: number of calls whose iteration counts ``prox_iterations`` keeps (>= 1).
    :raises ValueError: a count that is not an integer >= 1, a number that is not finite and > 0.
    :raises TypeError: ``warm_start`` not a bool, ``backtracking`` not a :class:`Backtracking`.

    |sep|

    :Examples:

    >>> from deepinv_ext.priors import NETT, ProxConfig
    >>> prior = NETT(width=4, depth=1, prox_config=ProxConfig(tol=1e-6, max_iter=50))
    >>> prior.prox_config.max_iter, prior.prox_config.warm_start
    (50, True)
    """

    tol: float = 1e-5
    max_iter: int = 200
    warm_start: bool = True
    lipschitz_init: float = 1.0
    backtracking: Backtracking = field(default_factory=Backtracking)
    history: int = 10_000

    def __post_init__(self) -> None:
        self.tol = finite_number(self.tol, "tol", strict=True)
        self.max_iter = positive_int(self.max_iter, "max_iter")
        self.lipschitz_init = finite_number(self.lipschitz_init, "lipschitz_init", strict=True)
        self.history = positive_int(self.history, "history")
        boolean(self.warm_start, "warm_start")
        if not isinstance(self.backtracking, Backtracking):
            raise TypeError(f"backtracking must be a deepinv_ext.priors.Backtracking, got "
                            f"{type(self.backtracking).__name__}")


def per_image_gamma(gamma: float | Tensor, x: Tensor) -> Tensor:
    r"""``gamma`` as one step per image, shape ``(B,)`` (a number, a one-element tensor or ``B`` values, e.g.
    ``(B, 1, 1, 1)``).

    :raises TypeError: ``gamma`` is not a real number or a real tensor (a bool, a string, a complex tensor).
    :raises ValueError: ``gamma`` is negative, not finite, or holds neither one nor ``B`` values.
    """
    finite_values(gamma, "gamma")
    g = torch.as_tensor(gamma, device=x.device).to(x.dtype)
    B = x.shape[0]
    if g.numel() not in (1, B):
        raise ValueError(f"gamma must be a number or hold one value per image ({B}), got shape {tuple(g.shape)}")
    return g.reshape(1).expand(B) if g.numel() == 1 else g.reshape(B)


class SmoothLearnedPrior(Prior):
    r"""Base of a smooth learned prior :math:`R_\theta`: autograd gradient kept differentiable in :math:`\theta`, and a
    real proximal operator.

    :meth:`prox` solves, for a batch of images :math:`x` and steps :math:`\gamma`,

    .. math::

        \operatorname{prox}_{\gamma R}(x) = \arg\min_u \; \frac12\|u - x\|_2^2 + \gamma R(u)
        \quad \text{until} \quad \frac{\|u - x + \gamma \nabla R(u)\|_2}{\max(\|x\|_2, \text{tiny})} < \texttt{tol}

    per image, by :func:`~deepinv_ext.priors.accelerated_descent` warm-started from the previous output; its output
    carries the implicit derivative of the prox (conjugate gradients on :math:`I + \gamma\nabla^2 R` at the
    solution), so memory does not grow with the inner iterations (the module :mod:`deepinv_ext.priors.smooth`
    details both). For a non-convex :math:`R` the prox is a stationary point, unique for
    :math:`\gamma < 1/\mathrm{Lip}(\nabla R)`.

    This is the type the solvers of deepinv-ext test for (``isinstance(prior, SmoothLearnedPrior)``): they call
    ``prior.energy_and_grad(x)`` for the energy and the gradient at once, and ``prior.prox(x, gamma=...)``.

    A subclass defines ``fn(x)`` (shape ``(B,)``) and nothing else: ``energy_and_grad(x)`` defaults to autograd
    (:func:`autograd_energy_and_grad`) and ``grad(x)`` is its second half. A subclass with a hand-derived gradient
    overrides ``energy_and_grad`` (and ``grad`` where the energy costs extra), keeping the signature
    ``energy_and_grad(x)`` (further arguments only as keywords with defaults, e.g. TDV's ``get_energy``), and its
    gradient differentiable in the parameters. Each of them starts with :meth:`check_input` (:meth:`prox` and the
    base's ``energy_and_grad`` and ``grad`` do).

    **Why deepinv's** :meth:`deepinv.optim.Potential.grad` **is bypassed** (deepinv 0.5): it calls
    ``x.requires_grad_()`` on the caller's tensor (a solver's iterate then records every later operation), keeps the
    network's graph alive even under :func:`torch.no_grad` (``create_graph=True`` always) and returns the gradient
    alone (a solver that also needs the energy pays a second forward pass). The base's ``energy_and_grad``
    differentiates a copy, keeps the graph only when a derivative will be taken, and returns both from one sweep.

    After each call of :meth:`prox`, ``prox_iterations`` (a deque of ``(B,)`` int64 tensors, one per call) holds the
    inner iterations of every image and ``prox_converged`` whether each image of the last call met the tolerance.

    :param ProxConfig prox_config: the settings of :meth:`prox` (default :class:`ProxConfig`); can be replaced
        later through the attribute ``prox_config``.
    :raises TypeError: ``prox_config`` is neither ``None`` nor a :class:`ProxConfig`.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.priors.smooth import SmoothLearnedPrior
    >>> class Quartic(SmoothLearnedPrior):
    ...     def fn(self, x, *args, **kwargs):
    ...         return 0.25 * x.pow(4).flatten(1).sum(1)
    >>> prior = Quartic()
    >>> x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    >>> u = prior.prox(x, gamma=0.5)
    >>> bool((u - x + 0.5 * u ** 3).norm() < 1e-5 * x.norm())
    True
    """

    def __init__(self, prox_config: ProxConfig | None = None) -> None:
        super().__init__()
        if prox_config is not None and not isinstance(prox_config, ProxConfig):
            raise TypeError(f"prox_config must be None or a deepinv_ext.priors.ProxConfig, got "
                            f"{type(prox_config).__name__}")
        self.explicit_prior = True
        self.prox_config = prox_config if prox_config is not None else ProxConfig()
        self.reset_prox()

    def check_input(self, x: Tensor, name: str = "x") -> None:
        r"""Raise unless ``x`` is a real floating tensor ``(B, C, H, W)`` with the prior's ``in_channels`` (any
        shape ``(B, ...)`` for a subclass without that attribute) in the precision of the prior's parameters.

        :param torch.Tensor x: the input to check.
        :param str name: its name in the error messages.
        :raises TypeError: not a tensor; an integer, boolean or complex tensor; another floating precision than the
            parameters (cast ``x`` or move the prior with ``.to(dtype)``: it is never cast silently).
        :raises ValueError: the wrong number of dimensions or channels.
        """
        channels = getattr(self, "in_channels", None)
        if channels is None:
            check_tensor(x, name)
        else:
            check_image(x, channels, name)
        check_dtype(x, self, name)

    def reset_prox(self) -> None:
        """Forget the warm start, the last Lipschitz estimates and the recorded inner-iteration counts."""
        self._prox_warm: tuple[Tensor, Tensor] | None = None
        self.prox_iterations: deque[Tensor] = deque(maxlen=self.prox_config.history)
        self.prox_converged: Tensor | None = None

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(R(x), \nabla R(x))` by autograd in one sweep (see :func:`autograd_energy_and_grad`): the
        default of every smooth learned prior, overridden where a gradient is derived by hand.

        :param torch.Tensor x: images ``(B, C, H, W)`` as in :meth:`check_input`.
        :return: the energies ``(B,)`` and the gradient, shape of ``x``.
        """
        self.check_input(x)
        return autograd_energy_and_grad(self.fn, x, self.parameters())

    def grad(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\nabla R(x)`, same shape as ``x``, differentiable in the parameters whenever autograd records.

        :param torch.Tensor x: images ``(B, C, H, W)`` as in :meth:`check_input`.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        :return: (:class:`torch.Tensor`) the gradient, shape of ``x``.
        """
        return self.energy_and_grad(x)[1]

    def prox(self, x: Tensor, *args, gamma: float | Tensor = 1.0, tol: float | None = None,
             max_iter: int | None = None, **kwargs) -> Tensor:
        r""":math:`\operatorname{prox}_{\gamma R}(x) = \arg\min_u \frac12\|u - x\|^2 + \gamma R(u)` by the inner solve
        of the module docstring.

        Positional arguments after ``x`` (deepinv's iterators pass ``g_param``) and unknown keywords are ignored.

        A NaN or infinite ``x`` gives a non-finite :math:`u` for that image (it is never turned into a finite one),
        counted as not converged (with the warning), and does not spoil the warm start of later calls.

        :param torch.Tensor x: the images ``(B, C, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param float, torch.Tensor gamma: the step :math:`\gamma \ge 0`, a number or one per image.
        :param float tol: tolerance of the stopping rule (default ``prox_config.tol``).
        :param int max_iter: maximum inner iterations (default ``prox_config.max_iter``).
        :param kwargs: ignored.
        :return: :math:`u`, shape of ``x``.
        :raises TypeError: ``x`` as in :meth:`check_input`; ``gamma`` not a real number or tensor.
        :raises ValueError: ``x`` as in :meth:`check_input`; ``gamma`` negative, not finite or of the wrong size;
            ``tol`` not finite and > 0; ``max_iter`` not an integer >= 1.
        """
        self.check_input(x)
        cfg = self.prox_config
        tol = cfg.tol if tol is None else finite_number(tol, "tol", strict=True)
        max_iter = cfg.max_iter if max_iter is None else positive_int(max_iter, "max_iter")
        g = per_image_gamma(gamma, x)
        u0, L0 = self._prox_start(x)
        scale = torch.sqrt(batch_sqnorm(x)).clamp_min(torch.finfo(x.dtype).tiny)
        with torch.no_grad():
            result = accelerated_descent(
                lambda u: self._prox_energy(u, x, g), lambda u: self._prox_energy_and_grad(u, x, g), u0,
                max_iter=max_iter, lipschitz=L0, backtracking=cfg.backtracking,
                grad_converged=lambda u, grad: torch.sqrt(batch_sqnorm(grad)) < tol * scale)
        finite = torch.isfinite(result.x).flatten(1).all(dim=1)  # a NaN image never met the tolerance
        self._prox_record(result.x, result.lipschitz, result.iterations, result.converged & finite, tol, max_iter)
        if not _records(x, [g, *self.parameters()]):
            return result.x
        return implicit_prox(result.x, x, g, self.grad, tol=tol, max_iter=max_iter)

    def _prox_energy(self, u: Tensor, x: Tensor, gamma: Tensor) -> Tensor:
        return 0.5 * batch_sqnorm(u - x) + gamma * self.fn(u).reshape(-1)

    def _prox_energy_and_grad(self, u: Tensor, x: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
        energy, grad = self.energy_and_grad(u)
        e = 0.5 * batch_sqnorm(u - x) + gamma * energy.reshape(-1)
        return e, u - x + per_sample(gamma, x) * grad

    def _prox_start(self, x: Tensor) -> tuple[Tensor, Tensor | float]:
        warm = self._prox_warm
        if self.prox_config.warm_start and warm is not None and warm[0].shape == x.shape \
                and warm[0].dtype == x.dtype and warm[0].device == x.device:
            # an image whose previous input was not finite (NaN or inf in its warm start) starts afresh
            u, L = warm
            stale = ~torch.isfinite(u).flatten(1).all(dim=1) | ~torch.isfinite(L) | (L <= 0)
            return (torch.where(per_sample(stale, x), x, u),
                    torch.where(stale, torch.full_like(L, self.prox_config.lipschitz_init), L))
        return x, self.prox_config.lipschitz_init

    def _prox_record(self, u: Tensor, L: Tensor, iterations: Tensor, converged: Tensor, tol: float,
                     max_iter: int) -> None:
        self._prox_warm = (u.detach(), L.detach())
        self.prox_iterations.append(iterations.detach())
        self.prox_converged = converged.detach()
        if not bool(converged.all()):
            failed = int((~converged).sum())
            warnings.warn(f"{type(self).__name__}.prox: {failed} of {converged.numel()} images did not reach the "
                          f"relative residual tol={tol:g} within max_iter={max_iter} inner iterations",
                          ProxConvergenceWarning, stacklevel=3)

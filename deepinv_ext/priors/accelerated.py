r"""Batched accelerated gradient descent with per-element Lipschitz backtracking and monotone restart.

The one minimiser of smooth energies in deepinv-ext: :class:`deepinv_ext.algorithms.VariationalSolver` runs it on
:math:`\frac{w}{2}\|Ax - y\|^2 + R(x)`, and :meth:`deepinv_ext.priors.SmoothLearnedPrior.prox` on the prox problem
:math:`\frac12\|u - x\|^2 + \gamma R(u)`. For an energy :math:`E` with one value per batch element,

.. math::

    \bar x_k = x_k + \beta_k (x_k - x_{k-1}), \qquad
    x_{k+1} = \bar x_k - \tfrac{1}{L_k}\nabla E(\bar x_k),

where :math:`L_k` is multiplied by ``increase`` until the sufficient-decrease condition
:math:`E(x_{k+1}) \le E(\bar x_k) - \frac{1}{2L_k}\|\nabla E(\bar x_k)\|^2` holds and is then relaxed
(:math:`L_{k+1} = \eta L_k`, ``decrease`` :math:`= \eta \le 1`): the per-image Armijo backtracking of
:class:`~deepinv_ext.priors.step_size.ArmijoStepSize` with :math:`c = 1/2` (shared with
:class:`~deepinv_ext.algorithms.GradientStepPnP`), and :math:`\beta_k = (t_{k-1}-1)/t_k` with FISTA's
:math:`t_k = (1 + \sqrt{1 + 4t_{k-1}^2})/2`. The energy is kept monotone: a momentum step that fails the condition
or would raise :math:`E` above :math:`E(x_k)` is redone from :math:`x_k` without momentum (and the momentum
restarted), where the condition guarantees :math:`E(x_{k+1}) \le E(x_k) - \frac{1}{2L_k}\|\nabla E(x_k)\|^2`.
This converges to stationary points of smooth, possibly non-convex :math:`E` with Lipschitz gradient.

Round-off. Every energy comparison allows 8 ulps of :math:`|E|` (without which float32 energies fail the test on
noise; :mod:`deepinv_ext.priors.step_size`). The decrease a step demands, :math:`P = \frac{1}{2L}\|\nabla E\|^2`,
is compared with that round-off at the iteration's :math:`L`. Within 16 round-offs (``PRECISION_MARGIN``: just above one, a real decrease can hide in the
noise of the test) the point is *stationary to working precision*: a step is taken as long as it keeps the energy
within the round-off (the gradient can still shrink, for a stopping rule on the gradient or the step), and the
element stops, converged, when no step passes or the step that passes leaves :math:`x_k` unchanged in floating
point. Above that margin the decrease must show: :math:`L` is not raised past the point where :math:`P` would fall
below one round-off (there the test could not tell a decrease from noise, and at a huge :math:`L` an uphill step
would pass), and an element whose plain step from :math:`x_k` shows none stops at :math:`x_k`, *stalled*
(``DescentResult.stalled``, not converged): an inconsistent gradient, e.g. of the wrong sign, or an energy that is
not smooth at that scale.

Every batch element has its own :math:`L_k`, momentum, acceptance and stopping. Two stopping rules can be given:
``grad_converged(x, g)``, tested on the extrapolated point :math:`\bar x_k` and its gradient before the step (an element
that passes returns :math:`\bar x_k`, the point whose gradient was measured), and ``step_converged(x_k, x_{k+1},
E_k, E_{k+1})`` tested after the step (an element that passes returns :math:`x_{k+1}`).

The iterations are recorded by autograd when the caller has it enabled and the energy depends on tensors that require
grad (differentiation by unrolling; the backtracking and restart decisions are held fixed); ``torch.where`` selects
per element, so nothing leaves the device except the "is any element still running" tests.

The scheme is that of :footcite:t:`kobler2020total` (appendix E): FISTA with backtracking :footcite:p:`beck2009fast`
and adaptive restart :footcite:p:`odonoghue2015adaptive`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from deepinv_ext._batch import batch_sqnorm, per_sample
from deepinv_ext._convergence import PRECISION_MARGIN
from deepinv_ext._validation import finite_values, positive_int
from deepinv_ext.priors.step_size import ArmijoStepSize, Backtracking

__all__ = ["Backtracking", "DescentResult", "accelerated_descent", "batch_sqnorm"]

Energy = Callable[[Tensor], Tensor]
EnergyAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class DescentResult:
    r"""What :func:`accelerated_descent` returns.

    :param torch.Tensor x: the final iterates ``(B, ...)``.
    :param torch.Tensor energy: their energies ``(B,)``.
    :param torch.Tensor iterations: accelerated steps taken by each element ``(B,)`` (int64).
    :param torch.Tensor converged: whether each element met a stopping rule or is stationary to working precision
        ``(B,)`` (bool).
    :param torch.Tensor lipschitz: the final Lipschitz estimate :math:`L` of each element ``(B,)``.
    :param torch.Tensor stalled: whether each element stopped because no step lowered its energy although a
        decrease was predicted ``(B,)`` (bool; such an element has ``converged`` False).
    :param torch.Tensor not_finite: whether each element's starting energy was NaN or infinite ``(B,)`` (bool; such
        an element stops at once, at ``x0``, with ``converged`` False).
    """

    x: Tensor
    energy: Tensor
    iterations: Tensor
    converged: Tensor
    lipschitz: Tensor
    stalled: Tensor
    not_finite: Tensor


@dataclass
class _State:
    x: Tensor
    x_prev: Tensor
    e: Tensor
    t: Tensor
    active: Tensor
    iterations: Tensor
    converged: Tensor
    stalled: Tensor


@dataclass
class _Step:
    """The outcome of one iteration per element: the new point, energy and momentum, and which elements stalled (they
    stay at :math:`x_k`)."""

    x: Tensor
    e: Tensor
    t: Tensor
    stalled: Tensor


def _momentum_step(state: _State, energy: Energy, energy_and_grad: EnergyAndGrad, rule: ArmijoStepSize,
                   x_bar: Tensor, e_bar: Tensor, g: Tensor, t_new: Tensor) -> _Step:
    """One monotone accelerated step from ``x_bar``, redone from ``x_k`` without momentum where it fails; an element
    whose plain step finds no decrease although one was predicted (more than ``PRECISION_MARGIN`` round-offs) has
    stalled, one whose predicted decrease is within that margin stays, stationary. Updates ``rule``'s :math:`L`."""
    x, e, active = state.x, state.e, state.active
    L_iteration = rule.lipschitz
    x_new, e_new, ok = rule.search(energy, x_bar, e_bar, g, active)
    redo = active & ~(ok & rule.no_increase(e, e_new))  # no step from x_bar, or above E(x_k)
    stalled = torch.zeros_like(active)
    if redo.any():  # a plain step from x_k, the momentum restarted
        e_x, g_x = energy_and_grad(x)
        # a curvature validated at x_bar, else the iteration's own estimate
        rule.lipschitz = torch.where(ok, rule.lipschitz, L_iteration)
        predicted = rule.visible(batch_sqnorm(g_x), e_x, PRECISION_MARGIN)
        x_r, e_r, ok_r = rule.search(energy, x, e_x, g_x, redo)
        take = redo & ok_r & rule.no_increase(e, e_r)
        stalled = redo & ~take & predicted
        x_new = torch.where(per_sample(take, x), x_r, torch.where(per_sample(redo, x), x, x_new))
        e_new = torch.where(take, e_r, torch.where(redo, e, e_new))
        t_new = torch.where(redo, torch.ones_like(t_new), t_new)
    return _Step(x_new, e_new, t_new, stalled)


def _freeze(state: _State, hit: Tensor, x: Tensor, e: Tensor) -> None:
    """Elements ``hit`` stop here, at ``(x, e)``, converged."""
    state.x = torch.where(per_sample(hit, x), x, state.x)
    state.e = torch.where(hit, e, state.e)
    state.converged = state.converged | hit
    state.active = state.active & ~hit


def accelerated_descent(energy: Energy, energy_and_grad: EnergyAndGrad, x0: Tensor, *, max_iter: int,
                        lipschitz: float | Tensor = 1.0, backtracking: Backtracking | None = None,
                        grad_converged: Callable[[Tensor, Tensor], Tensor] | None = None,
                        step_converged: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None,
                        callback: Callable[[int, Tensor, Tensor], None] | None = None,
                        progress: bool = False) -> DescentResult:
    r"""Minimise a batch of smooth energies by accelerated gradient descent with backtracking and monotone restart.

    For an energy :math:`E` with one value per batch element, every element runs

    .. math::

        \bar x_k = x_k + \beta_k (x_k - x_{k-1}), \qquad x_{k+1} = \bar x_k - \tfrac{1}{L_k}\nabla E(\bar x_k),

    with FISTA's :math:`\beta_k = (t_{k-1}-1)/t_k`, :math:`t_k = (1 + \sqrt{1 + 4t_{k-1}^2})/2`
    :footcite:p:`beck2009fast`, and its own :math:`L_k`, raised until
    :math:`E(x_{k+1}) \le E(\bar x_k) - \frac{1}{2L_k}\|\nabla E(\bar x_k)\|^2`
    (:class:`~deepinv_ext.priors.ArmijoStepSize`, :math:`c = 1/2`) and relaxed by ``decrease`` afterwards. A
    momentum step that fails the condition or raises :math:`E` above :math:`E(x_k)` is redone from :math:`x_k`
    without momentum, and the momentum restarted :footcite:p:`odonoghue2015adaptive`, so that :math:`E(x_k)` never
    increases; this converges to stationary points of smooth, possibly non-convex :math:`E` with Lipschitz gradient.
    It is the minimiser of :footcite:t:`kobler2020total` (appendix E); the module
    :mod:`deepinv_ext.priors.accelerated` details its round-off rules.

    :param Callable energy: :math:`x \mapsto E(x)`, shape ``(B,)``.
    :param Callable energy_and_grad: :math:`x \mapsto (E(x), \nabla E(x))`.
    :param torch.Tensor x0: the starting points ``(B, ...)``.
    :param int max_iter: maximum number of accelerated steps (>= 0).
    :param float, torch.Tensor lipschitz: initial Lipschitz estimate :math:`L_0 > 0`, a number or one per element.
    :param Backtracking backtracking: the backtracking constants (default :class:`Backtracking`).
    :param Callable grad_converged: ``(x, g) -> (B,) bool``, stopping rule on a point and its gradient.
    :param Callable step_converged: ``(x_k, x_{k+1}, E_k, E_{k+1}) -> (B,) bool``, stopping rule on a step.
    :param Callable callback: ``callback(k, x_k, E_k)`` at the start (:math:`k = 0`) and after every iteration.
    :param bool progress: show a tqdm progress bar.
    :return: a :class:`DescentResult`. Elements that met no stopping rule within ``max_iter`` steps (after a last
        test of ``grad_converged`` at the final iterate), and elements that stalled (module docstring), have
        ``converged`` False; elements stationary to working precision have it True.

    |sep|

    :Examples:

    Two quadratics :math:`E(x) = 2\|x - c\|^2` (:math:`\nabla E` 4-Lipschitz) from :math:`L_0 = 1`:

    >>> import torch
    >>> from deepinv_ext.priors import accelerated_descent
    >>> c = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64)
    >>> energy = lambda x: 2 * (x - c).pow(2).sum(1)
    >>> result = accelerated_descent(energy, lambda x: (energy(x), 4 * (x - c)), torch.zeros_like(c), max_iter=100,
    ...                              grad_converged=lambda x, g: g.norm(dim=1) < 1e-8)
    >>> result.converged.tolist(), torch.allclose(result.x, c)
    ([True, True], True)
    """
    positive_int(max_iter, "max_iter", minimum=0)
    finite_values(lipschitz, "lipschitz", strict=True)
    B = x0.shape[0]
    L0 = torch.as_tensor(lipschitz, dtype=x0.dtype, device=x0.device)
    rule = ArmijoStepSize(L0.expand(B).clone() if L0.dim() == 0 else L0.reshape(B).clone(), backtracking)
    state = _State(x=x0, x_prev=x0, e=energy(x0), t=torch.ones(B, dtype=x0.dtype, device=x0.device),
                   active=torch.ones(B, dtype=torch.bool, device=x0.device),  # set below
                   iterations=torch.zeros(B, dtype=torch.long, device=x0.device),
                   converged=torch.zeros(B, dtype=torch.bool, device=x0.device),
                   stalled=torch.zeros(B, dtype=torch.bool, device=x0.device))
    # an element whose energy is not finite (a NaN in x0, an energy that overflows) has no descent to validate: it
    # stops at once, not converged, and keeps x0 (the NaN stays visible)
    not_finite = ~torch.isfinite(state.e.detach())
    state.active = ~not_finite
    if callback is not None:
        callback(0, state.x, state.e)
    for k in tqdm(range(1, max_iter + 1), disable=not progress, desc="accelerated descent"):
        t_new = (1 + torch.sqrt(1 + 4 * state.t * state.t)) / 2
        x_bar = state.x + per_sample((state.t - 1) / t_new, state.x) * (state.x - state.x_prev)
        e_bar, g = energy_and_grad(x_bar)
        if grad_converged is not None:
            _freeze(state, state.active & grad_converged(x_bar, g), x_bar, e_bar)
            if not state.active.any():
                break
        step = _momentum_step(state, energy, energy_and_grad, rule, x_bar, e_bar, g, t_new)
        active = state.active
        # no step passed, or only one too small to change x_k in floating point: stationary to working precision
        flat = active & (step.x == state.x).flatten(1).all(dim=1) & ~step.stalled
        moved = active & ~flat & ~step.stalled
        done = moved & step_converged(state.x, step.x, state.e, step.e) if step_converged is not None \
            else torch.zeros_like(active)
        state.x_prev = torch.where(per_sample(active, state.x), state.x, state.x_prev)
        state.x = torch.where(per_sample(active, state.x), step.x, state.x)
        state.e = torch.where(active, step.e, state.e)
        state.t = torch.where(active, step.t, state.t)
        rule.relax(active)
        state.iterations = state.iterations + moved.long()
        state.converged = state.converged | done | flat
        state.stalled = state.stalled | step.stalled
        state.active = moved & ~done
        if callback is not None:
            callback(k, state.x, state.e)
        if not state.active.any():
            break
    if grad_converged is not None and state.active.any():  # the last iterate may pass the rule
        e_last, g_last = energy_and_grad(state.x)
        _freeze(state, state.active & grad_converged(state.x, g_last), state.x, e_last)
    return DescentResult(state.x, state.e, state.iterations, state.converged, rule.lipschitz, state.stalled,
                        not_finite)

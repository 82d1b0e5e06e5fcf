r"""Batched accelerated gradient descent with per-element Lipschitz backtracking and monotone restart.

The one minimiser of smooth energies in deepinv-ext: :class:`deepinv_ext.algorithms.VariationalSolver` runs it on
:math:`\frac{w}{2}\|Ax - y\|^2 + R(x)`, and :meth:`deepinv_ext.priors.SmoothLearnedPrior.prox` on the prox problem
:math:`\frac12\|u - x\|^2 + \gamma R(u)`. For an energy :math:`E` with one value per batch element,

.. math::

    \bar x_k = x_k + \beta_k (x_k - x_{k-1}), \qquad
    x_{k+1} = \bar x_k - \tfrac{1}{L_k}\nabla E(\bar x_k),

where :math:`L_k` is multiplied by ``increase`` until the sufficient-decrease condition
:math:`E(x_{k+1}) \le E(\bar x_k) - \frac{1}{2L_k}\|\nabla E(\bar x_k)\|^2` holds and is then relaxed
(:math:`L_{k+1} = \eta L_k`, ``decrease`` :math:`= \eta \le 1`), and :math:`\beta_k = (t_{k-1}-1)/t_k` with FISTA's
:math:`t_k = (1 + \sqrt{1 + 4t_{k-1}^2})/2`. The energy is kept monotone (up to a round-off allowance of 8 ulps of
:math:`|E|` in every energy comparison, without which float32 energies stall the iteration far from
stationarity): a step that would raise :math:`E` above :math:`E(x_k)` is redone from :math:`x_k` without momentum (and the momentum restarted), where the sufficient-decrease
condition guarantees :math:`E(x_{k+1}) \le E(x_k) - \frac{1}{2L_k}\|\nabla E(x_k)\|^2`. This converges to stationary
points of smooth, possibly non-convex :math:`E` with Lipschitz gradient.

Every batch element has its own :math:`L_k`, momentum, acceptance and stopping. Two stopping rules can be given:
``grad_converged(x, g)``, tested on the extrapolated point :math:`\bar x_k` and its gradient before the step (an element
that passes returns :math:`\bar x_k`, the point whose gradient was measured), and ``step_converged(x_k, x_{k+1},
E_k, E_{k+1})`` tested after the step (an element that passes returns :math:`x_{k+1}`).

The iterations are recorded by autograd when the caller has it enabled and the energy depends on tensors that require
grad (differentiation by unrolling; the backtracking and restart decisions are held fixed); ``torch.where`` selects
per element, so nothing leaves the device except the "is any element still running" tests.

References: E. Kobler, A. Effland, K. Kunisch, T. Pock, "Total Deep Variation for Linear Inverse Problems", CVPR 2020,
appendix E; A. Beck, M. Teboulle, SIAM J. Imaging Sci. 2 (2009) (FISTA with backtracking); B. O'Donoghue, E. Candès,
Found. Comput. Math. 15 (2015) (adaptive restart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from deepinv_ext._batch import per_sample

__all__ = ["Backtracking", "DescentResult", "accelerated_descent", "batch_sqnorm"]

Energy = Callable[[Tensor], Tensor]
EnergyAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


def batch_sqnorm(x: Tensor) -> Tensor:
    r""":math:`\|x_b\|_2^2` of each batch element, shape ``(B,)``."""
    return x.pow(2).flatten(1).sum(dim=1)


def _roundoff(e: Tensor) -> Tensor:
    """The round-off allowance of an energy test: a few ulps of ``|e|`` (energies sum many terms)."""
    return 8 * torch.finfo(e.dtype).eps * e.detach().abs()


@dataclass(frozen=True)
class Backtracking:
    r"""The Lipschitz backtracking of :func:`accelerated_descent`.

    :param float increase: factor applied to :math:`L` when the sufficient-decrease condition fails (> 1).
    :param float decrease: factor applied to :math:`L` after an accepted step (in (0, 1]).
    :param int max_backtracking: maximum increases of :math:`L` in one iteration.
    """

    increase: float = 2.0
    decrease: float = 0.9
    max_backtracking: int = 50

    def __post_init__(self) -> None:
        if not self.increase > 1:
            raise ValueError(f"increase must be > 1, got {self.increase}")
        if not 0 < self.decrease <= 1:
            raise ValueError(f"decrease must lie in (0, 1], got {self.decrease}")
        if isinstance(self.max_backtracking, bool) or not isinstance(self.max_backtracking, int) \
                or self.max_backtracking < 0:
            raise ValueError(f"max_backtracking must be a non-negative int, got {self.max_backtracking!r}")

    def step(self, energy: Energy, anchor: Tensor, e_anchor: Tensor, g: Tensor, L: Tensor,
             active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Gradient step from ``anchor`` with :math:`L` increased per active element until
        :math:`E(x) \le E(\text{anchor}) - \|g\|^2/(2L)` up to the round-off of the energies (8 ulps of
        :math:`|E(\text{anchor})|`, without which float32 energies stall the backtracking); returns
        ``(x, E(x), L)``."""
        gsq = batch_sqnorm(g)
        slack = _roundoff(e_anchor)
        x = anchor - g / per_sample(L, g)
        e = energy(x)
        for _ in range(self.max_backtracking):
            bad = active & ~(e <= e_anchor - 0.5 * gsq / L + slack)
            if not bad.any():
                break
            L = torch.where(bad, L * self.increase, L)
            x_try = anchor - g / per_sample(L, g)
            e_try = energy(x_try)
            x = torch.where(per_sample(bad, x), x_try, x)
            e = torch.where(bad, e_try, e)
        return x, e, L


@dataclass
class DescentResult:
    r"""What :func:`accelerated_descent` returns.

    :param torch.Tensor x: the final iterates ``(B, ...)``.
    :param torch.Tensor energy: their energies ``(B,)``.
    :param torch.Tensor iterations: accelerated steps taken by each element ``(B,)`` (int64).
    :param torch.Tensor converged: whether each element met a stopping rule ``(B,)`` (bool).
    :param torch.Tensor lipschitz: the final Lipschitz estimate :math:`L` of each element ``(B,)``.
    """

    x: Tensor
    energy: Tensor
    iterations: Tensor
    converged: Tensor
    lipschitz: Tensor


@dataclass
class _State:
    x: Tensor
    x_prev: Tensor
    e: Tensor
    t: Tensor
    L: Tensor
    active: Tensor
    iterations: Tensor
    converged: Tensor


def _momentum_step(state: _State, energy: Energy, energy_and_grad: EnergyAndGrad, backtracking: Backtracking,
                   x_bar: Tensor, e_bar: Tensor, g: Tensor, t_new: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One monotone accelerated step from ``x_bar``: returns ``(x_new, e_new, L, t_new)``."""
    x, e, active = state.x, state.e, state.active
    x_new, e_new, L = backtracking.step(energy, x_bar, e_bar, g, state.L, active)
    slack = _roundoff(e)
    up = active & ~(e_new <= e + slack)  # the momentum step raised the energy: redo a plain step from x_k, restart
    if up.any():
        e_x, g_x = energy_and_grad(x)
        x_r, e_r, L_r = backtracking.step(energy, x, e_x, g_x, L, up)
        x_new = torch.where(per_sample(up, x), x_r, x_new)
        e_new = torch.where(up, e_r, e_new)
        L = torch.where(up, L_r, L)
        t_new = torch.where(up, torch.ones_like(t_new), t_new)
        stuck = up & ~(e_new <= e + slack)  # no decrease even without momentum: stay put
        x_new = torch.where(per_sample(stuck, x), x, x_new)
        e_new = torch.where(stuck, e, e_new)
    return x_new, e_new, L, t_new


def _freeze(state: _State, hit: Tensor, x: Tensor, e: Tensor) -> None:
    """Elements ``hit`` stop here, at ``(x, e)``, converged."""
    state.x = torch.where(per_sample(hit, x), x, state.x)
    state.e = torch.where(hit, e, state.e)
    state.converged = state.converged | hit
    state.active = state.active & ~hit


def accelerated_descent(energy: Energy, energy_and_grad: EnergyAndGrad, x0: Tensor, *, max_iter: int,
                        lipschitz: float | Tensor = 1.0, backtracking: Backtracking = Backtracking(),
                        grad_converged: Callable[[Tensor, Tensor], Tensor] | None = None,
                        step_converged: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None,
                        callback: Callable[[int, Tensor, Tensor], None] | None = None,
                        progress: bool = False) -> DescentResult:
    r"""Minimise a batch of smooth energies by accelerated gradient descent with backtracking (module docstring).

    :param Callable energy: :math:`x \mapsto E(x)`, shape ``(B,)``.
    :param Callable energy_and_grad: :math:`x \mapsto (E(x), \nabla E(x))`.
    :param torch.Tensor x0: the starting points ``(B, ...)``.
    :param int max_iter: maximum number of accelerated steps.
    :param float, torch.Tensor lipschitz: initial Lipschitz estimate :math:`L_0`, a number or one per element.
    :param Backtracking backtracking: the backtracking constants.
    :param Callable grad_converged: ``(x, g) -> (B,) bool``, stopping rule on a point and its gradient.
    :param Callable step_converged: ``(x_k, x_{k+1}, E_k, E_{k+1}) -> (B,) bool``, stopping rule on a step.
    :param Callable callback: ``callback(k, x_k, E_k)`` at the start (:math:`k = 0`) and after every iteration.
    :param bool progress: show a tqdm progress bar.
    :return: a :class:`DescentResult`. Elements that met no stopping rule within ``max_iter`` steps (after a last
        test of ``grad_converged`` at the final iterate) have ``converged`` False.
    """
    B = x0.shape[0]
    L0 = torch.as_tensor(lipschitz, dtype=x0.dtype, device=x0.device)
    state = _State(x=x0, x_prev=x0, e=energy(x0), t=torch.ones(B, dtype=x0.dtype, device=x0.device),
                   L=L0.expand(B).clone() if L0.dim() == 0 else L0.reshape(B).clone(),
                   active=torch.ones(B, dtype=torch.bool, device=x0.device),
                   iterations=torch.zeros(B, dtype=torch.long, device=x0.device),
                   converged=torch.zeros(B, dtype=torch.bool, device=x0.device))
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
        x_new, e_new, L, t_new = _momentum_step(state, energy, energy_and_grad, backtracking, x_bar, e_bar, g,
                                              t_new)
        done = state.active & step_converged(state.x, x_new, state.e, e_new) if step_converged is not None \
            else torch.zeros_like(state.active)
        active = state.active
        state.x_prev = torch.where(per_sample(active, state.x), state.x, state.x_prev)
        state.x = torch.where(per_sample(active, state.x), x_new, state.x)
        state.e = torch.where(active, e_new, state.e)
        state.t = torch.where(active, t_new, state.t)
        state.L = torch.where(active, L * backtracking.decrease, state.L)
        state.iterations = state.iterations + active.long()
        state.converged = state.converged | done
        state.active = active & ~done
        if callback is not None:
            callback(k, state.x, state.e)
        if not state.active.any():
            break
    if grad_converged is not None and state.active.any():  # the last iterate may pass the rule
        e_last, g_last = energy_and_grad(state.x)
        _freeze(state, state.active & grad_converged(state.x, g_last), state.x, e_last)
    return DescentResult(state.x, state.e, state.iterations, state.converged, state.L)

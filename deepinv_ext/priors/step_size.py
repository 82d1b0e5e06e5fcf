r"""Per-image Armijo backtracking: a step :math:`1/L_b` for every image :math:`b` of a batch, and its test.

The descent solvers of deepinv-ext (:func:`deepinv_ext.priors.accelerated.accelerated_descent`, hence
:class:`~deepinv_ext.algorithms.VariationalSolver` and the priors' proximal operators, and
:class:`~deepinv_ext.algorithms.GradientStepPnP`) take, for every image, a step of size :math:`1/L` from a point
:math:`x` to a candidate :math:`x^+ = x - G/L`: :math:`G = \nabla E(x)` for a gradient step, the gradient mapping
:math:`G = L(x - x^+)` for a proximal-gradient step :math:`x^+ = \operatorname{prox}_{f/L}(x - \nabla g(x)/L)`. A
candidate is accepted by the Armijo (sufficient-decrease) condition

.. math::

    E(x^+) \le E(x) - c\,\frac{\|G\|^2}{L} + s\,R(x), \qquad R(x) = 8\,\epsilon_{\text{dtype}}|E(x)|,

which holds once :math:`L \ge M / (2(1 - c))`, :math:`M` the Lipschitz constant of the gradient (of the smooth part,
for a proximal step); otherwise :math:`L` is multiplied by ``increase`` (the step shrinks) and the candidate
recomputed, at most ``max_backtracking`` times an iteration. After an iteration :math:`L` is multiplied by
``decrease`` :math:`\le 1` (the step may grow again). The constants are a :class:`Backtracking`; :class:`ArmijoStepSize` holds
them and :math:`L` per image, in the spirit of CIL's ``StepSizeRule`` and SCICO's ``PGMStepSize``; the iteration it
serves computes the candidates.

Round-off: the decrease the quadratic model predicts, :math:`P = \|G\|^2/(2L)`, is *visible* when above the round-off
:math:`R` of the energy. Where :math:`P` is within ``PRECISION_MARGIN`` round-offs at the iteration's first step, the
point is stationary to working precision and any candidate that passes the test is taken; elsewhere a candidate is
accepted only where its :math:`P` is visible, so that a tiny step cannot pass on noise (a decrease predicted but never
seen is a stall: see :mod:`deepinv_ext._convergence`).

The condition is Armijo's :footcite:p:`armijo1966minimization`; the backtracking for the proximal gradient method is
that of :footcite:t:`beck2017first`, Sect. 10.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from deepinv_ext._batch import batch_sqnorm, per_sample
from deepinv_ext._convergence import PRECISION_MARGIN, roundoff
from deepinv_ext._validation import finite_number, positive_int

__all__ = ["ArmijoStepSize", "Backtracking"]


@dataclass(frozen=True)
class Backtracking:
    r"""The constants of the per-image Armijo backtracking (module docstring).

    :param float increase: factor on :math:`L` when a candidate is refused (> 1).
    :param float decrease: factor on :math:`L` after an accepted iteration (in (0, 1]; 1: never relaxed).
    :param int max_backtracking: maximum increases of :math:`L` in one iteration (>= 0).
    :param float sufficient_decrease: the Armijo constant :math:`c \in [0, 1)` (1/2: the decrease of the quadratic
        upper bound at :math:`L`).
    :param float slack: the round-offs :math:`s \ge 0` of :math:`E(x)` that the test allows.
    :raises ValueError: a constant out of its range.

    |sep|

    :Examples:

    >>> from deepinv_ext.priors import Backtracking, ProxConfig
    >>> bt = Backtracking(increase=4.0, decrease=1.0)  # a never-relaxed step, cut by 4 when refused
    >>> ProxConfig(backtracking=bt).backtracking.increase
    4.0
    """

    increase: float = 2.0
    decrease: float = 0.9
    max_backtracking: int = 50
    sufficient_decrease: float = 0.5
    slack: float = 1.0

    def __post_init__(self) -> None:
        finite_number(self.increase, "increase", minimum=1.0, strict=True)
        finite_number(self.decrease, "decrease", minimum=0.0, strict=True, maximum=1.0)
        positive_int(self.max_backtracking, "max_backtracking", minimum=0)
        if not finite_number(self.sufficient_decrease, "sufficient_decrease") < 1:
            raise ValueError(f"sufficient_decrease must be < 1 (no step shows a larger decrease), got "
                             f"{self.sufficient_decrease}")
        finite_number(self.slack, "slack")


class ArmijoStepSize:
    r"""A step :math:`1/L_b` per image with Armijo backtracking.

    By Armijo's rule :footcite:p:`armijo1966minimization`, a candidate :math:`x^+ = x - G/L` (:math:`G` the gradient, or the gradient mapping of a proximal step
    :footcite:p:`beck2017first`) is accepted where

    .. math::

        E(x^+) \le E(x) - c\,\frac{\|G\|^2}{L} + s\,R(x), \qquad R(x) = 8\,\epsilon_{\text{dtype}}|E(x)|,

    which holds once :math:`L \ge M / (2(1 - c))`, :math:`M` the Lipschitz constant of the gradient; otherwise
    :math:`L` is multiplied by ``increase`` (:meth:`backtrack`), and after an iteration by ``decrease``
    (:meth:`relax`). A candidate is accepted only where the predicted decrease :math:`P = \|G\|^2/(2L)` is above the
    round-off :math:`R` (:meth:`visible`), unless :math:`x` is stationary to working precision.

    :param torch.Tensor lipschitz: the initial estimates :math:`L_b > 0`, shape ``(B,)`` (kept as given: the caller
        checks them).
    :param Backtracking backtracking: the constants.

    |sep|

    :Examples:

    One gradient step on :math:`E(x) = 2\|x\|^2` (:math:`M = 4`) from :math:`L = 1`: the steps :math:`1` and
    :math:`1/2` are refused, :math:`1/4` is accepted.

    >>> import torch
    >>> from deepinv_ext.priors.step_size import ArmijoStepSize
    >>> rule = ArmijoStepSize(torch.ones(1, dtype=torch.float64))
    >>> energy = lambda x: 2 * x.pow(2).sum(1)
    >>> x = torch.ones(1, 3, dtype=torch.float64)
    >>> x_new, e_new, ok = rule.search(energy, x, energy(x), 4 * x, torch.ones(1, dtype=torch.bool))
    >>> rule.lipschitz.item(), e_new.item(), ok.item()
    (4.0, 0.0, True)
    """

    def __init__(self, lipschitz: Tensor, backtracking: Backtracking | None = None) -> None:
        if backtracking is not None and not isinstance(backtracking, Backtracking):
            raise TypeError(f"backtracking must be a deepinv_ext.priors.Backtracking, got {type(backtracking).__name__}")
        #: The constants (:class:`Backtracking`).
        self.backtracking = Backtracking() if backtracking is None else backtracking
        #: The Lipschitz estimates :math:`L_b`, shape ``(B,)``; the step of image :math:`b` is :math:`1/L_b`.
        self.lipschitz = lipschitz

    @property
    def step(self) -> Tensor:
        r"""The steps :math:`1/L_b`, shape ``(B,)``."""
        return 1 / self.lipschitz

    def predicted_decrease(self, gsq: Tensor, lipschitz: Tensor | None = None) -> Tensor:
        r""":math:`P = \|G\|^2/(2L)` per image.

        :param torch.Tensor gsq: :math:`\|G\|^2`, shape ``(B,)``.
        :param torch.Tensor lipschitz: the :math:`L` to use (default: the current estimates).
        """
        return 0.5 * gsq / (self.lipschitz if lipschitz is None else lipschitz)

    def visible(self, gsq: Tensor, e: Tensor, margin: float = 1.0, lipschitz: Tensor | None = None) -> Tensor:
        r"""Per image, whether :math:`P > \text{margin}\cdot R` (``e`` the energy at :math:`x`): whether the energy can
        show the predicted decrease. ``margin=PRECISION_MARGIN`` at the iteration's first step: where this is False,
        :math:`x` is stationary to working precision.

        :param torch.Tensor gsq: :math:`\|G\|^2`, shape ``(B,)``.
        :param torch.Tensor e: :math:`E(x)`, shape ``(B,)``.
        :param float margin: the number of round-offs :math:`P` must exceed.
        :param torch.Tensor lipschitz: the :math:`L` to use (default: the current estimates).
        """
        return self.predicted_decrease(gsq, lipschitz) > margin * roundoff(e)

    def accepts(self, e: Tensor, e_new: Tensor, gsq: Tensor, stationary: Tensor) -> Tensor:
        r"""Per image, whether the candidate passes: :math:`E(x^+) \le E(x) - c\|G\|^2/L + sR` and, unless ``stationary``
        (:math:`x` stationary to working precision, see :meth:`visible`), :math:`P > R`.

        :param torch.Tensor e: :math:`E(x)`, shape ``(B,)``.
        :param torch.Tensor e_new: :math:`E(x^+)`.
        :param torch.Tensor gsq: :math:`\|G\|^2`, the squared norm of the gradient (mapping) of the step.
        :param torch.Tensor stationary: per image, :math:`P \le` ``PRECISION_MARGIN`` :math:`R` at the iteration's
            first step.
        """
        bt = self.backtracking
        threshold = e - bt.sufficient_decrease * gsq / self.lipschitz
        if bt.slack:
            threshold = threshold + bt.slack * roundoff(e)
        return (e_new <= threshold) & (stationary | self.visible(gsq, e))

    @staticmethod
    def no_increase(e: Tensor, e_new: Tensor) -> Tensor:
        r"""Per image, :math:`E(x^+) \le E(x) + R`: no increase that the round-off cannot explain.

        :param torch.Tensor e: :math:`E(x)`, shape ``(B,)``.
        :param torch.Tensor e_new: :math:`E(x^+)`, shape ``(B,)``.
        """
        return e_new <= e + roundoff(e)

    def backtrack(self, refused: Tensor) -> None:
        r""":math:`L \leftarrow` ``increase`` :math:`\cdot L` (a shorter step) on the refused images.

        :param torch.Tensor refused: which images, ``(B,)`` bool.
        """
        self.lipschitz = torch.where(refused, self.lipschitz * self.backtracking.increase, self.lipschitz)

    def relax(self, moved: Tensor) -> None:
        r""":math:`L \leftarrow` ``decrease`` :math:`\cdot L` on the images that moved (after their iteration).

        :param torch.Tensor moved: which images, ``(B,)`` bool.
        """
        self.lipschitz = torch.where(moved, self.lipschitz * self.backtracking.decrease, self.lipschitz)

    def search(self, energy: Callable[[Tensor], Tensor], anchor: Tensor, e_anchor: Tensor, g: Tensor,
               active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Backtracking line search along :math:`-g`: :math:`x^+ = \text{anchor} - g/L`, with :math:`L` increased per
        active image until :meth:`accepts` holds.

        :math:`L` is not raised past the point where the predicted decrease of a non-stationary image would fall
        below one round-off (there the test could no longer tell a decrease from noise, and an uphill step would
        pass).

        :param Callable energy: :math:`x \mapsto E(x)`, shape ``(B,)``.
        :param torch.Tensor anchor: the point :math:`x`.
        :param torch.Tensor e_anchor: :math:`E(x)`.
        :param torch.Tensor g: the gradient at ``anchor``.
        :param torch.Tensor active: the images to search for (``(B,)`` bool; the others keep their :math:`L`).
        :return: ``(x+, E(x+), ok)``, ``ok`` (shape ``(B,)``) telling which images met the condition.
        """
        gsq = batch_sqnorm(g)
        stationary = ~self.visible(gsq, e_anchor, PRECISION_MARGIN)
        x = anchor - g / per_sample(self.lipschitz, g)
        e = energy(x)
        for _ in range(self.backtracking.max_backtracking):
            refused = active & ~self.accepts(e_anchor, e, gsq, stationary)
            grow = refused & (stationary | self.visible(gsq, e_anchor, lipschitz=self.lipschitz * self.backtracking.increase))
            if not grow.any():
                break
            self.backtrack(grow)
            x_try = anchor - g / per_sample(self.lipschitz, g)
            e_try = energy(x_try)
            x = torch.where(per_sample(grow, x), x_try, x)
            e = torch.where(grow, e_try, e)
        return x, e, self.accepts(e_anchor, e, gsq, stationary)

r"""The method of adaptive inexact descent (:class:`MAID`) :footcite:p:`salehi2024adaptively` for bilevel learning
with inexact lower-level solves, certified by the a-posteriori bound of :mod:`deepinv_ext.algorithms.hypergradient`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from deepinv.physics import LinearPhysics
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from tqdm import tqdm

from deepinv_ext._convergence import NotConvergedWarning
from deepinv_ext._validation import boolean, finite_number, positive_int
from deepinv_ext.algorithms.bilevel import BilevelReconstructor
from deepinv_ext.algorithms.hypergradient import Hypergradient, HypergradientBound, mixed_derivative_norm
from deepinv_ext.priors.implicit import solve_adjoint

__all__ = ["MAID"]


class MAID:
    r"""The method of adaptive inexact descent for bilevel learning on a batch :math:`(y, x_{\mathrm{true}})`, with the
    certified bound of :class:`HypergradientBound`.

    Introduced by :footcite:t:`salehi2024adaptively`.

    Each step, from the accuracies :math:`\varepsilon, \delta` and the step size :math:`\alpha`:

    1. solve the lower level until :math:`\|\nabla E(\tilde x)\| \le \mu\varepsilon` (warm-started at the previous
       :math:`\tilde x`) and the adjoint system to residual :math:`\delta`; compute :math:`z` and its bound
       :math:`\omega`; while :math:`\omega > (1-\eta)\|z\|` (then :math:`z` may not be a descent direction), tighten
       :math:`\varepsilon, \delta` by ``tighten`` and recompute;
    2. backtrack :math:`\alpha \leftarrow \rho\alpha` until the certified sufficient decrease
       :math:`\ell(\tilde x^+) + e(\tilde x^+) \le \ell(\tilde x) - e(\tilde x) - \eta\alpha\|z\|^2` holds at
       :math:`\theta^+ = \theta - \alpha z`, with :math:`e` the loss error bound
       (:meth:`HypergradientBound.loss_error`): the *exact* upper-level loss then decreases;
    3. on success, loosen :math:`\varepsilon, \delta` by ``loosen`` and grow :math:`\alpha` by ``step_growth``; if
       no step passes within ``max_backtracking``, keep :math:`\theta` and tighten :math:`\varepsilon, \delta`.

    Before step 2, a point whose certified upper bound :math:`\|z\| + \omega` on :math:`\|\nabla f(\theta)\|` is
    at most ``tol`` is stationary: :meth:`run` stops there with ``converged`` True (it warns with a
    :class:`~deepinv_ext.algorithms.NotConvergedWarning` if ``tol > 0`` and the steps ran out first).

    With ``adaptive=False`` the accuracies stay fixed (the baseline of a fixed tight tolerance; the step is still
    found by backtracking). Departures from the paper: the acceptance test subtracts the loss error bound on both
    sides, where the authors' public code adds the quadratic term on the new side only, so that an accepted step
    provably lowers the exact loss; the bound's Lipschitz constants are given (``bound``, which may depend on the
    current :math:`\lambda`) instead of estimated from random perturbations, and :math:`\|J\|` is computed by power
    iteration (:func:`mixed_derivative_norm`); the lower level is solved by accelerated gradient descent; the
    non-smooth lower levels of primal-dual form (Bogensperger et al.) are not covered.

    ``history`` holds one record per step (upper-level loss, accuracies, bound, step, and the cumulative lower-level
    and conjugate-gradient iterations); ``lower_iterations`` and ``cg_iterations`` the totals.

    :param deepinv_ext.algorithms.BilevelReconstructor model: the lower level (``hypergradient="implicit"``);
        its parameters that require grad are learned.
    :param HypergradientBound, Callable bound: the bound's constants, or a function of ``model`` returning them.
    :param float eps: the initial :math:`\varepsilon`.
    :param float delta: the initial :math:`\delta`.
    :param float step: the initial :math:`\alpha`.
    :param bool adaptive: adapt :math:`\varepsilon, \delta` (``False``: keep them).
    :param float eta: :math:`\eta \in (0, 1)`.
    :param float backtrack: :math:`\rho \in (0, 1)`.
    :param float tighten: the factor in :math:`(0, 1)` applied to :math:`\varepsilon, \delta` when they are too
        loose.
    :param float loosen: the factor :math:`\ge 1` applied after a successful step.
    :param float step_growth: the factor :math:`\ge 1` applied to :math:`\alpha` after a successful step.
    :param int max_backtracking: step sizes tried per step.
    :param int max_tightening: tightenings allowed per step.
    :param int power_iterations: iterations of :func:`mixed_derivative_norm`.
    :param float tol: the stationarity tolerance on the certified bound of :math:`\|\nabla f\|` (0: never stop
        early).
    :param bool progress: show a progress bar in :meth:`run`.
    :raises ValueError: a model without the implicit hypergradient or without parameters to learn, or constants out
        of range.

    |sep|

    :Examples:

    Learn :math:`\lambda` of deepinv's Tikhonov prior :math:`R(x) = \frac12\|x\|^2` for denoising: the energy is
    quadratic (:math:`L_H = 0`), :math:`\mu = 1`, and :math:`\ell` has :math:`L_\ell = 1/B`.

    >>> import deepinv as dinv, torch
    >>> from deepinv_ext.algorithms import MAID, BilevelReconstructor, HypergradientBound
    >>> x_true = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> y = x_true + 0.3 * torch.randn(x_true.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    >>> model = BilevelReconstructor(dinv.optim.prior.Tikhonov(), lam=0.01).double()
    >>> maid = MAID(model, lambda m: HypergradientBound(1.0, loss_lipschitz=0.5, mixed_lipschitz=m.regularizer.lam.item()))
    >>> history = maid.run(y, dinv.physics.Denoising(), x_true, steps=10)
    >>> history[-1]["loss"] < history[0]["loss"]
    True
    """

    def __init__(self, model: BilevelReconstructor, bound: HypergradientBound | Callable, *, eps: float = 1e-1,
                 delta: float = 1e-1, step: float = 1.0, adaptive: bool = True, eta: float = 1e-4,
                 backtrack: float = 0.5, tighten: float = 0.5, loosen: float = 1.05, step_growth: float = 10 / 9,
                 max_backtracking: int = 10, max_tightening: int = 20, power_iterations: int = 20,
                 tol: float = 0.0, progress: bool = False) -> None:
        if not isinstance(model, BilevelReconstructor) or model.hypergradient != "implicit":
            raise ValueError("MAID needs a BilevelReconstructor with hypergradient='implicit'")
        self.model, self.bound = model, bound
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("MAID: the model has no parameter that requires grad (nothing to learn)")
        self.eps = finite_number(eps, "eps", strict=True)
        self.delta = finite_number(delta, "delta", strict=True)
        self.step_size = finite_number(step, "step", strict=True)
        self.adaptive = boolean(adaptive, "adaptive")
        self.eta = finite_number(eta, "eta", strict=True, maximum=1.0)
        self.backtrack = finite_number(backtrack, "backtrack", strict=True, maximum=1.0)
        self.tighten = finite_number(tighten, "tighten", strict=True, maximum=1.0)
        self.loosen = finite_number(loosen, "loosen", minimum=1.0)
        self.step_growth = finite_number(step_growth, "step_growth", minimum=1.0)
        self.max_backtracking = positive_int(max_backtracking, "max_backtracking")
        self.max_tightening = positive_int(max_tightening, "max_tightening", minimum=0)
        self.power_iterations = positive_int(power_iterations, "power_iterations")
        self.tol = finite_number(tol, "tol")
        self.progress = boolean(progress, "progress")
        self.converged = False
        self.x: Tensor | None = None
        self.lower_iterations = 0
        self.cg_iterations = 0
        self.history: list[dict] = []

    def constants(self) -> HypergradientBound:
        r"""The bound's constants at the current parameters (``bound``, or ``bound(model)``)."""
        return self.bound if isinstance(self.bound, HypergradientBound) else self.bound(self.model)

    @staticmethod
    def loss(x: Tensor, x_true: Tensor) -> Tensor:
        r"""The upper-level loss :math:`\ell(x) = \frac{1}{2B}\sum_b \|x_b - x_{\mathrm{true},b}\|^2`.

        :param torch.Tensor x: the reconstructions ``(B, ...)``.
        :param torch.Tensor x_true: the ground truth.
        :return: the loss, a scalar tensor.
        """
        return 0.5 * (x - x_true).pow(2).sum() / x.shape[0]

    def _lower_level(self, y: Tensor, physics: LinearPhysics, x_init: Tensor | None) -> Tensor:
        self.model.grad_tol = self.constants().strong_convexity * self.eps / math.sqrt(y.shape[0])
        x = self.model(y, physics, x_init=x_init)
        self.lower_iterations += self.model.lower_iterations
        return x

    def hypergradient(self, y: Tensor, physics: LinearPhysics, x_true: Tensor) -> Hypergradient:
        r"""The inexact hypergradient at the current accuracies and its certificate (warm-started at the last
        :math:`\tilde x`).

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator.
        :param torch.Tensor x_true: the ground truth.
        :return: a :class:`Hypergradient`.
        """
        constants = self.constants()
        with torch.no_grad():
            x = self._lower_level(y, physics, self.x)
            lower = self.model.lower_iterations
        loss_grad = (x - x_true) / x.shape[0]
        loss_grad_norm = float(loss_grad.norm())
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            energy_grad = self.model.energy_grad(z, y, physics)
            adjoint = solve_adjoint(z - energy_grad, z, loss_grad, max_iter=self.model.cg_max_iter,
                                    tol=min(self.delta / max(loss_grad_norm, torch.finfo(x.dtype).tiny), 1.0))
            grads = torch.autograd.grad(energy_grad, self.params, -adjoint.v, retain_graph=True, allow_unused=True)
            mixed = mixed_derivative_norm(energy_grad, self.params, self.power_iterations)
        self.cg_iterations += adjoint.iterations
        eps = float(energy_grad.detach().norm()) / constants.strong_convexity
        delta = float(adjoint.residual.norm())
        flat = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(self.params, grads)])
        self.x = x
        return Hypergradient(flat, float(self.loss(x, x_true)), x, eps, delta,
                             constants(eps, delta, loss_grad_norm, mixed), loss_grad_norm, lower, adjoint.iterations)

    def step(self, y: Tensor, physics: LinearPhysics, x_true: Tensor) -> dict:
        r"""One step of the method (class docstring); appends its record to ``history``.

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator.
        :param torch.Tensor x_true: the ground truth.
        :return: the record: ``loss`` (at the step's start), ``eps`` and ``delta`` (reached), ``accuracy`` (the
            targets :math:`(\varepsilon, \delta)` the step used), ``bound``, ``grad_norm``, ``step``, ``accepted``,
            ``backtracks``, ``decrease`` (the certified decrease of the exact loss, 0 if no step was taken),
            ``stationary`` (the point passed ``tol``; no step taken), ``lower_iterations`` and ``cg_iterations``
            (cumulative).
        """
        for _ in range(self.max_tightening + 1):
            hg = self.hypergradient(y, physics, x_true)
            norm = float(hg.grad.norm())
            if not self.adaptive or hg.bound <= (1 - self.eta) * norm:
                break
            self.eps, self.delta = self.eps * self.tighten, self.delta * self.tighten
        record = {"loss": hg.loss, "eps": hg.eps, "delta": hg.delta, "accuracy": (self.eps, self.delta),
                  "bound": hg.bound, "grad_norm": norm, "step": 0.0, "accepted": False, "backtracks": 0,
                  "decrease": 0.0, "stationary": norm + hg.bound <= self.tol}
        if not record["stationary"]:
            record.update(self._line_search(y, physics, x_true, hg, norm))
        record.update(lower_iterations=self.lower_iterations, cg_iterations=self.cg_iterations)
        self.history.append(record)
        return record

    def _line_search(self, y: Tensor, physics: LinearPhysics, x_true: Tensor, hg: Hypergradient, norm: float) -> dict:
        constants = self.constants()
        target = hg.loss - constants.loss_error(hg.eps, hg.loss_grad_norm)
        theta = parameters_to_vector(self.params).detach().clone()
        accepted, alpha, i = False, self.step_size, 0
        for i in range(self.max_backtracking):
            alpha = self.step_size * self.backtrack ** i
            with torch.no_grad():
                vector_to_parameters(theta - alpha * hg.grad, self.params)
                x = self._lower_level(y, physics, hg.x)
                new = self.constants()
                eps = float(self.model.residual.norm()) / new.strong_convexity
                upper = float(self.loss(x, x_true)) + new.loss_error(eps, float((x - x_true).norm()) / x.shape[0])
            if upper <= target - self.eta * alpha * norm * norm:
                accepted = True
                break
        if accepted:
            self.x, self.step_size = x, alpha * self.step_growth
            if self.adaptive:
                self.eps, self.delta = self.eps * self.loosen, self.delta * self.loosen
        else:
            with torch.no_grad():
                vector_to_parameters(theta, self.params)
            if self.adaptive:
                self.eps, self.delta = self.eps * self.tighten, self.delta * self.tighten
        return {"step": alpha, "accepted": accepted, "backtracks": i, "decrease": target - upper if accepted else 0.0}

    def state_dict(self) -> dict:
        r"""Everything a run needs to resume (``torch.save`` it): the model's state, the accuracies, the step size,
        the warm start, the counters and ``history``.

        :return: a dict for :meth:`load_state_dict`.
        """
        return {"model": self.model.state_dict(), "eps": self.eps, "delta": self.delta, "step": self.step_size,
                "x": self.x, "lower_iterations": self.lower_iterations, "cg_iterations": self.cg_iterations,
                "history": list(self.history), "converged": self.converged}

    def load_state_dict(self, state: dict) -> None:
        r"""Resume from :meth:`state_dict` (the model's parameters included).

        :param dict state: a dict from :meth:`state_dict`.
        """
        self.model.load_state_dict(state["model"])
        self.eps, self.delta, self.step_size, self.x = state["eps"], state["delta"], state["step"], state["x"]
        self.lower_iterations, self.cg_iterations = state["lower_iterations"], state["cg_iterations"]
        self.history, self.converged = list(state["history"]), state["converged"]

    def run(self, y: Tensor, physics: LinearPhysics, x_true: Tensor, steps: int) -> list[dict]:
        r"""Run up to ``steps`` steps (:meth:`step`), stopping at a certified stationary point (``tol``).

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator.
        :param torch.Tensor x_true: the ground truth.
        :param int steps: the number of steps.
        :return: ``history``.
        """
        for _ in tqdm(range(positive_int(steps, "steps")), disable=not self.progress, desc="MAID"):
            if self.step(y, physics, x_true)["stationary"]:
                self.converged = True
                break
        if self.tol > 0 and not self.converged:
            warnings.warn(f"MAID: no certified stationary point (||z|| + bound <= tol={self.tol:g}) within {steps} "
                          "steps", NotConvergedWarning, stacklevel=2)
        return self.history

r"""Nonlinear eigenfunctions of a regulariser: stationary points of :math:`R` on the sphere :math:`\|x\| = \|x_0\|`.

A pair :math:`(x, \lambda)` with :math:`\nabla R(x) = \lambda x` is a *nonlinear eigenpair* of :math:`R`
(:footcite:t:`kobler2020total`, Sect. 4.2). Starting from an image :math:`x_0`, one is found at a saddle point of the Lagrangian

.. math::

    \mathcal{L}(x, \lambda) = R(x) - \frac{\lambda}{2}\left(\|x\|_2^2 - \|x_0\|_2^2\right),

i.e. at a stationary point of :math:`R` on the sphere :math:`S = \{x : \|x\| = \|x_0\|\}` (eq. (15) of the paper),
reached by accelerated projected gradient descent on :math:`\mathcal{L}` with :math:`\lambda` the Rayleigh-type
estimate of the current point,

.. math::

    \lambda(x) = \frac{\langle \nabla R(x), x\rangle}{\|x\|^2}, \qquad
    d(x) = \nabla R(x) - \lambda(x)\,x, \qquad
    \rho(x) = \frac{\|d(x)\|}{\|\nabla R(x)\|},

:math:`d` the gradient of :math:`\mathcal{L}` in :math:`x` (the part of :math:`\nabla R` tangent to the sphere) and
:math:`\rho` the relative residual of the eigen-equation. With :math:`P(z) = \|x_0\|\, z / \|z\|` the projection onto
:math:`S`, an iteration is

.. math::

    y_k = P\big(x_k + \beta_k (x_k - x_{k-1})\big), \qquad x_{k+1} = P\big(y_k - d(y_k)/L_k\big),

with FISTA's momentum :math:`\beta_k = (t_{k-1} - 1)/t_k`, :math:`t_k = (1 + \sqrt{1 + 4t_{k-1}^2})/2`, and a
step :math:`1/L_k` per image by Armijo backtracking (the constants of :class:`~deepinv_ext.priors.Backtracking`):
:math:`L_k` is multiplied by ``increase`` until :math:`R(x_{k+1}) - R(y_k) \le -c\,\|d(y_k)\|^2/L_k`, and relaxed by
``decrease`` after the iteration. A momentum step that would end above :math:`R(x_k)` is not taken: the image stays
at :math:`x_k` and its momentum restarts (adaptive restart), so :math:`R(x_k)` does not increase.

Precision. Energy differences are measured by the trapezoidal rule for the Lagrangian,
:math:`\mathcal{L}(b) - \mathcal{L}(a) \approx \langle \nabla R(a) + \nabla R(b) - \lambda (a + b), b - a\rangle / 2`
(exact for quadratic :math:`R`, error :math:`O(\|b - a\|^3)`; :math:`R(b) - R(a)` on the sphere, but blind to the
rounding of the norms). Near an eigenfunction a step lowers :math:`R` by less than the round-off of :math:`R` in
float32, and less than the rounding of :math:`\|x\|` moves it (measured, a TDV on a 32x32 crop: a search on float32
energies stalls at :math:`\rho \approx 0.4`, one on the trapezoidal rule for :math:`R` at :math:`\rho \approx 0.02`).
Where the energies do resolve a step's predicted decrease (``PRECISION_MARGIN`` round-offs) they must show no rise,
which catches a gradient inconsistent with ``fn``. The iterates are kept in float64 and the prior is evaluated at them
rounded to the dtype of ``x0``; the residual is then limited by that rounding :math:`\delta` alone,
:math:`\rho \gtrsim \|(\nabla^2 R - \lambda)\delta\| / \|\nabla R\|` (measured: about :math:`2\cdot 10^{-4}` for the
float32 TDV on that crop; float32 iterates, rounded at every step, stalled at :math:`\rho = 1.5\cdot 10^{-3}` on
another with ``decrease=1``).

An image stops, converged, at the first point with :math:`\rho \le` ``tol``. It stops, *not* converged, when a step
without momentum finds no decrease (``stalled``: a ``grad`` that is not the gradient of ``fn``, or a residual below
the precision of the gradient), or at ``max_iter``; :class:`~deepinv_ext.algorithms.NotConvergedWarning` says which.

With ``zero_mean=True`` the search runs on the zero-mean images (mean over all but the batch dimension),
:math:`x_0` and the gradient replaced by their zero-mean parts. This is the right sphere for a regulariser that is
invariant to adding a constant, like :class:`~deepinv_ext.priors.TDV` (zero-mean first kernel): its gradient is
orthogonal to constants, so :math:`\nabla R(x) = \lambda x` with :math:`\lambda \ne 0` forces :math:`x` to have zero
mean, :math:`\rho \ge |\bar x|\sqrt{n}/\|x\|` for an image of mean :math:`\bar x` and :math:`n` entries, and from an
image with a mean the descent only moves towards a constant image.

:math:`R` is any :class:`deepinv.optim.Prior` with ``fn`` (one energy per image) and ``grad``; its
``energy_and_grad(x)`` is used where it has one (:class:`~deepinv_ext.priors.TDV`: one sweep for both). The authors'
public script (VLOGroup/tdv, ``eigenfunctions.py``) instead minimises the squared eigen-residual
:math:`\|\nabla R(x) - \lambda(x) x\|^2` over a replicate-padded, smoothly masked image clamped to :math:`[0, 1]`; this
function solves the sphere formulation of the paper (its Fig. 6 shows such eigenfunctions). The restart is that of
:footcite:t:`odonoghue2015adaptive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from deepinv.optim import Prior
from torch import Tensor
from tqdm import tqdm

from deepinv_ext._batch import batch_dot, batch_norm, batch_sqnorm, per_sample
from deepinv_ext._convergence import PRECISION_MARGIN, roundoff, warn_not_converged
from deepinv_ext._validation import (
    boolean,
    check_batch,
    check_finite,
    check_tensor,
    finite_number,
    positive_int,
)
from deepinv_ext.priors.step_size import ArmijoStepSize, Backtracking

__all__ = ["EigenfunctionResult", "nonlinear_eigenfunction"]


@dataclass
class EigenfunctionResult:
    r"""What :func:`nonlinear_eigenfunction` returns (``B`` images, ``K`` iterations run).

    :param torch.Tensor x: the eigenfunction estimates, shape and dtype of ``x0``, each on the sphere of its ``x0``.
    :param torch.Tensor eigenvalue: :math:`\lambda = \langle\nabla R(x), x\rangle/\|x\|^2` at ``x``, ``(B,)``.
    :param torch.Tensor residual: :math:`\rho = \|\nabla R(x) - \lambda x\|/\|\nabla R(x)\|` at ``x``, ``(B,)`` (0
        where :math:`\nabla R(x) = 0`).
    :param torch.Tensor energy: :math:`R(x)`, ``(B,)``.
    :param torch.Tensor iterations: iterations each image ran, ``(B,)`` int64.
    :param torch.Tensor converged: whether ``residual <= tol``, ``(B,)`` bool.
    :param torch.Tensor stalled: whether an image stopped because a step without momentum found no decrease,
        ``(B,)`` bool (never converged).
    :param torch.Tensor energy_history: :math:`R(x_k)`, :math:`k = 0..K`, ``(K + 1, B)`` (an image that stopped
        keeps its last value).
    :param torch.Tensor residual_history: :math:`\rho(x_k)`, ``(K + 1, B)``, the same way.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv.optim import Prior
    >>> from deepinv_ext.analysis import nonlinear_eigenfunction
    >>> prior = Prior(lambda x, *args, **kwargs: 0.5 * (x**2).sum(dim=(1, 2, 3)))  # every x is an eigenfunction
    >>> result = nonlinear_eigenfunction(prior, torch.rand(2, 1, 4, 4, dtype=torch.float64))
    >>> result.eigenvalue.tolist(), result.iterations.tolist(), tuple(result.energy_history.shape)
    ([1.0, 1.0], [0, 0], (1, 2))
    """

    x: Tensor
    eigenvalue: Tensor
    residual: Tensor
    energy: Tensor
    iterations: Tensor
    converged: Tensor
    stalled: Tensor
    energy_history: Tensor
    residual_history: Tensor


def _eigenpair(x: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r""":math:`(\lambda, d, \rho)` at ``x`` from its gradient ``g`` (module docstring)."""
    lam = batch_dot(g, x) / batch_sqnorm(x)
    d = g - per_sample(lam, x) * x
    gnorm = batch_norm(g)
    residual = torch.where(gnorm > 0, batch_norm(d) / gnorm.clamp_min(torch.finfo(g.dtype).tiny), 0.0)
    return lam, d, residual


class _Point(NamedTuple):
    """A point on the sphere with its energy and (centred) gradient."""

    x: Tensor
    e: Tensor
    g: Tensor


def _where(mask: Tensor, a: _Point, b: _Point) -> _Point:
    """``a`` on the images ``mask``, ``b`` elsewhere."""
    return _Point(*(torch.where(per_sample(mask, u), u, v) for u, v in zip(a, b)))


def _change(a: _Point, b: _Point, lam: Tensor) -> Tensor:
    r"""Per image, :math:`\mathcal{L}(b) - \mathcal{L}(a) \approx
    \langle\nabla R(a) + \nabla R(b) - \lambda(a + b), b - a\rangle/2`: the trapezoidal rule for the Lagrangian at the
    multiplier ``lam`` (:math:`R(b) - R(a)` when :math:`\|a\| = \|b\|`, but blind to the round-off of the norms)."""
    return 0.5 * batch_dot(a.g + b.g - per_sample(lam, a.x) * (a.x + b.x), b.x - a.x)


def _rise(a: _Point, b: _Point, lam: Tensor, slack: float) -> Tensor:
    r"""Per image, whether the energies show :math:`\mathcal{L}(b) > \mathcal{L}(a)` beyond ``slack`` round-offs of
    :math:`R(a)` (a gradient inconsistent with the energy shows here)."""
    rise = b.e - a.e - 0.5 * lam * batch_dot(b.x - a.x, b.x + a.x)
    return rise > slack * roundoff(a.e)


def _center(x: Tensor) -> Tensor:
    """``x`` minus its mean over all but the batch dimension."""
    return x - x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)


class _Sphere:
    """The sphere of radii ``radius`` (of the zero-mean images if ``zero_mean``), its points kept in float64, and the
    prior's oracle on it, evaluated in ``dtype`` (that of ``x0``)."""

    def __init__(self, prior: Prior, radius: Tensor, zero_mean: bool, dtype: torch.dtype) -> None:
        self.prior, self.radius, self.zero_mean, self.dtype = prior, radius.double(), zero_mean, dtype

    def center(self, z: Tensor) -> Tensor:
        return _center(z) if self.zero_mean else z

    def project(self, z: Tensor) -> Tensor:
        z = self.center(z)
        return z * per_sample(self.radius / batch_norm(z), z)

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(R(x), \nabla R(x))` at ``x`` rounded to ``dtype`` (the energy in ``dtype``, the gradient centred if
        ``zero_mean``, in float64), one energy per image checked."""
        x = x.to(self.dtype).detach()  # deepinv's autograd grad sets requires_grad on its input: not on our iterate
        e, g = self.prior.energy_and_grad(x) if hasattr(self.prior, "energy_and_grad") else (None, self.prior.grad(x))
        e = self.prior.fn(x) if e is None else e
        if not isinstance(e, Tensor) or e.numel() != x.shape[0]:
            raise ValueError(f"prior.fn must return one energy per image, shape ({x.shape[0]},), got "
                             f"{tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__}")
        return e.detach().reshape(x.shape[0]), self.center(g.detach().double())

    def eigenpair(self, p: _Point) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`_eigenpair` at the point where the prior was evaluated (``p.x`` rounded to ``dtype``)."""
        return _eigenpair(p.x.to(self.dtype).double(), p.g)


@dataclass
class _State:
    point: _Point
    x_prev: Tensor
    t: Tensor
    active: Tensor
    stalled: Tensor
    iterations: Tensor


def _search(sphere: _Sphere, rule: ArmijoStepSize, anchor: _Point, y: _Point, lam: Tensor, d: Tensor,
            active: Tensor) -> tuple[_Point, Tensor]:
    r"""Backtracking from ``y`` along :math:`-d`: :math:`x^+ = P(y - d/L)`, :math:`L` raised per image until
    :math:`\mathcal{L}(x^+) - \mathcal{L}(y) \le -c\|d\|^2/L` by the trapezoidal rule (:func:`_change` at ``lam``).
    Where the energies resolve the first trial's predicted decrease (``PRECISION_MARGIN`` round-offs), they must show
    no rise (:func:`_rise`) and :math:`L` is not raised past the point where they no longer resolve it (as in
    :meth:`~deepinv_ext.priors.step_size.ArmijoStepSize.search`): a gradient inconsistent with the energy fails there.
    A point that passes but ends above the ``anchor`` :math:`x_k` is refused at once.

    :return: the last point tried per image and ``ok``, which active images found an acceptable step.
    """
    bt, dsq = rule.backtracking, batch_sqnorm(d)
    checked = rule.visible(dsq, y.e, PRECISION_MARGIN)
    pending, ok = active.clone(), torch.zeros_like(active)
    out: _Point | None = None
    for trial in range(bt.max_backtracking + 1):
        x = sphere.project(y.x - d / per_sample(rule.lipschitz, d))
        p = _Point(x, *sphere.evaluate(x))
        out = p if out is None else _where(pending, p, out)
        decrease = _change(y, p, lam) <= -bt.sufficient_decrease * dsq / rule.lipschitz
        decrease = decrease & ~(checked & _rise(y, p, lam, bt.slack))
        below = _change(anchor, p, lam) <= 0
        ok = ok | (pending & decrease & below)
        pending = pending & ~decrease & ~(x == y.x).flatten(1).all(dim=1)
        pending = pending & (~checked | rule.visible(dsq, y.e, lipschitz=rule.lipschitz * bt.increase))
        if not pending.any() or trial == bt.max_backtracking:
            break
        rule.backtrack(pending)
    return out, ok


def _iterate(sphere: _Sphere, rule: ArmijoStepSize, s: _State, tol: float) -> None:
    """One iteration of every active image (module docstring), in place."""
    plain = s.t == 1  # no momentum: y = x_k, whose gradient is known
    t_new = (1 + torch.sqrt(1 + 4 * s.t * s.t)) / 2
    anchor = y = s.point
    if not bool(plain[s.active].all()):
        x = anchor.x
        z = torch.where(per_sample(plain, x), x, sphere.project(x + per_sample((s.t - 1) / t_new, x) * (x - s.x_prev)))
        y = _Point(z, *sphere.evaluate(z))
    lam, d, res = sphere.eigenpair(y)
    hit = s.active & ~plain & (res <= tol) & (_change(anchor, y, lam) <= 0)  # y converged, not above x_k: stop there
    s.point, s.active = _where(hit, y, s.point), s.active & ~hit
    active, L_iteration = s.active, rule.lipschitz
    new, take = _search(sphere, rule, anchor, y, lam, d, active)
    take = active & take
    s.stalled = s.stalled | (active & ~take & plain)
    rule.lipschitz = torch.where(active & ~take & ~plain, L_iteration, rule.lipschitz)  # restart from x_k's own L
    s.x_prev = torch.where(per_sample(active, s.x_prev), s.point.x, s.x_prev)
    s.point = _where(take, new, s.point)
    s.t = torch.where(take, t_new, torch.where(active, torch.ones_like(s.t), s.t))
    rule.relax(active)
    s.iterations = s.iterations + active.long()
    s.active = active & ~s.stalled & ~(take & (sphere.eigenpair(s.point)[2] <= tol))


def _check(prior: Prior, x0: Tensor, tol: float, max_iter: int, lipschitz: float, zero_mean: bool,
           progress: bool) -> Tensor:
    """The input policy of :func:`nonlinear_eigenfunction`; returns the radii (of the centred ``x0`` if
    ``zero_mean``) per image."""
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a deepinv.optim.Prior (with fn and grad), got {type(prior).__name__}")
    check_tensor(x0, "x0")
    if x0.ndim < 2:
        raise ValueError(f"x0 must be a batch (B, C, H, W) (or (B, ...)), got shape {tuple(x0.shape)}")
    check_batch(x0, "x0")
    check_finite(x0, "x0")
    finite_number(tol, "tol", strict=True)
    positive_int(max_iter, "max_iter", minimum=0)
    finite_number(lipschitz, "lipschitz", strict=True)
    boolean(zero_mean, "zero_mean")
    boolean(progress, "progress")
    radius = batch_norm(_center(x0) if zero_mean else x0)
    if not bool((radius > 0).all()):
        raise ValueError(f"x0 must be nonzero (non-constant with zero_mean=True) on every image, else the sphere is a "
                         f"point; images {torch.nonzero(radius == 0).flatten().tolist()} are not")
    return radius


@torch.no_grad()
def nonlinear_eigenfunction(prior: Prior, x0: Tensor, *, tol: float = 1e-3, max_iter: int = 1000,
                            zero_mean: bool = False, lipschitz: float = 1.0,
                            backtracking: Backtracking | None = None, progress: bool = False) -> EigenfunctionResult:
    r"""A nonlinear eigenpair :math:`\nabla R(x) = \lambda x` of ``prior`` near each image of ``x0``, by accelerated
    projected gradient descent of :math:`R` on the sphere :math:`\|x\| = \|x_0\|`.

    The eigenpair :footcite:p:`kobler2020total` is a stationary point of :math:`R` on the sphere
    :math:`S = \{x : \|x\| = \|x_0\|\}`, found with the Rayleigh-type multiplier and the tangent gradient

    .. math::

        \lambda(x) = \frac{\langle \nabla R(x), x\rangle}{\|x\|^2}, \qquad
        d(x) = \nabla R(x) - \lambda(x)\,x, \qquad
        \rho(x) = \frac{\|d(x)\|}{\|\nabla R(x)\|},

    by :math:`y_k = P(x_k + \beta_k (x_k - x_{k-1}))`, :math:`x_{k+1} = P(y_k - d(y_k)/L_k)`, with
    :math:`P(z) = \|x_0\|\, z / \|z\|`, FISTA's momentum :math:`\beta_k`, Armijo backtracking of :math:`L_k`
    per image and adaptive restart :footcite:p:`odonoghue2015adaptive`, so that :math:`R(x_k)` does not increase.
    An image stops, converged, at the first point with :math:`\rho \le` ``tol``; the module
    :mod:`deepinv_ext.analysis.eigenfunctions` details the precision rules and the stalls.

    Every image has its own radius, step size, momentum and stopping. No autograd graph is recorded (an analysis, not
    a layer).

    :param deepinv.optim.Prior prior: the regulariser :math:`R`: ``fn(x)`` gives ``(B,)`` energies, ``grad(x)`` (or
        ``energy_and_grad(x)``, preferred where it exists) the gradient.
    :param torch.Tensor x0: the starting images ``(B, C, H, W)`` (any ``(B, ...)`` the prior takes), finite and
        nonzero; they fix the radii.
    :param float tol: the stopping tolerance :math:`\rho \le` ``tol`` on the relative residual (> 0).
    :param int max_iter: maximum iterations (>= 0).
    :param bool zero_mean: search among zero-mean images (for priors invariant to adding a constant, such as TDV:
        module docstring); the radius is then that of :math:`x_0 - \bar x_0`.
    :param float lipschitz: initial estimate :math:`L_0 > 0` of the curvature (the first step is :math:`1/L_0`).
    :param deepinv_ext.priors.Backtracking backtracking: the line-search constants (default
        :class:`~deepinv_ext.priors.Backtracking`; ``slack`` is not used: no energy values are compared).
    :param bool progress: show a tqdm progress bar.
    :return: an :class:`EigenfunctionResult`; a :class:`~deepinv_ext.algorithms.NotConvergedWarning` names the
        images with ``converged`` False.
    :raises TypeError: a ``prior`` that is not a :class:`deepinv.optim.Prior`, an ``x0`` that is not a real floating
        tensor, a ``zero_mean`` or ``progress`` that is not a bool, a ``backtracking`` of another type.
    :raises ValueError: an ``x0`` with fewer than 2 dimensions, no image, a non-finite entry or a zero (constant)
        image; a ``tol``, ``max_iter`` or ``lipschitz`` out of range; a ``prior.fn`` that does not give one energy per
        image.

    |sep|

    :Examples:

    :math:`R(x) = \frac12\sum_i q_i x_i^2` has the eigenpairs :math:`(e_i, q_i)`; from a generic start the minimiser of
    :math:`R` on the sphere is the eigenvector of the smallest :math:`q_i`:

    >>> import torch
    >>> from deepinv.optim import Prior
    >>> from deepinv_ext.analysis.eigenfunctions import nonlinear_eigenfunction
    >>> q = torch.tensor([3.0, 1.0, 2.0, 4.0], dtype=torch.float64).view(1, 1, 2, 2)
    >>> prior = Prior(lambda x, *args, **kwargs: 0.5 * (q * x**2).sum(dim=(1, 2, 3)))
    >>> result = nonlinear_eigenfunction(prior, torch.ones(1, 1, 2, 2, dtype=torch.float64), tol=1e-8)
    >>> result.converged.item(), round(result.eigenvalue.item(), 6), result.x.abs().flatten().round(decimals=4).tolist()
    (True, 1.0, [0.0, 2.0, 0.0, 0.0])
    """
    radius = _check(prior, x0, tol, max_iter, lipschitz, zero_mean, progress)
    sphere = _Sphere(prior, radius, zero_mean, x0.dtype)
    B, device = x0.shape[0], x0.device
    rule = ArmijoStepSize(torch.full((B,), float(lipschitz), dtype=torch.float64, device=device), backtracking)
    x = sphere.project(x0.detach().double())
    start = _Point(x, *sphere.evaluate(x))
    s = _State(start, x, torch.ones(B, dtype=torch.float64, device=device), sphere.eigenpair(start)[2] > tol,
               torch.zeros(B, dtype=torch.bool, device=device), torch.zeros(B, dtype=torch.long, device=device))
    energies, residuals = [start.e], [sphere.eigenpair(start)[2]]
    for _ in tqdm(range(max_iter), disable=not progress, desc="eigenfunction"):
        if not s.active.any():
            break
        _iterate(sphere, rule, s, tol)
        energies.append(s.point.e)
        residuals.append(sphere.eigenpair(s.point)[2])
    lam, _, res = sphere.eigenpair(s.point)
    converged = res <= tol
    warn_not_converged("nonlinear_eigenfunction", converged, {
        "stalled: no step lowered R as its gradient predicts (a grad that is not the gradient of fn, or a residual "
        "below the precision of grad)": s.stalled & ~converged,
        f"reached max_iter={max_iter}": ~converged & ~s.stalled})
    dtype = x0.dtype
    return EigenfunctionResult(s.point.x.to(dtype), lam.to(dtype), res.to(dtype), s.point.e, s.iterations, converged,
                               s.stalled, torch.stack(energies), torch.stack(residuals).to(dtype))

r"""Spectral filters :math:`h_\tau` of a symmetric linear denoiser, and a numerical check of their conditions.

Spectral filters :footcite:p:`hauptmann2024convergent` are families :math:`h_\tau` that satisfy the conditions
A.1-A.3 written out in :class:`SpectralFilter`. Two are provided, both checked by :meth:`SpectralFilter.check_conditions`: :class:`ScalingFilter`
(:math:`h_\tau(\lambda) = \lambda / (\tau - (\tau - 1)\lambda)`, the prox of :math:`\tau J`) and
:class:`NeumannFilter` (a polynomial, the truncated series of :math:`1/(1 + \tau(1 - \lambda))`, whose limit
regulariser is :math:`J^*(x) = \tfrac12\langle x, (\mathrm{Id} - D)x\rangle`; applied exactly with ``order``
denoiser applications). They are plain objects, not plugins; :meth:`SpectralFilter.apply` computes
:math:`h_\tau(D)v` by any method of :mod:`deepinv_ext.spectral.matrix_functions` or the filter's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from deepinv_ext._batch import batch_norm
from deepinv_ext._validation import finite_number, positive_int
from deepinv_ext.spectral.matrix_functions import (
    ApplyInfo,
    Matvec,
    OperatorEig,
    cg_solve,
    chebyshev_apply,
    check_budget,
    lanczos_apply,
)

__all__ = ["FilterConditions", "NeumannFilter", "ScalingFilter", "SpectralFilter"]


@dataclass
class FilterConditions:
    r"""Numerical check of A.1-A.3 (:class:`SpectralFilter`) on a set of eigenvalues and a decreasing sequence of
    :math:`\tau`, as :meth:`SpectralFilter.check_conditions` returns it.

    :param bool a1: whether A.1 holds, :math:`0 < h_\tau(\lambda) < 1` everywhere.
    :param bool a2: whether A.2 holds, :math:`\|r_\tau - r^*\|_\infty / \tau` decreasing to 0.
    :param bool a3: whether A.3 holds, :math:`r_\tau(\lambda)` finite and bounded away from 0.
    :param tuple[float, float] h_range: the smallest and largest :math:`h_\tau(\lambda)`.
    :param tuple[float, float] r_range: the smallest and largest :math:`r_\tau(\lambda)`.
    :param list[float] a2_rates: :math:`\|r_\tau - r^*\|_\infty / \tau` for each :math:`\tau` (must tend to 0).

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.spectral import ScalingFilter
    >>> lam = torch.linspace(0.05, 0.95, 50, dtype=torch.float64)
    >>> cond = ScalingFilter().check_conditions(lam, [0.5, 0.1, 0.01])
    >>> cond.ok, [round(r, 3) for r in cond.r_range]  # r = (1 - lam) / lam
    (True, [0.053, 19.0])
    """

    a1: bool
    a2: bool
    a3: bool
    h_range: tuple[float, float]
    r_range: tuple[float, float]
    a2_rates: list[float]

    @property
    def ok(self) -> bool:
        """Whether A.1, A.2 and A.3 all hold."""
        return self.a1 and self.a2 and self.a3


class SpectralFilter:
    r"""A family :math:`h_\tau` of spectral filters for a symmetric denoiser with spectrum in :math:`(0, 1)`.

    PnP with a symmetric linear denoiser :math:`D` whose spectrum lies in :math:`(0, 1)` is a convergent
    regularisation when :math:`D` is replaced by :math:`h_\tau(D)`, :math:`\tau` the regularisation parameter,
    for a family of continuous scalar functions :math:`h_\tau` with, on :math:`\mathrm{spec}(D)`
    :footcite:p:`hauptmann2024convergent`,

    - A.1: :math:`h_\tau(\mathrm{spec}\,D) \subset (0, 1)` for every :math:`\tau > 0`;
    - A.2: :math:`r_\tau(\lambda) = \frac{1 - h_\tau(\lambda)}{\tau h_\tau(\lambda)} \to r^*(\lambda)`
      uniformly as :math:`\tau \to 0`, with :math:`\|r_\tau - r^*\|_\infty = o(\tau)`;
    - A.3: :math:`0 < \inf_{\tau,\lambda} r_\tau(\lambda) \le \sup_{\tau,\lambda} r_\tau(\lambda) < \infty`.

    Then :math:`h_\tau(D) = \operatorname{prox}_{J_\tau}` for the quadratic
    :math:`J_\tau(x) = \frac{\tau}{2}\langle x, r_\tau(D)x\rangle`, and the iterates
    :math:`x_{k+1} = h_\tau(D)(x_k - A^\top(Ax_k - y))` converge to the minimiser of
    :math:`\frac12\|Ax - y\|^2 + J_\tau(x)`; with :math:`\tau \sim \delta` they converge, as the noise level
    :math:`\delta \to 0`, to the :math:`J^*`-minimising solution, :math:`J^*(x) = \frac12\langle x, r^*(D)x\rangle`.

    Subclasses define :meth:`h` and :meth:`r_star`; :meth:`apply` computes :math:`h_\tau(D)v` with any of the
    generic methods (``"eig"`` with an :class:`~deepinv_ext.spectral.OperatorEig`, ``"lanczos"``, ``"chebyshev"``)
    or, where a subclass names one in :attr:`own_method` and implements it in ``_own_apply``, its own.

    |sep|

    :Examples:

    Tikhonov's filter :math:`h_\tau(\lambda) = \lambda/(\lambda + \tau)` has :math:`r_\tau = r^* = 1/\lambda`:

    >>> import torch
    >>> from deepinv_ext.spectral import SpectralFilter
    >>> class Tikhonov(SpectralFilter):
    ...     def h(self, lam, tau):
    ...         return lam / (lam + tau)
    ...     def r_star(self, lam):
    ...         return 1 / lam
    >>> lam = torch.linspace(0.05, 0.95, 50, dtype=torch.float64)
    >>> Tikhonov().check_conditions(lam, [0.5, 0.1, 0.01]).ok
    True
    """

    name = "filter"
    #: the filter's own way of applying :math:`h_\tau(D)` (the default of :meth:`apply`), or ``None``
    own_method: str | None = None

    def h(self, lam: Tensor, tau: float) -> Tensor:
        r"""The filter :math:`h_\tau(\lambda)`, elementwise on a tensor of eigenvalues.

        :param torch.Tensor lam: eigenvalues :math:`\lambda`.
        :param float tau: the filter parameter :math:`\tau > 0`.
        """
        raise NotImplementedError

    def r_star(self, lam: Tensor) -> Tensor:
        r"""The limit :math:`r^*(\lambda)` of :math:`r_\tau(\lambda)` as :math:`\tau \to 0` (condition A.2).

        :param torch.Tensor lam: eigenvalues :math:`\lambda`.
        """
        raise NotImplementedError

    def r(self, lam: Tensor, tau: float) -> Tensor:
        r""":math:`r_\tau(\lambda) = (1 - h_\tau(\lambda)) / (\tau h_\tau(\lambda))`, so that
        :math:`h_\tau(D)^{-1} - \mathrm{Id} = \tau r_\tau(D)`.

        :param torch.Tensor lam: eigenvalues :math:`\lambda`.
        :param float tau: the filter parameter :math:`\tau > 0`.
        """
        hv = self.h(lam, tau)
        return (1 - hv) / (tau * hv)

    def tau_max(self, bounds: tuple[float, float] = (0.0, 1.0)) -> float:
        r"""Largest admissible :math:`\tau` for a spectrum in ``bounds`` (``inf`` if none).

        :param tuple[float, float] bounds: an interval holding the spectrum.
        """
        return math.inf

    def check_tau(self, tau: float, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        r"""Raise (ValueError) unless :math:`0 < \tau <` :meth:`tau_max` for a spectrum in ``bounds``.

        :param float tau: the filter parameter.
        :param tuple[float, float] bounds: an interval holding the spectrum.
        """
        finite_number(tau, "tau", strict=True)
        if tau >= self.tau_max(bounds):
            raise ValueError(f"tau={tau} is outside the admissible range (0, {self.tau_max(bounds):.4g}) of "
                             f"{type(self).__name__} for a spectrum in {bounds}")

    def check_conditions(self, lam: Tensor, taus: Sequence[float]) -> FilterConditions:
        r"""Check A.1-A.3 on eigenvalues ``lam`` (e.g. the operator's spectrum) for decreasing ``taus``.

        A.2 is accepted when :math:`\|r_\tau - r^*\|_\infty/\tau` decreases along ``taus`` to below 1e-6 of
        :math:`\|r^*\|_\infty` or by at least a factor 10 over the sequence (the :math:`o(\tau)` rate).

        :param torch.Tensor lam: eigenvalues.
        :param Sequence[float] taus: values of :math:`\tau`, sorted here in decreasing order.
        :return: (:class:`FilterConditions`) the outcome.
        """
        lam = lam.to(torch.float64)
        taus = sorted((float(t) for t in taus), reverse=True)
        hs = torch.stack([self.h(lam, t) for t in taus])
        rs = torch.stack([self.r(lam, t) for t in taus])
        rstar = self.r_star(lam)
        rates = [float((r - rstar).abs().max() / t) for r, t in zip(rs, taus, strict=True)]
        tiny = 1e-6 * float(rstar.abs().max())
        a2 = rates[-1] <= tiny or (rates[-1] <= 0.1 * rates[0] and all(
            b <= a * (1 + 1e-9) + tiny for a, b in zip(rates, rates[1:], strict=False)))
        a1 = bool(((hs > 0) & (hs < 1)).all())
        a3 = bool(rs.min() > 0 and torch.isfinite(rs).all())
        return FilterConditions(a1, a2, a3, (float(hs.min()), float(hs.max())), (float(rs.min()), float(rs.max())),
                                rates)

    def apply(self, matvec: Matvec, v: Tensor, tau: float, *, method: str | None = None, tol: float = 1e-6,
              bounds: tuple[float, float] | None = None, eig: OperatorEig | None = None, max_iter: int = 200,
              x0: Tensor | None = None) -> tuple[Tensor, ApplyInfo]:
        r"""Apply :math:`h_\tau(D)v`.

        :param Callable matvec: the symmetric operator :math:`D` on ``(B, ...)`` tensors.
        :param torch.Tensor v: the batch of vectors.
        :param float tau: the filter parameter :math:`\tau > 0`.
        :param str method: ``"eig"`` (needs ``eig``), ``"lanczos"``, ``"chebyshev"`` (needs ``bounds``), or the
            filter's own one, :attr:`own_method` (``"cg"`` for :class:`ScalingFilter`, ``"polynomial"`` for
            :class:`NeumannFilter`); default (``None``): the filter's own one, else ``"lanczos"``.
        :param float tol: relative tolerance of the matrix-free methods.
        :param tuple bounds: an interval holding the spectrum of :math:`D`.
        :param OperatorEig eig: the eigendecomposition of :math:`D`, for ``method="eig"``.
        :param int max_iter: the largest number of operator applications (Lanczos steps, Chebyshev degree, CG).
        :param torch.Tensor x0: a warm start of the filter's own method (see the filter).
        :return: ``(h_tau(D) v, ApplyInfo)``.
        :raises ValueError: an unknown method, a missing ``eig``/``bounds``, ``tol`` not > 0 or ``max_iter`` not a
            positive integer.
        """
        if method is None:
            method = self.own_method or "lanczos"
        if method == self.own_method:
            return self._own_apply(matvec, v, tau, tol=tol, bounds=bounds, max_iter=max_iter, x0=x0)
        check_budget(tol, max_iter)
        fn = lambda lam: self.h(lam, tau)  # noqa: E731
        if method == "eig":
            if eig is None:
                raise ValueError("method='eig' needs eig=OperatorEig(...)")
            return eig.apply(fn, v), ApplyInfo("eig", 0, 0.0, True)
        if method == "lanczos":
            return lanczos_apply(matvec, v, fn, tol=tol, max_iter=max_iter)
        if method == "chebyshev":
            if bounds is None:
                raise ValueError("method='chebyshev' needs bounds=(a, b) holding the spectrum")
            return chebyshev_apply(matvec, v, fn, bounds, tol=tol, max_degree=max_iter)
        own = f", {self.own_method!r}" if self.own_method else ""
        raise ValueError(f"method must be one of 'eig', 'lanczos', 'chebyshev'{own}, got {method!r}")

    def _own_apply(self, matvec: Matvec, v: Tensor, tau: float, *, tol: float, bounds: tuple[float, float] | None,
                   max_iter: int, x0: Tensor | None) -> tuple[Tensor, ApplyInfo]:
        """The filter's own method (:attr:`own_method`); a filter that names one overrides this."""
        raise NotImplementedError(f"{type(self).__name__} names no own method")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ScalingFilter(SpectralFilter):
    r"""The scaling filter :math:`h_\tau(\lambda) = \lambda / (\tau - (\tau - 1)\lambda)`:
    :math:`h_\tau(D) = \mathrm{prox}_{\tau J}` for :math:`J(x) = \tfrac12\langle x, (D^{-1} - \mathrm{Id})x\rangle`
    (paper, eq. 35); :math:`r_\tau = r^* = (1 - \lambda)/\lambda` for every :math:`\tau` (Example 1).

    Its own matrix-free method ``"cg"`` solves :math:`M w = v` with :math:`M = \tau\mathrm{Id} + (1 - \tau)D`
    (symmetric positive definite for :math:`\mathrm{spec}\,D\subset(0,1)`) and returns
    :math:`u = (v - \tau w)/(1 - \tau) = h_\tau(D)v`, stopping on the rigorous bound
    :math:`\|u - h_\tau(D)v\| \le \frac{\tau}{|1-\tau|}\frac{\|r\|}{\lambda_{\min}(M)} \le \mathrm{tol}\,\|u\|`;
    for :math:`\tau` near 1 it solves :math:`M u = D v` instead. ``x0`` warm-starts :math:`w` (PnP iterations
    pass the previous one), and ``ApplyInfo.state`` returns it.

    |sep|

    :Examples:

    For :math:`D = \mathrm{Id}/2`, :math:`h_\tau(1/2) = 1/(1 + \tau)`:

    >>> import torch
    >>> from deepinv_ext.spectral import ScalingFilter
    >>> v = torch.ones(1, 4, dtype=torch.float64)
    >>> u, info = ScalingFilter().apply(lambda x: 0.5 * x, v, tau=0.5, bounds=(0.4, 0.6))
    >>> round(u[0, 0].item(), 6), info.method, info.converged
    (0.666667, 'cg', True)
    """

    name = "scaling"
    own_method = "cg"

    def h(self, lam: Tensor, tau: float) -> Tensor:
        r""":math:`h_\tau(\lambda) = \lambda / (\tau - (\tau - 1)\lambda)`.

        :param torch.Tensor lam: eigenvalues :math:`\lambda`.
        :param float tau: the filter parameter :math:`\tau > 0`.
        """
        return lam / (tau - (tau - 1) * lam)

    def r_star(self, lam: Tensor) -> Tensor:
        r""":math:`r^*(\lambda) = (1 - \lambda)/\lambda`.

        :param torch.Tensor lam: eigenvalues :math:`\lambda`.
        """
        return (1 - lam) / lam

    def _own_apply(self, matvec: Matvec, v: Tensor, tau: float, *, tol: float, bounds: tuple[float, float] | None,
                   max_iter: int, x0: Tensor | None) -> tuple[Tensor, ApplyInfo]:
        check_budget(tol, max_iter)
        self.check_tau(tau)
        if tau == 1.0:  # h_1(D) = D
            return matvec(v), ApplyInfo("cg", 1, 0.0, True)
        lo, hi = bounds if bounds is not None else (0.0, 1.0)
        lam_min_M = tau + (1 - tau) * lo if tau < 1 else tau - (tau - 1) * hi
        M = lambda u: tau * u + (1 - tau) * matvec(u)  # noqa: E731
        if abs(1 - tau) >= 0.25:  # u = (v - tau w) / (1 - tau), M w = v
            factor = tau / abs(1 - tau) / lam_min_M
            to_u = lambda w: (v - tau * w) / (1 - tau)  # noqa: E731
            stop = lambda w, r: factor * batch_norm(r) <= tol * batch_norm(to_u(w))  # noqa: E731
            w, info = cg_solve(M, v, x0=x0, tol=0.0, max_iter=max_iter, stop=stop)
            u, extra = to_u(w), 0
            err_scale = factor
        else:  # M u = D v
            Dv = matvec(v)
            stop = lambda u, r: batch_norm(r) / lam_min_M <= tol * batch_norm(u)  # noqa: E731
            w, info = cg_solve(M, Dv, x0=x0, tol=0.0, max_iter=max_iter, stop=stop)
            u, extra, err_scale = w, 1, 1.0 / lam_min_M
        err = float((err_scale * batch_norm(info.state) / batch_norm(u).clamp_min(1e-300)).max().detach())
        return u, ApplyInfo("cg", info.n_matvecs + extra, err, info.converged, state=w)


class NeumannFilter(SpectralFilter):
    r"""Polynomial filter :math:`h_\tau(\lambda) = \sum_{k=0}^{m} (-\tau q)^k = \frac{1 + t^{m+1}}{1 + t}`,
    :math:`q = 1 - \lambda`, :math:`t = \tau q`, :math:`m` even: the truncated Neumann series of
    :math:`1/(1 + \tau q)`. Then :math:`r_\tau = q\,(1 - t^m)/(1 + t^{m+1}) \to r^* = 1 - \lambda` with
    :math:`\|r_\tau - r^*\|_\infty = O(\tau^m) = o(\tau)` (A.2, :math:`m\ge 2`), and A.1, A.3 hold for
    :math:`\tau < \tau_{\max} = \rho / (1 - \lambda_{\min})`, :math:`\rho < 1`. The limit regulariser is
    :math:`J^*(x) = \tfrac12\langle x, (\mathrm{Id} - D)x\rangle`. Its own method ``"polynomial"`` applies it
    exactly with :math:`m` denoiser applications (Horner), no tolerance needed.

    :param int order: :math:`m`, even, at least 2.
    :param float rho: safety factor of :math:`\tau_{\max}` (keeps :math:`\inf r_\tau` away from 0).

    |sep|

    :Examples:

    For :math:`D = \mathrm{Id}/2` and :math:`m = 2`, :math:`h_\tau = 1 - t + t^2` with :math:`t = \tau/2`:

    >>> import torch
    >>> from deepinv_ext.spectral import NeumannFilter
    >>> u, info = NeumannFilter(order=2).apply(lambda x: 0.5 * x, torch.ones(1, 4, dtype=torch.float64), tau=0.5)
    >>> u[0, 0].item(), info.method, info.n_matvecs
    (0.8125, 'polynomial', 2)
    """

    name = "neumann"
    own_method = "polynomial"

    def __init__(self, order: int = 2, rho: float = 0.9) -> None:
        if positive_int(order, "order", minimum=2) % 2:
            raise ValueError(f"order must be an even integer >= 2, got {order!r}")
        if finite_number(rho, "rho", strict=True, maximum=1.0) == 1.0:
            raise ValueError(f"rho must lie in (0, 1), got {rho!r}")
        self.order, self.rho = order, rho

    def h(self, lam: Tensor, tau: float) -> Tensor:
        r""":math:`h_\tau(\lambda) = \sum_{k=0}^{m} (-\tau(1 - \lambda))^k`.

        :param torch.Tensor lam: eigenvalues :math:`\lambda`.
        :param float tau: the filter parameter :math:`\tau > 0`.
        """
        t = tau * (1 - lam)
        return sum((-t) ** k for k in range(self.order + 1))

    def r_star(self, lam: Tensor) -> Tensor:
        r""":math:`r^*(\lambda) = 1 - \lambda`.

        :param torch.Tensor lam: eigenvalues :math:`\lambda`.
        """
        return 1 - lam

    def tau_max(self, bounds: tuple[float, float] = (0.0, 1.0)) -> float:
        r""":math:`\tau_{\max} = \rho / (1 - \lambda_{\min})`.

        :param tuple[float, float] bounds: an interval :math:`(\lambda_{\min}, \lambda_{\max})` holding the spectrum.
        """
        return self.rho / (1 - bounds[0])

    def _own_apply(self, matvec: Matvec, v: Tensor, tau: float, *, tol: float, bounds: tuple[float, float] | None,
                   max_iter: int, x0: Tensor | None) -> tuple[Tensor, ApplyInfo]:
        self.check_tau(tau, bounds if bounds is not None else (0.0, 1.0))
        # Horner in B = -tau (Id - D): u = v + B(v + B(v + ...))
        u = v.clone()
        for _ in range(self.order):
            u = v - tau * (u - matvec(u))
        return u, ApplyInfo("polynomial", self.order, 0.0, True)

    def __repr__(self) -> str:
        return f"NeumannFilter(order={self.order}, rho={self.rho})"

r"""Matrix functions of a symmetric operator given only as a matvec, and spectral filters for linear denoisers.

For a symmetric operator :math:`D` (a linear denoiser, given as a function ``matvec(v) = D v`` on batched tensors
``(B, ...)``) and a scalar function :math:`h`, this module applies :math:`h(D)\,v` by

- :class:`OperatorEig`: the exact eigendecomposition :math:`D = V \Lambda V^\top` (small images only; it builds
  the dense matrix and refuses above ``max_dim`` unknowns);
- :func:`lanczos_apply`: the Lanczos (Krylov) approximation :math:`\|v\| Q_k h(T_k) e_1` with full
  reorthogonalisation, stopped when successive approximations agree to a tolerance;
- :func:`chebyshev_apply`: a Chebyshev expansion of :math:`h` on an interval holding the spectrum, truncated
  where the coefficient tail (a bound on the sup-norm error) falls below a tolerance;
- :func:`cg_solve`: batched conjugate gradients, used by :class:`ScalingFilter` to apply
  :math:`h_\tau(D) v = (\tau\,\mathrm{Id} - (\tau-1) D)^{-1} D v` with a residual-based error bound.

Spectral filters (Hauptmann, Mukherjee, Schönlieb, Sherry, *Convergent regularization in inverse problems and
linear plug-and-play denoisers*, Sect. 4) are families :math:`h_\tau` with, on :math:`\mathrm{spec}(D)\subset(0,1)`,

- A.1: :math:`h_\tau(\mathrm{spec}\,D) \subset (0, 1)` for every :math:`\tau`;
- A.2: :math:`r_\tau(\lambda) = \frac{1 - h_\tau(\lambda)}{\tau h_\tau(\lambda)} \to r^*(\lambda)` uniformly, with
  :math:`\|r_\tau - r^*\|_\infty = o(\tau)`;
- A.3: :math:`0 < \inf_{\tau,\lambda} r_\tau(\lambda) \le \sup_{\tau,\lambda} r_\tau(\lambda) < \infty`.

Two are provided, both checked by :meth:`SpectralFilter.check_conditions`: :class:`ScalingFilter`
(:math:`h_\tau(\lambda) = \lambda / (\tau - (\tau - 1)\lambda)`, the prox of :math:`\tau J`) and
:class:`NeumannFilter` (a polynomial, the truncated series of :math:`1/(1 + \tau(1 - \lambda))`, whose limit
regulariser is :math:`J^*(x) = \tfrac12\langle x, (\mathrm{Id} - D)x\rangle`; applied exactly with ``order``
denoiser applications). They are plain objects, not plugins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from deepinv_ext._batch import batch_dot, batch_norm, per_sample
from deepinv_ext._validation import finite_number, positive_int

__all__ = ["ApplyInfo", "OperatorEig", "lanczos_apply", "lanczos_extreme", "chebyshev_apply", "cg_solve",
           "SpectralFilter", "ScalingFilter", "NeumannFilter", "FilterConditions"]

Matvec = Callable[[Tensor], Tensor]
ScalarFn = Callable[[Tensor], Tensor]


def _check_budget(tol: float, max_iter: int, iter_name: str = "max_iter") -> None:
    """A matrix-free application needs a tolerance > 0 and at least one step (a ValueError names which)."""
    finite_number(tol, "tol", strict=True)
    positive_int(max_iter, iter_name)


@dataclass
class ApplyInfo:
    r"""What a matrix-free application cost and how accurate it is.

    :param str method: ``"eig"``, ``"lanczos"``, ``"chebyshev"``, ``"cg"`` or ``"polynomial"``.
    :param int n_matvecs: number of applications of the operator.
    :param float error_estimate: estimated relative error :math:`\|u - h(D)v\| / \|h(D)v\|` (worst over the batch).
    :param bool converged: whether the tolerance was reached.
    """

    method: str
    n_matvecs: int
    error_estimate: float
    converged: bool
    state: Tensor | None = field(default=None, repr=False)


class OperatorEig:
    r"""Exact eigendecomposition :math:`D = V\Lambda V^\top` of a symmetric operator, built column by column.

    Only for small problems: the dense :math:`N\times N` matrix (:math:`N` = number of unknowns of one image) is
    built with :math:`N` matvecs (in chunks) and diagonalised with ``torch.linalg.eigh``.

    :param Callable matvec: the operator on batched tensors ``(B, *shape)``.
    :param tuple shape: the shape of one input, e.g. ``(1, 64, 64)``.
    :param int max_dim: refuse (``ValueError``) when :math:`N` exceeds it (default 4096, i.e. 64x64 grey).
    :param int chunk: number of columns per matvec call.
    """

    def __init__(self, matvec: Matvec, shape: Sequence[int], *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu", max_dim: int = 4096, chunk: int = 256,
                 symmetrize: bool = True) -> None:
        self.shape = tuple(positive_int(s, "shape") for s in shape)
        positive_int(chunk, "chunk")
        n = math.prod(self.shape)
        if n > max_dim:
            raise ValueError(f"OperatorEig: the operator has {n} unknowns (shape {self.shape}), above max_dim="
                             f"{max_dim}; a full eigendecomposition is impractical, use a matrix-free method "
                             f"(method='cg', 'lanczos' or 'chebyshev')")
        cols = []
        eye = torch.eye(n, dtype=dtype, device=device)
        with torch.no_grad():
            for start in range(0, n, chunk):
                block = eye[start:start + chunk].reshape(-1, *self.shape)
                cols.append(matvec(block).reshape(block.shape[0], n).to(dtype))
        mat = torch.cat(cols).T  # column j = D e_j
        self.asymmetry = float((mat - mat.T).norm() / mat.norm().clamp_min(1e-300))
        if symmetrize:
            mat = 0.5 * (mat + mat.T)
        self.matrix = mat
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(mat)

    def apply(self, fn: ScalarFn, v: Tensor) -> Tensor:
        r"""Return :math:`h(D)v = V h(\Lambda) V^\top v` for ``v`` of shape ``(B, *shape)``."""
        if tuple(v.shape[1:]) != self.shape:
            raise ValueError(f"v must have shape (B, {self.shape}), got {tuple(v.shape)}")
        V = self.eigenvectors
        flat = v.reshape(v.shape[0], -1).to(V.dtype)
        coeff = (flat @ V) * fn(self.eigenvalues)
        return (coeff @ V.T).reshape(v.shape).to(v.dtype)


def _tridiag(alpha: list[Tensor], beta: list[Tensor]) -> Tensor:
    k = len(alpha)
    T = torch.diag_embed(torch.stack(alpha, -1))
    if k > 1:
        off = torch.stack(beta[: k - 1], -1)
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return T


def _lanczos(matvec: Matvec, v: Tensor, n_iter: int, callback: Callable | None = None):
    """Batched Lanczos with full reorthogonalisation; yields after each step (Q, alpha, beta)."""
    nv = batch_norm(v).clamp_min(torch.finfo(v.dtype).tiny)
    Q = [v / per_sample(nv, v)]
    alpha: list[Tensor] = []
    beta: list[Tensor] = []
    for k in range(n_iter):
        w = matvec(Q[k])
        alpha.append(batch_dot(w, Q[k]))
        for _ in range(2):  # full reorthogonalisation, twice is enough
            for q in Q:
                w = w - per_sample(batch_dot(w, q), w) * q
        b = batch_norm(w)
        beta.append(b)
        stop = yield Q, alpha, beta, nv
        if stop or k + 1 == n_iter:
            return
        Q.append(w / per_sample(b.clamp_min(torch.finfo(v.dtype).tiny), w))


def lanczos_apply(matvec: Matvec, v: Tensor, fn: ScalarFn, *, tol: float = 1e-6, max_iter: int = 100,
                  check_every: int = 2) -> tuple[Tensor, ApplyInfo]:
    r"""Apply :math:`h(D)v \approx \|v\| Q_k h(T_k) e_1` (Krylov/Lanczos with full reorthogonalisation).

    The error estimate is the larger of the last two relative changes of the approximation between checks
    ``check_every`` steps apart (measured exactly on the coefficients in the orthonormal Krylov basis); iteration
    stops when it is below ``tol``. It is an estimate, not a bound (use CG for the scaling filter when a bound
    is needed).

    :param Callable matvec: symmetric operator on ``(B, ...)`` tensors.
    :param torch.Tensor v: batch of vectors.
    :param Callable fn: the scalar function, applied to a tensor of eigenvalues.
    :return: ``(h(D)v, ApplyInfo)``.
    :raises ValueError: ``tol`` not > 0, ``max_iter`` or ``check_every`` not a positive integer.
    """
    _check_budget(tol, max_iter)
    positive_int(check_every, "check_every")
    prev, err, last, k = None, float("inf"), float("inf"), 0
    gen = _lanczos(matvec, v, max_iter)
    Q, alpha, beta, nv = next(gen)
    coeff = None
    while True:
        k = len(alpha)
        scale = torch.stack(alpha).abs().max(0).values.clamp_min(torch.finfo(v.dtype).tiny)
        breakdown = bool((beta[-1] <= 100 * torch.finfo(v.dtype).eps * scale).all())
        if k % check_every == 0 or k == max_iter or breakdown:
            theta, S = torch.linalg.eigh(_tridiag(alpha, beta))
            coeff = (S * fn(theta).unsqueeze(-2)) @ S[..., 0, :].unsqueeze(-1)  # (B, k, 1)
            coeff = coeff.squeeze(-1) * nv.unsqueeze(-1)
            if prev is not None:
                pad = torch.nn.functional.pad(prev, (0, k - prev.shape[-1]))
                diff = float(((coeff - pad).norm(dim=-1) / coeff.norm(dim=-1).clamp_min(1e-300)).max().detach())
                err, last = max(diff, last), diff  # two successive changes below tol (guards against stagnation)
            prev = coeff
            if err < tol or breakdown or k >= max_iter:
                break
        try:
            Q, alpha, beta, nv = gen.send(False)
        except StopIteration:
            break
    if breakdown:
        err = 0.0
    out = sum(per_sample(coeff[:, i], v) * Q[i] for i in range(coeff.shape[-1]))
    return out, ApplyInfo("lanczos", k, err, err < tol)


@torch.no_grad()
def lanczos_extreme(matvec: Matvec, v0: Tensor, n_iter: int = 50) -> dict[str, float]:
    r"""Extreme eigenvalues of a symmetric operator by Lanczos (one start vector ``v0`` of shape ``(1, ...)``).

    Returns the extreme Ritz values ``lambda_min``, ``lambda_max`` (inner estimates) and their residual bounds
    ``residual_min``, ``residual_max`` = :math:`|\beta_k s_{k,i}|`: each interval
    :math:`[\theta - \rho, \theta + \rho]` contains an eigenvalue of the operator.
    """
    positive_int(n_iter, "n_iter")
    gen = _lanczos(matvec, v0, n_iter)
    for Q, alpha, beta, _ in gen:  # noqa: B007
        pass
    theta, S = torch.linalg.eigh(_tridiag(alpha, beta))
    res = (beta[-1].unsqueeze(-1) * S[..., -1, :]).abs()
    return {"lambda_min": float(theta[0, 0]), "lambda_max": float(theta[0, -1]),
            "residual_min": float(res[0, 0]), "residual_max": float(res[0, -1]), "n_matvecs": len(alpha)}


def _chebyshev_coefficients(fn: ScalarFn, a: float, b: float, n: int) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)
    nodes = torch.cos(math.pi * (k + 0.5) / n)
    vals = fn(0.5 * (b - a) * nodes + 0.5 * (b + a))
    c = (2.0 / n) * (vals.unsqueeze(0) * torch.cos(math.pi * k.unsqueeze(1) * (k + 0.5).unsqueeze(0) / n)).sum(1)
    c[0] = c[0] / 2
    return c


def chebyshev_apply(matvec: Matvec, v: Tensor, fn: ScalarFn, bounds: tuple[float, float], *, tol: float = 1e-6,
                    max_degree: int = 200) -> tuple[Tensor, ApplyInfo]:
    r"""Apply :math:`h(D)v \approx \sum_{k\le n} c_k T_k(X) v`, :math:`X = (2D - (a + b)) / (b - a)`.

    The degree :math:`n` is the smallest whose coefficient tail :math:`\sum_{k>n}|c_k|` (a bound on
    :math:`\sup_{[a,b]}|h - p_n|`) is below ``tol * min_{[a,b]} |h|``, which bounds the relative error whenever
    :math:`\mathrm{spec}(D)\subset[a, b]` (the caller's responsibility: pass bounds with a margin).

    :param tuple bounds: :math:`(a, b)`, an interval holding the spectrum.
    :raises ValueError: ``tol`` not > 0, ``max_degree`` not a positive integer, ``bounds`` not an interval.
    """
    _check_budget(tol, max_degree, "max_degree")
    a, b = finite_number(bounds[0], "bounds[0]", minimum=None), finite_number(bounds[1], "bounds[1]", minimum=None)
    if not b > a:
        raise ValueError(f"bounds must be an interval (a, b) with b > a, got {bounds}")
    c = _chebyshev_coefficients(fn, a, b, 4 * max_degree)
    grid = torch.linspace(a, b, 257, dtype=torch.float64)
    scale = float(fn(grid).abs().min().clamp_min(1e-300))
    tail = torch.flip(torch.cumsum(torch.flip(c.abs(), [0]), 0), [0])  # tail[n] = sum_{k>=n} |c_k|
    ok = (tail[1:] <= tol * scale).nonzero()
    n = int(ok[0]) if len(ok) else max_degree
    n = min(n, max_degree)
    err = float(tail[n + 1]) / scale if n + 1 < len(tail) else 0.0
    X = lambda u: (2.0 * matvec(u) - (a + b) * u) / (b - a)  # noqa: E731
    t_prev, t_cur = v, X(v) if n >= 1 else None
    out = c[0].item() * v
    if n >= 1:
        out = out + c[1].item() * t_cur
    for k in range(2, n + 1):
        t_prev, t_cur = t_cur, 2.0 * X(t_cur) - t_prev
        out = out + c[k].item() * t_cur
    return out, ApplyInfo("chebyshev", n, err, err <= tol)


def cg_solve(matvec: Matvec, b: Tensor, *, x0: Tensor | None = None, tol: float = 1e-6, max_iter: int = 500,
             stop: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, ApplyInfo]:
    r"""Batched conjugate gradients for :math:`Mx = b`, :math:`M` symmetric positive definite.

    Stops when every sample has :math:`\|r\| \le` ``tol`` :math:`\|b\|`, or when ``stop(x, r)`` (a boolean
    per sample) holds for all. ``error_estimate`` is the final relative residual.

    :raises ValueError: ``tol`` not >= 0 or ``max_iter`` not an integer >= 0.
    """
    finite_number(tol, "tol")
    positive_int(max_iter, "max_iter", minimum=0)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    n_mv = int(x0 is not None)
    p = r.clone()
    rr = batch_dot(r, r)
    nb = batch_norm(b).clamp_min(torch.finfo(b.dtype).tiny)

    def done() -> bool:
        ok = rr.sqrt() <= tol * nb
        if stop is not None:
            ok = ok | stop(x, r)
        return bool(ok.all())

    while not done() and n_mv < max_iter:
        Mp = matvec(p)
        n_mv += 1
        alpha = rr / batch_dot(p, Mp).clamp_min(torch.finfo(b.dtype).tiny)
        x = x + per_sample(alpha, x) * p
        r = r - per_sample(alpha, r) * Mp
        rr_new = batch_dot(r, r)
        p = r + per_sample(rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny), r) * p
        rr = rr_new
    res = float((rr.sqrt() / nb).max().detach())
    return x, ApplyInfo("cg", n_mv, res, done(), state=r)


@dataclass
class FilterConditions:
    r"""Numerical check of A.1-A.3 on a set of eigenvalues and a decreasing sequence of :math:`\tau`."""

    a1: bool
    a2: bool
    a3: bool
    h_range: tuple[float, float]
    r_range: tuple[float, float]
    a2_rates: list[float]  # ||r_tau - r*||_inf / tau for each tau (must tend to 0)

    @property
    def ok(self) -> bool:
        return self.a1 and self.a2 and self.a3


class SpectralFilter:
    r"""A family :math:`h_\tau` of spectral filters for a symmetric denoiser with spectrum in :math:`(0, 1)`.

    Subclasses define :meth:`h` and :meth:`r_star`; :meth:`apply` computes :math:`h_\tau(D)v` with any of the
    generic methods (``"eig"`` with an :class:`OperatorEig`, ``"lanczos"``, ``"chebyshev"``).
    """

    name = "filter"

    def h(self, lam: Tensor, tau: float) -> Tensor:
        raise NotImplementedError

    def r_star(self, lam: Tensor) -> Tensor:
        raise NotImplementedError

    def r(self, lam: Tensor, tau: float) -> Tensor:
        r""":math:`r_\tau(\lambda) = (1 - h_\tau(\lambda)) / (\tau h_\tau(\lambda))`, so that
        :math:`h_\tau(D)^{-1} - \mathrm{Id} = \tau r_\tau(D)`."""
        hv = self.h(lam, tau)
        return (1 - hv) / (tau * hv)

    def tau_max(self, bounds: tuple[float, float] = (0.0, 1.0)) -> float:
        """Largest admissible :math:`\\tau` for a spectrum in ``bounds`` (``inf`` if none)."""
        return math.inf

    def check_tau(self, tau: float, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        """Raise (ValueError) unless :math:`0 < \\tau <` :meth:`tau_max` for a spectrum in ``bounds``."""
        finite_number(tau, "tau", strict=True)
        if tau >= self.tau_max(bounds):
            raise ValueError(f"tau={tau} is outside the admissible range (0, {self.tau_max(bounds):.4g}) of "
                             f"{type(self).__name__} for a spectrum in {bounds}")

    def check_conditions(self, lam: Tensor, taus: Sequence[float]) -> FilterConditions:
        r"""Check A.1-A.3 on eigenvalues ``lam`` (e.g. the operator's spectrum) for decreasing ``taus``.

        A.2 is accepted when :math:`\|r_\tau - r^*\|_\infty/\tau` decreases along ``taus`` to below 1e-6 of
        :math:`\|r^*\|_\infty` or by at least a factor 10 over the sequence (the :math:`o(\tau)` rate).
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

    def apply(self, matvec: Matvec, v: Tensor, tau: float, *, method: str = "lanczos", tol: float = 1e-6,
              bounds: tuple[float, float] | None = None, eig: OperatorEig | None = None, max_iter: int = 200,
              x0: Tensor | None = None) -> tuple[Tensor, ApplyInfo]:
        r"""Apply :math:`h_\tau(D)v`.

        :param str method: ``"eig"`` (needs ``eig``), ``"lanczos"``, ``"chebyshev"`` (needs ``bounds``), or a
            filter-specific one (``"cg"`` for :class:`ScalingFilter`, ``"polynomial"`` for :class:`NeumannFilter`).
        :param float tol: relative tolerance of the matrix-free methods.
        :param tuple bounds: an interval holding the spectrum of :math:`D`.
        :param int max_iter: the largest number of operator applications (Lanczos steps, Chebyshev degree, CG).
        :raises ValueError: an unknown method, a missing ``eig``/``bounds``, ``tol`` not > 0 or ``max_iter`` not a
            positive integer.
        """
        _check_budget(tol, max_iter)
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
        raise ValueError(f"method must be one of 'eig', 'lanczos', 'chebyshev'{self._extra_methods()}, "
                         f"got {method!r}")

    def _extra_methods(self) -> str:
        return ""

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
    """

    name = "scaling"

    def h(self, lam: Tensor, tau: float) -> Tensor:
        return lam / (tau - (tau - 1) * lam)

    def r_star(self, lam: Tensor) -> Tensor:
        return (1 - lam) / lam

    def _extra_methods(self) -> str:
        return ", 'cg'"

    def apply(self, matvec: Matvec, v: Tensor, tau: float, *, method: str = "cg", tol: float = 1e-6,
              bounds: tuple[float, float] | None = None, eig: OperatorEig | None = None, max_iter: int = 200,
              x0: Tensor | None = None) -> tuple[Tensor, ApplyInfo]:
        if method != "cg":
            return super().apply(matvec, v, tau, method=method, tol=tol, bounds=bounds, eig=eig,
                                 max_iter=max_iter)
        _check_budget(tol, max_iter)
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
    """

    name = "neumann"

    def __init__(self, order: int = 2, rho: float = 0.9) -> None:
        if positive_int(order, "order", minimum=2) % 2:
            raise ValueError(f"order must be an even integer >= 2, got {order!r}")
        if finite_number(rho, "rho", strict=True, maximum=1.0) == 1.0:
            raise ValueError(f"rho must lie in (0, 1), got {rho!r}")
        self.order, self.rho = order, rho

    def h(self, lam: Tensor, tau: float) -> Tensor:
        t = tau * (1 - lam)
        return sum((-t) ** k for k in range(self.order + 1))

    def r_star(self, lam: Tensor) -> Tensor:
        return 1 - lam

    def tau_max(self, bounds: tuple[float, float] = (0.0, 1.0)) -> float:
        return self.rho / (1 - bounds[0])

    def _extra_methods(self) -> str:
        return ", 'polynomial'"

    def apply(self, matvec: Matvec, v: Tensor, tau: float, *, method: str = "polynomial", tol: float = 1e-6,
              bounds: tuple[float, float] | None = None, eig: OperatorEig | None = None, max_iter: int = 200,
              x0: Tensor | None = None) -> tuple[Tensor, ApplyInfo]:
        if method != "polynomial":
            return super().apply(matvec, v, tau, method=method, tol=tol, bounds=bounds, eig=eig,
                                 max_iter=max_iter)
        self.check_tau(tau, bounds if bounds is not None else (0.0, 1.0))
        # Horner in B = -tau (Id - D): u = v + B(v + B(v + ...))
        u = v.clone()
        for _ in range(self.order):
            u = v - tau * (u - matvec(u))
        return u, ApplyInfo("polynomial", self.order, 0.0, True)

    def __repr__(self) -> str:
        return f"NeumannFilter(order={self.order}, rho={self.rho})"

r"""Matrix functions :math:`h(D)\,v` of a symmetric operator :math:`D` given only as a matvec.

For a symmetric operator :math:`D` (a linear denoiser, given as a function ``matvec(v) = D v`` on batched tensors
``(B, ...)``) and a scalar function :math:`h`, this module applies :math:`h(D)\,v` by

- :class:`OperatorEig`: the exact eigendecomposition :math:`D = V \Lambda V^\top` (small images only; it builds
  the dense matrix and refuses above ``max_dim`` unknowns);
- :func:`lanczos_apply`: the Lanczos (Krylov) approximation :math:`\|v\| Q_k h(T_k) e_1` with full
  reorthogonalisation, stopped when successive approximations agree to a tolerance (and :func:`lanczos_extreme`,
  the extreme eigenvalues with residual bounds);
- :func:`chebyshev_apply`: a Chebyshev expansion of :math:`h` on an interval holding the spectrum, truncated
  where the coefficient tail (a bound on the sup-norm error) falls below a tolerance;
- :func:`cg_solve`: batched conjugate gradients, with which :class:`~deepinv_ext.spectral.ScalingFilter` applies
  :math:`h_\tau(D) v = (\tau\,\mathrm{Id} - (\tau-1) D)^{-1} D v` with a residual-based error bound.

Each matrix-free method returns an :class:`ApplyInfo` with its cost and error estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from deepinv_ext._batch import batch_dot, batch_norm, per_sample
from deepinv_ext._validation import finite_number, positive_int

__all__ = ["ApplyInfo", "Matvec", "OperatorEig", "ScalarFn", "cg_solve", "chebyshev_apply", "check_budget",
           "lanczos_apply", "lanczos_extreme"]

#: a symmetric operator on batched tensors ``(B, ...)``
Matvec = Callable[[Tensor], Tensor]
#: a scalar function applied elementwise to a tensor of eigenvalues
ScalarFn = Callable[[Tensor], Tensor]


def check_budget(tol: float, max_iter: int, iter_name: str = "max_iter") -> None:
    r"""Raise unless a matrix-free application has a tolerance > 0 and at least one step.

    :param float tol: the relative tolerance (finite, > 0).
    :param int max_iter: the largest number of operator applications (an integer >= 1).
    :param str iter_name: the name of ``max_iter`` in the error message.
    :raises ValueError: naming ``tol`` or ``iter_name``.
    """
    finite_number(tol, "tol", strict=True)
    positive_int(max_iter, iter_name)


@dataclass
class ApplyInfo:
    r"""What a matrix-free application cost and how accurate it is.

    :param str method: ``"eig"``, ``"lanczos"``, ``"chebyshev"``, ``"cg"`` or ``"polynomial"``.
    :param int n_matvecs: number of applications of the operator.
    :param float error_estimate: estimated relative error :math:`\|u - h(D)v\| / \|h(D)v\|` (worst over the batch).
    :param bool converged: whether the tolerance was reached.
    :param torch.Tensor state: an extra output (:func:`cg_solve`: the last residual; the ``"cg"`` method of
        :class:`~deepinv_ext.spectral.ScalingFilter`: its solution, a warm start for the next call), or ``None``.

    |sep|

    :Examples:

    >>> import torch
    >>> d = torch.linspace(0.1, 0.9, 16, dtype=torch.float64)
    >>> matvec = lambda v: d * v  # a diagonal operator on (B, 16)
    >>> v = torch.ones(1, 16, dtype=torch.float64)
    >>> from deepinv_ext.spectral import cg_solve
    >>> _, info = cg_solve(matvec, v, tol=1e-10, max_iter=100)
    >>> info.method, info.n_matvecs <= 16, info.error_estimate < 1e-10, info.converged
    ('cg', True, True, True)
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
    :param torch.dtype dtype: precision of the matrix and its eigendecomposition.
    :param device: device of the probes ``e_j``.
    :param int max_dim: refuse (``ValueError``) when :math:`N` exceeds it (default 4096, i.e. 64x64 grey).
    :param int chunk: number of columns per matvec call.
    :param bool symmetrize: diagonalise :math:`(M + M^\top)/2` (the measured asymmetry is kept in ``asymmetry``).

    |sep|

    :Examples:

    >>> import torch
    >>> d = torch.linspace(0.1, 0.9, 16, dtype=torch.float64)
    >>> matvec = lambda v: d * v  # a diagonal operator on (B, 16)
    >>> v = torch.ones(1, 16, dtype=torch.float64)
    >>> from deepinv_ext.spectral import OperatorEig
    >>> eig = OperatorEig(matvec, (16,))
    >>> torch.allclose(eig.eigenvalues, d), eig.asymmetry
    (True, 0.0)
    >>> torch.allclose(eig.apply(torch.sqrt, v), d.sqrt())
    True
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
        r"""Return :math:`h(D)v = V h(\Lambda) V^\top v`.

        :param Callable fn: the scalar function :math:`h`, applied to a tensor of eigenvalues.
        :param torch.Tensor v: the vectors, shape ``(B, *shape)``.
        """
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
    :param float tol: the tolerance on the error estimate (> 0).
    :param int max_iter: maximum Lanczos steps (operator applications).
    :param int check_every: steps between two evaluations of the approximation.
    :return: ``(h(D)v, ApplyInfo)``.
    :raises ValueError: ``tol`` not > 0, ``max_iter`` or ``check_every`` not a positive integer.

    |sep|

    :Examples:

    >>> import torch
    >>> d = torch.linspace(0.1, 0.9, 16, dtype=torch.float64)
    >>> matvec = lambda v: d * v  # a diagonal operator on (B, 16)
    >>> v = torch.ones(1, 16, dtype=torch.float64)
    >>> from deepinv_ext.spectral import lanczos_apply
    >>> u, info = lanczos_apply(matvec, v, torch.sqrt, tol=1e-10, max_iter=16)
    >>> torch.allclose(u, d.sqrt()), info.method
    (True, 'lanczos')
    """
    check_budget(tol, max_iter)
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

    :param Callable matvec: symmetric operator on ``(1, ...)`` tensors.
    :param torch.Tensor v0: the start vector, shape ``(1, ...)``.
    :param int n_iter: Lanczos steps (operator applications).
    :return: (dict) ``lambda_min``, ``lambda_max``, ``residual_min``, ``residual_max``, ``n_matvecs``.

    |sep|

    :Examples:

    >>> import torch
    >>> d = torch.linspace(0.1, 0.9, 16, dtype=torch.float64)
    >>> matvec = lambda v: d * v  # a diagonal operator on (B, 16)
    >>> v = torch.ones(1, 16, dtype=torch.float64)
    >>> from deepinv_ext.spectral import lanczos_extreme
    >>> bounds = lanczos_extreme(matvec, v, n_iter=16)
    >>> round(bounds["lambda_min"], 6), round(bounds["lambda_max"], 6)
    (0.1, 0.9)
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

    :param Callable matvec: symmetric operator on ``(B, ...)`` tensors.
    :param torch.Tensor v: batch of vectors.
    :param Callable fn: the scalar function, applied to a tensor of eigenvalues.
    :param tuple bounds: :math:`(a, b)`, an interval holding the spectrum.
    :param float tol: the relative tolerance (> 0).
    :param int max_degree: the largest degree :math:`n` (operator applications).
    :return: ``(h(D)v, ApplyInfo)``.
    :raises ValueError: ``tol`` not > 0, ``max_degree`` not a positive integer, ``bounds`` not an interval.

    |sep|

    :Examples:

    >>> import torch
    >>> d = torch.linspace(0.1, 0.9, 16, dtype=torch.float64)
    >>> matvec = lambda v: d * v  # a diagonal operator on (B, 16)
    >>> v = torch.ones(1, 16, dtype=torch.float64)
    >>> from deepinv_ext.spectral import chebyshev_apply
    >>> u, info = chebyshev_apply(matvec, v, torch.sqrt, (0.05, 1.0), tol=1e-8)
    >>> torch.allclose(u, d.sqrt()), info.converged
    (True, True)
    """
    check_budget(tol, max_degree, "max_degree")
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

    :param Callable matvec: :math:`M` on ``(B, ...)`` tensors.
    :param torch.Tensor b: the right-hand sides.
    :param torch.Tensor x0: a warm start (default 0).
    :param float tol: relative residual tolerance (>= 0).
    :param int max_iter: maximum applications of :math:`M`.
    :param Callable stop: an extra stopping rule ``stop(x, r) -> (B,) bool`` on the iterate and its residual.
    :return: ``(x, ApplyInfo)``, the last residual in ``ApplyInfo.state``.
    :raises ValueError: ``tol`` not >= 0 or ``max_iter`` not an integer >= 0.

    |sep|

    :Examples:

    >>> import torch
    >>> d = torch.linspace(0.1, 0.9, 16, dtype=torch.float64)
    >>> matvec = lambda v: d * v  # a diagonal operator on (B, 16)
    >>> v = torch.ones(1, 16, dtype=torch.float64)
    >>> from deepinv_ext.spectral import cg_solve
    >>> x, info = cg_solve(matvec, v, tol=1e-12, max_iter=100)
    >>> torch.allclose(x, 1 / d), info.converged
    (True, True)
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

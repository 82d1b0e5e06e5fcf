r"""Parameter-choice rules for variational regularisation: the weight :math:`\lambda` a-priori from the noise level
(:class:`AffineParameterRule`), from training pairs (:func:`gradient_balance_lambda`), a-posteriori by the discrepancy
principle (:func:`discrepancy_lambda`), jointly with an iteration budget on validation data
(:func:`select_lambda_and_budget`), and a stopping rule without ground truth (:class:`RelativeChangeStop`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from deepinv_ext._batch import batch_norm
from deepinv_ext._validation import check_tensor, finite_number, finite_values, positive_int

__all__ = ["AffineParameterRule", "RelativeChangeStop", "discrepancy_lambda", "gradient_balance_lambda",
           "noise_norm_gaussian", "noise_norm_log_poisson", "select_lambda_and_budget"]


@dataclass(frozen=True)
class AffineParameterRule:
    r"""The a-priori parameter-choice rule :math:`\lambda(\delta) = c\,\delta + \varepsilon`.

    The convergent-regularisation survey :footcite:p:`hauptmann2024convergent` (Fig. 2) treats the weight
    :math:`\lambda` of a fixed learned regulariser :math:`g_\sigma` in :math:`f + \lambda g_\sigma` as the
    regularisation parameter and chooses it from the noise level :math:`\delta` by the affine rule

    .. math::

        \lambda(\delta) = c\,\delta + \varepsilon, \qquad c \ge 0,\ \varepsilon > 0,

    with :math:`c = 0.04` per percent of the pixel range and :math:`\varepsilon = 10^{-4}`. As
    :math:`\delta \to 0`, :math:`\lambda(\delta) \to \varepsilon`: the reconstructions are expected to converge to
    the solution :math:`x^\dagger_\varepsilon` of the noiseless problem at :math:`\lambda = \varepsilon` (not to a
    :math:`g`-minimising solution of :math:`Ax = y`, which would need :math:`\lambda \to 0` with
    :math:`\delta^2/\lambda \to 0`; the small :math:`\varepsilon` keeps the limit problem well posed).

    :param float c: slope :math:`c \ge 0` (per unit of :math:`\delta`; :math:`\delta` in the units of the
        images, e.g. a standard deviation on :math:`[0, 1]` images: the survey's :math:`c = 0.04` per percent of
        the range is ``c=4.0`` here).
    :param float eps: floor :math:`\varepsilon > 0`, the limit of :math:`\lambda` as :math:`\delta \to 0`.

    |sep|

    :Examples:

    >>> from deepinv_ext.algorithms import AffineParameterRule
    >>> rule = AffineParameterRule(c=4.0, eps=1e-4)
    >>> round(rule(0.01), 6), rule.limit
    (0.0401, 0.0001)
    """

    c: float = 4.0
    eps: float = 1e-4

    def __post_init__(self) -> None:
        finite_number(self.c, "c")
        finite_number(self.eps, "eps", strict=True)

    def __call__(self, delta: float | torch.Tensor) -> float | torch.Tensor:
        r""":math:`\lambda(\delta)` for a noise level :math:`\delta \ge 0` (float, or a tensor elementwise).

        :param float, torch.Tensor delta: the noise level :math:`\delta`.
        """
        finite_values(delta, "delta")
        return self.c * (delta if isinstance(delta, torch.Tensor) else float(delta)) + self.eps

    @property
    def limit(self) -> float:
        r""":math:`\lim_{\delta \to 0} \lambda(\delta) = \varepsilon`."""
        return self.eps


# --- AR/ACR/NETT (issue 5): data-driven and a-posteriori choices of lambda, a stopping rule without ground truth


def gradient_balance_lambda(pairs: Iterable[tuple[Tensor, Tensor]], physics, prior=None) -> float:
    r"""The weight :math:`\lambda` that balances the gradients of data term and prior on training pairs.

    The adversarial-regulariser heuristic of :footcite:t:`lunz2018adversarial`, generalised to any smooth prior.

    For :math:`\min_x \tfrac12\|Ax - y\|^2 + \lambda R(x)`, the ground truth :math:`x` of a training pair should
    be nearly stationary, :math:`A^\top(Ax - y) \approx -\lambda \nabla R(x)`, hence

    .. math::

        \lambda = \frac{\mathbb{E}\,\|A^\top(Ax - y)\|_2}{\mathbb{E}\,\|\nabla R(x)\|_2}

    over training pairs :math:`(x, y)`. With ``prior=None`` the denominator is 1: Lunz et al.'s rule
    :math:`\lambda = \mathbb{E}\|A^\top(Ax - y)\|` for a critic trained to have unit gradient norm (AR, ACR).
    Needs ground truths, but only those of the training data.

    :param Iterable pairs: batches ``(x, y)`` of ground truths and their measurements (training data only).
    :param deepinv.physics.LinearPhysics physics: the operator :math:`A` (with ``A`` and ``A_adjoint``).
    :param deepinv.optim.Prior prior: the prior (``grad``), or ``None``.
    :return: :math:`\lambda > 0` as a float.
    :raises ValueError: no pair, or a prior whose gradient vanishes on every training image.

    |sep|

    :Examples:

    With :math:`\|A^\top(Ax - y)\| = 0.2` and the Tikhonov gradient :math:`\nabla R(x) = x` of norm 2:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import gradient_balance_lambda
    >>> physics = dinv.physics.Denoising()
    >>> x = torch.ones(1, 1, 2, 2)
    >>> pairs = [(x, x + 0.1)]
    >>> round(gradient_balance_lambda(pairs, physics), 4), round(gradient_balance_lambda(pairs, physics,
    ...                                                                                   dinv.optim.Tikhonov()), 4)
    (0.2, 0.1)
    """
    data, reg, n = 0.0, 0.0, 0
    for x, y in pairs:
        data += float(batch_norm(physics.A_adjoint(physics.A(x) - y)).sum())
        if prior is not None:
            reg += float(batch_norm(prior.grad(x)).detach().sum())
        n += x.shape[0]
    if n == 0:
        raise ValueError("pairs must hold at least one batch (x, y)")
    if prior is None:
        return data / n
    if not reg > 0:
        raise ValueError("prior: its gradient vanishes on the training images, lambda is undefined")
    return data / reg


def noise_norm_gaussian(sigma: float, y: Tensor) -> Tensor:
    r"""The expected norm :math:`\delta = \sigma\sqrt{m}` of white Gaussian noise of standard deviation :math:`\sigma`
    on each of the :math:`m`-dimensional measurements of ``y``, the noise level of :func:`discrepancy_lambda`.

    :param float sigma: the standard deviation :math:`\sigma > 0`.
    :param torch.Tensor y: the measurements ``(B, ...)`` (only their shape, dtype and device are used).
    :return: :math:`\delta`, shape ``(B,)``.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.algorithms import noise_norm_gaussian
    >>> y = torch.zeros(2, 1, 10, 10)
    >>> noise_norm_gaussian(0.1, y)
    tensor([1., 1.])
    """
    finite_number(sigma, "sigma", strict=True)
    check_tensor(y, "y")
    m = y[0].numel() if y.shape[0] else math.prod(y.shape[1:])
    return torch.full((y.shape[0],), sigma * math.sqrt(m), dtype=y.dtype, device=y.device)


def noise_norm_log_poisson(y: Tensor, N0: float, mu: float) -> Tensor:
    r"""The estimated noise norm of post-log Poisson data, the noise level of :func:`discrepancy_lambda` for CT.

    For :math:`y = -\frac1\mu\log(N/N_0)`, :math:`N \sim \mathcal{P}(N_0 e^{-\mu Ax})` (deepinv's
    :class:`~deepinv.physics.LogPoissonNoise`), the delta method gives
    :math:`\operatorname{Var} y_i \approx e^{\mu (Ax)_i} / (\mu^2 N_0)`, estimated at :math:`(Ax)_i \approx y_i`:

    .. math::

        \delta = \Bigl(\sum_i \frac{e^{\mu y_i}}{\mu^2 N_0}\Bigr)^{1/2}.

    :param torch.Tensor y: the post-log measurements ``(B, ...)``.
    :param float N0: the incident photon count :math:`N_0 > 0`.
    :param float mu: the attenuation scale :math:`\mu > 0`.
    :return: :math:`\delta`, shape ``(B,)``.

    |sep|

    :Examples:

    The estimate matches the norm of simulated noise:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import noise_norm_log_poisson
    >>> _ = torch.manual_seed(0)
    >>> x = torch.zeros(1, 1, 64, 64)
    >>> y = dinv.physics.LogPoissonNoise(N0=1e3, mu=1.0)(x)
    >>> delta = noise_norm_log_poisson(y, N0=1e3, mu=1.0)
    >>> bool(abs(delta / (y - x).norm() - 1) < 0.05)
    True
    """
    finite_number(N0, "N0", strict=True)
    finite_number(mu, "mu", strict=True)
    check_tensor(y, "y")
    return torch.sqrt(torch.exp(mu * y).flatten(1).sum(dim=1) / (mu ** 2 * N0))


def discrepancy_lambda(solve: Callable[[float], Tensor], y: Tensor, physics, noise_norm: Tensor | float,
                       tau: float = 1.0, lam_range: tuple[float, float] = (1e-4, 1e2),
                       steps: int = 10) -> tuple[float, list[tuple[float, float]]]:
    r"""The discrepancy principle: the :math:`\lambda` whose reconstruction fits the data to the noise level.

    The principle of :footcite:t:`morozov1966solution` chooses :math:`\lambda` such that

    .. math::

        \frac{1}{B}\sum_b \frac{\|A x_\lambda^{(b)} - y^{(b)}\|}{\delta_b} = \tau,

    found by bisection in :math:`\log\lambda` (the residual grows with :math:`\lambda` for convex
    regularisers; for non-convex ones bisection still returns a :math:`\lambda` with the residual bracketed).
    Usable with every method: ``solve(lam)`` reconstructs the batch ``y`` with weight ``lam`` (one
    :math:`\lambda` for the batch; pass one-image batches for per-image choices). Needs no ground truth.

    :param Callable solve: ``solve(lam) -> x`` for the batch ``y``.
    :param torch.Tensor y: the measurements.
    :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
    :param torch.Tensor, float noise_norm: :math:`\delta` per image (``(B,)``) or one number (e.g.
        :func:`noise_norm_gaussian`, :func:`noise_norm_log_poisson`).
    :param float tau: the safety factor :math:`\tau` (often slightly above 1).
    :param tuple lam_range: the bracket :math:`[\lambda_{\min}, \lambda_{\max}]` searched.
    :param int steps: bisection steps (each one solve).
    :return: ``(lam, trace)`` with ``trace`` the list of ``(lam, mean residual / delta)`` tried.
    :raises ValueError: a ``lam_range`` that is not an interval of positive numbers, a ``noise_norm`` with neither
        one value nor one per image.

    |sep|

    :Examples:

    Tikhonov denoising, :math:`x_\lambda = y / (1 + \lambda)`, has the residual
    :math:`\frac{\lambda}{1+\lambda}\|y\|`, equal to :math:`\delta = \|y\|/4` at :math:`\lambda = 1/3`:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import discrepancy_lambda
    >>> y = torch.ones(1, 1, 4, 4)
    >>> lam, trace = discrepancy_lambda(lambda lam: y / (1 + lam), y, dinv.physics.Denoising(), noise_norm=1.0,
    ...                                 steps=30)
    >>> round(lam, 4)
    0.3333
    """
    if not isinstance(lam_range, (tuple, list)) or len(lam_range) != 2:
        raise ValueError(f"lam_range must be a pair (min, max), got {lam_range!r}")
    lo, hi = (finite_number(v, "lam_range", strict=True) for v in lam_range)
    if not lo < hi:
        raise ValueError(f"lam_range must satisfy 0 < min < max, got {lam_range}")
    finite_number(tau, "tau", strict=True)
    positive_int(steps, "steps")
    check_tensor(y, "y")
    finite_values(noise_norm, "noise_norm", strict=True)
    delta = torch.as_tensor(noise_norm, dtype=y.dtype, device=y.device).reshape(-1)
    if delta.numel() not in (1, y.shape[0]):
        raise ValueError(f"noise_norm must be one number or one per image ({y.shape[0]}), got {delta.numel()}")
    delta = delta.expand(y.shape[0])
    trace: list[tuple[float, float]] = []
    for _ in range(steps):
        lam = math.sqrt(lo * hi)
        ratio = float((batch_norm(physics.A(solve(lam)) - y) / delta).mean())
        trace.append((lam, ratio))
        if ratio > tau:
            hi = lam
        else:
            lo = lam
    return math.sqrt(lo * hi), trace


@dataclass(frozen=True)
class RelativeChangeStop:
    r"""A stopping rule that never looks at the ground truth: the relative changes of each image below ``tol``.

    Image :math:`b` stops once

    .. math::

        \frac{\|x_{k+1} - x_k\|}{\|x_k\|} < \text{tol} \quad\text{and}\quad
        \frac{|E(x_k) - E(x_{k+1})|}{|E(x_k)|} < \text{tol}

    (the rule of :class:`deepinv_ext.algorithms.VariationalSolver`, here for iterations written elsewhere, e.g.
    :class:`~deepinv_ext.algorithms.FISTASolver`). The energies may be omitted: then the first test alone.
    Called as ``stop(x_new, x_old, e_new=None, e_old=None)``, it returns which images have converged, shape
    ``(B,)`` (bool).

    :param float tol: relative tolerance (> 0).

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.algorithms import RelativeChangeStop
    >>> x_old = torch.ones(2, 1, 4, 4)
    >>> x_new = x_old * torch.tensor([1.001, 1.1]).reshape(2, 1, 1, 1)
    >>> RelativeChangeStop(tol=1e-2)(x_new, x_old).tolist()
    [True, False]
    """

    tol: float = 1e-6

    def __post_init__(self) -> None:
        finite_number(self.tol, "tol", strict=True)

    def __call__(self, x_new: Tensor, x_old: Tensor, e_new: Tensor | None = None,
                 e_old: Tensor | None = None) -> Tensor:
        """Boolean ``(B,)``: which images have converged.

        :param torch.Tensor x_new: :math:`x_{k+1}`.
        :param torch.Tensor x_old: :math:`x_k`.
        :param torch.Tensor e_new: :math:`E(x_{k+1})`, shape ``(B,)``, or ``None``.
        :param torch.Tensor e_old: :math:`E(x_k)`, or ``None``.
        """
        tiny = torch.finfo(x_old.dtype).tiny
        done = batch_norm(x_new - x_old) / batch_norm(x_old).clamp_min(tiny) < self.tol
        if e_new is not None and e_old is not None:
            done = done & ((e_old - e_new).abs() / e_old.abs().clamp_min(tiny) < self.tol)
        return done


def select_lambda_and_budget(solve: Callable[[float, tuple[int, ...]], dict[int, Tensor]],
                             score: Callable[[Tensor], Tensor | float], lambdas: Iterable[float],
                             budgets: Sequence[int]) -> tuple[float, int, dict[float, dict[int, float]]]:
    r"""Choose the weight :math:`\lambda` and the iteration budget :math:`K` of a reconstruction jointly.

    The pair with the best score on validation data is

    .. math::

        (\lambda^*, K^*) = \arg\max_{\lambda \in \Lambda,\ K \in \mathcal{K}} \ \mathrm{score}(x_\lambda^K),

    where :math:`x_\lambda^K` is the :math:`K`-th iterate of the solve with weight :math:`\lambda`. One solve per
    :math:`\lambda` gives every budget (its iterates recorded at each :math:`K`, e.g. by the ``record`` argument of
    :class:`~deepinv_ext.algorithms.VariationalSolver` and :class:`~deepinv_ext.algorithms.FISTASolver`).
    Stopping a non-convex energy after a fixed number of steps from a good start is itself a regulariser
    (:footcite:t:`lunz2018adversarial` reconstruct with the adversarial regulariser that way); a solve that converges before the largest budget
    stays a candidate. Ties go to the first pair, in the order of ``lambdas`` and then of ``budgets``.

    :param Callable solve: ``solve(lam, budgets) -> {K: x_K}``, the iterates of the validation solve with weight
        ``lam`` at every budget ``K`` of ``budgets``.
    :param Callable score: ``score(x) ->`` the mean validation score of the reconstructions ``x`` (e.g. the PSNR
        against the validation ground truths; larger is better).
    :param Iterable lambdas: the candidate weights :math:`\Lambda` (e.g. :math:`\lambda_0 2^k` around the
        heuristic :func:`gradient_balance_lambda`).
    :param Sequence budgets: the candidate budgets :math:`\mathcal{K}` (iteration counts).
    :return: ``(lam, K, scores)``, with ``scores[lam][K]`` the score of every pair tried.
    :raises ValueError: no candidate weight or budget.

    |sep|

    :Examples:

    >>> import torch
    >>> target = torch.ones(1, 1, 2, 2)
    >>> def solve(lam, budgets):  # iterates x_K = lam (1 - 3^-K), best at lam = 1 and the largest K
    ...     return {K: target * lam * (1 - 3.0 ** -K) for K in budgets}
    >>> lam, K, scores = select_lambda_and_budget(solve, lambda x: -(x - target).abs().mean(), [0.5, 1.0, 2.0],
    ...                                           (1, 5, 10))
    >>> lam, K
    (1.0, 10)
    """
    budgets = tuple(budgets)
    scores: dict[float, dict[int, float]] = {}
    for lam in lambdas:
        iterates = solve(lam, budgets)
        scores[lam] = {K: float(score(iterates[K])) for K in budgets}
    pairs = [(lam, K) for lam in scores for K in scores[lam]]
    if not pairs:
        raise ValueError(f"lambdas and budgets must each hold at least one candidate, got {len(scores)} weight(s) "
                         f"and budgets {budgets}")
    lam, K = max(pairs, key=lambda pair: scores[pair[0]][pair[1]])
    return lam, K, scores

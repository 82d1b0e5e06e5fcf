r"""FISTA for a nonsmooth prior with a proximal operator, every image of a batch stopped on its own
(:class:`FISTASolver`, the algorithm of :footcite:t:`beck2009fast`)."""

from __future__ import annotations

import math

import torch
from deepinv.models import Reconstructor
from deepinv.optim import Prior
from deepinv.physics import LinearPhysics
from torch import Tensor

from deepinv_ext._convergence import warn_not_converged
from deepinv_ext._validation import boolean, check_measurement, finite_number, iteration_set, positive_int
from deepinv_ext.algorithms.parameter_choice import RelativeChangeStop

__all__ = ["FISTASolver"]


class FISTASolver(Reconstructor):
    r"""FISTA for a prior with a proximal operator, each image of a batch stopped by its own relative change.

    Minimises, for any deepinv linear physics :math:`A` and any prior :math:`g` with a proximal operator (e.g.
    deepinv's :class:`~deepinv.optim.TVPrior` or :class:`~deepinv.optim.WaveletPrior`),

    .. math::

        F(x) = \tfrac12\|Ax - y\|_2^2 + \lambda\, g(x),

    by the fast iterative shrinkage-thresholding algorithm of :footcite:t:`beck2009fast`: from
    :math:`x_0 = x_{-1}`, :math:`t_0 = 1`,

    .. math::

        t_{k+1} = \frac{1 + \sqrt{1 + 4t_k^2}}{2}, \qquad
        z_k = x_k + \frac{t_k - 1}{t_{k+1}}(x_k - x_{k-1}), \qquad
        x_{k+1} = \operatorname{prox}_{(\lambda/L) g}\Bigl(z_k - \tfrac1L A^\top(Az_k - y)\Bigr),

    which converges (:math:`F(x_k) - F^* = O(1/k^2)`) for a convex :math:`g` when :math:`L \ge \|A\|^2`, the
    Lipschitz constant of the gradient of the data term (:meth:`step_condition` checks it). Every image stops on
    its own, by the relative change :math:`\|x_{k+1} - x_k\| / \|x_k\| <` ``tol``
    (:class:`~deepinv_ext.algorithms.RelativeChangeStop`, no ground truth), and keeps its iterate from then on.

    Why not deepinv's :class:`deepinv.optim.FISTA` (0.5): its stopping test is the *batch mean* of the relative
    changes, so with ``early_stop=True`` every image of a batch stops at the same iteration and an image's result
    depends on the other images in its batch; without it, every image runs ``max_iter`` iterations. Its momentum is
    :math:`\alpha_k = (k + a - 1)/(k + a)` :footcite:p:`chambolle2015convergence` rather than :math:`t_k`. Neither
    records iterates at chosen iterations, which the joint choice of :math:`\lambda` and an iteration budget needs
    (:func:`~deepinv_ext.algorithms.select_lambda_and_budget`).

    After a call, ``iterations`` holds the number of iterations run (until the last image stopped),
    ``converged`` whether each image met the stopping rule (shape ``(B,)``; a
    :class:`~deepinv_ext.algorithms.NotConvergedWarning` names the others) and ``snapshots`` the iterates at the
    iterations ``record``.

    **Memory and training.** By default (``differentiable=False``) the solver is for inference: it iterates under
    :func:`torch.no_grad`, whatever the prior's ``requires_grad`` flags, so no iteration keeps an autograd graph
    and the output carries no gradient. With ``differentiable=True`` autograd records the iterations whenever it is
    enabled (derivatives by unrolling, memory growing with the iterations; a
    :class:`~deepinv_ext.priors.SmoothLearnedPrior`'s prox carries its implicit derivative).

    :param deepinv.optim.Prior prior: the prior :math:`g`, with ``prox(x, gamma=...)``.
    :param float lambda_reg: its weight :math:`\lambda \ge 0`.
    :param float lipschitz: :math:`L \ge \|A\|^2` (the step is :math:`1/L`), e.g. ``1.01 *
        physics.compute_sqnorm(x0)``.
    :param int max_iter: maximum number of iterations (0: return the starting point).
    :param float tol: tolerance of the relative change (> 0).
    :param tuple[int, ...] record: iterations :math:`k` whose iterates :math:`x_k` are kept in ``snapshots`` (a dict
        ``k -> x_k``; ``0`` is the starting point, and an image stopped before :math:`k` keeps its final iterate).
    :param bool differentiable: record the iterations for autograd (training through the solver); ``False``
        (default): iterate without a graph, in memory independent of ``max_iter``.

    |sep|

    :Examples:

    >>> import deepinv as dinv
    >>> import torch
    >>> x = torch.zeros(2, 1, 16, 16)
    >>> x[..., 4:12, 4:12] = 1.0
    >>> physics = dinv.physics.Denoising()
    >>> y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    >>> solver = FISTASolver(dinv.optim.TVPrior(n_it_max=50), lambda_reg=0.05, lipschitz=1.0, max_iter=100,
    ...                      tol=1e-4)
    >>> x_hat = solver(y, physics)
    >>> bool(((x_hat - x).norm() < (y - x).norm()).item()), solver.converged.tolist()
    (True, [True, True])
    """

    def __init__(self, prior: Prior, lambda_reg: float, lipschitz: float, max_iter: int = 100, tol: float = 1e-6,
                 record: tuple[int, ...] = (), differentiable: bool = False) -> None:
        super().__init__()
        if not callable(getattr(prior, "prox", None)):
            raise TypeError(f"prior must have a prox method, got {type(prior).__name__}")
        self.prior = prior
        self.lambda_reg = finite_number(lambda_reg, "lambda_reg")
        self.lipschitz = finite_number(lipschitz, "lipschitz", strict=True)
        self.max_iter = positive_int(max_iter, "max_iter", minimum=0)
        self.stop = RelativeChangeStop(tol)
        self.differentiable = boolean(differentiable, "differentiable")
        self.record = iteration_set(record, self.max_iter)
        self.snapshots: dict[int, Tensor] = {}
        self.iterations = 0
        self.converged: Tensor | None = None

    def step(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r"""One proximal-gradient step :math:`\operatorname{prox}_{(\lambda/L) g}(x - A^\top(Ax - y)/L)`.

        :param torch.Tensor x: the point :math:`x` (the extrapolated :math:`z_k` in the iteration).
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :return: the next iterate, of the shape of ``x``.
        """
        v = x - physics.A_adjoint(physics.A(x) - y) / self.lipschitz
        return self.prior.prox(v, gamma=self.lambda_reg / self.lipschitz)

    def step_condition(self, physics: LinearPhysics, x: Tensor, max_iter: int = 100) -> bool:
        r"""Whether :math:`L \ge \|A\|^2` (FISTA's convergence condition), :math:`\|A\|^2` estimated by deepinv's
        power iteration (``physics.compute_sqnorm``).

        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x: an image of the physics' input shape, the start of the power iteration.
        :param int max_iter: power iterations.
        :return: ``True`` if ``lipschitz`` is at least the estimated :math:`\|A\|^2`.
        """
        return bool(self.lipschitz >= float(physics.compute_sqnorm(x, max_iter=max_iter, verbose=False)))

    def forward(self, y: Tensor, physics: LinearPhysics, x_init: Tensor | None = None, **kwargs) -> Tensor:
        r"""Solve for every image of the batch.

        :param torch.Tensor y: measurements, of the shape ``physics.A`` gives, finite.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x_init: :math:`x_0` (default: :math:`A^\top y`), of the shape of :math:`A^\top y`.
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: the reconstruction, of the shape of :math:`A^\top y`.
        :raises TypeError: a physics that is not linear, a ``y`` or ``x_init`` that is not a real floating tensor.
        :raises ValueError: an empty batch, NaN or inf in ``y``, or a ``y`` that does not fit ``physics``.
        """
        x_adj = check_measurement(y, physics, x_init)
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            return self._iterate(y, physics, x_adj if x_init is None else x_init.clone())

    def _iterate(self, y: Tensor, physics: LinearPhysics, x: Tensor) -> Tensor:
        x_prev = x
        self.snapshots = {0: x.clone()} if 0 in self.record else {}
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        t, k = 1.0, 0
        while k < self.max_iter and active.any():
            k += 1
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            x_new = self.step(x + (t - 1) / t_new * (x - x_prev), y, physics)
            done = self.stop(x_new, x)
            keep = active.reshape(-1, *([1] * (x.ndim - 1)))  # a stopped image keeps its iterate
            x_prev, x, t = torch.where(keep, x, x_prev), torch.where(keep, x_new, x), t_new
            if k in self.record:
                self.snapshots[k] = x.clone()
            active &= ~done
        for j in self.record:  # budgets beyond the last iteration: the final iterate
            self.snapshots.setdefault(j, x.clone())
        self.iterations, self.converged = k, ~active
        warn_not_converged(type(self).__name__, self.converged, {f"reached max_iter={self.max_iter}": active},
                           stacklevel=3)
        return x

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_reconstructor` (side-effect free: draws only from
        ``generator``).

        :param torch.Generator generator: the CPU generator of every random draw (``None``: one seeded with 0).
        :return: ``{"model", "physics", "dataset"}``.
        """
        import deepinv as dinv

        from deepinv_ext.testing.examples import example_blur, example_generator, example_images

        g = example_generator(generator)
        physics = example_blur(16, 0.01)
        model = cls(dinv.optim.TVPrior(n_it_max=10), lambda_reg=0.01, lipschitz=1.0, max_iter=5, tol=1e-4)
        return {"model": model, "physics": physics, "dataset": example_images(2, 16, generator=g)}

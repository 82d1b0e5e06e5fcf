r"""Variational reconstruction with a smooth learned prior: accelerated gradient descent with Lipschitz backtracking
(:class:`VariationalSolver`, the iteration of :footcite:t:`kobler2020total`, appendix E)."""

from __future__ import annotations

import torch
from deepinv.models import Reconstructor
from deepinv.optim import Prior
from deepinv.optim.linear import conjugate_gradient
from deepinv.physics import LinearPhysics
from torch import Tensor

from deepinv_ext._batch import batch_sqnorm
from deepinv_ext._convergence import warn_not_converged
from deepinv_ext._validation import boolean, check_measurement, finite_number, iteration_set, positive_int
from deepinv_ext.priors.accelerated import accelerated_descent
from deepinv_ext.priors.smooth_energy import check_fn_and_grad, energy_and_grad_of
from deepinv_ext.priors.step_size import Backtracking

__all__ = ["VariationalSolver"]


class VariationalSolver(Reconstructor):
    r"""Variational reconstruction with a smooth prior, by accelerated gradient descent with Lipschitz backtracking.

    Minimises, for any deepinv linear physics :math:`A` and any smooth prior :math:`R` (``fn`` and ``grad``, e.g.
    :class:`deepinv_ext.priors.TDV`),

    .. math::

        E(x) = \frac{w}{2}\|Ax - y\|_2^2 + R(x),

    by the accelerated gradient method with Lipschitz backtracking of :footcite:t:`kobler2020total` (appendix E,
    Algorithm 1): from a few conjugate-gradient steps on the normal equations :math:`A^\top A x = A^\top y`,

    .. math::

        \bar x_k = x_k + \beta_k (x_k - x_{k-1}), \qquad
        x_{k+1} = \bar x_k - \tfrac{1}{L_k}\nabla E(\bar x_k),

    where :math:`L_k` is doubled until the quadratic upper bound
    :math:`E(x_{k+1}) \le E(\bar x_k) - \frac{1}{2L_k}\|\nabla E(\bar x_k)\|^2` holds and is then relaxed
    (:math:`L_{k+1} = \eta L_k`, :math:`\eta < 1`) for the next iteration, and :math:`\beta_k = (t_{k-1}-1)/t_k` with
    the :math:`t_k = (1 + \sqrt{1 + 4t_{k-1}^2})/2` of FISTA :footcite:p:`beck2009fast`. The energy is kept
    monotone: a step that would raise :math:`E` above :math:`E(x_k)` is redone from :math:`x_k` without momentum
    (and the momentum restarted, :footcite:t:`odonoghue2015adaptive`), where the sufficient-decrease condition
    guarantees :math:`E(x_{k+1}) \le E(x_k) - \frac{1}{2L_k}\|\nabla E(x_k)\|^2`. This converges to stationary
    points for a non-convex smooth :math:`E` with Lipschitz gradient.

    Every batch element has its own :math:`L_k`, momentum, acceptance and stopping (a batch gives the results of
    its images one by one). Stopping rule, without ground truth: the relative change
    :math:`\|x_{k+1} - x_k\| / \|x_k\|` and the relative energy decrease both below ``tol`` (:meth:`check_conv`),
    or, if ``grad_tol`` is given, the gradient norm :math:`\|\nabla E(x)\|_2 \le` ``grad_tol`` instead (a
    certificate: for a :math:`\mu`-strongly convex :math:`E` the returned :math:`x` is within
    ``grad_tol`` :math:`/\mu` of the minimiser, which is what bilevel learning with inexact solves needs,
    :class:`~deepinv_ext.algorithms.BilevelReconstructor`), or a point stationary to working precision (no decrease of :math:`E` left above its round-off); an image stops
    unconverged at ``max_iter``, or when it stalls (a decrease was predicted by the gradient but no step showed it:
    a prior whose ``grad`` is not the gradient of its ``fn``). The iteration is
    :func:`deepinv_ext.priors.accelerated.accelerated_descent`, shared with the proximal operators of the smooth
    learned priors (:class:`deepinv_ext.priors.SmoothLearnedPrior`).

    After a call, ``history`` holds the energy of every iterate (a list of ``(B,)`` tensors, the first one at the
    CG initialisation), ``iterations`` the number of iterations run, ``lipschitz`` the final :math:`L` per
    batch element, ``converged`` whether each element met the stopping rule (shape ``(B,)``; a
    :class:`~deepinv_ext.algorithms.NotConvergedWarning` names the others) and ``stalled`` which of those stopped
    because no step lowered their energy although the gradient predicted a decrease.

    **Memory and training.** By default (``differentiable=False``) the solver is for inference: it iterates under
    :func:`torch.no_grad`, whatever the prior's ``requires_grad`` flags, so no iteration keeps an autograd graph
    (a prior's gradient by autograd differentiates a detached copy of the iterate and frees it at once), memory does
    not grow with ``max_iter``, and the output carries no gradient. With ``differentiable=True`` (training through
    the solver, e.g. in :class:`deepinv.Trainer`), autograd records the iterations whenever it is enabled, and they
    are differentiated by unrolling, with the backtracking and restart decisions held fixed, at a memory cost
    growing with ``max_iter`` (one iteration of the published TDV on a 256x256 image holds about 2.4 GiB).

    :param deepinv.optim.Prior prior: a smooth prior with ``fn`` (per batch element) and ``grad``; for a
        :class:`deepinv_ext.priors.SmoothLearnedPrior` (e.g. :class:`deepinv_ext.priors.TDV`) its
        ``energy_and_grad(x)`` gives both in one sweep.
    :param float weight: the data weight :math:`w`.
    :param int max_iter: maximum number of accelerated iterations.
    :param int cg_init_iter: CG iterations on :math:`A^\top A x = A^\top y` for :math:`x_0` (0: start at
        :math:`A^\top y`).
    :param float lipschitz_init: initial estimate of the local Lipschitz constant :math:`L_0` of :math:`\nabla E`.
    :param float increase: factor applied to :math:`L` when the upper bound fails (> 1).
    :param float decrease: factor applied to :math:`L` after an accepted step (in (0, 1]).
    :param float tol: relative tolerance of the stopping rule.
    :param float grad_tol: if given (> 0), stop an image when :math:`\|\nabla E(x)\|_2 \le` ``grad_tol``
        (absolute, per image) instead of the relative-change rule; the image returned is the point whose gradient
        was measured.
    :param int max_backtracking: maximum increases of :math:`L` in one iteration.
    :param bool progress: show a tqdm progress bar.
    :param tuple[int, ...] record: iterations :math:`k` whose iterates :math:`x_k` are kept in ``snapshots``
        (a dict ``k -> x_k``; ``0`` is the initialisation, and an image stopped before :math:`k` keeps its final
        iterate), so that one solve gives the reconstructions of every iteration budget :math:`K \le`
        ``max_iter``, e.g. to choose an early-stopping :math:`K` on validation data (:footcite:t:`lunz2018adversarial`
        reconstruct by a fixed number of gradient steps).
    :param bool differentiable: record the iterations for autograd (training through the solver); ``False``
        (default): iterate without a graph, in memory independent of ``max_iter`` (as ``differentiable`` of
        :class:`torch.optim.Optimizer`).

    |sep|

    :Examples:

    >>> import deepinv as dinv, torch
    >>> from deepinv.physics.functional import gaussian_blur
    >>> from deepinv_ext.algorithms import VariationalSolver
    >>> from deepinv_ext.priors import TDV
    >>> prior = TDV(num_features=4, num_macro_blocks=1)         # trainable parameters (requires_grad=True)
    >>> physics = dinv.physics.BlurFFT((1, 16, 16), filter=gaussian_blur(sigma=(1.0, 1.0)))
    >>> y = physics(torch.rand(1, 1, 16, 16))
    >>> VariationalSolver(prior, weight=50.0, max_iter=5)(y, physics).requires_grad      # inference: no graph
    False
    >>> VariationalSolver(prior, weight=50.0, max_iter=5, differentiable=True)(y, physics).requires_grad
    True
    """

    def __init__(self, prior: Prior, weight: float = 1.0, max_iter: int = 200, cg_init_iter: int = 10,
                 lipschitz_init: float = 1.0, increase: float = 2.0, decrease: float = 0.9, tol: float = 1e-5,
                 max_backtracking: int = 50, progress: bool = False, record: tuple[int, ...] = (),
                 differentiable: bool = False, grad_tol: float | None = None) -> None:
        super().__init__()
        check_fn_and_grad(prior)
        self.prior = prior
        self.weight = finite_number(weight, "weight", strict=True)
        self.lipschitz_init = finite_number(lipschitz_init, "lipschitz_init", strict=True)
        self.tol = finite_number(tol, "tol", strict=True)
        self.grad_tol = None if grad_tol is None else finite_number(grad_tol, "grad_tol", strict=True)
        self.max_iter = positive_int(max_iter, "max_iter", minimum=0)
        self.cg_init_iter = positive_int(cg_init_iter, "cg_init_iter", minimum=0)
        self.backtracking = Backtracking(increase, decrease, max_backtracking)
        self.progress = boolean(progress, "progress")
        self.differentiable = boolean(differentiable, "differentiable")
        self.record = iteration_set(record, self.max_iter)
        self.snapshots: dict[int, Tensor] = {}
        self.history: list[Tensor] = []
        self.iterations = 0
        self.lipschitz: Tensor | None = None
        self.converged: Tensor | None = None
        self.stalled: Tensor | None = None

    # ------------------------------------------------------------------ the energy
    def energy(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`E(x) = \frac{w}{2}\|Ax - y\|^2 + R(x)` per batch element.

        :param torch.Tensor x: the image :math:`x`, ``(B, ...)``.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :return: :math:`E(x)`, shape ``(B,)``.
        """
        return 0.5 * self.weight * batch_sqnorm(physics.A(x) - y) + self.prior.fn(x).reshape(-1)

    def energy_and_grad(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> tuple[Tensor, Tensor]:
        r""":math:`(E(x), \nabla E(x))` with :math:`\nabla E(x) = w A^\top(Ax - y) + \nabla R(x)`, in one forward and one
        backward sweep of a :class:`~deepinv_ext.priors.SmoothLearnedPrior`.

        :param torch.Tensor x: the image :math:`x`, ``(B, ...)``.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :return: the energies, shape ``(B,)``, and the gradient, of the shape of ``x``.
        """
        r = physics.A(x) - y
        e_reg, g_reg = energy_and_grad_of(self.prior, x)
        return 0.5 * self.weight * batch_sqnorm(r) + e_reg.reshape(-1), self.weight * physics.A_adjoint(r) + g_reg

    def initialise(self, y: Tensor, physics: LinearPhysics) -> Tensor:
        r"""The starting point :math:`x_0`: ``cg_init_iter`` CG steps on :math:`A^\top A x = A^\top y` from zero
        (:math:`A^\top y` if ``cg_init_iter=0``).

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :return: :math:`x_0`, of the shape of :math:`A^\top y`.
        """
        b = physics.A_adjoint(y)
        if self.cg_init_iter == 0:
            return b
        return conjugate_gradient(physics.A_adjoint_A, b, max_iter=self.cg_init_iter, tol=1e-8,
                                  eps=torch.finfo(b.dtype).tiny)

    def forward(self, y: Tensor, physics: LinearPhysics, x_init: Tensor | None = None, **kwargs) -> Tensor:
        r"""Solve for every batch element.

        :param torch.Tensor y: measurements, of the shape ``physics.A`` gives, finite, in the prior's dtype.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x_init: :math:`x_0` (default: CG initialisation), of the shape of :math:`A^\top y`.
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: the reconstruction, of the shape of :math:`A^\top y`.
        :raises TypeError: a physics that is not linear, a ``y`` or ``x_init`` that is not a real floating tensor of
            the prior's dtype.
        :raises ValueError: an empty batch, NaN or inf in ``y``, or a ``y`` that does not fit ``physics``.
        """
        check_measurement(y, physics, x_init, model=self)
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            return self._solve(y, physics, x_init)

    def _solve(self, y: Tensor, physics: LinearPhysics, x_init: Tensor | None) -> Tensor:
        x = self.initialise(y, physics) if x_init is None else x_init.clone()
        self.snapshots, self.history = {}, []

        def record(k: int, x_k: Tensor, e_k: Tensor) -> None:
            self.history.append(e_k.detach().clone())
            if k in self.record:
                self.snapshots[k] = x_k.detach().clone()

        result = accelerated_descent(
            lambda z: self.energy(z, y, physics), lambda z: self.energy_and_grad(z, y, physics), x,
            max_iter=self.max_iter, lipschitz=self.lipschitz_init, backtracking=self.backtracking,
            step_converged=self.check_conv if self.grad_tol is None else None,
            grad_converged=None if self.grad_tol is None else self.check_grad, callback=record, progress=self.progress)
        self.iterations = len(self.history) - 1
        self.lipschitz, self.converged, self.stalled = result.lipschitz, result.converged, result.stalled
        warn_not_converged(type(self).__name__, result.converged, {
            "stalled: no step lowered the energy as its gradient predicts (is the prior's grad the gradient of its "
            "fn?)": result.stalled, "started at a non-finite energy": result.not_finite,
            f"reached max_iter={self.max_iter}": ~result.converged & ~result.stalled & ~result.not_finite})
        for k in self.record:  # budgets beyond the last iteration: the final iterate
            self.snapshots.setdefault(k, result.x.detach().clone())
        return result.x

    def check_conv(self, x_prev: Tensor, x: Tensor, e_prev: Tensor, e: Tensor) -> Tensor:
        r"""The stopping rule, per image (shape ``(B,)``, bool): both relative changes below ``tol``,

        .. math::

            \frac{\|x_{k+1} - x_k\|}{\|x_k\|} < \texttt{tol} \quad\text{and}\quad
            \frac{|E(x_k) - E(x_{k+1})|}{|E(x_k)|} < \texttt{tol}.

        :param torch.Tensor x_prev: :math:`x_k`.
        :param torch.Tensor x: :math:`x_{k+1}`.
        :param torch.Tensor e_prev: :math:`E(x_k)`, shape ``(B,)``.
        :param torch.Tensor e: :math:`E(x_{k+1})`.
        :return: which images have converged, shape ``(B,)``.
        """
        tiny = torch.finfo(x_prev.dtype).tiny
        dx = torch.sqrt(batch_sqnorm(x - x_prev)) / torch.sqrt(batch_sqnorm(x_prev)).clamp_min(tiny)
        de = (e_prev - e).abs() / e_prev.abs().clamp_min(tiny)
        return (dx < self.tol) & (de < self.tol)

    def check_grad(self, x: Tensor, grad: Tensor) -> Tensor:
        r"""The stopping rule with ``grad_tol``, per image (shape ``(B,)``, bool): :math:`\|\nabla E(x)\|_2 \le`
        ``grad_tol``.

        :param torch.Tensor x: the point (unused: the rule looks at its gradient only).
        :param torch.Tensor grad: :math:`\nabla E(x)`.
        :return: which images have converged, shape ``(B,)``.
        """
        return torch.sqrt(batch_sqnorm(grad)) <= self.grad_tol

    def monotone(self) -> bool:
        r"""Whether the energies of the last call never increased (up to round-off of the dtype)."""
        h = torch.stack(self.history)
        eps = 10 * torch.finfo(h.dtype).eps * h.abs().amax(dim=0)
        return bool(((h[1:] - h[:-1]) <= eps).all())

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_reconstructor` (side-effect free: draws only from
        ``generator``).

        :param torch.Generator generator: the CPU generator of every random draw (``None``: one seeded with 0).
        :return: ``{"model", "physics", "dataset"}``.
        """

        from deepinv_ext.priors import TDV
        from deepinv_ext.testing.examples import example_blur, example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = TDV(num_features=4, num_macro_blocks=1)
        physics = example_blur(24, 0.02)
        model = cls(prior, weight=50.0, max_iter=5, cg_init_iter=3, differentiable=True)  # trains in the check
        return {"model": model, "physics": physics,
                "dataset": example_images(4, 24, generator=g)}

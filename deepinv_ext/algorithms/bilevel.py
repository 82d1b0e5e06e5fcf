r"""Bilevel learning of a regulariser: the reconstruction is the minimiser of a variational energy, and the
parameters of the energy are learned through that minimiser (:class:`BilevelReconstructor`).

Bilevel learning :footcite:p:`kunisch2013bilevel,hauptmann2024convergent` fits the parameters :math:`\theta` of a
regulariser and its weight :math:`\lambda` so that the *minimiser* of the variational problem (the lower level)

.. math::

    \hat x(\theta) = \arg\min_x E_\theta(x), \qquad E_\theta(x) = \tfrac12\|Ax - y\|_2^2 + \lambda R_\theta(x),

is close to the ground truth, :math:`\min_\theta \mathbb{E}\,\ell(\hat x(\theta))` (the upper level), e.g.
:math:`\ell(x) = \frac12\|x - x_{\mathrm{true}}\|^2`. Where :math:`\nabla^2 E_\theta(\hat x)` is invertible, the
implicit function theorem gives the hypergradient

.. math::

    \nabla_\theta\, \ell(\hat x(\theta)) = -\big(\partial_\theta \nabla_x E_\theta(\hat x)\big)^\top q, \qquad
    \nabla_x^2 E_\theta(\hat x)\, q = \nabla \ell(\hat x),

where :math:`q` comes from conjugate gradients on Hessian-vector products (:mod:`deepinv_ext.priors.implicit`).
"""

from __future__ import annotations

import torch
from deepinv.models import Reconstructor
from deepinv.optim import Prior
from deepinv.physics import LinearPhysics
from torch import Tensor

from deepinv_ext._batch import batch_sqnorm, per_sample
from deepinv_ext._validation import finite_number, positive_int
from deepinv_ext.algorithms.variational import VariationalSolver
from deepinv_ext.priors.implicit import AdjointSolve, implicit_fixed_point
from deepinv_ext.priors.scaled import ScaledPrior

__all__ = ["BilevelReconstructor", "HYPERGRADIENTS"]

HYPERGRADIENTS = ("implicit", "jfb", "unrolled")


class BilevelReconstructor(Reconstructor):
    r"""The minimiser of :math:`\frac12\|Ax - y\|^2 + \lambda R_\theta(x)` as a reconstruction that trains by bilevel
    learning, in :class:`deepinv.Trainer` or any loop that calls ``backward``.

    The lower level is solved by :class:`~deepinv_ext.algorithms.VariationalSolver` (accelerated gradient descent
    with backtracking) until the gradient norm of the energy is at most ``grad_tol`` per image, so that for a
    :math:`\mu`-strongly convex energy the result is within ``grad_tol`` :math:`/\mu` of the minimiser. The solve
    itself records no graph; the derivative of the output with respect to :math:`\theta`, :math:`\lambda` (and
    :math:`y`) is, by ``hypergradient``:

    - ``"implicit"`` (default): the implicit derivative of the module docstring: a backward pass solves
      :math:`\nabla^2 E(\tilde x)\, q = g` for the incoming gradient :math:`g` by conjugate gradients (to
      ``cg_tol``, relative) and returns :math:`-(\partial_\theta\nabla_x E)^\top q`, in the memory of one gradient
      evaluation. It is exact at an exact minimiser; :class:`~deepinv_ext.algorithms.MAID` bounds its error for an
      inexact one.
    - ``"jfb"``: Jacobian-free backpropagation :footcite:p:`fung2022jfb`: the Hessian is replaced by
      :math:`L I`, :math:`L` the solver's final Lipschitz estimate, i.e. the derivative of one gradient step
      :math:`\tilde x - \frac1L\nabla E(\tilde x)` at the solution (no linear solve; a descent direction only under
      conditions on :math:`\nabla^2 E`).
    - ``"unrolled"``: autograd through every iteration of the solver (memory growing with the iterations; the
      backtracking decisions held fixed).

    After a call, ``lower_iterations`` holds the solver's iterations, ``residual`` the gradient norm
    :math:`\|\nabla E(\tilde x)\|` per image (``"implicit"`` and ``"jfb"``), and, after a backward pass of the
    implicit derivative, ``adjoint`` the :class:`~deepinv_ext.priors.implicit.AdjointSolve` (its residual and
    conjugate-gradient iterations).

    :param deepinv.optim.Prior prior: :math:`R_\theta`: a :class:`~deepinv_ext.priors.SmoothLearnedPrior` (TDV,
        AR, ACR, NETT, the filter bank) or any prior with ``fn`` and a ``grad`` that autograd can differentiate in
        :math:`x` and :math:`\theta`.
    :param float lam: the weight :math:`\lambda > 0` (its initial value if learned).
    :param bool learn_lam: learn :math:`\lambda` (as :math:`e^\rho`, see :class:`~deepinv_ext.priors.ScaledPrior`).
    :param str hypergradient: ``"implicit"``, ``"jfb"`` or ``"unrolled"``.
    :param float grad_tol: the lower level's tolerance on :math:`\|\nabla E(x)\|_2` per image (absolute, > 0).
    :param int max_iter: the lower level's maximum iterations.
    :param float cg_tol: relative tolerance of the conjugate-gradient solve of the implicit derivative.
    :param int cg_max_iter: its maximum iterations.
    :param int cg_init_iter: conjugate-gradient steps on :math:`A^\top A x = A^\top y` for the solver's start
        (:class:`~deepinv_ext.algorithms.VariationalSolver`).
    :param float lipschitz_init: the solver's initial Lipschitz estimate.
    :raises TypeError: ``prior`` without ``fn`` and ``grad`` methods.
    :raises ValueError: an unknown ``hypergradient``; a tolerance, count or weight out of range.

    |sep|

    :Examples:

    Learn the weight of deepinv's Tikhonov prior :math:`R(x) = \frac12\|x\|^2` for denoising, whose minimiser is
    :math:`\hat x = y/(1+\lambda)`: the implicit hypergradient equals the exact derivative.

    >>> import deepinv as dinv, torch
    >>> from deepinv_ext.algorithms import BilevelReconstructor
    >>> model = BilevelReconstructor(dinv.optim.prior.Tikhonov(), lam=1.0, grad_tol=1e-10, cg_tol=1e-12).double()
    >>> y = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    >>> x_true = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    >>> loss = 0.5 * (model(y, dinv.physics.Denoising()) - x_true).pow(2).sum()
    >>> loss.backward()
    >>> exact = (y / 2 - x_true).mul(-y / 4).sum()          # d loss / d lambda at lambda = 1 (= d / d log lambda)
    >>> bool(torch.isclose(model.regularizer.log_lam.grad, exact))
    True
    """

    def __init__(self, prior: Prior, lam: float = 1.0, learn_lam: bool = True, hypergradient: str = "implicit",
                 grad_tol: float = 1e-4, max_iter: int = 500, cg_tol: float = 1e-6, cg_max_iter: int = 200,
                 cg_init_iter: int = 0, lipschitz_init: float = 1.0) -> None:
        super().__init__()
        if hypergradient not in HYPERGRADIENTS:
            raise ValueError(f"hypergradient must be one of {HYPERGRADIENTS}, got {hypergradient!r}")
        self.hypergradient = hypergradient
        self.cg_tol = finite_number(cg_tol, "cg_tol", strict=True)
        self.cg_max_iter = positive_int(cg_max_iter, "cg_max_iter")
        self.solver = VariationalSolver(ScaledPrior(prior, lam, learn_lam=learn_lam), weight=1.0, max_iter=max_iter,
                                        cg_init_iter=cg_init_iter, lipschitz_init=lipschitz_init, grad_tol=grad_tol,
                                        differentiable=hypergradient == "unrolled")
        self.lower_iterations = 0
        self.residual: Tensor | None = None
        self.adjoint: AdjointSolve | None = None

    @property
    def regularizer(self) -> ScaledPrior:
        r""":math:`\lambda R_\theta`, the prior of the lower level (its ``prior`` is :math:`R_\theta`, its ``lam``
        :math:`\lambda`)."""
        return self.solver.prior

    @property
    def grad_tol(self) -> float:
        r"""The lower level's tolerance on :math:`\|\nabla E\|_2` per image (settable, e.g. by an adaptive scheme)."""
        return self.solver.grad_tol

    @grad_tol.setter
    def grad_tol(self, value: float) -> None:
        self.solver.grad_tol = finite_number(value, "grad_tol", strict=True)

    def energy_grad(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`\nabla E_\theta(x) = A^\top(Ax - y) + \lambda\nabla R_\theta(x)`, differentiable in :math:`x`,
        :math:`\theta`, :math:`\lambda` and :math:`y` whenever autograd records.

        :param torch.Tensor x: the images :math:`x`.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :return: the gradient, shape of ``x``.
        """
        return self.solver.energy_and_grad(x, y, physics)[1]

    def forward(self, y: Tensor, physics: LinearPhysics, x_init: Tensor | None = None, **kwargs) -> Tensor:
        r"""Solve the lower level and attach the chosen derivative (class docstring).

        :param torch.Tensor y: the measurements, as :class:`~deepinv_ext.algorithms.VariationalSolver` takes them.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x_init: the solver's start (a warm start; default: its CG initialisation).
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: :math:`\tilde x`, the approximate minimiser, shape of :math:`A^\top y`.
        """
        x = self.solver(y, physics, x_init=x_init)
        self.lower_iterations = self.solver.iterations
        if self.hypergradient == "unrolled":
            return x
        x = x.detach()
        learned = [*self.parameters(), *(physics.parameters() if isinstance(physics, torch.nn.Module) else ())]
        if not torch.is_grad_enabled() or not (y.requires_grad or any(p.requires_grad for p in learned)):
            with torch.no_grad():
                self.residual = torch.sqrt(batch_sqnorm(self.energy_grad(x, y, physics)))
            return x
        if self.hypergradient == "jfb":
            f = self._gradient_step(x, y, physics, 1.0 / self.solver.lipschitz.to(x.dtype))
            return x + (f - f.detach())  # the value of x, the derivative of one gradient step
        return implicit_fixed_point(x, lambda z: self._gradient_step(z, y, physics), tol=self.cg_tol,
                                    max_iter=self.cg_max_iter, on_solve=self._record_adjoint)

    def _gradient_step(self, z: Tensor, y: Tensor, physics: LinearPhysics, step: Tensor | None = None) -> Tensor:
        g = self.energy_grad(z, y, physics)
        self.residual = torch.sqrt(batch_sqnorm(g.detach()))
        return z - (g if step is None else per_sample(step, g) * g)

    def _record_adjoint(self, solve: AdjointSolve) -> None:
        self.adjoint = solve

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_reconstructor` (side-effect free: draws only from
        ``generator``).

        :param torch.Generator generator: the CPU generator of every random draw (``None``: one seeded with 0).
        :return: ``{"model", "physics", "dataset"}``.
        """
        from deepinv_ext.priors import SparsifyingFilterBank
        from deepinv_ext.testing.examples import example_blur, example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = SparsifyingFilterBank(num_filters=4, kernel_size=3, init_weight=0.1, smoothing=0.05)
        model = cls(prior, lam=0.1, grad_tol=1e-3, max_iter=50, cg_max_iter=20)
        return {"model": model, "physics": example_blur(16, 0.02), "dataset": example_images(4, 16, generator=g)}

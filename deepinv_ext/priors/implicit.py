r"""Implicit differentiation of a fixed point computed by an inner solve (shared by the priors and the bilevel solver).

Let :math:`z^\star = F_\theta(z^\star)` be a fixed point of a map :math:`F_\theta(z)` whose Jacobian
:math:`\partial_z F` is symmetric, e.g. a gradient step :math:`F(z) = z - \nabla E_\theta(z)` (then
:math:`z^\star` minimises :math:`E_\theta`) or the prox problem's :math:`F(u) = x - \gamma\nabla R_\theta(u)`. By the
implicit function theorem (where :math:`I - \partial_z F(z^\star)` is invertible), for a loss :math:`\ell(z^\star)`

.. math::

    \frac{\partial \ell}{\partial \theta} = v^\top \frac{\partial F}{\partial \theta}\Big|_{z^\star}, \qquad
    \big(I - \partial_z F(z^\star)\big)\, v = \nabla \ell(z^\star),

with :math:`v` from batched conjugate gradients on vector-Jacobian products of :math:`F` (double backward through
:math:`\nabla E`); for :math:`F(z) = z - \nabla E(z)` the system is :math:`\nabla^2 E(z^\star)\, v = \nabla\ell`.
Memory is that of one gradient evaluation, whatever the number of inner iterations, and the derivative does not
depend on where the inner solve started (a warm start, or a solve that stopped at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from deepinv.optim.linear import conjugate_gradient
from torch import Tensor

from deepinv_ext._batch import batch_sqnorm, per_sample

__all__ = ["AdjointSolve", "implicit_fixed_point", "implicit_prox", "solve_adjoint"]


@dataclass
class AdjointSolve:
    r"""The solution :math:`v` of the adjoint system :math:`(I - \partial_z F)\, v = g` and how well it solves it.

    :param torch.Tensor v: the solution, shape of :math:`g`.
    :param torch.Tensor residual: :math:`\|(I - \partial_z F)\, v - g\|` per batch element, ``(B,)``.
    :param int iterations: conjugate-gradient iterations (products with the system matrix) spent.
    """

    v: Tensor
    residual: Tensor
    iterations: int


def solve_adjoint(f: Tensor, z: Tensor, g: Tensor, *, tol: float, max_iter: int) -> AdjointSolve:
    r"""Solve :math:`(I - \partial_z F(z))\, v = g` by batched conjugate gradients, for :math:`f = F(z)` recorded by
    autograd from ``z`` (the products are vector-Jacobian products; the graph of ``f`` is kept).

    :param torch.Tensor f: :math:`F(z)`, computed with a graph from ``z``.
    :param torch.Tensor z: the point, a tensor that requires grad.
    :param torch.Tensor g: the right-hand side, shape of ``z``.
    :param float tol: relative tolerance of the residual, per batch element.
    :param int max_iter: maximum conjugate-gradient iterations.
    :return: an :class:`AdjointSolve`, whose residual is recomputed after the solve.

    |sep|

    :Examples:

    For :math:`F(z) = z - \nabla E(z)` with :math:`E(z) = \frac{a}{2}\|z\|^2` the system is :math:`a v = g`:

    >>> import torch
    >>> from deepinv_ext.priors.implicit import solve_adjoint
    >>> z = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    >>> a = torch.tensor([[2.0], [4.0]], dtype=torch.float64)
    >>> solve = solve_adjoint(z - a * z, z, torch.ones(2, 3, dtype=torch.float64), tol=1e-12, max_iter=10)
    >>> solve.v[:, 0].tolist(), solve.iterations, bool((solve.residual < 1e-12).all())
    ([0.5, 0.25], 2, True)
    """
    count = [0]

    def matvec(v: Tensor) -> Tensor:  # (I - dF/dz)^T v = (I - dF/dz) v, the Jacobian being symmetric
        count[0] += 1
        (jtv,) = torch.autograd.grad(f, z, v, retain_graph=True)
        return v - jtv

    v = conjugate_gradient(matvec, g, max_iter=max_iter, tol=tol, eps=torch.finfo(g.dtype).tiny)
    spent = count[0]
    residual = torch.sqrt(batch_sqnorm(matvec(v) - g))
    return AdjointSolve(v, residual, spent)


def implicit_fixed_point(z_star: Tensor, fixed_point_map: Callable[[Tensor], Tensor], *, tol: float, max_iter: int,
                         on_solve: Callable[[AdjointSolve], None] | None = None) -> Tensor:
    r""":math:`z^\star` (its value unchanged) carrying the implicit derivative of the module docstring with respect to
    every tensor ``fixed_point_map`` depends on besides its argument (the parameters :math:`\theta`).

    :param torch.Tensor z_star: the fixed point, ``(B, ...)`` (detached here).
    :param Callable fixed_point_map: :math:`z \mapsto F_\theta(z)`, differentiable in :math:`z` and :math:`\theta`,
        with a symmetric Jacobian in :math:`z`.
    :param float tol: relative tolerance of the conjugate-gradient solve (per batch element).
    :param int max_iter: its maximum number of iterations.
    :param Callable on_solve: called with the :class:`AdjointSolve` of every backward pass (diagnostics).
    :return: a tensor equal to ``z_star`` whose backward is the implicit derivative (it always carries a graph:
        call this only when a derivative is wanted).

    |sep|

    :Examples:

    The minimiser :math:`z^\star = y/(1+\lambda)` of :math:`\frac12\|z - y\|^2 + \frac{\lambda}{2}\|z\|^2` has
    :math:`\partial z^\star/\partial\lambda = -y/(1+\lambda)^2`:

    >>> import torch
    >>> from deepinv_ext.priors.implicit import implicit_fixed_point
    >>> y = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> lam = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    >>> z = implicit_fixed_point(y / 2, lambda z: z - (z - y + lam * z), tol=1e-12, max_iter=10)
    >>> z.sum().backward()
    >>> round(lam.grad.item(), 12)
    -0.75
    """
    z = z_star.detach().requires_grad_(True)
    with torch.enable_grad():
        f = fixed_point_map(z)
    out = z_star.detach() + (f - f.detach())

    def backward(g: Tensor) -> Tensor:
        solve = solve_adjoint(f, z, g, tol=tol, max_iter=max_iter)
        if on_solve is not None:
            on_solve(solve)
        return solve.v

    out.register_hook(backward)
    return out


def implicit_prox(u_star: Tensor, x: Tensor, gamma: Tensor, grad: Callable[[Tensor], Tensor], *, tol: float,
                  max_iter: int) -> Tensor:
    r""":math:`u^\star = \operatorname{prox}_{\gamma R_\theta}(x)` (the value is returned unchanged) carrying the
    implicit derivative of the fixed point :math:`u^\star = x - \gamma\nabla R_\theta(u^\star)` with respect to ``x``,
    ``gamma`` and the tensors ``grad`` depends on (where :math:`I + \gamma \nabla^2 R_\theta(u^\star)` is invertible,
    e.g. :math:`R` convex or :math:`\gamma < 1/\mathrm{Lip}(\nabla R)`).

    :param torch.Tensor u_star: the solution of the prox problem, ``(B, ...)``.
    :param torch.Tensor x: the prox's input (may require grad).
    :param torch.Tensor gamma: the step per image, ``(B,)`` (may require grad).
    :param Callable grad: :math:`u \mapsto \nabla R_\theta(u)`, differentiable in ``u`` and :math:`\theta`.
    :param float tol: relative tolerance of the conjugate-gradient solve (per image).
    :param int max_iter: its maximum number of iterations.
    :return: a tensor equal to ``u_star`` whose backward is the implicit derivative (always with a graph: call this
        only when a derivative is wanted, as :meth:`SmoothLearnedPrior.prox` does).

    |sep|

    :Examples:

    :math:`\operatorname{prox}_{\gamma\frac12\|\cdot\|^2}(x) = x/(1+\gamma)`, so :math:`\partial u/\partial x =
    1/(1+\gamma)`:

    >>> import torch
    >>> from deepinv_ext.priors.implicit import implicit_prox
    >>> x = torch.ones(1, 3, dtype=torch.float64, requires_grad=True)
    >>> gamma = torch.tensor([3.0], dtype=torch.float64)
    >>> implicit_prox(x / 4, x, gamma, lambda u: u, tol=1e-12, max_iter=10).sum().backward()
    >>> x.grad.tolist()
    [[0.25, 0.25, 0.25]]
    """
    return implicit_fixed_point(u_star, lambda z: x - per_sample(gamma, z) * grad(z), tol=tol, max_iter=max_iter)

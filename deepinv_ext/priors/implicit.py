r"""Implicit differentiation of a proximal map computed by an inner solve (private module of the priors).

At the solution :math:`u^\star` of :math:`\min_u \frac12\|u - x\|^2 + \gamma R_\theta(u)` the optimality condition
is the fixed-point equation :math:`u^\star = F(u^\star) = x - \gamma \nabla R_\theta(u^\star)`. By the implicit
function theorem (where :math:`I + \gamma \nabla^2 R_\theta(u^\star)` is invertible, e.g. :math:`R` convex or
:math:`\gamma < 1/\mathrm{Lip}(\nabla R)`), for a loss :math:`\ell(u^\star)`

.. math::

    \frac{\partial \ell}{\partial (x, \gamma, \theta)} = v^\top \frac{\partial F}{\partial (x, \gamma, \theta)}
    \Big|_{u^\star}, \qquad \big(I + \gamma \nabla^2 R_\theta(u^\star)\big)\, v = \nabla \ell(u^\star),

with :math:`v` from batched conjugate gradients on Hessian-vector products (double backward through
:math:`\nabla R`). Memory is that of one gradient evaluation, whatever the number of inner iterations, and the
derivative does not depend on where the inner solve started (a warm start, or a solve that stopped at once).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from deepinv.optim.linear import conjugate_gradient
from torch import Tensor

from deepinv_ext._batch import per_sample

__all__ = ["implicit_prox"]


def implicit_prox(u_star: Tensor, x: Tensor, gamma: Tensor, grad: Callable[[Tensor], Tensor], *, tol: float,
                  max_iter: int) -> Tensor:
    r""":math:`u^\star` (the value is returned unchanged) carrying the implicit derivative of the module docstring
    with respect to ``x``, ``gamma`` and the tensors ``grad`` depends on (the prior's parameters).

    :param torch.Tensor u_star: the solution of the prox problem, ``(B, ...)``.
    :param torch.Tensor x: the prox's input (may require grad).
    :param torch.Tensor gamma: the step per image, ``(B,)`` (may require grad).
    :param Callable grad: :math:`u \mapsto \nabla R_\theta(u)`, differentiable in ``u`` and :math:`\theta`.
    :param float tol: relative tolerance of the conjugate-gradient solve (per image).
    :param int max_iter: its maximum number of iterations.
    :return: a tensor equal to ``u_star`` whose backward is the implicit derivative (it always carries a graph:
        call this only when a derivative is wanted, as :meth:`SmoothLearnedPrior.prox` does).
    """
    z = u_star.detach().requires_grad_(True)
    with torch.enable_grad():
        f = x - per_sample(gamma, z) * grad(z)
    out = u_star.detach() + (f - f.detach())

    def solve(g: Tensor) -> Tensor:
        def matvec(v: Tensor) -> Tensor:  # (I + gamma H) v = v - (dF/du)^T v, H symmetric
            (jtv,) = torch.autograd.grad(f, z, v, retain_graph=True)
            return v - jtv

        return conjugate_gradient(matvec, g, max_iter=max_iter, tol=tol, eps=torch.finfo(g.dtype).tiny)

    out.register_hook(solve)
    return out

r"""The Jacobian of a fixed-point layer at a point: its spectral norm (:func:`layer_lipschitz`) and the error of the
Jacobian-free adjoint of ReTune :footcite:p:`davy2025restarted` (:func:`jacobian_free_error`, bounded by
:func:`jacobian_free_error_bound`)."""

from __future__ import annotations

from collections.abc import Callable

import deepinv as dinv
import torch

from deepinv_ext._batch import batch_norm, per_sample
from deepinv_ext._validation import finite_number, finite_values, positive_int

__all__ = ["layer_lipschitz", "jacobian_free_error", "jacobian_free_error_bound"]


class _Linearisation:
    """The Jacobian of ``x -> layer(x, y, physics)`` at ``x`` through autograd: ``jvp`` by the double-backward trick,
    ``vjp`` by one backward. Its graph is kept out of any enclosing ``saved_tensors_hooks`` (e.g. a
    :class:`~deepinv_ext.algorithms.retune.SavedTensorMeter` around a training step), which ``torch.func`` does not
    support."""

    def __init__(self, layer: Callable, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
        with self._hooks, torch.enable_grad():
            self.x = x.detach().requires_grad_(True)
            self.out = layer(self.x, y, physics)
            self.w = torch.zeros_like(self.out, requires_grad=True)
            (self.jt_w,) = torch.autograd.grad(self.out, self.x, self.w, create_graph=True)

    def vjp(self, v: torch.Tensor) -> torch.Tensor:
        with self._hooks:
            return torch.autograd.grad(self.out, self.x, v, retain_graph=True)[0].detach()

    def jvp(self, u: torch.Tensor) -> torch.Tensor:
        with self._hooks:
            return torch.autograd.grad(self.jt_w, self.w, u, retain_graph=True)[0].detach()


def layer_lipschitz(layer: Callable, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics, *,
                    n_iter: int = 50, tol: float = 1e-5, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Spectral norm :math:`\|\partial_x T(x; y)\|_2` of a layer's Jacobian at ``x``, per batch element.

    Power iteration :math:`u \leftarrow J^\top J u / \|J^\top J u\|` with Jacobian-vector products (double
    backward) and vector-Jacobian products (autograd); the layer being applied per sample, its Jacobian is block
    diagonal and each sample gets its own estimate. The returned tensor carries no graph. To keep a trained layer
    contractive, train with :class:`deepinv_ext.losses.LipschitzPenalty`.

    :param Callable layer: the layer, called as ``layer(x, y, physics)`` (twice differentiable in ``x``).
    :param torch.Tensor x: where to linearise, ``(B, C, H, W)``.
    :param torch.Tensor y: the measurements.
    :param deepinv.physics.Physics physics: the forward operator.
    :param int n_iter: maximum number of power iterations.
    :param float tol: stop when the estimates change by less than ``tol`` (relative).
    :param torch.Generator generator: the generator of the random start (``None``: the global one).
    :return: tensor ``(B,)`` of estimated Lipschitz constants (a lower bound on the local constant that converges
        to it).

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import GradientStepLayer, layer_lipschitz
    >>> physics = dinv.physics.Denoising()
    >>> y = torch.rand(1, 1, 8, 8)
    >>> layer = GradientStepLayer(dinv.optim.Tikhonov(), step=0.5, lam=0.1)   # Jacobian (1 - 0.5 * 1.1) Id
    >>> rho = layer_lipschitz(layer, y, y, physics, generator=torch.Generator().manual_seed(0))
    >>> [round(v, 4) for v in rho.tolist()]
    [0.45]
    """
    positive_int(n_iter, "n_iter")
    finite_number(tol, "tol", strict=True)
    lin = _Linearisation(layer, x, y, physics)
    u = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    u = u / per_sample(batch_norm(u), u)
    est = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(n_iter):
        ju = lin.jvp(u)
        jtju = lin.vjp(ju)
        new = batch_norm(ju)
        u = jtju / per_sample(batch_norm(jtju), jtju).clamp_min(torch.finfo(x.dtype).tiny)
        done = bool(((new - est).abs() <= tol * new.abs().clamp_min(1e-12)).all())
        est = new
        if done:
            break
    return est


def jacobian_free_error_bound(lipschitz: float | torch.Tensor, depth: int) -> float | torch.Tensor:
    r"""Bound :math:`\rho^L` on the relative error of the :math:`L`-layer Jacobian-free adjoint (valid for
    :math:`\rho < 1`; see :func:`jacobian_free_error`).

    :param float, torch.Tensor lipschitz: the Lipschitz constant :math:`\rho` of the layer (e.g. from
        :func:`layer_lipschitz`).
    :param int depth: the number of layers :math:`L` backpropagated through.
    :return: :math:`\rho^L`.

    |sep|

    :Examples:

    >>> from deepinv_ext.algorithms import jacobian_free_error_bound
    >>> jacobian_free_error_bound(0.5, 10)
    0.0009765625
    """
    positive_int(depth, "depth")
    finite_values(lipschitz, "lipschitz")
    return lipschitz**depth


def jacobian_free_error(layer: Callable, x_star: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics,
                        grad_output: torch.Tensor, depth: int, *, n_iter: int = 500,
                        tol: float = 1e-10) -> float:
    r"""Measured relative error :math:`\|w_L - w\| / \|w\|` of the :math:`L`-layer Jacobian-free adjoint.

    For a layer :math:`T(\cdot\,; y)` with Jacobian :math:`J = \partial_x T(x^\star)` at its fixed point and
    Lipschitz constant :math:`\rho = \|J\| < 1`, the exact (implicit) gradient of a loss :math:`\ell(x^\star)` with
    respect to the parameters is :math:`w^\top \partial_\theta T` with
    :math:`w = (\operatorname{Id} - J^\top)^{-1} g`, :math:`g = \nabla\ell(x^\star)`. Backpropagating through
    :math:`L` layers started at the fixed point (ReTune's training step) gives instead
    :math:`w_L = \sum_{k<L} (J^\top)^k g`, and :math:`w_L - w = -(J^\top)^L w`, so

    .. math::

        \frac{\|w_L - w\|}{\|w\|} \le \rho^L

    (:func:`jacobian_free_error_bound`). Here :math:`w` is solved by the fixed-point iteration
    :math:`w \leftarrow g + J^\top w` (convergent when the layer is a contraction) and :math:`w_L` is its
    truncation, both with vector-Jacobian products at ``x_star``.

    :param Callable layer: the layer, called as ``layer(x, y, physics)``.
    :param torch.Tensor x_star: (an approximation of) the fixed point.
    :param torch.Tensor y: the measurements.
    :param deepinv.physics.Physics physics: the forward operator.
    :param torch.Tensor grad_output: :math:`g = \nabla \ell(x^\star)`.
    :param int depth: the number of layers :math:`L` backpropagated through.
    :param int n_iter: maximum iterations of the adjoint fixed-point solve.
    :param float tol: relative change at which the adjoint solve stops.
    :return: the relative error, as a float.

    |sep|

    :Examples:

    For a linear layer :math:`J = \rho\,\mathrm{Id}` the bound is attained:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import GradientStepLayer, jacobian_free_error
    >>> physics = dinv.physics.Denoising()
    >>> y = torch.rand(1, 1, 8, 8)
    >>> layer = GradientStepLayer(dinv.optim.Tikhonov(), step=0.5, lam=0.1)   # Jacobian (1 - 0.5 * 1.1) Id
    >>> err = jacobian_free_error(layer, y, y, physics, grad_output=torch.ones_like(y), depth=3)
    >>> round(err, 4), round(0.45 ** 3, 4)
    (0.0911, 0.0911)
    """
    positive_int(depth, "depth")
    positive_int(n_iter, "n_iter")
    finite_number(tol, "tol", strict=True)
    lin = _Linearisation(layer, x_star, y, physics)
    with torch.no_grad():
        w, w_l = grad_output.clone(), None
        for k in range(max(n_iter, depth)):
            if k + 1 == depth:
                w_l = w.clone()
            new = grad_output + lin.vjp(w)
            change = float(torch.linalg.vector_norm(new - w) / torch.linalg.vector_norm(new).clamp_min(1e-30))
            w = new
            if k + 1 >= depth and change < tol:
                break
        return float(torch.linalg.vector_norm(w_l - w) / torch.linalg.vector_norm(w).clamp_min(1e-30))

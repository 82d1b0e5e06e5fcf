r"""The proximal operator of the least-squares data fidelity, per image, for any deepinv linear physics.

For :math:`f(x) = \frac12\|Ax - y\|_2^2` and a step :math:`\tau \ge 0`,

.. math::

    \operatorname{prox}_{\tau f}(u) = \arg\min_x \frac{\tau}{2}\|Ax - y\|_2^2 + \frac12\|x - u\|_2^2
    \quad\Longleftrightarrow\quad (\operatorname{Id} + \tau A^\top A)\,x = u + \tau A^\top y.

It is the data step of every proximal-gradient and semi-implicit scheme here
(:class:`~deepinv_ext.algorithms.GradientStepPnP`, :class:`~deepinv_ext.algorithms.TDVNetwork`), one home for both.
deepinv's own ``L2().prox`` is ``physics.prox_l2``, which for a general linear physics overwrites the physics'
``solver``, ``max_iter`` and ``tol`` with the arguments of the call (DESIGN sharp edge 2: a side effect on an object
the caller owns, seen by its later ``A_dagger`` calls), and whose conjugate gradients add ``1e-8`` to their
denominators by default, which stalls them near :math:`10^{-6}` relative accuracy. Here the general case runs
:func:`deepinv.optim.linear.conjugate_gradient` with this call's own settings and nothing is written to the physics;
for :class:`deepinv.physics.DecomposablePhysics` (``BlurFFT``, ``Inpainting``, ...) the closed form
``physics.prox_l2`` is used, which touches nothing.
"""

from __future__ import annotations

import torch
from deepinv.optim.linear import conjugate_gradient
from deepinv.physics import DecomposablePhysics, Denoising, LinearPhysics, Physics
from torch import Tensor

from deepinv_ext._validation import finite_number, positive_int

__all__ = ["prox_data_fidelity"]


def _constant_per_image(tau: Tensor | float, u: Tensor) -> bool:
    """Whether ``tau`` is a number, one value, or one value per image (shape ``(B, 1, ..., 1)``): then it commutes
    with the singular vectors of a decomposable physics."""
    if not isinstance(tau, Tensor) or tau.numel() == 1:
        return True
    return tau.dim() == u.dim() and tau.shape[0] == u.shape[0] and all(s == 1 for s in tau.shape[1:])


def prox_data_fidelity(u: Tensor, y: Tensor, physics: Physics, tau: Tensor | float, max_iter: int = 50,
                       tol: float = 1e-6, method: str = "auto") -> Tensor:
    r""":math:`\operatorname{prox}_{\tau f}(u) = \arg\min_x \frac{\tau}{2}\|Ax - y\|^2 + \frac12\|x - u\|^2`, each
    image with its own :math:`\tau` if given so.

    ``method="auto"``: closed form for :class:`deepinv.physics.Denoising` (:math:`(u + \tau y)/(1+\tau)`, any
    ``tau`` broadcasting against ``u``) and, for a ``tau`` constant over each image, for the other decomposable
    physics (``physics.prox_l2``, which leaves the physics unchanged there); otherwise, and with ``method="cg"``,
    conjugate gradients on :math:`(\operatorname{Id} + \tau A^\top A)x = u + \tau A^\top y` started at ``u``, with a
    tolerance relative to each image's right-hand side, run until every image meets it (not ``physics.prox_l2``,
    which for a general linear physics overwrites the physics' ``solver``, ``max_iter`` and ``tol`` and stalls
    near :math:`10^{-6}` relative accuracy).

    :param torch.Tensor u: the point ``(B, ...)``.
    :param torch.Tensor y: the measurements.
    :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
    :param float, torch.Tensor tau: :math:`\tau \ge 0`, a number or a tensor broadcasting against ``u`` (one step per
        image: shape ``(B, 1, ..., 1)``).
    :param int max_iter: maximum CG iterations.
    :param float tol: relative CG tolerance, :math:`\|r\| \le \mathrm{tol}\,\|u + \tau A^\top y\|` per image.
    :param str method: ``"auto"`` (closed form where there is one, CG otherwise) or ``"cg"`` (always CG).
    :return: :math:`x`, shape of ``u``.
    :raises TypeError: a physics that is not linear.
    :raises ValueError: an unknown ``method``, a number ``tau`` not finite and >= 0, ``max_iter`` not a positive
        integer, ``tol`` not > 0.

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms.data_fidelity import prox_data_fidelity
    >>> physics = dinv.physics.Denoising()
    >>> u, y = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    >>> prox_data_fidelity(u, y, physics, 1.0).flatten().tolist()
    [0.5, 0.5, 0.5, 0.5]
    """
    if method not in ("auto", "cg"):
        raise ValueError(f"method must be 'auto' or 'cg', got {method!r}")
    if not isinstance(physics, LinearPhysics):
        raise TypeError(f"physics must be a deepinv LinearPhysics, got {type(physics).__name__}")
    if not isinstance(tau, Tensor):  # a tensor (a network's parameter) is not checked: no host sync per step
        finite_number(tau, "tau")
    positive_int(max_iter, "max_iter")
    finite_number(tol, "tol", strict=True)
    if method == "auto" and isinstance(physics, Denoising) and type(physics).A is Denoising.A:
        return (u + tau * y) / (1 + tau)
    if method == "auto" and isinstance(physics, DecomposablePhysics) and _constant_per_image(tau, u):
        return physics.prox_l2(u, y, tau.reshape(()) if isinstance(tau, Tensor) and tau.numel() == 1 else tau)
    # eps: deepinv's default 1e-8 in the step-size denominator stalls CG near 1e-6 relative accuracy
    return conjugate_gradient(lambda x: x + tau * physics.A_adjoint_A(x), u + tau * physics.A_adjoint(y),
                              max_iter=max_iter, tol=tol, init=u, eps=torch.finfo(u.dtype).tiny)

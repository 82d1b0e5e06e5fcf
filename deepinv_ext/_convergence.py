r"""How the iterative solvers of deepinv-ext say that they did not converge (private module).

Every solver records, after a call, a ``(B,)`` boolean tensor ``converged`` (one entry per image: whether its
stopping rule was met) and warns with :class:`NotConvergedWarning` when an image was not, saying why: the iteration
budget ran out, or the solver stalled (no step lowered the objective as its model of it predicts). Users filter or
escalate this one class (``warnings.simplefilter("error", NotConvergedWarning)``); the inner solves of the priors'
proximal operators warn with a subclass.

The descent solvers tell a stall from a point that is *stationary to working precision* the same way: a decrease
that a step predicts (:math:`\|\nabla E\|^2/(2L)`, or :math:`\|x_{k+1} - x_k\|^2/(2\tau)` for a proximal step) is
compared with the round-off of the objective (:func:`roundoff`); within ``PRECISION_MARGIN`` round-offs nothing can be
told from noise (converged when no step shows a decrease), above it a decrease that never shows is a stall.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["PRECISION_MARGIN", "NotConvergedWarning", "roundoff", "warn_not_converged"]

#: Within this many round-offs of the objective a predicted decrease may hide in the noise of the test (a curvature
#: estimate a few relaxations short of the true one): such a point is stationary to working precision.
PRECISION_MARGIN = 16.0


class NotConvergedWarning(RuntimeWarning):
    """A solve ended without meeting its stopping rule on some images (which ones: the solver's ``converged``)."""


def roundoff(e: Tensor) -> Tensor:
    """The round-off allowance of a comparison of objective values ``e`` (per image): 8 ulps of ``|e|`` (objectives
    sum many terms)."""
    return 8 * torch.finfo(e.dtype).eps * e.detach().abs()


def warn_not_converged(solver: str, converged: Tensor, causes: dict[str, Tensor], stacklevel: int = 3) -> None:
    """Warn with :class:`NotConvergedWarning` unless every entry of the ``(B,)`` boolean ``converged`` is True.

    :param str solver: who is speaking, e.g. ``"VariationalSolver"``.
    :param torch.Tensor converged: per image, whether its stopping rule was met.
    :param dict causes: what the images that did not converge ran into (e.g. ``"reached max_iter=100"``), each with
        the ``(B,)`` boolean mask of the images concerned; the message counts each cause that occurred.
    """
    if not bool(converged.all()):
        told = ", ".join(f"{int(mask.sum())} {cause}" for cause, mask in causes.items() if bool(mask.any()))
        warnings.warn(f"{solver}: {int((~converged).sum())} of {converged.numel()} images did not converge "
                      f"({told}); see its `converged`", NotConvergedWarning, stacklevel=stacklevel)

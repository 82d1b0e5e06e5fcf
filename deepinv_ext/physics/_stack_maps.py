r"""Maps of image stacks for :class:`deepinv_ext.physics.AstraCT` (private module).

A backend maps a stack of images ``(N, H, W)`` to a stack of sinograms ``(N, n_views, n_detectors)`` and back.
:class:`LinearMap` makes such a pair differentiable (and :mod:`torch.func`-transformable); the functions below build
the pairs: through a sparse system matrix or a backend object (ASTRA's), per-sample views as rows gathered from the
full set of views, or one backend call per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from deepinv_ext._validation import check_finite
from deepinv_ext.physics.functional.system_matrix import SystemMatrix

__all__ = ["LinearMap", "backend_maps", "gathered_maps", "looped_maps", "sparse_maps"]


class LinearMap(torch.autograd.Function):
    r"""``op(x)`` for a linear map ``op`` of a stack ``(N, ...)``, whose backward is its transpose ``op_t``.

    In the ``setup_context`` style, so that :mod:`torch.func` transforms work (deepinv's
    :func:`deepinv.physics.adjoint_function` calls :func:`torch.func.vjp`): ``vmap`` folds the vmapped dimension
    into the leading stack dimension (one call of ``op``, no loop), ``jvp`` is ``op`` itself (the map is linear),
    and the backward is again a :class:`LinearMap`, so derivatives of any order exist. ``name``, when given,
    names the input in the error raised on NaN/inf values (checked here, where the tensor is a plain one under
    every transform).
    """

    @staticmethod
    def forward(x: torch.Tensor, op: Callable, op_t: Callable, name: str | None) -> torch.Tensor:
        if name is not None:
            check_finite(x, name)
        return op(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, ctx.op, ctx.op_t, _ = inputs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return LinearMap.apply(grad, ctx.op_t, ctx.op, None), None, None, None

    @staticmethod
    def jvp(ctx: Any, x_t: torch.Tensor, *_: Any) -> torch.Tensor:
        return LinearMap.apply(x_t, ctx.op, ctx.op_t, None)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, op: Callable, op_t: Callable,
             name: str | None) -> tuple[torch.Tensor, int]:
        x = x.movedim(in_dims[0], 0)
        n_map, n_stack = x.shape[:2]
        out = LinearMap.apply(x.reshape(n_map * n_stack, *x.shape[2:]), op, op_t, name)
        return out.reshape(n_map, n_stack, *out.shape[1:]), 0


def sparse_maps(matrix: Callable[[], SystemMatrix], img_size: tuple[int, int],
                 sino: tuple[int, int]) -> tuple[Callable, Callable]:
    """Maps of stacks through the sparse system matrix that ``matrix()`` returns."""
    n_pix = img_size[0] * img_size[1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return matrix().apply(x.reshape(-1, n_pix)).reshape((x.shape[0],) + sino)

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        return matrix().apply_t(y.reshape(-1, sino[0] * sino[1])).reshape((y.shape[0],) + img_size)

    return forward, adjoint


def backend_maps(backend: Callable[[], Any]) -> tuple[Callable, Callable]:
    """Maps of stacks through the backend object that ``backend()`` returns (with ``forward`` and ``adjoint`` of
    stacks, such as ASTRA's, which computes in float32 on its own device), cast back to the input's dtype and
    device."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return backend().forward(x).to(dtype=x.dtype, device=x.device)

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        return backend().adjoint(y).to(dtype=y.dtype, device=y.device)

    return forward, adjoint


def _per_sample(stack: torch.Tensor, batch: int, channels: int) -> torch.Tensor:
    """A stack ``(N, ...)`` read as ``(M, batch, channels, ...)``."""
    if stack.shape[0] % (batch * channels):
        raise ValueError(f"a stack of {stack.shape[0]} images does not hold {batch} samples of {channels} channels")
    return stack.reshape(-1, batch, channels, *stack.shape[1:])


def gathered_maps(full: tuple[Callable, Callable], index: torch.Tensor, n_full: int,
                   channels: int) -> tuple[Callable, Callable]:
    r"""Per-sample views as rows of the full operator: :math:`y_b = S_b A_{\mathrm{full}} x_b` (gather of the views
    ``index[b]``), adjoint :math:`A_{\mathrm{full}}^\top S_b^\top y_b` (scatter-add into a zero full sinogram)."""
    forward_full, adjoint_full = full
    batch, n_views = index.shape

    def views_index(like: torch.Tensor) -> torch.Tensor:
        m, _, _, _, n_det = like.shape
        return index[None, :, None, :, None].expand(m, batch, channels, n_views, n_det)

    def forward(x: torch.Tensor) -> torch.Tensor:
        y_full = _per_sample(forward_full(x), batch, channels)
        shape = y_full.shape[:3] + (n_views, y_full.shape[-1])
        return torch.gather(y_full, 3, views_index(y_full.new_empty(shape))).reshape(-1, *shape[3:])

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        y = _per_sample(y, batch, channels)
        y_full = y.new_zeros(y.shape[:3] + (n_full, y.shape[-1]))
        y_full.scatter_add_(3, views_index(y), y)
        return adjoint_full(y_full.reshape(-1, *y_full.shape[3:]))

    return forward, adjoint


def looped_maps(maps: list[tuple[Callable, Callable]], channels: int) -> tuple[Callable, Callable]:
    """Per-sample views, one backend call per sample (the loop of the ASTRA backend and of views outside
    ``full_angles``)."""
    batch = len(maps)

    def run(t: torch.Tensor, which: int) -> torch.Tensor:
        t = _per_sample(t, batch, channels)
        outs = [maps[b][which](t[:, b].reshape(-1, *t.shape[3:])) for b in range(batch)]
        return torch.stack([o.reshape(t.shape[0], channels, *o.shape[1:]) for o in outs], dim=1).flatten(0, 2)

    return (lambda x: run(x, 0)), (lambda y: run(y, 1))

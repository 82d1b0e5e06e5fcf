r"""Linear operators split into blocks of their measurements, one block per device or process
(:mod:`deepinv.distributed`).

A linear operator whose measurements fall into blocks along one axis (:class:`PhysicsBlocks`) splits into
:math:`K` operators of its own kind, each holding only its block: :class:`~deepinv_ext.physics.AstraCT` by views
(:func:`view_blocks`) and :class:`~deepinv_ext.physics.SigpyMultiCoilMRI` by coils (:func:`coil_blocks`). The blocks
are a factory (:class:`PhysicsBlocks`, deepinv's signature ``blocks(index, device, kwargs)``) that builds one block
on demand, so that each process builds only its own blocks on its own device and the whole operator (for ASTRA's
sparse backend, the whole system matrix) is never built on one device: :meth:`PhysicsBlocks.stack` builds all of
them in this process (also :func:`split_views`, :func:`split_coils`), :meth:`PhysicsBlocks.distribute` spreads them
over the processes, and :class:`ConcatenatedLinearPhysics` makes either one a single operator on tensors again.

Views are split into contiguous runs (:func:`torch.tensor_split`: sizes differ by one at most), so that a block's
sinogram is a slice of the whole sinogram along the view axis (interleaved views would make each block an
undersampled full scan, for the same work). Measurement noise is not carried into the blocks (their noise model is
deepinv's default, none): the blocks serve reconstruction; noise belongs to the measured data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from deepinv.distributed import DistributedContext, distribute
from deepinv.distributed.framework import DistributedStackedLinearPhysics
from deepinv.physics import LinearPhysics, StackedLinearPhysics
from deepinv.utils import TensorList
from torch import Tensor

from deepinv_ext._validation import check_tensor, checked_device, positive_int
from deepinv_ext.physics.astra_ct import AstraCT
from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI

__all__ = ["PhysicsBlocks", "ConcatenatedLinearPhysics", "view_blocks", "coil_blocks", "split_views",
           "split_coils", "split_fbp"]

Stack = StackedLinearPhysics | DistributedStackedLinearPhysics


class PhysicsBlocks:
    r"""The :math:`K` blocks :math:`A_1, \dots, A_K` of a linear operator whose measurements are consecutive slices
    of one axis, built on demand (:mod:`deepinv_ext.physics.split`):

    .. math:: A = \begin{bmatrix} A_1 \\ \vdots \\ A_K \end{bmatrix}, \qquad Ax = (A_1x, \dots, A_Kx), \qquad
        A^\top y = \sum_{k=1}^K A_k^\top y_k.

    Called as ``blocks(index, device, factory_kwargs=None)`` (the factory signature of
    :func:`deepinv.distributed.distribute`), it builds block ``index`` on ``device``.

    :param Callable build: ``build(index, device)`` returns block ``index`` on ``device``.
    :param Sequence[int] sizes: the extent of each block's measurements along ``dim``.
    :param int dim: the measurement axis the blocks split (negative: counted from the end).
    :param torch.device, str device: where :meth:`stack` builds the blocks by default.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT, view_blocks
        >>> blocks = view_blocks(AstraCT(16, angles=10, backend="sparse", cache_dir=None), 3)
        >>> blocks.sizes, blocks.dim
        ((4, 3, 3), -2)
        >>> [tuple(b.shape) for b in blocks.split(torch.rand(1, 1, 10, 23))]
        [(1, 1, 4, 23), (1, 1, 3, 23), (1, 1, 3, 23)]
    """

    def __init__(self, build: Callable[[int, torch.device], LinearPhysics], sizes: Sequence[int], dim: int,
                 device: torch.device | str = "cpu") -> None:
        if not callable(build):
            raise TypeError(f"build must be callable as build(index, device), got {type(build).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an integer axis, got {dim!r}")
        self.build = build
        self.sizes = tuple(positive_int(s, "sizes") for s in sizes)
        self.dim = dim
        self.device = checked_device(device)

    def __len__(self) -> int:
        return len(self.sizes)

    def __call__(self, index: int, device: torch.device | str, factory_kwargs: dict | None = None) -> LinearPhysics:
        """Block ``index`` on ``device``.

        :param int index: the block, in ``[0, K)``.
        :param torch.device, str device: where it lives.
        :param dict factory_kwargs: deepinv's shared factory data (unused).
        """
        index = positive_int(index, "index", minimum=0)
        if index >= len(self):
            raise ValueError(f"index must be below the number of blocks {len(self)}, got {index}")
        return self.build(index, checked_device(device))

    def stack(self, device: torch.device | str | None = None) -> StackedLinearPhysics:
        """All blocks in this process.

        :param torch.device, str device: where they live (default: the split operator's device).
        """
        device = self.device if device is None else checked_device(device)
        return StackedLinearPhysics([self(i, device) for i in range(len(self))])

    def distribute(self, ctx: DistributedContext, **kwargs: Any) -> DistributedStackedLinearPhysics:
        """The blocks across the processes of ``ctx``, each process building only its own on ``ctx.device``.

        :param deepinv.distributed.DistributedContext ctx: the distributed context.
        :param kwargs: passed to :func:`deepinv.distributed.distribute` (``gather_strategy``, ``dtype``).
        """
        return distribute(self, ctx, num_operators=len(self), type_object="linear_physics", **kwargs)

    def split(self, y: Tensor) -> TensorList:
        """The blocks' slices of measurements of the split operator (views of ``y``, no copy).

        :param torch.Tensor y: measurements of the split operator.
        :raises ValueError: ``y`` does not have ``sum(sizes)`` entries along ``dim``.
        """
        check_tensor(y, "y")
        if y.ndim < abs(self.dim) + (self.dim >= 0) or y.shape[self.dim] != sum(self.sizes):
            raise ValueError(f"y must have {sum(self.sizes)} entries along axis {self.dim} (the blocks' "
                             f"{self.sizes}), got shape {tuple(y.shape)}")
        return TensorList(list(torch.split(y, self.sizes, dim=self.dim)))

    def join(self, y: TensorList | Sequence[Tensor]) -> Tensor:
        """The measurements of the split operator from the blocks' (concatenated along ``dim``).

        :param deepinv.utils.TensorList, Sequence[torch.Tensor] y: the blocks' measurements, in order.
        """
        if len(y) != len(self):
            raise ValueError(f"y must hold the measurements of {len(self)} blocks, got {len(y)}")
        return torch.cat(list(y), dim=self.dim)


def _block_count(n_blocks: int, total: int, what: str) -> int:
    n_blocks = positive_int(n_blocks, "n_blocks")
    if n_blocks > total:
        raise ValueError(f"n_blocks must be at most the number of {what} ({total}): every block needs one, "
                         f"got {n_blocks}")
    return n_blocks


def view_blocks(physics: AstraCT, n_blocks: int) -> PhysicsBlocks:
    r"""An :class:`~deepinv_ext.physics.AstraCT` split into ``n_blocks`` contiguous runs of its current views.

    Each block is an ``AstraCT`` of the same image size, geometry, detector, projector, resolved backend, cache
    folder and finiteness check, with its run of views; with ``normalize``, the blocks are divided by the norm of
    the whole operator (its ``operator_norm``), not by their own, so that they stack to the same operator.
    Nothing is built here: ``physics`` is only read (an ``AstraCT`` builds its matrix or projector on first use;
    to split an operator too large for one device, make ``physics`` on the CPU with ``normalize=False`` and do not
    apply it).

    :param deepinv_ext.physics.AstraCT physics: the operator, with views shared by the batch.
    :param int n_blocks: the number of blocks :math:`K`, at most the number of views.
    :raises TypeError: ``physics`` is not an ``AstraCT``.
    :raises ValueError: ``n_blocks`` not an integer in ``[1, n_views]``; views per sample (``(B, n_views)``).

    |sep|

    :Examples:

        Block 1 of 3 holds views 4 to 6, and its sinogram is that slice of the whole sinogram:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT, view_blocks
        >>> physics = AstraCT(16, angles=10, backend="sparse", cache_dir=None)
        >>> blocks = view_blocks(physics, 3)
        >>> block = blocks(1, "cpu")
        >>> block.angles.tolist()
        [72.0, 90.0, 108.0]
        >>> x = torch.rand(1, 1, 16, 16)
        >>> bool(torch.allclose(block.A(x), physics.A(x)[..., 4:7, :]))
        True
    """
    if not isinstance(physics, AstraCT):
        raise TypeError(f"physics must be a deepinv_ext.physics.AstraCT, got {type(physics).__name__}")
    views = physics.angles.detach().cpu()
    if views.ndim == 2:
        if views.shape[0] != 1:
            raise ValueError(f"physics must have views shared by the batch to be split, got angles of shape "
                             f"{tuple(views.shape)} (one set per sample)")
        views = views[0]
    parts = torch.tensor_split(views, _block_count(n_blocks, views.numel(), "views"))
    norm = physics.operator_norm.detach().cpu() if physics.normalize else None
    settings = {"img_size": physics.img_size, "n_detectors": physics.n_detectors, "geometry": physics.geometry,
                "projector": physics.projector, "backend": physics.backend,
                "detector_spacing": physics.detector_spacing, "source_radius": physics.source_radius,
                "detector_radius": physics.detector_radius, "cache_dir": physics.cache_dir,
                "check_finite": physics.check_finite}

    def build(index: int, device: torch.device) -> AstraCT:
        block = AstraCT(angles=parts[index], device=device, **settings)
        if norm is not None:  # the whole operator's norm (as AstraCT's constructor sets it for its own)
            block.register_buffer("operator_norm", norm.to(device))
            block.normalize = True
        return block

    return PhysicsBlocks(build, [part.numel() for part in parts], dim=-2, device=physics.angles.device)


def coil_blocks(physics: SigpyMultiCoilMRI, n_blocks: int) -> PhysicsBlocks:
    r"""A :class:`~deepinv_ext.physics.SigpyMultiCoilMRI` split into ``n_blocks`` contiguous runs of its coils.

    Each block is a ``SigpyMultiCoilMRI`` with its coils' maps and the same mask (Cartesian) or trajectory and
    density compensation (non-Cartesian), pseudo-inverse mode, NUFFT settings and solver settings; its k-space
    is the slice of the whole k-space ``(B, 2, N, ...)`` along the coil axis (2).

    :param deepinv_ext.physics.SigpyMultiCoilMRI physics: the operator.
    :param int n_blocks: the number of blocks :math:`K`, at most the number of coils.
    :raises TypeError: ``physics`` is not a ``SigpyMultiCoilMRI``.
    :raises ValueError: ``n_blocks`` not an integer in ``[1, n_coils]``.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import SigpyMultiCoilMRI, coil_blocks
        >>> physics = SigpyMultiCoilMRI(SigpyMultiCoilMRI.birdcage_maps(5, (16, 16)))
        >>> blocks = coil_blocks(physics, 2)
        >>> blocks.sizes, blocks(1, "cpu").coil_maps.shape  # coils 0-2 and 3-4
        ((3, 2), torch.Size([1, 2, 16, 16]))
    """
    if not isinstance(physics, SigpyMultiCoilMRI):
        raise TypeError(f"physics must be a deepinv_ext.physics.SigpyMultiCoilMRI, got {type(physics).__name__}")
    maps = physics.coil_maps.detach()
    parts = torch.tensor_split(torch.arange(maps.shape[1]), _block_count(n_blocks, maps.shape[1], "coils"))
    geometry = {"mask": physics.mask} if physics.cartesian else {"trajectory": physics.trajectory,
                                                                  "dcf": physics.dcf}
    settings = {k: v.detach() for k, v in geometry.items()} | {
        "dagger": physics.dagger, "oversamp": physics.oversamp, "width": physics.width,
        "max_iter": physics.max_iter, "tol": physics.tol}
    dcf_mode = physics.dcf_mode

    def build(index: int, device: torch.device) -> SigpyMultiCoilMRI:
        block = SigpyMultiCoilMRI(maps[:, parts[index]], device=device, **settings)
        block.dcf_mode = dcf_mode  # how a new trajectory gets its weights, as in the whole operator
        return block

    return PhysicsBlocks(build, [part.numel() for part in parts], dim=2, device=maps.device)


def split_views(physics: AstraCT, n_blocks: int) -> StackedLinearPhysics:
    r""":func:`view_blocks` stacked in this process, on ``physics``' device: the operator
    :math:`A = (A_1, \dots, A_K)` as a :class:`deepinv.physics.StackedLinearPhysics`, whose measurements are the
    :class:`deepinv.utils.TensorList` of the blocks' sinograms.

    :param deepinv_ext.physics.AstraCT physics: the operator, with views shared by the batch.
    :param int n_blocks: the number of blocks :math:`K`, at most the number of views.

    |sep|

    :Examples:

        :math:`Ax` is the concatenation of the blocks' sinograms, and :math:`A^\top y = \sum_k A_k^\top y_k`:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT, split_views
        >>> physics = AstraCT(16, angles=10, backend="sparse", cache_dir=None)
        >>> stacked = split_views(physics, 3)
        >>> x = torch.rand(1, 1, 16, 16)
        >>> y = torch.cat(list(stacked.A(x)), dim=-2)
        >>> bool(torch.allclose(y, physics.A(x)))
        True
        >>> bool(torch.allclose(stacked.A_adjoint(stacked.A(x)), physics.A_adjoint(y), rtol=1e-5))
        True
    """
    return view_blocks(physics, n_blocks).stack()


def split_coils(physics: SigpyMultiCoilMRI, n_blocks: int) -> StackedLinearPhysics:
    r""":func:`coil_blocks` stacked in this process, on ``physics``' device: the operator as a
    :class:`deepinv.physics.StackedLinearPhysics` of its runs of coils, :math:`A_k x = (P F S_c x)_{c \in k}`.

    :param deepinv_ext.physics.SigpyMultiCoilMRI physics: the operator.
    :param int n_blocks: the number of blocks :math:`K`, at most the number of coils.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import SigpyMultiCoilMRI, split_coils
        >>> physics = SigpyMultiCoilMRI(SigpyMultiCoilMRI.birdcage_maps(4, (16, 16)))
        >>> stacked = split_coils(physics, 2)
        >>> x = torch.randn(1, 2, 16, 16)
        >>> bool(torch.allclose(torch.cat(list(stacked.A(x)), dim=2), physics.A(x), atol=1e-6))
        True
    """
    return coil_blocks(physics, n_blocks).stack()


def _local_blocks(stacked: Stack) -> list[LinearPhysics]:
    return stacked.local_physics if isinstance(stacked, DistributedStackedLinearPhysics) else stacked.physics_list


class ConcatenatedLinearPhysics(LinearPhysics):
    r"""Stacked blocks as one linear operator on single tensors, in the layout of the operator that was split:

    .. math::

        Ax = \operatorname{cat}(A_1x, \dots, A_Kx), \qquad A^\top y = \sum_{k=1}^K A_k^\top y_k,

    the concatenation along :attr:`PhysicsBlocks.dim` and :math:`y_k` the blocks' slices of :math:`y`. With a
    distributed stack, every process gets the whole :math:`Ax` (deepinv gathers it) and :math:`A^\top y` (deepinv
    sums it over the processes), so a solver run in every process takes the same steps everywhere.

    :param deepinv.physics.StackedLinearPhysics, DistributedStackedLinearPhysics stacked: the blocks, from
        :meth:`PhysicsBlocks.stack` or :meth:`PhysicsBlocks.distribute`.
    :param PhysicsBlocks blocks: the split they come from (block sizes and axis).
    :param kwargs: passed to :class:`deepinv.physics.LinearPhysics` (``max_iter``, ``tol``, ``solver`` of
        :meth:`A_dagger`).
    :raises TypeError: ``stacked`` or ``blocks`` of the wrong kind.
    :raises ValueError: ``stacked`` does not hold ``len(blocks)`` blocks.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT, ConcatenatedLinearPhysics, view_blocks
        >>> physics = AstraCT(16, angles=10, backend="sparse", cache_dir=None)
        >>> blocks = view_blocks(physics, 2)
        >>> joined = ConcatenatedLinearPhysics(blocks.stack(), blocks)
        >>> x = torch.rand(1, 1, 16, 16)
        >>> bool(torch.allclose(joined.A(x), physics.A(x)))
        True
    """

    def __init__(self, stacked: Stack, blocks: PhysicsBlocks, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(stacked, (StackedLinearPhysics, DistributedStackedLinearPhysics)):
            raise TypeError(f"stacked must be a deepinv StackedLinearPhysics or DistributedStackedLinearPhysics, got "
                            f"{type(stacked).__name__}")
        if not isinstance(blocks, PhysicsBlocks):
            raise TypeError(f"blocks must be a PhysicsBlocks, got {type(blocks).__name__}")
        n = stacked.num_operators if isinstance(stacked, DistributedStackedLinearPhysics) else len(stacked)
        if n != len(blocks):
            raise ValueError(f"stacked holds {n} blocks, but blocks describes {len(blocks)}")
        self.stacked, self.blocks = stacked, blocks
        # registered here, so that .to(), state_dict() and clone() reach this process' blocks
        self.local_blocks = torch.nn.ModuleList(_local_blocks(stacked))

    def A(self, x: Tensor, **kwargs: Any) -> Tensor:
        """:math:`Ax`, the blocks' measurements concatenated.

        :param torch.Tensor x: images, in the layout of the operator that was split.
        :param kwargs: passed to the stack's ``A``.
        """
        return self.blocks.join(self.stacked.A(x, **kwargs))

    def A_adjoint(self, y: Tensor, **kwargs: Any) -> Tensor:
        r""":math:`A^\top y = \sum_k A_k^\top y_k`.

        :param torch.Tensor y: measurements of the operator that was split (sliced into the blocks' :math:`y_k`).
        :param kwargs: passed to the stack's ``A_adjoint``.
        """
        return self.stacked.A_adjoint(self.blocks.split(y), **kwargs)


def split_fbp(physics: ConcatenatedLinearPhysics, y: Tensor, filter: str = "ramp") -> Tensor:
    r"""Filtered back-projection through view blocks of :class:`~deepinv_ext.physics.AstraCT`, equal to the whole
    operator's :meth:`~deepinv_ext.physics.AstraCT.fbp`.

    FBP filters each view on its own and sums the filtered back-projections of the views with the weight
    :math:`\pi / n` (:mod:`deepinv_ext.physics.functional.fbp`, parallel and fan beam), so with blocks of
    :math:`n_k` views, :math:`\mathrm{FBP}(y) = \sum_k (n_k / n)\, \mathrm{FBP}_k(y_k)`. A distributed stack sums
    over the processes through deepinv's ``A_dagger(local_only=True)`` (the mean of the blocks' ``A_dagger``), each
    :math:`y_k` scaled by :math:`K n_k / n`.

    :param ConcatenatedLinearPhysics physics: view blocks of an ``AstraCT`` (:func:`view_blocks`).
    :param torch.Tensor y: sinograms of the whole operator ``(B, C, n_views, n_detectors)``.
    :param str filter: the FBP filter (:meth:`deepinv_ext.physics.AstraCT.fbp`).
    :raises TypeError: ``physics`` is not made of ``AstraCT`` blocks.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT, ConcatenatedLinearPhysics, split_fbp, view_blocks
        >>> physics = AstraCT(16, angles=10, backend="sparse", cache_dir=None)
        >>> blocks = view_blocks(physics, 3)
        >>> joined = ConcatenatedLinearPhysics(blocks.stack(), blocks)
        >>> y = physics.A(torch.rand(1, 1, 16, 16))
        >>> bool(torch.allclose(split_fbp(joined, y), physics.fbp(y), atol=1e-5))
        True
    """
    if not isinstance(physics, ConcatenatedLinearPhysics) or not all(
            isinstance(block, AstraCT) for block in physics.local_blocks):
        raise TypeError(f"physics must be a ConcatenatedLinearPhysics of AstraCT view blocks, got "
                        f"{type(physics).__name__}")
    parts, sizes = physics.blocks.split(y), physics.blocks.sizes
    total = sum(sizes)
    if isinstance(physics.stacked, DistributedStackedLinearPhysics):
        scaled = TensorList([part * (len(sizes) * n / total) for part, n in zip(parts, sizes)])
        return physics.stacked.A_dagger(scaled, local_only=True, fbp=True, filter=filter)
    return sum(block.fbp(part, filter=filter) * (n / total)
               for block, part, n in zip(physics.local_blocks, parts, sizes))

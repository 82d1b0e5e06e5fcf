r"""2D computed tomography through the ASTRA toolbox: :class:`AstraCT`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from deepinv.physics import LinearPhysics

from deepinv_ext._signature import check_keywords
from deepinv_ext._validation import boolean, check_finite, checked_device, finite_number, positive_int
from deepinv_ext.physics._astra_backends import astra_backend, choose_backend
from deepinv_ext.physics._astra_geometry import CTGeometry, make_geometry, validate
from deepinv_ext.physics._checks import check_data, check_solver_options, checked_views, image_size
from deepinv_ext.physics._stack_maps import LinearMap, backend_maps, gathered_maps, looped_maps, sparse_maps
from deepinv_ext.physics._transient import TransientCache
from deepinv_ext.physics.functional.fbp import FILTERS, fan_beam_fbp, filter_sinogram
from deepinv_ext.physics.functional.matrix import power_method
from deepinv_ext.physics.functional.system_matrix import (
    SystemMatrix,
    cache_folder,
    shared_matrix,
    view_index,
    view_matrix,
)

__all__ = ["AstraCT"]

BACKENDS = ("auto", "sparse", "astra")
_GEOMETRY_BUFFERS = ("angles", "full_angles")


class AstraCT(LinearPhysics):
    r"""2D parallel- or fan-beam CT :math:`y = Ax` through the ASTRA toolbox, with an exact matched adjoint.

    ASTRA :footcite:p:`vanaarle2016fast` computes the projections; in parallel beam, the discretised Radon transform

    .. math:: (Ax)_{\theta, s} = \int_{\mathbb{R}} x\big(s\, u_\theta + t\, u_\theta^\perp\big)\, dt,
        \qquad u_\theta = (\cos\theta, \sin\theta).

    :math:`A` maps images ``(B, C, H, W)`` (unit pixels centred on the rotation axis) to sinograms
    ``(B, C, n_angles, n_detectors)``, each entry the integral of the image along one ray (ASTRA's and
    :class:`deepinv.physics.TomographyWithAstra`'s layout; :class:`deepinv.physics.Tomography` puts the detector
    first, ``(B, C, n_detectors, n_angles)``). Every channel is projected on its own. Angles are in degrees and
    reach ASTRA unchanged (ASTRA's convention: the detector axis of view :math:`\theta` points along
    :math:`(\cos\theta, \sin\theta)`, image rows run downwards, as in ASTRA's 2D volumes; the
    CUDA path mirrors its 3D geometry to match).

    **Backends** (``backend``), chosen once at construction:

    - ``"sparse"``: ASTRA's system matrix of ``projector`` (built once per geometry, cached on disk, see
      :mod:`deepinv_ext.physics.functional.system_matrix`) as torch CSR products with an explicitly stored transpose, on any
      device, in float32 or float64; the adjoint is exact (to rounding). Fastest on the CPU for moderate sizes, and
      exact on the GPU.
    - ``"astra"``: direct ASTRA calls. CPU tensors use ASTRA's CPU ``projector`` (one image per call; matched
      adjoint). CUDA tensors use ASTRA's CUDA projector with the data kept on the GPU (DLPack, no host copy):
      parallel beam projects the whole batch in one ``cuda3d`` call, as the slices of a 3D volume; fan beam calls
      the 2D ``cuda`` projector once per image. ASTRA's CUDA projector is its own discretisation (close to
      ``linear``: 1.5e-4 relative difference in parallel beam), and its back-projection is **not** the exact
      adjoint. ASTRA computes in float32: float64 inputs are cast and the result cast back.
    - ``"auto"`` (default): ``"sparse"`` when the estimated number of non-zeros of the matrix is at most
      ``sparse_max_nnz`` (default 6e7: 256x256 with 360 views fits, 512x512 with 360 views does not), else
      ``"astra"``. The sparse product is the fastest exact path on both devices for the sizes it fits (on the
      CPU it runs multi-threaded where ASTRA's 2D calls run one image at a time on one core).

    **Adjoint errors** :math:`|\langle Ax, y\rangle - \langle x, A^\top y\rangle| / |\langle Ax, y\rangle|`
    for Gaussian :math:`x, y` (``benchmarks/ct_operator.py``): sparse and ASTRA CPU projectors at float32 rounding,
    1e-8 to 5e-7 (sparse in float64: 1e-15); ASTRA CUDA parallel beam 3.8e-4 at 512x512/360 views and 1e-2 at
    32x32/45 views; ASTRA CUDA fan beam 0.15 at 512x512/360 views and 0.4 at 32x32/45 views (its back-projection
    is voxel-driven; on smooth positive sinograms it stays within a few percent of the matched one). Measured on
    an H100.

    **Normalisation** (``normalize``, deepinv's meaning, as :class:`deepinv.physics.Tomography`): with
    ``normalize=True``, :meth:`A` and :meth:`A_adjoint` are divided by :math:`\|A\|_2` (buffer
    ``operator_norm``, computed once at construction for the views given then, by deepinv's power method on
    :math:`A^\top A`), so that :math:`\|A\| = 1`; :meth:`fbp` is multiplied by it, so that it still inverts
    :math:`A`, and least squares (:meth:`A_dagger`) needs nothing. The norm is not recomputed when the views
    change (a subset of views has a smaller norm), as in deepinv. The default is ``normalize=False``: measured
    sinograms are line integrals in pixel units, as a scanner's (log-transformed) data are, so ``y`` from a
    real acquisition and the noise level keep their physical meaning, and the recipes and regularisation weights
    of this package are set on that scale. Pass ``normalize=True`` to use deepinv's algorithms with their
    default step size 1 (:class:`deepinv.optim.PGD`, ...) or :class:`deepinv.models.ArtifactRemoval` with
    ``mode="adjoint"``, which assume :math:`\|A\| \le 1`.

    **Autograd**: the backward of :math:`A` is :math:`A^\top` and vice versa, as a :class:`torch.autograd.Function`
    in the ``setup_context`` style, so :mod:`torch.func` transforms work: :func:`torch.func.vjp` (deepinv's
    :func:`deepinv.physics.adjoint_function`), :func:`torch.func.vmap` (the vmapped dimension is folded into the
    batch: one backend call) and :func:`torch.func.jvp` (forward mode: :math:`A` applied to the tangent) on every
    backend. The sparse backend is float64 end to end (``torch.autograd.gradcheck`` passes with its default
    tolerances); ASTRA's own paths compute in float32 (gradcheck with ``eps=1e-2, atol=1e-3, rtol=1e-2`` on
    float32 inputs). There is no derivative with respect to the angles.

    **Changing views** (:class:`deepinv_ext.physics.RandomViewsGenerator`, ``physics.update(angles=...)``): the
    buffer ``angles`` holds the current views, ``(n_views,)`` shared by the batch or ``(B, n_views)`` one set of
    views per sample (a leading dimension of 1 is shared too), and ``full_angles`` those given at construction.
    When the current views are a subset of ``full_angles``, the sparse backend uses the cached full matrix (no
    ASTRA call; a view matches within float32 rounding): shared views take its rows (made once per set of views);
    per-sample views project every image onto all of ``full_angles`` in one batched product and gather each
    sample's rows (the adjoint scatters into a zero full sinogram and applies the transpose: exact, at the cost of
    projecting onto all the full views). Other views build (and cache) a matrix of their own; per-sample views that
    are not a subset of ``full_angles``, and the ASTRA backend, loop over the samples inside the backend wrapper
    (one matrix or ASTRA projector per sample).

    :param int, tuple img_size: image size ``H`` (square) or ``(H, W)`` (or ``(C, H, W)``; ``C`` is ignored).
    :param int, Sequence[float], torch.Tensor angles: the number of views (spread uniformly over
        :math:`[0, 180)` degrees for parallel beam and :math:`[0, 360)` for fan beam) or the view angles in degrees
        (an angular undersampling is a subset of a full set of views).
    :param int n_detectors: detector cells; default: enough to cover the image diagonal (for fan beam, its
        shadow on the detector).
    :param str geometry: ``"parallel"`` or ``"fanbeam"`` (flat detector).
    :param str projector: ASTRA's CPU projector: ``"line"``, ``"strip"`` (area integral) or ``"linear"`` (Joseph)
        for parallel beam (default ``"linear"``), ``"line_fanflat"`` (default) or ``"strip_fanflat"`` for fan beam;
        or ``"cuda"`` for ASTRA's CUDA projector only (needs ``device="cuda"`` and ``backend="astra"``).
    :param str backend: ``"auto"``, ``"sparse"`` or ``"astra"`` (above).
    :param float detector_spacing: detector cell width, in pixels.
    :param float source_radius: fan beam: source to rotation axis, in pixels (default twice the image's larger side).
    :param float detector_radius: fan beam: rotation axis to detector, in pixels (default the image's larger side).
    :param str, pathlib.Path, None cache_dir: folder of the sparse-matrix cache: ``"default"`` for
        ``$DEEPINV_EXT_CACHE/astra_matrices`` (or ``~/.cache/deepinv_ext/astra_matrices``), ``None`` for none.
    :param int sparse_max_nnz: size limit of the ``"auto"`` choice.
    :param bool check_finite: raise on NaN/inf inputs (one device-to-host sync per call on the GPU).
    :param bool normalize: divide :math:`A` by its norm (above; default ``False``).
    :param torch.device, str device: where the buffers live.
    :param kwargs: passed to :class:`deepinv.physics.LinearPhysics` (``noise_model``, ``max_iter``, ``tol``, ...);
        a keyword that neither this class nor deepinv's constructors accept raises a :class:`TypeError`.
    :raises TypeError: an argument of the wrong kind (a float count, a non-bool flag, a string for a number).
    :raises ValueError: a value out of range (NaN/inf, a negative size or radius, a CUDA device this machine lacks).

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT
        >>> physics = AstraCT(32, angles=20, backend="sparse", cache_dir=None)
        >>> x = torch.rand(2, 1, 32, 32)
        >>> physics.A(x).shape
        torch.Size([2, 1, 20, 46])
        >>> y = torch.rand(2, 1, 20, 46)
        >>> lhs, rhs = (physics.A(x) * y).sum(), (x * physics.A_adjoint(y)).sum()  # <Ax, y> = <x, A^T y>
        >>> bool(abs(lhs - rhs) < 1e-5 * lhs)
        True
        >>> physics.update(angles=physics.full_angles[None, ::4].repeat(2, 1))  # views per sample
        >>> physics.A(x).shape
        torch.Size([2, 1, 5, 46])
        >>> unit = AstraCT(32, angles=20, backend="sparse", cache_dir=None, normalize=True)
        >>> round(float(unit.compute_sqnorm(x[:1], verbose=False)), 3)
        1.0
    """

    def __init__(self, img_size: int | Sequence[int], angles: int | Sequence[float] | torch.Tensor = 180,
                 n_detectors: int | None = None, geometry: str = "parallel", projector: str | None = None,
                 backend: str = "auto", detector_spacing: float = 1.0, source_radius: float | None = None,
                 detector_radius: float | None = None, cache_dir: str | Path | None = "default",
                 sparse_max_nnz: int = 60_000_000, check_finite: bool = True, normalize: bool = False,
                 device: torch.device | str = "cpu", **kwargs: Any) -> None:
        check_keywords(type(self), kwargs, type(self).__name__)
        check_solver_options(kwargs)
        device = checked_device(device)
        super().__init__(device=device, **kwargs)
        if geometry not in ("parallel", "fanbeam"):
            raise ValueError(f"geometry must be 'parallel' or 'fanbeam', got {geometry!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        boolean(normalize, "normalize")
        boolean(check_finite, "check_finite")
        cache_folder(cache_dir)
        sparse_max_nnz = positive_int(sparse_max_nnz, "sparse_max_nnz", minimum=0)
        size = image_size(img_size)
        detector_spacing = finite_number(detector_spacing, "detector_spacing", strict=True)
        geom = make_geometry(size, angles, n_detectors, geometry, detector_spacing, source_radius, detector_radius)
        projector = projector or ("linear" if geometry == "parallel" else "line_fanflat")
        validate(geom, projector)
        self.img_size = geom.img_size
        self.geometry = geometry
        self.projector = projector
        self.backend = choose_backend(backend, geom, projector, device, sparse_max_nnz)
        self.n_detectors = geom.n_detectors
        self.cache_dir = cache_dir
        self.check_finite = check_finite
        # constants of the acquisition, not parameters: plain floats (a buffer could be set to an invalid value)
        self.detector_spacing = geom.detector_spacing
        self.source_radius = geom.source_radius
        self.detector_radius = geom.detector_radius
        full = torch.tensor(geom.angles, dtype=torch.float64)
        self.register_buffer("angles", full.clone())
        self.register_buffer("full_angles", full.clone())
        self._transient = TransientCache()
        self.normalize = False
        self.to(device)
        if normalize:
            self.register_buffer("operator_norm", self._norm(device))
            self.normalize = True

    def _norm(self, device: torch.device) -> torch.Tensor:
        r""":math:`\|A\|_2` by the power method on :math:`A^\top A` (deepinv's iteration, from a Gaussian start drawn
        from a generator seeded with 0: the global random state is not used), to a relative tolerance of 1e-6 of the
        Schur bound :math:`\max(A\mathbf 1)\max(A^\top\mathbf 1)` on :math:`\|A\|^2` (the weights are
        non-negative)."""
        ones = torch.ones(1, 1, *self.img_size, dtype=torch.float64, device=device)
        bound = float(self.A(ones).amax() * self.A_adjoint(torch.ones_like(self.A(ones))).amax())
        start = torch.randn(ones.shape, generator=torch.Generator(device).manual_seed(0), dtype=torch.float64,
                            device=device)
        sqnorm = power_method(self.A_adjoint_A, start, max_iter=500, tol=1e-6 * bound)
        return sqnorm.sqrt().to(torch.float64)

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, n_angles={self.angles.shape[-1]}, n_detectors={self.n_detectors}, "
                f"geometry={self.geometry!r}, projector={self.projector!r}, backend={self.backend!r}, "
                f"normalize={self.normalize}")

    # ----------------------------------------------------------------------------------------- geometry state
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _GEOMETRY_BUFFERS and "_transient" in self.__dict__:
            self._transient.invalidate()
        super().__setattr__(name, value)

    def _cached(self, key: tuple, build: Callable[[], Any]) -> Any:
        """``build()``, kept until a geometry buffer is assigned, modified in place, moved or cast (no device sync)."""
        return self._transient.get(tuple(getattr(self, name) for name in _GEOMETRY_BUFFERS), key, build)

    def _ct_geometry(self, views: torch.Tensor) -> CTGeometry:
        return CTGeometry(self.img_size, tuple(views.tolist()), self.n_detectors, self.geometry,
                          self.detector_spacing, self.source_radius, self.detector_radius)

    def _views(self) -> torch.Tensor:
        """The current views, float64 on the CPU: ``(n_views,)`` shared, or ``(B, n_views)`` per sample (copied
        from the buffer once per geometry state, not at every call: no host round trip on the GPU path)."""
        def build() -> torch.Tensor:
            views = self.angles.detach().cpu().double()
            return views[0] if views.ndim == 2 and views.shape[0] == 1 else views

        return self._cached(("views",), build)

    def _full_geometry(self) -> CTGeometry:
        return self._ct_geometry(self.full_angles.detach().cpu().double())

    def _matrix(self, views: torch.Tensor | None = None) -> SystemMatrix:
        """The system matrix of the shared ``views`` (default: the current ones, which must be shared): rows of the
        full matrix when they are among ``full_angles`` (:func:`~deepinv_ext.physics.functional.view_matrix`)."""
        views = self._views() if views is None else views
        return view_matrix(self._ct_geometry(views), self._full_geometry(), self.projector, self.cache_dir)

    # ------------------------------------------------------------------------------------------ backend maps
    def _shared_maps(self, views: torch.Tensor, device: torch.device) -> tuple[Callable, Callable]:
        """Projection and back-projection of stacks ``(N, H, W) <-> (N, n_views, n_detectors)`` for one set of
        views. The matrix or ASTRA projector is fetched (made and cached) when a map runs, inside
        :class:`~deepinv_ext.physics._stack_maps.LinearMap`'s forward, where no :mod:`torch.func` transform wraps the tensors (torch cannot
        construct a sparse tensor under one)."""
        key = tuple(views.tolist())
        if self.backend == "sparse":
            return sparse_maps(lambda: self._cached(("sparse", key), lambda: self._matrix(views)), self.img_size,
                                (views.numel(), self.n_detectors))
        return backend_maps(lambda: self._cached((str(device), key), lambda: astra_backend(
            self._ct_geometry(views), self.projector, device)))

    def _maps(self, device: torch.device, channels: int) -> tuple[Callable, Callable]:
        r"""Projection and back-projection of stacks of ``channels``-channel images; with per-sample views
        ``(B, n_views)`` the stack is read as ``(M, B, channels)`` (``M`` = 1, or vmapped copies)."""
        views = self._views()
        if views.ndim == 1:
            return self._shared_maps(views, device)
        index = self._cached(("view_index", str(device)), lambda: _on(view_index(views, self.full_angles), device)) \
            if self.backend == "sparse" else None
        if index is not None:
            n_full = self.full_angles.numel()
            full = sparse_maps(lambda: self._cached(("full",), lambda: shared_matrix(
                self._full_geometry(), self.projector, self.cache_dir)), self.img_size, (n_full, self.n_detectors))
            return gathered_maps(full, index, n_full, channels)
        return looped_maps([self._shared_maps(v, device) for v in views], channels)

    def _project(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        """:math:`At` or :math:`A^\\top t` without normalisation, ``t`` of shape ``(B, C, ...)``."""
        forward, back = self._maps(t.device, t.shape[1])
        ops = (back, forward) if adjoint else (forward, back)
        b, c = t.shape[:2]
        out = LinearMap.apply(t.reshape(b * c, *t.shape[2:]), *ops, self._input_name(adjoint))
        return out.reshape(b, c, *out.shape[1:])

    def _input_name(self, adjoint: bool) -> str | None:
        return None if not self.check_finite else ("y" if adjoint else "x")

    def _scaled(self, t: torch.Tensor) -> torch.Tensor:
        return t / self.operator_norm if self.normalize else t

    # ------------------------------------------------------------------------------------------ operators
    def _check(self, t: torch.Tensor, name: str, shape: tuple[int, int]) -> None:
        check_data(t, name, self.angles.device, (None, None, *shape), f"(B, C, {shape[0]}, {shape[1]})")
        views = self.angles
        if views.ndim == 2 and views.shape[0] not in (1, t.shape[0]):
            raise ValueError(f"{name} has batch size {t.shape[0]}, but angles holds {views.shape[0]} per-sample "
                             f"sets of views: expected a batch of {views.shape[0]}")

    def _sinogram_shape(self) -> tuple[int, int]:
        return (self.angles.shape[-1], self.n_detectors)

    def A(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        r"""Forward projection :math:`Ax`: ``(B, C, H, W)`` -> ``(B, C, n_angles, n_detectors)`` (divided by
        :math:`\|A\|` when ``normalize``).

        :param torch.Tensor x: images, float32 or float64, on the physics' device (the result has ``x``'s dtype).
        :param kwargs: ``angles`` updates the views first (as :meth:`update_parameters`).
        :raises TypeError: ``x`` is not a float32 or float64 tensor.
        :raises ValueError: ``x`` has another shape or device, or (with ``check_finite``) NaN/inf values.
        """
        self.update_parameters(**kwargs)
        self._check(x, "x", self.img_size)
        return self._scaled(self._project(x, adjoint=False))

    def A_adjoint(self, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        r"""Back-projection :math:`A^\top y`: ``(B, C, n_angles, n_detectors)`` -> ``(B, C, H, W)`` (divided by
        :math:`\|A\|` when ``normalize``).

        :param torch.Tensor y: sinograms, float32 or float64.
        :param kwargs: ``angles`` updates the views first.
        """
        self.update_parameters(**kwargs)
        self._check(y, "y", self._sinogram_shape())
        return self._scaled(self._project(y, adjoint=True))

    def update_parameters(self, angles: torch.Tensor | None = None, **kwargs: Any) -> None:
        r"""Update the views and any other deepinv parameter.

        :param torch.Tensor angles: views in degrees, ``(n_views,)`` shared by the batch or ``(B, n_views)`` per
            sample (as :class:`deepinv_ext.physics.RandomViewsGenerator` draws them).
        :param kwargs: passed to :meth:`deepinv.physics.LinearPhysics.update_parameters`.
        """
        if angles is not None:
            angles = checked_views(angles)
            if angles.shape != self.angles.shape or not torch.equal(angles.to(self.angles), self.angles):
                self.angles = angles.to(self.angles)
        super().update_parameters(**kwargs)

    # ------------------------------------------------------------------------------------------ inverses
    def fbp(self, y: torch.Tensor, filter: str = "ramp", **kwargs: Any) -> torch.Tensor:
        r"""Filtered back-projection :footcite:p:`kak1988principles` (:mod:`deepinv_ext.physics.functional.fbp`), in
        torch on ``y``'s device; with
        ``normalize`` it inverts the normalised :math:`A` (multiplied by :math:`\|A\|`, as deepinv's).

        :param torch.Tensor y: sinograms ``(B, C, n_angles, n_detectors)``.
        :param str filter: ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"`` or ``"hann"``.
        :param kwargs: ``angles`` updates the views first.
        """
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
        self.update_parameters(**kwargs)
        self._check(y, "y", self._sinogram_shape())
        n_angles = self.angles.shape[-1]
        if self.check_finite:  # before filtering, which spreads a NaN over its view
            check_finite(y, "y")
        if self.geometry == "parallel":
            x = self._project(filter_sinogram(y, filter), adjoint=True) * (math.pi / n_angles)
        else:
            x = fan_beam_fbp(y, self.angles, self.img_size, self.detector_spacing, self.source_radius,
                             self.detector_radius, filter)
        return x * self.operator_norm if self.normalize else x

    def A_dagger(self, y: torch.Tensor, fbp: bool = False, **kwargs: Any) -> torch.Tensor:
        r"""Pseudo-inverse in deepinv's convention: least squares by deepinv's solver (``fbp=False``, the
        keyword arguments go to :meth:`deepinv.physics.LinearPhysics.A_dagger`), or :meth:`fbp` (``fbp=True``,
        ``filter=`` picks the filter).

        :param torch.Tensor y: sinograms ``(B, C, n_angles, n_detectors)``.
        :param bool fbp: filtered back-projection instead of least squares.
        :param kwargs: passed to deepinv's least squares (``solver``, ``max_iter``, ``tol``) or to :meth:`fbp`
            (``filter``, ``angles``).
        """
        if fbp:
            return self.fbp(y, **kwargs)
        return super().A_dagger(y, **kwargs)

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A 10x10, 10-view parallel-beam operator (sparse backend, no disk cache) and float64 images, for
        :func:`deepinv_ext.testing.check_physics` (side-effect free: draws only from ``generator``).

        :param torch.Generator generator: where the images are drawn from (default: seeded with 0).
        """
        from deepinv_ext.testing.examples import example_generator

        g = example_generator(generator)
        physics = cls(10, angles=10, backend="sparse", cache_dir=None)
        x = torch.rand(2, 1, 10, 10, generator=g, dtype=torch.float64)
        return {"physics": physics, "x": x}


def _on(index: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if index is None else index.to(device)

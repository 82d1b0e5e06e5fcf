r"""2D computed tomography through the ASTRA toolbox: :class:`AstraCT`."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from deepinv.physics import LinearPhysics

from deepinv_ext.physics._astra_backends import AstraCPU, AstraCUDA
from deepinv_ext.physics._astra_geometry import CTGeometry, validate
from deepinv_ext.physics.fbp import FILTERS, fan_beam_fbp, filter_sinogram
from deepinv_ext.physics.sparse_ct import SystemMatrix, load_or_build

__all__ = ["AstraCT"]

BACKENDS = ("auto", "sparse", "astra")
_MATRICES: OrderedDict[str, SystemMatrix] = OrderedDict()  # full-geometry matrices shared by clones (LRU)
_MATRICES_KEPT = 4
_GEOMETRY_BUFFERS = ("angles", "full_angles", "detector_spacing", "source_radius", "detector_radius")


class _Transient:
    """Per-instance cache of ASTRA objects and sparse matrices: never copied, pickled or put in a state dict."""

    def __init__(self) -> None:
        self.key: Any = None
        self.generation = 0  # bumped whenever a geometry buffer is assigned
        self.geometry: CTGeometry | None = None
        self.ops: dict[str, Any] = {}

    def __deepcopy__(self, memo: dict) -> _Transient:
        return _Transient()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


class _LinearMap(torch.autograd.Function):
    """``forward(x) = op(x)``, ``backward(g) = op_t(g)``: autograd through a linear map and its transpose."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, op: Callable, op_t: Callable) -> torch.Tensor:
        ctx.op, ctx.op_t = op, op_t
        return op(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _LinearMap.apply(grad, ctx.op_t, ctx.op), None, None


def _as_size(img_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(img_size, int):
        return (img_size, img_size)
    size = tuple(int(s) for s in img_size)
    if len(size) not in (2, 3):
        raise ValueError(f"img_size must be an int, (H, W) or (C, H, W), got {img_size}")
    return size[-2:]


def _as_angles(angles: int | Sequence[float] | torch.Tensor, geometry: str) -> torch.Tensor:
    if isinstance(angles, bool):
        raise TypeError("angles must be a number of views or a sequence/tensor of angles in degrees, got a bool")
    if isinstance(angles, int):
        if angles < 1:
            raise ValueError(f"angles must be a positive number of views, got {angles}")
        stop = 180.0 if geometry == "parallel" else 360.0
        return torch.arange(angles, dtype=torch.float64) * (stop / angles)
    tensor = torch.as_tensor(angles, dtype=torch.float64).detach().cpu().flatten()
    if tensor.numel() < 1:
        raise ValueError("angles must hold at least one view")
    return tensor


class AstraCT(LinearPhysics):
    r"""2D parallel- or fan-beam CT :math:`y = Ax` through the ASTRA toolbox, with an exact matched adjoint.

    :math:`A` maps images ``(B, C, H, W)`` (unit pixels centred on the rotation axis) to sinograms
    ``(B, C, n_angles, n_detectors)``, each entry the integral of the image along one ray (ASTRA's and
    :class:`deepinv.physics.TomographyWithAstra`'s layout; :class:`deepinv.physics.Tomography` puts the detector
    first, ``(B, C, n_detectors, n_angles)``). Every channel is projected on its own. Angles are in degrees and
    reach ASTRA unchanged (ASTRA's convention: the detector axis of view :math:`\theta` points along
    :math:`(\cos\theta, \sin\theta)`, image rows run downwards, as in ASTRA's 2D volumes; the
    CUDA path mirrors its 3D geometry to match).

    **Backends** (``backend``), chosen once at construction:

    - ``"sparse"``: ASTRA's system matrix of ``projector`` (built once per geometry, cached on disk, see
      :mod:`deepinv_ext.physics.sparse_ct`) as torch CSR products with an explicitly stored transpose, on any
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

    **Autograd**: the backward of :math:`A` is :math:`A^\top` and vice versa. The sparse backend is float64 end
    to end (``torch.autograd.gradcheck`` passes with its default tolerances); ASTRA's own paths compute in float32
    (gradcheck with ``eps=1e-2, atol=1e-3, rtol=1e-2`` on float32 inputs).

    **Changing views** (:class:`deepinv_ext.physics.RandomViewsGenerator`, ``physics.update(angles=...)``): the
    buffer ``angles`` holds the current views, ``full_angles`` those given at construction. When the current views
    are a subset of ``full_angles``, the sparse backend takes the rows of the cached full matrix (no ASTRA call);
    other views build (and cache) a matrix of their own.

    :param int, tuple img_size: image size ``H`` (square) or ``(H, W)`` (or ``(C, H, W)``; ``C`` is ignored).
    :param int, Sequence[float], torch.Tensor angles: the number of views (spread uniformly over
        :math:`[0, 180)` degrees for parallel beam and :math:`[0, 360)` for fan beam) or the view angles in degrees
        (an angular undersampling is a subset of a full set of views).
    :param int n_detectors: detector cells; default: enough to cover the image diagonal (for fan beam, its
        shadow on the detector).
    :param str geometry: ``"parallel"`` or ``"fanbeam"`` (flat detector).
    :param str projector: ASTRA's CPU projector: ``"line"``, ``"strip"`` (area integral) or ``"linear"`` (Joseph)
        for parallel beam (default ``"linear"``), ``"line_fanflat"`` (default) or ``"strip_fanflat"`` for fan beam;
        or ``"cuda"`` for ASTRA's CUDA projector only (needs CUDA tensors and ``backend="astra"``).
    :param str backend: ``"auto"``, ``"sparse"`` or ``"astra"`` (above).
    :param float detector_spacing: detector cell width, in pixels.
    :param float source_radius: fan beam: source to rotation axis, in pixels (default twice the image's larger side).
    :param float detector_radius: fan beam: rotation axis to detector, in pixels (default the image's larger side).
    :param str, pathlib.Path, None cache_dir: folder of the sparse-matrix cache: ``"default"`` for
        ``$DEEPINV_EXT_CACHE/astra_matrices`` (or ``~/.cache/deepinv_ext/astra_matrices``), ``None`` for none.
    :param int sparse_max_nnz: size limit of the ``"auto"`` choice.
    :param bool check_finite: raise on NaN/inf inputs (one device-to-host sync per call on the GPU).
    :param torch.device, str device: where the buffers live.
    :param kwargs: passed to :class:`deepinv.physics.LinearPhysics` (``noise_model``, ``max_iter``, ``tol``, ...).

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT
        >>> physics = AstraCT(32, angles=20, backend="sparse", cache_dir=None)
        >>> x = torch.rand(2, 1, 32, 32)
        >>> physics.A(x).shape
        torch.Size([2, 1, 20, 46])
        >>> y = torch.rand(2, 1, 20, 46)
        >>> bool(abs((physics.A(x) * y).sum() - (x * physics.A_adjoint(y)).sum()) < 1e-3)
        True

    References: W. van Aarle et al., *Fast and flexible X-ray tomography using the ASTRA toolbox*, Optics Express
    24(22), 2016; A. C. Kak and M. Slaney, *Principles of Computerized Tomographic Imaging*, 1988 (FBP).
    """

    def __init__(self, img_size: int | Sequence[int], angles: int | Sequence[float] | torch.Tensor = 180,
                 n_detectors: int | None = None, geometry: str = "parallel", projector: str | None = None,
                 backend: str = "auto", detector_spacing: float = 1.0, source_radius: float | None = None,
                 detector_radius: float | None = None, cache_dir: str | Path | None = "default",
                 sparse_max_nnz: int = 60_000_000, check_finite: bool = True,
                 device: torch.device | str = "cpu", **kwargs: Any) -> None:
        super().__init__(device=device, **kwargs)
        if geometry not in ("parallel", "fanbeam"):
            raise ValueError(f"geometry must be 'parallel' or 'fanbeam', got {geometry!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        size = _as_size(img_size)
        if not (float(detector_spacing) > 0 and math.isfinite(float(detector_spacing))):
            raise ValueError(f"detector_spacing must be positive and finite, got {detector_spacing}")
        big = max(size)
        projector = projector or ("linear" if geometry == "parallel" else "line_fanflat")
        source_radius = float(2 * big if source_radius is None else source_radius)
        detector_radius = float(big if detector_radius is None else detector_radius)
        full = _as_angles(angles, geometry)
        if n_detectors is None:
            n_detectors = self._default_detectors(size, geometry, float(detector_spacing), source_radius,
                                                  detector_radius)
        if isinstance(n_detectors, bool) or not isinstance(n_detectors, int):
            raise TypeError(f"n_detectors must be an int, got {type(n_detectors).__name__}")
        geom = CTGeometry(size, tuple(full.tolist()), n_detectors, geometry, float(detector_spacing),
                          source_radius if geometry == "fanbeam" else 0.0,
                          detector_radius if geometry == "fanbeam" else 0.0)
        validate(geom, projector)
        if projector == "cuda":
            if backend == "sparse":
                raise ValueError("projector='cuda' has no system matrix: use backend='astra' (or 'auto')")
            if not torch.cuda.is_available():
                raise ValueError("projector='cuda' asks for ASTRA's CUDA projector, but no CUDA device is available")
            backend = "astra"
        if backend == "auto":
            backend = "sparse" if geom.nnz_estimate(projector) <= sparse_max_nnz else "astra"
        self.img_size = size
        self.geometry = geometry
        self.projector = projector
        self.backend = backend
        self.n_detectors = n_detectors
        self.cache_dir = cache_dir
        self.check_finite = check_finite
        self.register_buffer("angles", full.clone())
        self.register_buffer("full_angles", full.clone())
        self.register_buffer("detector_spacing", torch.tensor(float(detector_spacing), dtype=torch.float64))
        self.register_buffer("source_radius", torch.tensor(geom.source_radius, dtype=torch.float64))
        self.register_buffer("detector_radius", torch.tensor(geom.detector_radius, dtype=torch.float64))
        self._transient = _Transient()
        self.to(device)

    @staticmethod
    def _default_detectors(size: tuple[int, int], geometry: str, spacing: float, source_radius: float,
                           detector_radius: float) -> int:
        half_diag = 0.5 * math.hypot(*size)
        if geometry == "fanbeam" and source_radius > half_diag:
            half_diag *= (source_radius + detector_radius) / math.sqrt(source_radius**2 - half_diag**2)
        return int(math.ceil(2 * half_diag / spacing - 1e-9))

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, n_angles={self.angles.numel()}, n_detectors={self.n_detectors}, "
                f"geometry={self.geometry!r}, projector={self.projector!r}, backend={self.backend!r}")

    # ----------------------------------------------------------------------------------------- geometry state
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _GEOMETRY_BUFFERS and "_transient" in self.__dict__:
            self._transient.generation += 1
        super().__setattr__(name, value)

    def _state_key(self) -> tuple:
        """Changes whenever a geometry buffer is assigned, modified in place, moved or cast (no device sync)."""
        buffers = tuple(getattr(self, name) for name in _GEOMETRY_BUFFERS)
        return (self._transient.generation,) + tuple(
            (b.device, b.dtype, b.data_ptr(), b._version, b.numel()) for b in buffers)

    def _ct_geometry(self, angles: torch.Tensor | None = None) -> CTGeometry:
        cache = self._transient
        key = self._state_key()
        if angles is None and cache.key == key and cache.geometry is not None:
            return cache.geometry
        values = (self.angles if angles is None else angles).detach().cpu().double()
        geom = CTGeometry(self.img_size, tuple(values.tolist()), self.n_detectors, self.geometry,
                          float(self.detector_spacing), float(self.source_radius), float(self.detector_radius))
        if angles is None:
            if cache.key != key:
                cache.ops = {}
            cache.key, cache.geometry = key, geom
        return geom

    def _matrix(self) -> SystemMatrix:
        geom = self._ct_geometry()
        ops = self._transient.ops
        if "sparse" in ops:
            return ops["sparse"]
        full = self._ct_geometry(self.full_angles)
        full_key = full.key(self.projector)
        index = self._view_index()
        if index is not None or geom == full:
            if full_key not in _MATRICES:
                _MATRICES[full_key] = load_or_build(full, self.projector, self.cache_dir)
                while len(_MATRICES) > _MATRICES_KEPT:
                    _MATRICES.popitem(last=False)
            _MATRICES.move_to_end(full_key)
            matrix = _MATRICES[full_key]
            if geom != full:
                rows = (index[:, None] * self.n_detectors + torch.arange(self.n_detectors)).reshape(-1)
                matrix = matrix.rows(rows)
        else:
            matrix = load_or_build(geom, self.projector, self.cache_dir)
        ops["sparse"] = matrix
        return matrix

    def _view_index(self) -> torch.Tensor | None:
        """Indices of the current views in ``full_angles``, or ``None`` if some view is not among them."""
        current, full = self.angles.detach().cpu(), self.full_angles.detach().cpu()
        distance = (current[:, None] - full[None, :]).abs()
        best, index = distance.min(dim=1)
        return index if bool((best < 1e-9).all()) else None

    def _astra_op(self, device: torch.device) -> AstraCPU | AstraCUDA:
        geom = self._ct_geometry()
        ops = self._transient.ops
        if device.type == "cuda":
            if "cuda" not in ops:
                ops["cuda"] = AstraCUDA(geom)
            return ops["cuda"]
        if self.projector == "cuda":
            raise ValueError(f"projector='cuda' needs CUDA tensors, got a tensor on {device}")
        if "cpu" not in ops:
            ops["cpu"] = AstraCPU(geom, self.projector)
        return ops["cpu"]

    # ------------------------------------------------------------------------------------------ operators
    def _check(self, t: torch.Tensor, name: str, shape: tuple[int, int]) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4 or tuple(t.shape[-2:]) != shape:
            raise ValueError(f"{name} must have shape (B, C, {shape[0]}, {shape[1]}), got {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
        if self.check_finite and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or infinite values")

    def _maps(self, device: torch.device) -> tuple[Callable, Callable]:
        n_pix = self.img_size[0] * self.img_size[1]
        sino = (self.angles.numel(), self.n_detectors)
        if self.backend == "sparse":
            matrix = self._matrix()

            def forward(x):
                return matrix.apply(x.reshape(-1, n_pix)).reshape((x.shape[0],) + sino)

            def adjoint(y):
                return matrix.apply_t(y.reshape(-1, sino[0] * sino[1])).reshape((y.shape[0],) + self.img_size)

            return forward, adjoint
        op = self._astra_op(device)

        def forward_astra(x):
            return op.forward(x).to(dtype=x.dtype, device=x.device)

        def adjoint_astra(y):
            return op.adjoint(y).to(dtype=y.dtype, device=y.device)

        return forward_astra, adjoint_astra

    def A(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        r"""Forward projection :math:`Ax`: ``(B, C, H, W)`` -> ``(B, C, n_angles, n_detectors)``.

        :param torch.Tensor x: images, float32 or float64, on the CPU or a CUDA device.
        :param kwargs: ``angles`` updates the views first (as :meth:`update_parameters`).
        """
        self.update_parameters(**kwargs)
        self._check(x, "x", self.img_size)
        forward, adjoint = self._maps(x.device)
        b, c = x.shape[:2]
        y = _LinearMap.apply(x.reshape((b * c,) + self.img_size), forward, adjoint)
        return y.reshape(b, c, *y.shape[1:])

    def A_adjoint(self, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        r"""Back-projection :math:`A^\top y`: ``(B, C, n_angles, n_detectors)`` -> ``(B, C, H, W)``.

        :param torch.Tensor y: sinograms, float32 or float64.
        :param kwargs: ``angles`` updates the views first.
        """
        self.update_parameters(**kwargs)
        self._check(y, "y", (self.angles.numel(), self.n_detectors))
        forward, adjoint = self._maps(y.device)
        b, c = y.shape[:2]
        x = _LinearMap.apply(y.reshape((b * c,) + y.shape[2:]), adjoint, forward)
        return x.reshape(b, c, *self.img_size)

    def update_parameters(self, angles: torch.Tensor | None = None, **kwargs: Any) -> None:
        r"""Update the views (``angles``, degrees) and any other deepinv parameter."""
        if angles is not None:
            angles = torch.as_tensor(angles, dtype=torch.float64).flatten()
            if angles.numel() < 1 or not bool(torch.isfinite(angles).all()):
                raise ValueError("angles must hold at least one finite view angle")
            if angles.shape != self.angles.shape or not torch.equal(angles.to(self.angles), self.angles):
                self.angles = angles.to(self.angles)
        super().update_parameters(**kwargs)

    # ------------------------------------------------------------------------------------------ inverses
    def fbp(self, y: torch.Tensor, filter: str = "ramp", **kwargs: Any) -> torch.Tensor:
        r"""Filtered back-projection (:mod:`deepinv_ext.physics.fbp`), in torch on ``y``'s device.

        :param torch.Tensor y: sinograms ``(B, C, n_angles, n_detectors)``.
        :param str filter: ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"`` or ``"hann"``.
        """
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
        self.update_parameters(**kwargs)
        self._check(y, "y", (self.angles.numel(), self.n_detectors))
        n_angles = self.angles.numel()
        if self.geometry == "parallel":
            return self.A_adjoint(filter_sinogram(y, filter)) * (math.pi / n_angles)
        b, c = y.shape[:2]
        x = fan_beam_fbp(y.reshape(b * c, *y.shape[2:]), self.angles, self.img_size, float(self.detector_spacing),
                         float(self.source_radius), float(self.detector_radius), filter)
        return x.reshape(b, c, *self.img_size)

    def A_dagger(self, y: torch.Tensor, fbp: bool = False, **kwargs: Any) -> torch.Tensor:
        r"""Pseudo-inverse in deepinv's convention: least squares by deepinv's solver (``fbp=False``, the
        keyword arguments go to :meth:`deepinv.physics.LinearPhysics.A_dagger`), or :meth:`fbp` (``fbp=True``,
        ``filter=`` picks the filter)."""
        if fbp:
            return self.fbp(y, **kwargs)
        return super().A_dagger(y, **kwargs)

    @classmethod
    def contract_example(cls) -> dict:
        """A 10x10, 10-view parallel-beam operator in float64 (sparse backend, no disk cache)."""
        physics = cls(10, angles=10, backend="sparse", cache_dir=None)
        x = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return {"physics": physics, "x": x}

r"""CT system matrices from ASTRA as torch sparse CSR operators, built once per geometry and cached on disk.

ASTRA's ``astra.projector.matrix`` gives the system matrix :math:`A \in \mathbb{R}^{(n_\theta n_d) \times (HW)}`
of a CPU projector (weights in float32). A :class:`SystemMatrix` holds :math:`A` and an explicitly stored
:math:`A^\top` as torch CSR tensors, applied to a whole batch in one sparse-dense product on the CPU or the GPU.
Building is a one-off cost (about 2 s at 256x256 with 180 views, on one core); :func:`load_or_build` saves the
matrix under :func:`default_cache_dir` as an uncompressed ``.npz`` named by a hash of the geometry and projector,
announces the first one a process writes into a folder (:class:`CacheWrittenWarning`), and rebuilds a cache file that
cannot be read, with a warning naming it; :func:`clear_cache` empties the folder. In memory, :func:`shared_matrix`
keeps the last few matrices used, shared by every physics of the same geometry, and :func:`view_matrix` takes a
subset of the views as rows of the full matrix (:func:`view_index`) instead of building a new one.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from deepinv_ext.physics._astra_geometry import CTGeometry, import_astra

__all__ = ["CacheWrittenWarning", "SystemMatrix", "cache_folder", "clear_cache", "default_cache_dir", "load_or_build",
           "shared_matrix", "view_index", "view_matrix"]


class CacheWrittenWarning(UserWarning):
    """The first system matrix a process writes into a cache folder: says where, how large, and how to clear it
    (once per folder and process; silence it with ``warnings.simplefilter("ignore", CacheWrittenWarning)``)."""


_ANNOUNCED: set[Path] = set()
_SHARED: OrderedDict[str, SystemMatrix] = OrderedDict()  # the matrices used last, by geometry key (LRU)
_SHARED_KEPT = 4


def default_cache_dir() -> Path:
    """``$DEEPINV_EXT_CACHE/astra_matrices``, or ``~/.cache/deepinv_ext/astra_matrices`` when it is unset.

    |sep|

    :Examples:

        >>> from deepinv_ext.physics.functional import default_cache_dir
        >>> default_cache_dir().name
        'astra_matrices'
    """
    root = os.environ.get("DEEPINV_EXT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "deepinv_ext"
    return base / "astra_matrices"


def cache_folder(cache_dir: str | os.PathLike | None) -> Path | None:
    """The folder of the cache: :func:`default_cache_dir` for ``"default"``, ``None`` for ``None`` (no cache).

    :raises TypeError: ``cache_dir`` is neither ``"default"``, ``None``, a string nor a path.
    :raises ValueError: ``cache_dir`` is the empty string.
    """
    if cache_dir is None:
        return None
    if isinstance(cache_dir, str) and cache_dir == "default":
        return default_cache_dir()
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be 'default', None, or a folder (str or pathlib.Path), got "
                        f"{type(cache_dir).__name__} {cache_dir!r}")
    if not str(cache_dir):
        raise ValueError("cache_dir must name a folder (None for no cache), got ''")
    return Path(cache_dir)


def _load(path: Path, shape: tuple[int, int]):
    """The matrix cached in ``path``, or ``None`` (with a warning naming the file) if it cannot be read or has
    another shape than ``shape``."""
    import scipy.sparse as sp

    try:
        with np.load(path, allow_pickle=False) as f:
            matrix = sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
        if matrix.shape != shape:
            raise ValueError(f"it holds a {matrix.shape} matrix, the geometry needs {shape}")
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        warnings.warn(f"the sparse-matrix cache file {str(path)!r} is unreadable ({type(err).__name__}: "
                      f"{str(err)[:120]}): rebuilding it", RuntimeWarning, stacklevel=3)
        return None
    return matrix


def _build_scipy(geometry: CTGeometry, projector: str):
    astra = import_astra()
    pid = astra.create_projector(projector, geometry.proj_geom(), geometry.vol_geom())
    mid = None
    try:
        mid = astra.projector.matrix(pid)
        matrix = astra.matrix.get(mid)
    finally:
        if mid is not None:
            astra.matrix.delete(mid)
        astra.projector.delete(pid)
    return matrix


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


def _to_torch_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    if data.size >= 2**31:
        raise ValueError(f"the system matrix has {data.size} non-zeros, beyond int32 indices: use backend='astra'")
    return _csr(torch.from_numpy(np.ascontiguousarray(indptr, dtype=np.int32)),
                torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int32)),
                torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), shape)


class SystemMatrix:
    r"""A CT system matrix :math:`A` and its transpose as torch CSR tensors (int32 indices).

    Copies on other devices and dtypes are made on first use and kept (``to``). Not a ``torch.nn.Module`` on
    purpose: it is held outside the physics' state dict (it can take gigabytes), and is rebuilt from the geometry.
    :meth:`apply` and :meth:`apply_t` compute :math:`Ax` and :math:`A^\top y` for stacks of flattened images and
    sinograms in one sparse-dense product each, so the adjoint is exact to rounding.

    :param torch.Tensor matrix: CSR tensor of shape ``(n_angles * n_detectors, H * W)``, float32.
    :param torch.Tensor matrix_t: its transpose, CSR.

    |sep|

    :Examples:

        >>> import scipy.sparse
        >>> import torch
        >>> from deepinv_ext.physics.functional import SystemMatrix
        >>> dense = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
        >>> matrix = SystemMatrix.from_scipy(scipy.sparse.csr_matrix(dense.numpy()))
        >>> matrix.shape, matrix.nnz
        ((2, 3), 3)
        >>> x, y = torch.rand(4, 3), torch.rand(4, 2)  # stacks of 4
        >>> bool(torch.allclose(matrix.apply(x), x @ dense.T)), bool(torch.allclose(matrix.apply_t(y), y @ dense))
        (True, True)
    """

    def __init__(self, matrix: torch.Tensor, matrix_t: torch.Tensor) -> None:
        self.matrix = matrix
        self.matrix_t = matrix_t
        self._copies: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_scipy(cls, matrix) -> SystemMatrix:
        """The system matrix of a SciPy sparse matrix (as ASTRA gives it), with its transpose stored explicitly.

        :param scipy.sparse.spmatrix matrix: the matrix :math:`A`, any SciPy sparse format (stored in float32).
        """
        matrix = matrix.tocsr()
        transpose = matrix.T.tocsr()
        return cls(_to_torch_csr(matrix.indptr, matrix.indices, matrix.data, matrix.shape),
                   _to_torch_csr(transpose.indptr, transpose.indices, transpose.data, transpose.shape))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    @property
    def nnz(self) -> int:
        return int(self.matrix.values().numel())

    def to(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, A^T)`` as CSR tensors on ``device`` in ``dtype`` (made on first use and cached).

        :param torch.device device: where the copies live.
        :param torch.dtype dtype: their dtype (float32 or float64).
        """
        key = (torch.device(device), dtype)
        if key not in self._copies:
            self._copies[key] = tuple(
                _csr(m.crow_indices().to(device), m.col_indices().to(device),
                     m.values().to(device=device, dtype=dtype), tuple(m.shape))
                for m in (self.matrix, self.matrix_t))
        return self._copies[key]

    def rows(self, row_index: torch.Tensor) -> SystemMatrix:
        r"""The operator restricted to some rows (measurements), e.g. a subset of the views, with its transpose.

        :param torch.Tensor row_index: the indices of the rows kept, in order.
        """
        import scipy.sparse as sp

        m = self.matrix
        full = sp.csr_matrix((m.values().numpy(), m.col_indices().numpy(), m.crow_indices().numpy()),
                             shape=self.shape)
        return SystemMatrix.from_scipy(full[row_index.cpu().numpy()])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`A x` for a stack ``x`` of shape ``(N, H * W)``; returns ``(N, n_rows)``.

        :param torch.Tensor x: flattened images, float32 or float64, on any device.
        """
        matrix, _ = self.to(x.device, x.dtype)
        return torch.sparse.mm(matrix, x.T.contiguous()).T

    def apply_t(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`A^\\top y` for a stack ``y`` of shape ``(N, n_rows)``; returns ``(N, H * W)``.

        :param torch.Tensor y: flattened sinograms, float32 or float64, on any device.
        """
        _, matrix_t = self.to(y.device, y.dtype)
        return torch.sparse.mm(matrix_t, y.T.contiguous()).T


def _save(path: Path, matrix) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, indptr=matrix.indptr.astype(np.int64), indices=matrix.indices.astype(np.int32),
             data=matrix.data.astype(np.float32), shape=np.asarray(matrix.shape, dtype=np.int64))
    os.replace(tmp, path)  # atomic: concurrent builders never see half a file


def load_or_build(geometry: CTGeometry, projector: str, cache_dir: str | Path | None = "default") -> SystemMatrix:
    r"""The system matrix of ``projector`` for ``geometry``, from the disk cache or built by ASTRA (and saved).

    :param CTGeometry geometry: the acquisition (:class:`deepinv_ext.physics.AstraCT`'s private geometry record).
    :param str projector: an ASTRA CPU projector (``line``, ``strip``, ``linear``, ``line_fanflat``,
        ``strip_fanflat``).
    :param str, pathlib.Path, None cache_dir: folder of the cache; ``"default"`` for :func:`default_cache_dir`,
        ``None`` for no cache.
    :raises TypeError: ``cache_dir`` is not a folder (see :func:`cache_folder`).

    |sep|

    :Examples:

        Four views of 12 detector cells on an 8x8 image: a :math:`48 \times 64` matrix, written to the cache once:

        >>> import tempfile
        >>> from deepinv_ext.physics._astra_geometry import CTGeometry
        >>> geometry = CTGeometry((8, 8), angles=(0.0, 45.0, 90.0, 135.0), n_detectors=12)
        >>> from deepinv_ext.physics.functional import load_or_build
        >>> folder = tempfile.mkdtemp()
        >>> matrix = load_or_build(geometry, "linear", cache_dir=folder)
        >>> matrix.shape, len(list(Path(folder).glob("*.npz")))
        ((48, 64), 1)
        >>> load_or_build(geometry, "linear", cache_dir=folder).nnz == matrix.nnz  # read back from the cache
        True
    """
    folder = cache_folder(cache_dir)
    path = folder / f"{projector}-{geometry.key(projector)}.npz" if folder is not None else None
    shape = (geometry.n_angles * geometry.n_detectors, geometry.img_size[0] * geometry.img_size[1])
    matrix = _load(path, shape) if path is not None and path.exists() else None
    if matrix is None:
        matrix = _build_scipy(geometry, projector)
        if path is not None:
            _save(path, matrix)
            _announce(folder, path)
    return SystemMatrix.from_scipy(matrix)


def _announce(folder: Path, path: Path) -> None:
    if folder.resolve() in _ANNOUNCED:
        return
    _ANNOUNCED.add(folder.resolve())
    total = sum(f.stat().st_size for f in folder.glob("*.npz"))
    warnings.warn(f"AstraCT cached its sparse system matrix ({path.stat().st_size / 2**20:.1f} MB) in {folder} "
                  f"(the folder now holds {total / 2**20:.1f} MB); clear it with "
                  f"deepinv_ext.physics.functional.clear_cache(), or pass cache_dir=None to keep nothing on disk",
                  CacheWrittenWarning, stacklevel=4)


def clear_cache(cache_dir: str | Path = "default") -> int:
    """Delete the cached system matrices (the ``.npz`` files) of a cache folder; return the bytes freed.

    :param str, pathlib.Path cache_dir: the folder, or ``"default"`` for :func:`default_cache_dir`.

    |sep|

    :Examples:

        >>> import tempfile
        >>> from deepinv_ext.physics._astra_geometry import CTGeometry
        >>> geometry = CTGeometry((8, 8), angles=(0.0, 45.0, 90.0, 135.0), n_detectors=12)
        >>> from deepinv_ext.physics.functional import clear_cache, load_or_build
        >>> folder = tempfile.mkdtemp()
        >>> _ = load_or_build(geometry, "linear", cache_dir=folder)
        >>> clear_cache(folder) > 0, clear_cache(folder)  # freed, then nothing left
        (True, 0)
    """
    folder = cache_folder(cache_dir)
    if folder is None or not folder.is_dir():
        return 0
    freed = 0
    for f in folder.glob("*.npz"):
        freed += f.stat().st_size
        f.unlink()
    return freed


def shared_matrix(geometry: CTGeometry, projector: str, cache_dir: str | Path | None = "default") -> SystemMatrix:
    r"""The system matrix of ``projector`` for ``geometry``, held in memory for the process: the last four geometries
    used are kept, shared by every physics of that geometry (clones included); others come from
    :func:`load_or_build`.

    :param CTGeometry geometry: the acquisition (see :func:`load_or_build`).
    :param str projector: an ASTRA CPU projector (see :func:`load_or_build`).
    :param str, pathlib.Path, None cache_dir: folder of the disk cache (see :func:`load_or_build`).

    |sep|

    :Examples:

        >>> from deepinv_ext.physics._astra_geometry import CTGeometry
        >>> geometry = CTGeometry((8, 8), angles=(0.0, 45.0, 90.0, 135.0), n_detectors=12)
        >>> from deepinv_ext.physics.functional import shared_matrix
        >>> shared_matrix(geometry, "linear", cache_dir=None) is shared_matrix(geometry, "linear", cache_dir=None)
        True
    """
    key = geometry.key(projector)
    if key not in _SHARED:
        _SHARED[key] = load_or_build(geometry, projector, cache_dir)
        while len(_SHARED) > _SHARED_KEPT:
            _SHARED.popitem(last=False)
    _SHARED.move_to_end(key)
    return _SHARED[key]


def view_index(views: torch.Tensor, full_views: torch.Tensor) -> torch.Tensor | None:
    r"""Indices of ``views`` (degrees, any shape) in ``full_views`` (degrees, ``(n,)``), or ``None`` if some view is
    not among them.

    A view matches within float32 rounding (4 ulps), so that angles stored in float32, as deepinv's HDF5 datasets
    load them, still match (e.g. within 1.7e-4 degrees at 360).

    :param torch.Tensor views: the views to find, float64 on the CPU.
    :param torch.Tensor full_views: the full set of views.

    |sep|

    :Examples:

        >>> import torch
        >>> from deepinv_ext.physics.functional import view_index
        >>> full = torch.arange(8, dtype=torch.float64) * 22.5
        >>> view_index(torch.tensor([[45.0, 90.0], [0.0, 157.5]], dtype=torch.float64), full)
        tensor([[2, 4],
                [0, 7]])
        >>> view_index(torch.tensor([10.0], dtype=torch.float64), full) is None
        True
    """
    full = full_views.detach().cpu().double()
    best, index = (views[..., None] - full).abs().min(dim=-1)
    tol = 4 * torch.finfo(torch.float32).eps * full.abs().clamp_min(1.0)[index]
    return index if bool((best <= tol).all()) else None


def view_matrix(geometry: CTGeometry, full: CTGeometry, projector: str,
                cache_dir: str | Path | None = "default") -> SystemMatrix:
    r"""The system matrix of ``geometry``, whose views may be a subset of ``full``'s (the same acquisition otherwise).

    When every view of ``geometry`` is one of ``full``'s (:func:`view_index`), its matrix is made of rows of the full
    matrix (:func:`shared_matrix`: built or loaded once, no ASTRA call per subset): :math:`A_S = S A_{\mathrm{full}}`
    with :math:`S` the selection of the rows of those views. Other views get a matrix of their own
    (:func:`load_or_build`).

    :param CTGeometry geometry: the acquisition, with the views wanted.
    :param CTGeometry full: the same acquisition with the full set of views.
    :param str projector: an ASTRA CPU projector (see :func:`load_or_build`).
    :param str, pathlib.Path, None cache_dir: folder of the disk cache (see :func:`load_or_build`).

    |sep|

    :Examples:

        The matrix of views 45 and 135 degrees is rows 12 to 23 and 36 to 47 of the full one:

        >>> import dataclasses
        >>> import torch
        >>> from deepinv_ext.physics._astra_geometry import CTGeometry
        >>> geometry = CTGeometry((8, 8), angles=(0.0, 45.0, 90.0, 135.0), n_detectors=12)
        >>> from deepinv_ext.physics.functional import shared_matrix, view_matrix
        >>> subset = dataclasses.replace(geometry, angles=(45.0, 135.0))
        >>> rows = view_matrix(subset, geometry, "linear", cache_dir=None)
        >>> x = torch.rand(1, 64)
        >>> full = shared_matrix(geometry, "linear", cache_dir=None).apply(x)
        >>> bool(torch.equal(rows.apply(x), torch.cat([full[:, 12:24], full[:, 36:48]], dim=1)))
        True
    """
    index = view_index(torch.tensor(geometry.angles, dtype=torch.float64),
                       torch.tensor(full.angles, dtype=torch.float64))
    if index is None:
        return load_or_build(geometry, projector, cache_dir)
    matrix = shared_matrix(full, projector, cache_dir)
    if torch.equal(index, torch.arange(full.n_angles)):
        return matrix
    rows = (index[:, None] * geometry.n_detectors + torch.arange(geometry.n_detectors)).reshape(-1)
    return matrix.rows(rows)

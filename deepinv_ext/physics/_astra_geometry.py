r"""2D CT geometry shared by the ASTRA backends of :class:`deepinv_ext.physics.AstraCT` (private module).

A :class:`CTGeometry` is an immutable, hashable description of one acquisition: image grid (unit pixels centred on
the rotation axis), view angles in degrees, detector and, for fan beam, the source and detector distances. It
builds ASTRA's volume and projection geometries and a stable key for the on-disk sparse-matrix cache.

ASTRA's conventions are kept unchanged: an angle :math:`\theta` (passed to ASTRA in radians) puts the detector's
:math:`u` axis along :math:`(\cos\theta, \sin\theta)`, rows of the image run from :math:`y = (H-1)/2` down to
:math:`-(H-1)/2`, and sinograms are ``(n_angles, n_detectors)``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepinv_ext._validation import finite_number, positive_int
from deepinv_ext.physics._checks import view_angles

PARALLEL_PROJECTORS = ("line", "strip", "linear")
FANBEAM_PROJECTORS = ("line_fanflat", "strip_fanflat")
GEOMETRIES = ("parallel", "fanbeam")

#: measured non-zeros per (pixel, view) of each projector's system matrix at 256x256, 180 views, unit detector
NNZ_PER_PIXEL_VIEW = {"line": 1.3, "strip": 3.2, "linear": 1.8, "line_fanflat": 1.3, "strip_fanflat": 3.2}


def import_astra() -> Any:
    """Import ASTRA lazily with an error that says how to install it (it is the optional extra ``[ct]``)."""
    try:
        import astra
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("AstraCT needs the ASTRA toolbox: pip install 'deepinv-ext[ct]' "
                          "(or pip install astra-toolbox)") from err
    return astra


@dataclass(frozen=True)
class CTGeometry:
    r"""One 2D acquisition geometry.

    :param tuple[int, int] img_size: image height and width in pixels (unit pixels).
    :param tuple[float, ...] angles: view angles in degrees.
    :param int n_detectors: number of detector cells.
    :param str geometry: ``"parallel"`` or ``"fanbeam"`` (flat detector).
    :param float detector_spacing: width of a detector cell, in pixels.
    :param float source_radius: source to rotation axis distance (fan beam), in pixels.
    :param float detector_radius: rotation axis to detector distance (fan beam), in pixels.
    """

    img_size: tuple[int, int]
    angles: tuple[float, ...]
    n_detectors: int
    geometry: str = "parallel"
    detector_spacing: float = 1.0
    source_radius: float = 0.0
    detector_radius: float = 0.0

    @property
    def n_angles(self) -> int:
        return len(self.angles)

    @property
    def sino_shape(self) -> tuple[int, int]:
        return (self.n_angles, self.n_detectors)

    @property
    def angles_rad(self) -> np.ndarray:
        return np.deg2rad(np.asarray(self.angles, dtype=np.float64))

    def vol_geom(self, n_slices: int | None = None) -> dict:
        astra = import_astra()
        h, w = self.img_size
        return astra.create_vol_geom(h, w) if n_slices is None else astra.create_vol_geom(h, w, n_slices)

    def proj_geom(self) -> dict:
        """ASTRA's 2D projection geometry (``parallel`` or ``fanflat``)."""
        astra = import_astra()
        if self.geometry == "parallel":
            return astra.create_proj_geom("parallel", self.detector_spacing, self.n_detectors, self.angles_rad)
        return astra.create_proj_geom("fanflat", self.detector_spacing, self.n_detectors, self.angles_rad,
                                      self.source_radius, self.detector_radius)

    def proj_geom_3d(self, n_slices: int, flip_y: bool = True) -> dict:
        """A ``parallel3d_vec`` geometry whose ``n_slices`` detector rows see the ``n_slices`` slices of a volume
        independently (parallel rays stay in their slice): ASTRA's 2D vectors with z added. ``flip_y`` mirrors y,
        since ASTRA's 3D volumes count rows along +y and its 2D volumes along -y."""
        astra = import_astra()
        if self.geometry != "parallel":
            raise ValueError("the stacked 3D geometry exists for parallel beam only")
        vec2d = astra.geom_2vec(self.proj_geom())["Vectors"]  # ray (x, y), detector centre (x, y), u (x, y)
        vectors = np.zeros((self.n_angles, 12))
        vectors[:, [0, 1]] = vec2d[:, [0, 1]]
        vectors[:, [3, 4]] = vec2d[:, [2, 3]]
        vectors[:, [6, 7]] = vec2d[:, [4, 5]]
        vectors[:, 11] = 1.0  # v: one slice per detector row
        if flip_y:
            vectors[:, [1, 4, 7]] *= -1.0
        return astra.create_proj_geom("parallel3d_vec", n_slices, self.n_detectors, vectors)

    def key(self, projector: str) -> str:
        """A stable hash of the geometry and the projector (the sparse-matrix cache key)."""
        payload = json.dumps({"img_size": list(self.img_size), "angles": [float(a) for a in self.angles],
                              "n_detectors": self.n_detectors, "geometry": self.geometry,
                              "detector_spacing": float(self.detector_spacing),
                              "source_radius": float(self.source_radius),
                              "detector_radius": float(self.detector_radius), "projector": projector,
                              "format": 1}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def nnz_estimate(self, projector: str) -> int:
        """Estimated number of non-zeros of the system matrix (used to choose the backend)."""
        per = NNZ_PER_PIXEL_VIEW.get(projector, 2.0) / min(self.detector_spacing, 1.0)
        return int(per * self.img_size[0] * self.img_size[1] * self.n_angles)


def default_n_detectors(img_size: tuple[int, int], geometry: str, spacing: float, source_radius: float,
                        detector_radius: float) -> int:
    r"""The number of detector cells of ``spacing`` that covers the image diagonal (for fan beam, its shadow on the
    detector, magnified by :math:`(R_s + R_d) / \sqrt{R_s^2 - r^2}` for half-diagonal :math:`r`)."""
    half_diag = 0.5 * math.hypot(*img_size)
    if geometry == "fanbeam" and source_radius > half_diag:
        half_diag *= (source_radius + detector_radius) / math.sqrt(source_radius**2 - half_diag**2)
    return int(math.ceil(2 * half_diag / spacing - 1e-9))


def make_geometry(img_size: tuple[int, int], angles: Any, n_detectors: int | None, geometry: str,
                  detector_spacing: float, source_radius: float | None, detector_radius: float | None) -> CTGeometry:
    r"""The geometry that :class:`deepinv_ext.physics.AstraCT`'s arguments describe, with its defaults.

    ``angles`` is a number of views, spread uniformly over :math:`[0, 180)` degrees (parallel beam) or
    :math:`[0, 360)` (fan beam), or the views. Fan beam puts the source and the detector at twice and once the
    image's larger side from the rotation axis by default; parallel beam has no radii (0). The default number of
    detector cells covers the image (:func:`default_n_detectors`). Not validated as a whole (see :func:`validate`).

    :raises TypeError: a count or radius that is not a number, a float count of views.
    :raises ValueError: a radius that is not finite or negative, a number of detectors or views below 1.
    """
    big = max(img_size)
    source_radius = 2.0 * big if source_radius is None else finite_number(source_radius, "source_radius")
    detector_radius = float(big) if detector_radius is None else finite_number(detector_radius, "detector_radius")
    views = view_angles(angles, 180.0 if geometry == "parallel" else 360.0)
    if n_detectors is None:
        n_detectors = default_n_detectors(img_size, geometry, detector_spacing, source_radius, detector_radius)
    else:
        n_detectors = positive_int(n_detectors, "n_detectors")
    fan = geometry == "fanbeam"
    return CTGeometry(img_size, tuple(views.tolist()), n_detectors, geometry, detector_spacing,
                      source_radius if fan else 0.0, detector_radius if fan else 0.0)


def validate(geometry: CTGeometry, projector: str) -> None:
    """Raise a ValueError naming the argument when a geometry cannot work."""
    h, w = geometry.img_size
    if h < 1 or w < 1:
        raise ValueError(f"img_size must hold two positive integers, got {geometry.img_size}")
    if geometry.geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry.geometry!r}")
    if geometry.n_angles < 1:
        raise ValueError("angles must hold at least one view")
    if not np.all(np.isfinite(geometry.angles)):
        raise ValueError("angles must be finite")
    if geometry.n_detectors < 1:
        raise ValueError(f"n_detectors must be a positive integer, got {geometry.n_detectors}")
    if not (geometry.detector_spacing > 0 and np.isfinite(geometry.detector_spacing)):
        raise ValueError(f"detector_spacing must be positive and finite, got {geometry.detector_spacing}")
    allowed = PARALLEL_PROJECTORS if geometry.geometry == "parallel" else FANBEAM_PROJECTORS
    if projector not in allowed + ("cuda",):
        raise ValueError(f"projector must be one of {allowed + ('cuda',)} for geometry={geometry.geometry!r}, "
                         f"got {projector!r}")
    if geometry.geometry == "fanbeam":
        half_diag = 0.5 * float(np.hypot(h, w))
        if not (geometry.source_radius > half_diag):
            raise ValueError(f"source_radius must exceed half the image diagonal ({half_diag:.1f} pixels) so that "
                             f"the source stays outside the image, got {geometry.source_radius}")
        if not (geometry.detector_radius >= 0 and np.isfinite(geometry.detector_radius)):
            raise ValueError(f"detector_radius must be non-negative and finite, got {geometry.detector_radius}")

"""The private CT geometry of AstraCT: cache keys, validation messages, ASTRA geometries."""

from __future__ import annotations

import pytest

from deepinv_ext.physics._astra_geometry import CTGeometry, validate

astra = pytest.importorskip("astra")


def _geometry(**kwargs) -> CTGeometry:
    args = {"img_size": (16, 12), "angles": (0.0, 45.0, 90.0), "n_detectors": 20}
    args.update(kwargs)
    return CTGeometry(**args)


def test_cache_key_is_stable_and_tells_geometries_apart():
    key = _geometry().key("strip")
    assert key == _geometry().key("strip") and len(key) == 32
    others = [_geometry(angles=(0.0, 45.0, 91.0)).key("strip"), _geometry(n_detectors=21).key("strip"),
              _geometry(img_size=(12, 16)).key("strip"), _geometry(detector_spacing=0.5).key("strip"),
              _geometry().key("line")]
    assert len({key, *others}) == 6


def test_shapes_and_astra_geometries():
    g = _geometry()
    assert g.sino_shape == (3, 20) and g.n_angles == 3
    proj = g.proj_geom()
    assert proj["type"] == "parallel" and proj["DetectorCount"] == 20 and len(proj["ProjectionAngles"]) == 3
    vol = g.vol_geom()
    assert (vol["GridRowCount"], vol["GridColCount"]) == (16, 12)
    stacked = g.proj_geom_3d(n_slices=4)
    assert stacked["type"] == "parallel3d_vec" and stacked["Vectors"].shape == (3, 12)
    assert stacked["DetectorRowCount"] == 4
    fan = _geometry(geometry="fanbeam", source_radius=40.0, detector_radius=10.0)
    assert fan.proj_geom()["type"] == "fanflat"
    with pytest.raises(ValueError, match="parallel beam only"):
        fan.proj_geom_3d(n_slices=2)


def test_nnz_estimate_grows_with_views_and_finer_detectors():
    base = _geometry().nnz_estimate("strip")
    assert _geometry(angles=(0.0, 30.0, 60.0, 90.0, 120.0, 150.0)).nnz_estimate("strip") == pytest.approx(2 * base,
                                                                                                          rel=1e-3)
    assert _geometry(detector_spacing=0.5).nnz_estimate("strip") == pytest.approx(2 * base, rel=1e-3)


@pytest.mark.parametrize("kwargs,projector,match", [
    ({"img_size": (0, 12)}, "strip", "img_size"),
    ({"geometry": "cone"}, "strip", "geometry must be one of"),
    ({"angles": ()}, "strip", "at least one view"),
    ({"angles": (0.0, float("nan"))}, "strip", "finite"),
    ({"n_detectors": 0}, "strip", "n_detectors"),
    ({"detector_spacing": 0.0}, "strip", "detector_spacing"),
    ({}, "strip_fanflat", "projector must be one of"),
    ({"geometry": "fanbeam", "source_radius": 5.0}, "strip_fanflat", "source_radius"),
    ({"geometry": "fanbeam", "source_radius": 40.0, "detector_radius": -1.0}, "strip_fanflat", "detector_radius"),
])
def test_validate_names_the_bad_argument(kwargs, projector, match):
    with pytest.raises(ValueError, match=match):
        validate(_geometry(**kwargs), projector)


def test_validate_accepts_good_geometries():
    validate(_geometry(), "linear")
    validate(_geometry(geometry="fanbeam", source_radius=40.0, detector_radius=10.0), "line_fanflat")

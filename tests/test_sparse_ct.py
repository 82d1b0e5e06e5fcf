"""The sparse system matrix (deepinv_ext.physics.functional.system_matrix): exactness, transpose, disk cache, row subsets."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.physics._astra_geometry import CTGeometry
from deepinv_ext.physics.functional.system_matrix import SystemMatrix, default_cache_dir, load_or_build

pytest.importorskip("astra")


GEOM = CTGeometry((12, 10), tuple(float(a) for a in range(0, 180, 12)), 17)


def test_transpose_is_stored_exactly_and_indices_are_int32():
    matrix = load_or_build(GEOM, "strip", cache_dir=None)
    assert matrix.matrix.crow_indices().dtype == torch.int32 and matrix.matrix.col_indices().dtype == torch.int32
    assert torch.equal(matrix.matrix.to_dense().T, matrix.matrix_t.to_dense())
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-14)):
        x = torch.rand(3, 120, dtype=dtype)
        y = torch.rand(3, 15 * 17, dtype=dtype)
        lhs = (matrix.apply(x) * y).sum()
        assert float((lhs - (x * matrix.apply_t(y)).sum()).abs() / lhs) < tol
        assert torch.allclose(matrix.apply(x), x @ matrix.matrix.to_dense().to(dtype).T)


def test_disk_cache_roundtrip_and_key(tmp_path):
    built = load_or_build(GEOM, "linear", cache_dir=tmp_path)
    files = list(tmp_path.glob("linear-*.npz"))
    assert len(files) == 1
    loaded = load_or_build(GEOM, "linear", cache_dir=tmp_path)
    assert torch.equal(built.matrix.to_dense(), loaded.matrix.to_dense())
    other = CTGeometry((12, 10), GEOM.angles, 17, detector_spacing=0.5)
    assert other.key("linear") != GEOM.key("linear") and GEOM.key("line") != GEOM.key("linear")
    load_or_build(other, "linear", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("linear-*.npz"))) == 2


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPINV_EXT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "astra_matrices"


def test_rows_select_views():
    matrix = load_or_build(GEOM, "line", cache_dir=None)
    rows = torch.arange(17, 34)
    sub = matrix.rows(rows)
    assert isinstance(sub, SystemMatrix) and sub.shape == (17, 120)
    assert torch.equal(sub.matrix.to_dense(), matrix.matrix.to_dense()[17:34])
    assert torch.equal(sub.matrix_t.to_dense(), matrix.matrix.to_dense()[17:34].T)


@pytest.mark.parametrize("corruption", ["garbage", "empty", "truncated", "foreign"])
def test_corrupt_cache_file_is_rebuilt_with_a_warning_naming_it(tmp_path, corruption):
    import warnings

    built = load_or_build(GEOM, "linear", cache_dir=tmp_path)
    (path,) = tmp_path.glob("linear-*.npz")
    good = path.read_bytes()
    if corruption == "foreign":  # a readable matrix of another geometry under this name
        other = CTGeometry((12, 10), GEOM.angles[:3], 17)
        load_or_build(other, "linear", cache_dir=tmp_path)
        (other_path,) = set(tmp_path.glob("linear-*.npz")) - {path}
        other_path.replace(path)
    else:
        path.write_bytes({"garbage": b"not a matrix" * 10, "empty": b"", "truncated": good[: len(good) // 2]}[
            corruption])
    with pytest.warns(RuntimeWarning, match=f"{path.name}.*rebuilding it"):
        rebuilt = load_or_build(GEOM, "linear", cache_dir=tmp_path)
    assert torch.equal(rebuilt.matrix.to_dense(), built.matrix.to_dense())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was rewritten: it loads without a warning
        assert torch.equal(load_or_build(GEOM, "linear", cache_dir=tmp_path).matrix.to_dense(),
                           built.matrix.to_dense())


def test_cache_dir_must_be_a_folder():
    with pytest.raises(TypeError, match="cache_dir"):
        load_or_build(GEOM, "linear", cache_dir=3)
    with pytest.raises(ValueError, match="cache_dir"):  # not read as the current directory
        load_or_build(GEOM, "linear", cache_dir="")


def test_the_first_matrix_written_to_a_folder_is_announced_once_and_clear_cache_empties_it(tmp_path, monkeypatch):
    import warnings

    from deepinv_ext.physics.functional import system_matrix as sparse_ct

    monkeypatch.setattr(sparse_ct, "_ANNOUNCED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_or_build(GEOM, "linear", cache_dir=tmp_path)
        load_or_build(GEOM, "strip", cache_dir=tmp_path)  # a second file in the same folder: no second notice
        load_or_build(GEOM, "linear", cache_dir=tmp_path)  # read back: nothing written, nothing said
    notices = [w for w in caught if issubclass(w.category, sparse_ct.CacheWrittenWarning)]
    assert len(notices) == 1 and str(tmp_path) in str(notices[0].message) and "MB" in str(notices[0].message)
    size = sum(f.stat().st_size for f in tmp_path.glob("*.npz"))
    assert size > 0 and sparse_ct.clear_cache(tmp_path) == size and not list(tmp_path.glob("*.npz"))
    assert sparse_ct.clear_cache(tmp_path / "absent") == 0

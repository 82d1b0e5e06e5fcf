"""Run records and seeding."""

import json

import torch

from deepinv_ext.provenance import package_versions, save_run_record, seed_everything


def test_versions_name_the_packages_a_result_depends_on():
    versions = package_versions()
    assert torch.__version__.startswith(versions["torch"]) and versions["deepinv"].startswith("0.5")
    assert {"python", "numpy", "deepinv-ext", "sigpy"} <= set(versions)


def test_seed_everything_reproduces_draws():
    seed_everything(7)
    a = torch.randn(3)
    seed_everything(7)
    assert torch.equal(a, torch.randn(3))


def test_record_holds_config_seed_and_versions(tmp_path):
    path = save_run_record(tmp_path / "new", {"lr": 1e-3, "dtype": torch.float32}, seed=3)
    record = json.loads(path.read_text())
    assert record["config"] == {"lr": 1e-3, "dtype": "torch.float32"} and record["seed"] == 3
    assert record["versions"] == json.loads(json.dumps(package_versions()))

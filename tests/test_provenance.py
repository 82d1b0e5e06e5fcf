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


def test_a_rerun_keeps_the_earlier_records(tmp_path):
    save_run_record(tmp_path, {"epochs": 1}, seed=0)
    save_run_record(tmp_path, {"epochs": 2}, seed=0)
    path = save_run_record(tmp_path, {"epochs": 3}, seed=0)
    record = json.loads(path.read_text())
    assert record["config"] == {"epochs": 3}
    assert [r["config"] for r in record["previous"]] == [{"epochs": 1}, {"epochs": 2}]
    assert all("previous" not in r for r in record["previous"])
    path.write_text("{not json")
    record = json.loads(save_run_record(tmp_path, {"epochs": 4}, seed=0).read_text())
    assert record["previous"] == [{"unreadable_record": "{not json"}]

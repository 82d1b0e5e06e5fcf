"""The plugin registry: listing, loading, clashes, unknown names, nested builds, config files, third parties."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import deepinv as dinv
import pytest
import torch

from deepinv_ext import plugins
from deepinv_ext.datasets import RandomEllipsesDataset


def test_available_lists_without_importing():
    found = plugins.available("dataset")
    assert all(p.kind == "dataset" for p in found)
    info = next(p for p in found if p.name == "ellipses")
    assert info.target == "deepinv_ext.datasets.phantoms:RandomEllipsesDataset"
    assert info.distribution == "deepinv-ext"


def test_available_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        plugins.available("priors")


def test_load_returns_the_object():
    assert plugins.load("dataset", "ellipses") is RandomEllipsesDataset


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match=r"ellipses"):
        plugins.load("dataset", "elipses")


def test_third_party_plugin_is_found_and_loaded(with_third_party):
    keys = {(p.key, p.distribution) for p in plugins.available()}
    assert ("physics.scaled_identity", "dix-plugin-a") in keys
    physics = plugins.load("physics", "scaled_identity")(scale=3.0)
    x = torch.randn(2, 1, 4, 4)
    assert torch.allclose(physics.A(x), 3 * x)


def test_clash_names_both_distributions(with_third_party):
    with pytest.raises(plugins.PluginConflictError, match="dix-plugin-a.*dix-plugin-b"):
        plugins.load("prior", "quadratic")
    chosen = plugins.load("prior", "quadratic", distribution="dix-plugin-b")
    assert chosen.__module__ == "dix_plugin_b"


def test_build_nested_config(with_third_party):
    config = {
        "target": "deepinv.optim:PGD",
        "prior": {"kind": "prior", "name": "quadratic", "distribution": "dix-plugin-a", "weight": 0.5},
        "data_fidelity": {"target": "deepinv.optim.data_fidelity:L2"},
        "stepsize": 0.5, "lambda_reg": 1.0, "max_iter": 3,
    }
    model = plugins.build(config)
    assert isinstance(model, dinv.optim.PGD)
    assert model.prior[0].weight == 0.5  # deepinv keeps priors in a list


def test_build_names_the_bad_key():
    with pytest.raises(TypeError, match=r"unknown key\(s\) \['sise'\].*'size'"):
        plugins.build({"kind": "dataset", "name": "ellipses", "sise": 32})


def test_build_checks_keys_along_the_kwargs_chain():
    # AstraCT passes **kwargs on to deepinv's LinearPhysics, which passes the rest to Physics, which ignores them
    with pytest.raises(TypeError, match=r"unknown key\(s\) \['angels'\].*'angles'.*'noise_model'"):
        plugins.build({"kind": "physics", "name": "astra_ct", "img_size": 8, "angels": 20, "cache_dir": None})
    with pytest.raises(TypeError, match=r"unknown key\(s\) \['sigam'\]"):
        plugins.build({"target": "deepinv.physics:Denoising", "sigam": 0.1})
    physics = plugins.build({"kind": "physics", "name": "astra_ct", "img_size": 8, "angles": 4, "cache_dir": None,
                             "noise_model": {"target": "deepinv.physics:GaussianNoise", "sigma": 0.1}})
    assert physics.angles.numel() == 4 and abs(float(physics.noise_model.sigma) - 0.1) < 1e-7


@pytest.mark.parametrize("config", [42, None, ["kind", "name"]])
def test_build_refuses_a_config_that_is_not_a_mapping(config):
    with pytest.raises(TypeError, match="config must be a mapping"):
        plugins.build(config)


def test_build_from_json_and_yaml(tmp_path):
    config = {"kind": "dataset", "name": "ellipses", "length": 3, "size": 8, "seed": 5}
    (tmp_path / "c.json").write_text(json.dumps(config))
    (tmp_path / "c.yaml").write_text("kind: dataset\nname: ellipses\nlength: 3\nsize: 8\nseed: 5\n")
    a, b = plugins.build(tmp_path / "c.json"), plugins.build(str(tmp_path / "c.yaml"))
    assert torch.equal(a[1]["x"], b[1]["x"]) and a[1]["x"].shape == (1, 8, 8)
    (tmp_path / "c.txt").write_text("{}")
    with pytest.raises(ValueError, match="must end in"):
        plugins.build(tmp_path / "c.txt")


def test_malformed_entry_is_skipped_with_a_warning(tmp_path, monkeypatch):
    dist = tmp_path / "broken_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[deepinv_ext.plugins]\nnokind = x:y\nwidget.thing = x:y\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="nokind"):
        found = plugins.available()
    assert not any(p.distribution == "broken-dist" for p in found)


def test_cli_lists_third_party_plugins(third_party_site):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(third_party_site), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "deepinv_ext.cli", "plugins"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert "ellipses" in out and "scaled_identity" in out and "dix-plugin-b" in out

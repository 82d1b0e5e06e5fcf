"""The deepinv-ext command: plugins table and recipe runs."""

from __future__ import annotations

import re

import pytest
import yaml
from test_runner import small_config

from deepinv_ext.cli import main, plugin_table


def test_cli_run(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config()))
    assert main(["run", str(path), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert "PSNR:" in capsys.readouterr().out
    assert (tmp_path / "out" / "run.json").exists()


def test_cli_plugins(capsys):
    assert main(["plugins", "--kind", "dataset"]) == 0
    out = capsys.readouterr().out
    assert "ellipses" in out and "deepinv-ext" in out


def test_plugin_table_is_aligned():
    lines = plugin_table().splitlines()
    assert lines[0].split() == ["kind", "name", "target", "distribution"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + len(__import__("deepinv_ext").plugins.available())


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "``" not in out and "run a recipe config." in out and "examples:" in out


@pytest.mark.parametrize("text, message", [
    (None, "No such file"),
    ("a: [1,\n", "config file"),
    ("physics: {target: 'deepinv.physics:Denoising'}\nmodel: {kind: prior, name: tdvv}\n"
     "data: {test: {kind: dataset, name: ellipses, length: 2, size: 16}}\n", "config section 'model'.*did you mean"),
    ("physics: {target: 'deepinv.physics:Denoising'}\nmodel: {kind: prior, name: tdv}\n", "'data' section"),
])
def test_a_config_that_cannot_run_is_one_line_and_status_2(tmp_path, capsys, text, message):
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["run", str(path), "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("deepinv-ext run: error:") and "Traceback" not in err
    assert re.search(message, err)


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only a ConfigError becomes a one-line exit: any other error propagates."""
    import deepinv_ext.runner

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(deepinv_ext.runner, "run_config", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["run", str(tmp_path / "config.yaml")])


def test_cli_run_prints_the_metrics_once_and_names_the_folder(tmp_path, capsys):
    import warnings

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("PSNR:") for line in out.splitlines()) == 1
    assert f"in {tmp_path / 'out'}" in out
    assert not [w for w in caught if "non_blocking" in str(w.message)], "deepinv's CUDA-only warning on the CPU"

"""The deepinv-ext command: plugins table and recipe runs."""

from __future__ import annotations

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

r"""Run a recipe from a config file: build physics, model and data, train with :class:`deepinv.Trainer`, evaluate
with :func:`deepinv.test`, and keep everything needed to reproduce and resume the run.

Config schema (JSON or YAML; every object is a plugin config ``{kind, name, ...}`` or ``{target: "module:attr", ...}``,
see :func:`deepinv_ext.plugins.build`):

.. code-block:: yaml

    seed: 0                    # seeds Python, NumPy and torch (default 0)
    device: cpu                # cpu, cuda or auto (default auto)
    output_dir: runs/example   # the command line's --output overrides it
    physics: {target: "deepinv.physics:Denoising",
              noise_model: {target: "deepinv.physics:GaussianNoise", sigma: 0.1}}
    model: {target: "deepinv.models:DnCNN", in_channels: 1, out_channels: 1, depth: 5, pretrained: null}
    data:
      train: {kind: dataset, name: ellipses, length: 64, size: 64, seed: 0}   # omit to evaluate only
      test: {kind: dataset, name: ellipses, length: 16, size: 64, seed: 1}
      batch_size: 8
    training:                  # omit to evaluate only
      epochs: 2
      optimizer: Adam          # any torch.optim class name
      lr: 1.0e-3
      losses: [{target: "deepinv.loss:SupLoss"}]   # default: supervised MSE
      ckp_interval: 1
    evaluation:
      metrics: [{target: "deepinv.loss.metric:PSNR"}, {target: "deepinv.loss.metric:SSIM"}]

Measurements are simulated online by ``physics(x)`` (so with the physics' noise model). A model that is a
:class:`deepinv.models.Denoiser` rather than a :class:`deepinv.models.Reconstructor` is applied to the
pseudo-inverse, :class:`deepinv.models.ArtifactRemoval` with ``mode="pinv"``.

Outputs in ``output_dir``: ``run.json`` (config, seed, command line, package versions), ``checkpoints/attempt<N>/``
(the Trainer's, one folder per invocation), ``metrics.json``. Re-running the same command (for instance after an
interruption, or with more ``epochs``) resumes from the newest checkpoint: model, optimizer and epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import deepinv as dinv
import torch
import yaml
from torch.utils.data import DataLoader

from deepinv_ext._validation import checked_device
from deepinv_ext.plugins import build, load_config
from deepinv_ext.provenance import save_run_record, seed_everything

__all__ = ["ConfigError", "run_config", "latest_checkpoint", "prune_empty_folders", "resumable_checkpoints"]


class ConfigError(ValueError):
    """A config that cannot be run as written: a missing or unreadable file, an unknown or missing section, a device
    this machine lacks, or a section that :func:`deepinv_ext.plugins.build` refuses (the message names the section).
    The ``deepinv-ext`` command reports it in one line with exit status 2; any other error is a bug and keeps its
    traceback."""


def _read(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    if not isinstance(config, (str, Path)):
        return config
    try:
        return load_config(config)
    except (OSError, ValueError, yaml.YAMLError) as err:  # missing, unreadable, not JSON/YAML, not a mapping
        raise ConfigError(f"config file {str(config)!r}: {err}") from err


def _build(section: str, config: Any) -> Any:
    try:
        return build(config)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config section {section!r}: {err}") from err

_SECTIONS = {"seed", "device", "output_dir", "physics", "model", "data", "training", "evaluation"}


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The Trainer checkpoint ``ckp_<epoch>.pth.tar`` with the highest epoch under ``folder``, if any."""
    found = [p for p in Path(folder).glob("**/ckp_*.pth.tar") if p.name.split("_")[1].split(".")[0].isdigit()]
    return max(found, key=lambda p: (int(p.name.split("_")[1].split(".")[0]), p.stat().st_mtime), default=None)


def resumable_checkpoints(folder: str | Path) -> dict[str, Path | None]:
    """:class:`deepinv.Trainer` keywords that resume from the newest checkpoint under ``folder`` and save into a
    fresh ``folder/attempt<N>`` (the Trainer names its own sub-folder by the second, so two runs within one second
    would otherwise collide): ``{"save_path": ..., "ckpt_pretrained": ...}``."""
    folder = Path(folder)
    prune_empty_folders(folder)  # attempts that saved nothing (a run already complete, an early interruption)
    attempt = len(list(folder.glob("attempt*"))) if folder.exists() else 0
    return {"save_path": folder / f"attempt{attempt}", "ckpt_pretrained": latest_checkpoint(folder)}


def prune_empty_folders(folder: str | Path) -> None:
    """Remove the folders under ``folder`` (and ``folder`` itself) that hold no file, deepest first: the
    Trainer creates its time-stamped folder even when it saves no checkpoint."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def _as_reconstructor(model: torch.nn.Module) -> torch.nn.Module:
    if isinstance(model, dinv.models.Denoiser) and not isinstance(model, dinv.models.Reconstructor):
        return dinv.models.ArtifactRemoval(model, mode="pinv")
    return model


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return checked_device(name, "device")


def run_config(config: dict[str, Any] | str | Path, output_dir: str | Path | None = None,
               verbose: bool = True) -> dict[str, float]:
    """Build and run a recipe config; return the evaluation metrics (mean over the test set).

    :param config: the config mapping or a JSON/YAML file (schema in this module's docstring).
    :param output_dir: where outputs go (default: the config's ``output_dir``, else ``runs/<config name>``).
    :param bool verbose: show the Trainer's and the test's progress, and name the output folder at the end (the
        metrics are returned, not printed).
    :raises ConfigError: the config cannot be run as written (see :class:`ConfigError`).
    """
    name = Path(config).stem if isinstance(config, (str, Path)) else "run"
    config = _read(config)
    unknown = set(config) - _SECTIONS
    if unknown:
        raise ConfigError(f"config: unknown section(s) {sorted(unknown)}; accepted: {sorted(_SECTIONS)}")
    for section in ("physics", "model", "data"):
        if section not in config:
            raise ConfigError(f"config: the {section!r} section is required")
    if not isinstance(config["data"], dict) or "test" not in config["data"]:
        raise ConfigError("config: data.test is required")
    output_dir = Path(output_dir or config.get("output_dir") or Path("runs") / name)
    try:
        device = _device(config.get("device", "auto"))
    except ValueError as err:
        raise ConfigError(f"config: {err}") from err
    seed = int(config.get("seed", 0))
    seed_everything(seed)
    save_run_record(output_dir, config, seed)

    physics = _build("physics", config["physics"]).to(device)
    model = _as_reconstructor(_build("model", config["model"])).to(device)
    data = config["data"]
    loader = dict(batch_size=int(data.get("batch_size", 8)), num_workers=int(data.get("num_workers", 0)))
    test_loader = DataLoader(_build("data.test", data["test"]), shuffle=False, **loader)
    evaluation = config.get("evaluation", {})
    metrics = [_build("evaluation.metrics", m)
               for m in evaluation.get("metrics", [{"target": "deepinv.loss.metric:PSNR"}])]

    training = config.get("training")
    if training is not None and "train" in data:
        model = _train(model, physics, training, data, loader, metrics, output_dir, device, seed, verbose)
    model.eval()
    results = dinv.test(model, test_loader, physics, metrics=metrics, online_measurements=True, device=device,
                        verbose=False, show_progress_bar=verbose, compare_no_learning=True,
                        no_learning_method="A_dagger",  # the caller prints the results, once
                        non_blocking_transfers=device.type == "cuda")  # deepinv warns on the CPU otherwise
    results = {k: float(v) for k, v in results.items()}
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    if verbose:
        print(f"run record, checkpoints and metrics in {output_dir}")
    return results


def _train(model, physics, training, data, loader, metrics, output_dir, device, seed, verbose):
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(_build("data.train", data["train"]), shuffle=True, generator=generator, **loader)
    optimizer_cls = getattr(torch.optim, training.get("optimizer", "Adam"))
    optimizer = optimizer_cls(model.parameters(), lr=float(training.get("lr", 1e-3)))
    losses = [_build("training.losses", loss)
              for loss in training.get("losses", [{"target": "deepinv.loss:SupLoss"}])]
    trainer = dinv.Trainer(
        model=model, physics=physics, optimizer=optimizer, train_dataloader=train_loader,
        epochs=int(training.get("epochs", 1)), losses=losses, metrics=metrics, online_measurements=True,
        device=device, ckp_interval=int(training.get("ckp_interval", 1)), verbose=verbose, show_progress_bar=verbose,
        non_blocking_transfers=device.type == "cuda",
        **resumable_checkpoints(output_dir / "checkpoints"),
    )
    model = trainer.train()
    prune_empty_folders(output_dir / "checkpoints")
    return model

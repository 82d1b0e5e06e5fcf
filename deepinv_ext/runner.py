r"""Run a recipe from a config file: build physics, model and data, train with :class:`deepinv.Trainer`, evaluate
with :func:`deepinv.test`, and keep everything needed to reproduce and resume the run.

Config schema (JSON or YAML; every object is a plugin config ``{kind, name, ...}`` or ``{target: "module:attr", ...}``,
see :func:`deepinv_ext.plugins.build`):

.. code-block:: yaml

    seed: 0                    # seeds Python, NumPy and torch (default 0)
    device: cpu                # cpu, cuda or auto (default auto)
    threads: 1                 # torch CPU threads of the run (default: torch's; small images run fastest on 1)
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
(the Trainer's, one folder per invocation, and ``options.json``, the config they were trained under),
``metrics.json``. Re-running the same command (for instance after an interruption, or with more ``epochs``) resumes
from the newest checkpoint: model, optimizer and epoch; a config that changed anything else the training depends on
is refused (:class:`ConfigError`, naming what changed: see :mod:`deepinv_ext.checkpoint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import deepinv as dinv
import torch
import yaml
from torch.utils.data import DataLoader

from deepinv_ext._validation import checked_device, positive_int
from deepinv_ext.checkpoint import (
    OptionsChangedError,
    latest_checkpoint,
    prune_empty_folders,
    resumable_checkpoints,
    train_resumably,
)
from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer
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

_SECTIONS = {"seed", "device", "threads", "output_dir", "physics", "model", "data", "training", "evaluation"}


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

    :param dict, str, pathlib.Path config: the config mapping or a JSON/YAML file (schema in
        :mod:`deepinv_ext.runner`).
    :param str, pathlib.Path output_dir: where outputs go (default: the config's ``output_dir``, else
        ``runs/<config name>``).
    :param bool verbose: show the Trainer's and the test's progress, and name the output folder at the end (the
        metrics are returned, not printed).
    :raises ConfigError: the config cannot be run as written (see :class:`ConfigError`).

    |sep|

    :Examples:

        Train a tiny DnCNN for one epoch on random ellipses and evaluate it; the run keeps its record, checkpoints
        and metrics:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from deepinv_ext.runner import run_config
        >>> config = {
        ...     "seed": 0, "device": "cpu",
        ...     "physics": {"target": "deepinv.physics:Denoising",
        ...                 "noise_model": {"target": "deepinv.physics:GaussianNoise", "sigma": 0.1}},
        ...     "model": {"target": "deepinv.models:DnCNN", "depth": 2, "nf": 4, "pretrained": None,
        ...               "in_channels": 1, "out_channels": 1},
        ...     "data": {"train": {"kind": "dataset", "name": "ellipses", "length": 4, "size": 16},
        ...              "test": {"kind": "dataset", "name": "ellipses", "length": 2, "size": 16, "seed": 1},
        ...              "batch_size": 2},
        ...     "training": {"epochs": 1, "lr": 1e-3}}
        >>> output = Path(tempfile.mkdtemp())
        >>> metrics = run_config(config, output_dir=output, verbose=False)
        >>> "PSNR" in metrics, sorted(p.name for p in output.iterdir())
        (True, ['checkpoints', 'metrics.json', 'run.json'])
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
        threads = None if config.get("threads") is None else positive_int(config["threads"], "threads")
    except ValueError as err:
        raise ConfigError(f"config: {err}") from err
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with DataParallel(device) as parallel:  # one process, or one of torchrun's (see data_parallel)
            return _run(config, output_dir, parallel.device if parallel.enabled else device, verbose, parallel)
    finally:
        torch.set_num_threads(previous)  # the caller's own setting is left as it was


def _run(config: dict[str, Any], output_dir: Path, device: torch.device, verbose: bool,
         parallel: DataParallel) -> dict[str, float]:
    seed = int(config.get("seed", 0))
    seed_everything(seed)
    parallel.on_main(save_run_record, output_dir, config, seed)

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
        model = _train(model, physics, config, loader, metrics, output_dir, device, seed, verbose, parallel)
    model.eval()
    return parallel.on_main(_evaluate, model, test_loader, physics, metrics, output_dir, device, verbose)


def _evaluate(model, test_loader, physics, metrics, output_dir, device, verbose):
    """Test the model, write ``metrics.json`` and return the metrics (rank 0 alone under ``torchrun``)."""
    results = dinv.test(model, test_loader, physics, metrics=metrics, online_measurements=True, device=device,
                        verbose=False, show_progress_bar=verbose, compare_no_learning=True,
                        no_learning_method="A_dagger",  # the caller prints the results, once
                        non_blocking_transfers=device.type == "cuda")  # deepinv warns on the CPU otherwise
    results = {k: float(v) for k, v in results.items()}
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    if verbose:
        print(f"run record, checkpoints and metrics in {output_dir}")
    return results


def _training_options(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that a training checkpoint depends on: all but the output, the device, the test data,
    the evaluation and the number of epochs (more epochs extend the same training)."""
    training = {k: v for k, v in config.get("training", {}).items() if k not in ("epochs", "ckp_interval")}
    data = {k: v for k, v in config["data"].items() if k not in ("test", "num_workers")}
    return {"seed": int(config.get("seed", 0)), "physics": config["physics"], "model": config["model"],
            "data": data, "training": training}


def _train(model, physics, config, loader, metrics, output_dir, device, seed, verbose, parallel):
    training, data = config["training"], config["data"]
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(_build("data.train", data["train"]), shuffle=True, generator=generator, **loader)
    optimizer_cls = getattr(torch.optim, training.get("optimizer", "Adam"))
    optimizer = optimizer_cls(model.parameters(), lr=float(training.get("lr", 1e-3)))
    losses = [_build("training.losses", loss)
              for loss in training.get("losses", [{"target": "deepinv.loss:SupLoss"}])]
    try:
        checkpoints = parallel.on_main(resumable_checkpoints, output_dir / "checkpoints", _training_options(config))
    except OptionsChangedError as err:
        raise ConfigError(f"config: {err}") from err
    trainer = DataParallelTrainer(
        model=model, physics=physics, optimizer=optimizer, train_dataloader=train_loader,
        epochs=int(training.get("epochs", 1)), losses=losses, metrics=metrics, online_measurements=True,
        device=device, ckp_interval=int(training.get("ckp_interval", 1)), verbose=verbose, show_progress_bar=verbose,
        non_blocking_transfers=device.type == "cuda", parallel=parallel,
        **checkpoints,
    )
    return train_resumably(trainer, output_dir / "checkpoints")

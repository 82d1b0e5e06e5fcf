r"""Resume a training from its checkpoints, and refuse a checkpoint made under other options.

A rerun of a recipe or of ``deepinv-ext run`` in the same output folder resumes where the last one stopped. It must
not resume a training made under other options: that would silently mix two experiments. So every checkpoint keeps
the options it depends on (a flat dict, e.g. a recipe's parsed arguments less those that do not change the
training), and a rerun compares them with its own: equal, it resumes; different, it stops with
:class:`OptionsChangedError`, which names the options that changed.

Two forms of checkpoint, one rule:

- a torch checkpoint dict written by :func:`save_checkpoint` (the options under its key ``"config"``) and read back by
  :func:`resume_checkpoint`, for training loops of one's own (the recipes');
- the ``ckp_<epoch>.pth.tar`` files of :class:`deepinv.Trainer` in a folder (:func:`resumable_checkpoints`) or any
  file written by other code, whose options are kept beside them in a JSON record (:func:`check_recorded_options`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from deepinv_ext._validation import load_checkpoint

__all__ = ["OptionsChangedError", "changed_options", "check_recorded_options", "latest_checkpoint",
           "prune_empty_folders", "resumable_checkpoints", "resume_checkpoint", "save_checkpoint", "train_resumably"]


class OptionsChangedError(RuntimeError):
    """A checkpoint was made under other options than those of the run that would resume it."""


def changed_options(saved: Mapping[str, Any] | None, config: Mapping[str, Any]) -> list[str]:
    """The names of the options whose values differ between ``saved`` and ``config`` (one of the two may lack
    them), sorted.

    :param dict, None saved: the options a checkpoint was made under (``None``: none recorded).
    :param dict config: the options of this run.

    |sep|

    :Examples:

        >>> from deepinv_ext.checkpoint import changed_options
        >>> changed_options({"lr": 0.1, "epochs": 5}, {"lr": 0.2, "epochs": 5, "depth": 3})
        ['depth', 'lr']
    """
    saved = saved or {}
    return sorted(k for k in {*saved, *config} if k not in saved or k not in config or saved[k] != config[k])


def _refuse(where: Path, saved: Mapping[str, Any] | None, config: Mapping[str, Any]) -> None:
    changed = changed_options(saved, config)
    if changed:
        raise OptionsChangedError(f"{where} was trained with other options ({', '.join(changed)}): use another "
                                  "--output, or delete it to retrain")


def save_checkpoint(path: str | Path, state: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Save ``state`` (tensors, state dicts and plain containers) with the options ``config`` it was made under.

    :param str, pathlib.Path path: the checkpoint file (its folder must exist).
    :param dict state: what a resumed run needs (model and optimiser state dicts, counters, RNG states, ...).
    :param dict config: the options the training depends on, stored under the key ``"config"``.

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> import torch
        >>> from deepinv_ext.checkpoint import save_checkpoint
        >>> path = Path(tempfile.mkdtemp()) / "model.pt"
        >>> save_checkpoint(path, {"step": 3}, {"lr": 0.1})
        >>> torch.load(path)
        {'step': 3, 'config': {'lr': 0.1}}
    """
    torch.save({**state, "config": dict(config)}, path)


def resume_checkpoint(path: str | Path, config: Mapping[str, Any], map_location: str | torch.device = "cpu",
                      refuse_changed: bool = True) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if a run with the options ``config`` may resume it, else ``None``.

    :param str, pathlib.Path path: a file written by :func:`save_checkpoint`.
    :param dict config: the options of this run.
    :param str, torch.device map_location: where its tensors go (``torch.load``'s ``map_location``).
    :param bool refuse_changed: a checkpoint of other options raises :class:`OptionsChangedError` (default); with
        ``False`` it is ignored (``None``: the run starts afresh and will overwrite it).
    :return: the checkpoint dict, or ``None`` where there is none (or, with ``refuse_changed=False``, none of these
        options).
    :raises OptionsChangedError: the checkpoint was made under other options (naming them).
    :raises ValueError: the file is empty, corrupt or not a dict (see ``load_checkpoint``).

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from deepinv_ext.checkpoint import OptionsChangedError, resume_checkpoint, save_checkpoint
        >>> path = Path(tempfile.mkdtemp()) / "model.pt"
        >>> resume_checkpoint(path, {"lr": 0.1}) is None  # nothing to resume
        True
        >>> save_checkpoint(path, {"step": 3}, {"lr": 0.1})
        >>> resume_checkpoint(path, {"lr": 0.1})["step"]
        3
        >>> resume_checkpoint(path, {"lr": 0.2}, refuse_changed=False) is None  # start afresh
        True
        >>> try:
        ...     resume_checkpoint(path, {"lr": 0.2})
        ... except OptionsChangedError as err:
        ...     print(str(err).split(" was ")[1])
        trained with other options (lr): use another --output, or delete it to retrain
    """
    path = Path(path)
    if not path.exists():
        return None
    state = load_checkpoint(path, map_location)
    if not refuse_changed and changed_options(state.get("config"), config):
        return None
    _refuse(path, state.get("config"), config)
    return state


def check_recorded_options(record: str | Path, config: Mapping[str, Any], resuming: bool,
                           checkpoint: str | Path | None = None) -> None:
    """Compare ``config`` with the options recorded in the JSON file ``record`` (when resuming), then record them.

    For checkpoints written by other code (deepinv's Trainer, a plain state dict): the options live beside them.
    A checkpoint older than its record (none recorded) is resumed as before.

    :param str, pathlib.Path record: the JSON file of the options (created or overwritten).
    :param dict config: the options of this run (JSON-serialisable; other values are compared as their ``str``).
    :param bool resuming: whether this run resumes the checkpoint(s) the record is about.
    :param str, pathlib.Path checkpoint: the file or folder named in the error (default: ``record``).
    :raises OptionsChangedError: resuming a checkpoint recorded under other options.

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from deepinv_ext.checkpoint import OptionsChangedError, check_recorded_options
        >>> record = Path(tempfile.mkdtemp()) / "options.json"
        >>> check_recorded_options(record, {"lr": 0.1}, resuming=False)  # a first run records its options
        >>> check_recorded_options(record, {"lr": 0.1}, resuming=True)  # the same: it may resume
        >>> try:
        ...     check_recorded_options(record, {"lr": 0.2}, resuming=True)
        ... except OptionsChangedError as err:
        ...     print("(lr)" in str(err))
        True
    """
    record = Path(record)
    config = json.loads(json.dumps(dict(config), default=str))
    if resuming and record.is_file():
        _refuse(Path(checkpoint or record), json.loads(record.read_text()), config)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(config, indent=1, sort_keys=True))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The Trainer checkpoint ``ckp_<epoch>.pth.tar`` with the highest epoch under ``folder``, if any.

    :param str, pathlib.Path folder: searched with its sub-folders.

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from deepinv_ext.checkpoint import latest_checkpoint
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("attempt0/ckp_2.pth.tar", "attempt1/ckp_10.pth.tar", "attempt1/ckp_9.pth.tar"):
        ...     (folder / name).parent.mkdir(exist_ok=True)
        ...     (folder / name).touch()
        >>> latest_checkpoint(folder).relative_to(folder).as_posix()
        'attempt1/ckp_10.pth.tar'
    """
    found = [p for p in Path(folder).glob("**/ckp_*.pth.tar") if p.name.split("_")[1].split(".")[0].isdigit()]
    return max(found, key=lambda p: (int(p.name.split("_")[1].split(".")[0]), p.stat().st_mtime), default=None)


def resumable_checkpoints(folder: str | Path, config: Mapping[str, Any] | None = None) -> dict[str, Path | None]:
    """:class:`deepinv.Trainer` keywords that resume from the newest checkpoint under ``folder`` and save into a
    fresh ``folder/attempt<N>`` (the Trainer names its own sub-folder by the second, so two runs within one second
    would otherwise collide): ``{"save_path": ..., "ckpt_pretrained": ...}``.

    :param str, pathlib.Path folder: the run's checkpoint folder.
    :param dict config: the options the training depends on (``None``: not checked), recorded in
        ``folder/options.json``; resuming checkpoints of other options raises :class:`OptionsChangedError`.

    |sep|

    :Examples:

        A first run has nothing to resume; see :func:`train_resumably` for the whole cycle:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from deepinv_ext.checkpoint import resumable_checkpoints
        >>> folder = Path(tempfile.mkdtemp())
        >>> keywords = resumable_checkpoints(folder, {"lr": 0.1})
        >>> keywords["save_path"].name, keywords["ckpt_pretrained"]
        ('attempt0', None)
    """
    folder = Path(folder)
    prune_empty_folders(folder)  # attempts that saved nothing (a run already complete, an early interruption)
    latest = latest_checkpoint(folder)
    if config is not None:
        check_recorded_options(folder / "options.json", config, resuming=latest is not None, checkpoint=folder)
    attempt = len(list(folder.glob("attempt*"))) if folder.exists() else 0
    return {"save_path": folder / f"attempt{attempt}", "ckpt_pretrained": latest}


def prune_empty_folders(folder: str | Path) -> None:
    """Remove the folders under ``folder`` (and ``folder`` itself) that hold no file, deepest first: the
    Trainer creates its time-stamped folder even when it saves no checkpoint.

    :param str, pathlib.Path folder: the folder to tidy (nothing happens if it does not exist).

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from deepinv_ext.checkpoint import prune_empty_folders
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "kept" / "empty").mkdir(parents=True)
        >>> (folder / "kept" / "ckp_0.pth.tar").touch()
        >>> (folder / "gone" / "empty").mkdir(parents=True)
        >>> prune_empty_folders(folder)
        >>> sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
        ['kept', 'kept/ckp_0.pth.tar']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def train_resumably(trainer: Any, folder: str | Path) -> torch.nn.Module:
    """``trainer.train()`` for a :class:`deepinv.Trainer` built with :func:`resumable_checkpoints` ``(folder)``, then
    the folder tidied.

    A rerun whose checkpoint already holds every epoch trains nothing: it says so in one line (where the trainer is
    verbose) instead of deepinv's ``UserWarning``, and the time-stamped folder the Trainer made for it, left empty, is
    removed (:func:`prune_empty_folders`), as are those of earlier such runs.

    :param deepinv.Trainer trainer: a trainer whose ``save_path`` and ``ckpt_pretrained`` come from
        :func:`resumable_checkpoints` ``(folder)`` (for a :class:`deepinv_ext.data_parallel.DataParallelTrainer`
        under ``torchrun``: computed on rank 0, :meth:`deepinv_ext.data_parallel.DataParallel.on_main`).
    :param str, pathlib.Path folder: the checkpoint folder given to :func:`resumable_checkpoints`.
    :return: the trained model (``trainer.train()``'s), or the one loaded from the checkpoint.

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> import deepinv as dinv
        >>> import torch
        >>> from deepinv_ext.checkpoint import resumable_checkpoints, train_resumably
        >>> folder = Path(tempfile.mkdtemp())
        >>> def trainer(verbose):
        ...     model = dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None),
        ...                                         mode="direct")
        ...     data = torch.utils.data.DataLoader(dinv.datasets.TensorDataset(x=torch.rand(2, 1, 8, 8)), batch_size=2)
        ...     return dinv.Trainer(model, physics=dinv.physics.Denoising(), train_dataloader=data, epochs=1,
        ...                         optimizer=torch.optim.Adam(model.parameters()), online_measurements=True,
        ...                         device="cpu", non_blocking_transfers=False, verbose=verbose,
        ...                         show_progress_bar=False, **resumable_checkpoints(folder))
        >>> model = train_resumably(trainer(verbose=False), folder)  # trains its epoch
        >>> model = train_resumably(trainer(verbose=True), folder)  # doctest: +ELLIPSIS
        The model has 77 trainable parameters
        Model, optimizer, epoch_start successfully loaded from checkpoint: ...ckp_0.pth.tar
        nothing left to train: the checkpoint holds all 1 epochs
        >>> [p.name for p in folder.iterdir()]  # the second run's folder, empty, is gone
        ['attempt0']
    """
    with warnings.catch_warnings():  # deepinv warns where the checkpoint holds every epoch: said once below instead
        warnings.filterwarnings("ignore", message="No training will be done")
        model = trainer.train()
    if trainer.epoch_start >= trainer.epochs and trainer.verbose:
        print(f"nothing left to train: the checkpoint holds all {trainer.epochs} epochs")
    parallel = getattr(trainer, "parallel", None)  # a DataParallelTrainer's processes: rank 0, the only writer, tidies
    if parallel is None:
        prune_empty_folders(folder)
    else:  # only rank 0 writes checkpoints; on_main makes the others wait for its tidying
        parallel.on_main(prune_empty_folders, folder)
    return model

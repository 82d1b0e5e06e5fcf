r"""Reproducibility records: every recipe run saves its config, seed and package versions beside its outputs."""

from __future__ import annotations

import json
import platform
import random
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["package_versions", "seed_everything", "save_run_record"]

_PACKAGES = ("deepinv-ext", "deepinv", "torch", "numpy", "scipy", "sigpy", "scikit-image", "astra-toolbox")


def package_versions() -> dict[str, str | None]:
    """Versions of Python and of the packages a result depends on (``None`` where one is not installed).

    |sep|

    :Examples:

        >>> from deepinv_ext.provenance import package_versions
        >>> sorted(package_versions())
        ['astra-toolbox', 'cuda', 'deepinv', 'deepinv-ext', 'numpy', 'python', 'scikit-image', 'scipy', 'sigpy', 'torch']
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return versions


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators.

    :param int seed: the seed (NumPy's is taken modulo :math:`2^{32}`).

    |sep|

    :Examples:

        >>> import numpy as np
        >>> import torch
        >>> from deepinv_ext.provenance import seed_everything
        >>> seed_everything(3)
        >>> first = (torch.rand(2), np.random.rand())
        >>> seed_everything(3)
        >>> bool(torch.equal(torch.rand(2), first[0])), np.random.rand() == first[1]
        (True, True)
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_run_record(output_dir: str | Path, config: dict[str, Any], seed: int, name: str = "run.json") -> Path:
    """Write ``config``, ``seed``, the command line, the time and :func:`package_versions` to ``output_dir/name``.

    A rerun in the same folder (a resume, an extension) keeps the earlier records: they move, oldest first, into the
    list ``"previous"`` of the new record, so the record of the first training run is never lost.

    :param str, pathlib.Path output_dir: the run's output folder (created if needed).
    :param dict config: the run's configuration (JSON-serialisable; other values are stored as their ``repr``).
    :param int seed: the seed the run used.
    :param str name: the record's file name.
    :return: the path of the record.

    |sep|

    :Examples:

        A second run in the same folder keeps the first one's record:

        >>> import json
        >>> import tempfile
        >>> from deepinv_ext.provenance import save_run_record
        >>> folder = tempfile.mkdtemp()
        >>> _ = save_run_record(folder, {"epochs": 1}, seed=0)
        >>> record = json.loads(save_run_record(folder, {"epochs": 2}, seed=0).read_text())
        >>> record["config"], [previous["config"] for previous in record["previous"]]
        ({'epochs': 2}, [{'epochs': 1}])
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "config": config,
        "seed": seed,
        "argv": sys.argv,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    path = output_dir / name
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):  # kept as text rather than lost
            earlier = {"unreadable_record": path.read_text(errors="replace")}
        earlier = earlier if isinstance(earlier, dict) else {"unreadable_record": earlier}
        record["previous"] = [*earlier.pop("previous", []), earlier]
    path.write_text(json.dumps(record, indent=2, default=repr))
    return path

"""The help layout of the recipes' command lines (a light module: ``--help`` must answer before torch loads)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The colour test images CBSD68 in ``../shared`` beside the repository (their BT.601 gray versions are BSD68).
CBSD68 = REPO.parent / "shared" / "data" / "natural" / "CBSD68"
#: The test images the repository ships (``camera_96.png``), which smoke runs use where CBSD68 is absent.
SHIPPED_IMAGES = REPO / "tests" / "data"


def published_tdv(color: bool = False) -> Path:
    """The published TDV weights shipped with the tests, ``tdv3-3-25-f32-gray.pth`` (or ``-color.pth``)."""
    return SHIPPED_IMAGES / "tdv" / f"tdv3-3-25-f32-{'color' if color else 'gray'}.pth"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help followed by its default, ``(default: 64)``, except where the help already states it (it
    says "default") or there is none to state (``None``, a flag's ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def setup_torch(args: argparse.Namespace) -> None:
    """After the options are parsed: import torch, default ``args.device`` to CUDA where available (else CPU), and
    run a ``--smoke`` run on one torch thread (small convolutions: one thread is faster on a shared CPU)."""
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        torch.set_num_threads(1)


@contextmanager
def data_parallel(args: argparse.Namespace) -> Iterator:
    """The recipe's processes (:class:`deepinv_ext.data_parallel.DataParallel`): one, or each of ``torchrun``'s, whose
    ``args.device`` becomes this process's device (the GPU of ``LOCAL_RANK``). Call after :func:`setup_torch`."""
    from deepinv_ext.data_parallel import DataParallel

    with DataParallel(args.device) as parallel:
        if parallel.enabled:
            args.device = str(parallel.device)
        yield parallel

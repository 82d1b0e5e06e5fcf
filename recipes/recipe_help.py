"""The help layout of the recipes' command lines (a light module: ``--help`` must answer before torch loads)."""

from __future__ import annotations

import argparse


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

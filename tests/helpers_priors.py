"""Tiny smooth learned priors shared by the prox, conformance and training-through-solver tests."""

from __future__ import annotations

import torch

from deepinv_ext.priors import (
    NETT,
    TDV,
    AdversarialRegularizer,
    ConvexAdversarialRegularizer,
    ProxConfig,
    SparsifyingFilterBank,
)

PRIOR_NAMES = ("TDV", "AR", "ACR", "NETT", "SFB")


def make_prior(name: str, in_channels: int = 1, prox_config: ProxConfig | None = None,
               dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A small randomly initialised prior (smoothed activations, coercive terms where the model has them)."""
    torch.manual_seed(0)
    c, cfg = in_channels, prox_config
    prior = {
        "TDV": lambda: TDV(c, num_features=4, num_scales=3, num_macro_blocks=1, eps=0.1, prox_config=cfg),
        "AR": lambda: AdversarialRegularizer(c, widths=(4, 4, 8), hidden=8, eps=1e-2, smoothing=0.1,
                                             prox_config=cfg),
        "ACR": lambda: ConvexAdversarialRegularizer(c, num_filters=4, kernel_size=3, num_layers=3, eps=1e-2,
                                                    sfb_filters=4, sfb_kernel_size=3, smoothing=0.1,
                                                    prox_config=cfg),
        "NETT": lambda: NETT(c, width=4, depth=2, smoothing=0.1, prox_config=cfg),
        "SFB": lambda: SparsifyingFilterBank(c, num_filters=6, kernel_size=3, init_weight=0.5, smoothing=0.1,
                                             prox_config=cfg),
    }[name]()
    return prior.to(dtype)


def image_size(name: str) -> tuple[int, int]:
    """The smallest convenient image for each prior (TDV's three scales need 14 pixels a side)."""
    return (17, 14) if name == "TDV" else (10, 9)

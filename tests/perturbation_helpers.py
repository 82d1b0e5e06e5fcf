"""A toy problem for the losses' ``noise_level`` options: ellipses, stripe artefacts, Gaussian perturbations."""

from __future__ import annotations

import torch

from deepinv_ext.datasets import RandomEllipsesDataset


def stripes_and_noise() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16 clean 16x16 ellipse images, horizontal stripe artefacts (amplitude 0.2) and Gaussian noise (std 0.1)."""
    data = RandomEllipsesDataset(length=16, size=16, seed=0)
    clean = torch.stack([data[i]["x"] for i in range(16)])
    stripes = 0.2 * torch.cos(torch.arange(16.0) * 2.0).reshape(1, 1, 16, 1).expand_as(clean)
    noise = 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    return clean, stripes, noise


def fit(loss, module: torch.nn.Module, clean: torch.Tensor, artefact: torch.Tensor, steps: int, lr: float) -> None:
    """``steps`` full-batch Adam steps of ``loss(clean, artefact)`` on the parameters of ``module``."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(clean, artefact).mean().backward()
        optimizer.step()

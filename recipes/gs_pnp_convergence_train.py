r"""The training job of ``gs_pnp_convergence.py``: the gradient-step denoiser :math:`D_\sigma = \operatorname{Id} -
\nabla g_\sigma`, :math:`g_\sigma(x) = \tfrac12\|x - N_\sigma(x)\|^2`, trained for blind Gaussian denoising on
random patches of scikit-image's images (the test image left out), by a loop of its own: its checkpoint keeps the
generator of the patches and the noise, so a resumed training ends where an uninterrupted one does.

Under ``torchrun`` it trains data-parallel (:class:`deepinv_ext.data_parallel.DataParallel`): every process draws the
same global batch of patches and noise from that one generator and trains on its share of it, gradients averaged, so
:math:`W` processes take the steps of one process; rank 0 alone writes the checkpoints, which resume in any number of
processes."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm import tqdm

from deepinv_ext.checkpoint import resume_checkpoint, save_checkpoint
from deepinv_ext.data_parallel import DataParallel
from deepinv_ext.datasets import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet


def build_denoiser(channels: int, depth: int) -> GradientStepDenoiser:
    return GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=channels, depth=depth))


def random_patches(images: torch.Tensor, patch: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """``batch`` random ``patch`` x ``patch`` crops of ``images`` (B, 1, N, N), half of them flipped."""
    size = images.shape[-1]
    idx = torch.randint(len(images), (batch,), generator=gen)
    i0 = torch.randint(size - patch + 1, (batch,), generator=gen)
    j0 = torch.randint(size - patch + 1, (batch,), generator=gen)
    rows = (i0[:, None] + torch.arange(patch))[:, :, None]
    cols = (j0[:, None] + torch.arange(patch))[:, None, :]
    x = images[idx, 0][torch.arange(batch)[:, None, None], rows, cols][:, None]
    flip = torch.rand(batch, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train_denoiser(output: Path, *, steps: int, channels: int, depth: int, train_size: int, exclude: str,
                   seed: int = 0, patch: int = 32, batch: int = 16, sigma_range: tuple[float, float] = (0.01, 0.1),
                   lr: float = 2e-3, checkpoint_every: int = 100, parallel: DataParallel | None = None) -> Path:
    r"""Train a :class:`SmallPotentialNet` gradient-step denoiser on random patches of scikit-image's images
    (``exclude`` left out) with :math:`\sigma \sim U(\text{sigma\_range})`, MSE loss; resumable from
    ``output/denoiser_ckpt.pt`` (one of other options is trained anew). Returns the path of the final weights
    ``output/denoiser.pt``. ``parallel``: the run's processes (default: this one alone); ``batch`` is the global
    batch, which they must share evenly."""
    parallel = parallel or DataParallel("cpu")
    if batch % parallel.world_size:
        raise ValueError(f"batch: the global batch {batch} does not split evenly over {parallel.world_size} "
                         f"processes; use a multiple of {parallel.world_size}")
    share = slice(parallel.rank * batch // parallel.world_size, (parallel.rank + 1) * batch // parallel.world_size)
    parallel.on_main(output.mkdir, parents=True, exist_ok=True)
    final, ckpt_path = output / "denoiser.pt", output / "denoiser_ckpt.pt"
    config = {"steps": steps, "channels": channels, "depth": depth, "train_size": train_size, "exclude": exclude,
              "seed": seed, "patch": patch, "batch": batch, "sigma_range": list(sigma_range), "lr": lr}
    if parallel.on_main(resume_checkpoint, final, config, refuse_changed=False) is not None:
        return final
    torch.manual_seed(seed)
    denoiser = build_denoiser(channels, depth)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    data = SkimageImagesDataset(size=train_size, grayscale=True, names=tuple(n for n in SKIMAGE_IMAGES if n != exclude))
    images = torch.stack([data[i]["x"] for i in range(len(data))])
    gen = torch.Generator().manual_seed(seed)
    start, ckpt = 0, parallel.on_main(resume_checkpoint, ckpt_path, config, refuse_changed=False)
    if ckpt is not None:
        denoiser.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["rng"])
        start = ckpt["step"]
    denoiser.train()
    bar = tqdm(range(start, steps), desc="train GS denoiser", initial=start, total=steps, disable=not parallel.is_main)
    for step in bar:  # each process: its share of the global batch, drawn alike everywhere
        x = random_patches(images, patch, batch, gen)
        sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * torch.rand(batch, generator=gen)
        y = x + sigma[:, None, None, None] * torch.randn(x.shape, generator=gen)
        loss = (denoiser(y[share], sigma[share]) - x[share]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        parallel.average_gradients(denoiser.parameters())
        optimizer.step()
        scheduler.step()
        bar.set_postfix(psnr=f"{-10 * math.log10(loss.item()):.2f}")
        if parallel.is_main and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            save_checkpoint(ckpt_path, {"model": denoiser.state_dict(), "optimizer": optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict(), "rng": gen.get_state(),
                                        "step": step + 1}, config)
    parallel.on_main(save_checkpoint, final, {"model": denoiser.state_dict()}, config)
    return final


def load_denoiser(path: Path) -> GradientStepDenoiser:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    denoiser = build_denoiser(saved["config"]["channels"], saved["config"]["depth"])
    denoiser.load_state_dict(saved["model"])
    return denoiser.eval().requires_grad_(False)

r"""The training job of ``spectral_pnp_ct.py``: the CT physics, and the symmetric linear U-Net trained as a
Gaussian denoiser with :class:`deepinv.Trainer` (:class:`deepinv_ext.data_parallel.DataParallelTrainer`:
data-parallel under ``torchrun``), then calibrated to a spectrum in :math:`[0.01, 0.99]`."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import deepinv as dinv
import torch
from torch.utils.data import DataLoader

from deepinv_ext.checkpoint import check_recorded_options
from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.denoisers import LinearSymmetricUNet
from deepinv_ext.physics import AstraCT


def make_ct(size: int, views: int) -> tuple[dinv.physics.LinearPhysics, torch.dtype]:
    """Parallel-beam CT: the ASTRA physics where ASTRA imports (the ``[ct]`` extra; float64 in/out), else deepinv's
    Tomography (float32). Decided here, at construction: ``AstraCT`` itself imports ASTRA only at its first
    projection."""
    try:
        import astra  # noqa: F401
    except ImportError:
        print("ASTRA is not installed: using deepinv.physics.Tomography")
        return dinv.physics.Tomography(angles=views, img_width=size, circle=False, normalize=False), torch.float32
    return AstraCT(size, angles=views), torch.float64


def fbp(physics: dinv.physics.LinearPhysics, y: torch.Tensor) -> torch.Tensor:
    return physics.fbp(y) if hasattr(physics, "fbp") else physics.A_dagger(y)


def training_options(args: argparse.Namespace) -> dict:
    """The options the trained denoiser depends on (a rerun with others must not reuse it)."""
    return {k: getattr(args, k) for k in ("seed", "sigma", "channels", "train_size", "train_images", "epochs",
                                          "batch_size", "lr")}


def train_denoiser(args: argparse.Namespace, out: Path, parallel: DataParallel | None = None) -> LinearSymmetricUNet:
    """Train (or reload) the symmetric linear U-Net as a Gaussian denoiser with deepinv.Trainer, on ``args.device``;
    returned on the CPU. With ``parallel`` (the processes of a ``torchrun``) the training is data-parallel, every
    process reloads the same denoiser, and rank 0 alone prints and writes."""
    parallel = parallel or DataParallel("cpu")  # not entered: one process
    ckpt = out / "denoiser.pt"
    den = LinearSymmetricUNet(channels=tuple(args.channels), convs_per_scale=2, sigma=args.sigma)
    parallel.on_main(check_recorded_options, out / "denoiser_options.json", training_options(args),
                     resuming=ckpt.exists(), checkpoint=ckpt)
    if ckpt.exists():
        den.load_state_dict(torch.load(ckpt, weights_only=True))
        if parallel.is_main:
            print(f"loaded the trained denoiser from {ckpt}")
        return den
    data = RandomEllipsesDataset(length=args.train_images, size=args.train_size, seed=args.seed)
    loader = parallel.shard(DataLoader(data, batch_size=args.batch_size, shuffle=True), seed=args.seed)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(args.sigma))
    cuda = torch.device(args.device).type == "cuda"  # on a CPU deepinv warns about non-blocking transfers
    trainer = DataParallelTrainer(model=dinv.models.ArtifactRemoval(den.to(args.device), mode="direct"),
                                  physics=physics, optimizer=torch.optim.Adam(den.parameters(), lr=args.lr),
                                  train_dataloader=loader, epochs=args.epochs, losses=dinv.loss.SupLoss(),
                                  online_measurements=True, save_path=None, verbose=False, show_progress_bar=True,
                                  compute_train_metrics=False, device=args.device, non_blocking_transfers=cuda,
                                  parallel=parallel)
    trainer.train()
    parallel.on_main(save_denoiser, den.cpu(), args, ckpt)
    return den


def save_denoiser(den: LinearSymmetricUNet, args: argparse.Namespace, ckpt: Path) -> None:
    """Save the trained denoiser and print its PSNR on held-out phantoms."""
    torch.save(den.state_dict(), ckpt)
    x = torch.stack([RandomEllipsesDataset(length=4, size=args.train_size, seed=args.seed + 1)[i]["x"]
                     for i in range(4)])
    y = x + args.sigma * torch.randn_like(x)
    with torch.no_grad():
        psnr_in = float(dinv.metric.PSNR()(y, x).mean())
        psnr_out = float(dinv.metric.PSNR()(den(y), x).mean())
    print(f"denoiser PSNR on held-out phantoms: noisy {psnr_in:.2f} dB -> denoised {psnr_out:.2f} dB"
          + (" (smoke run: a few epochs on tiny phantoms; the convergence below needs no good denoiser)"
             if args.smoke else ""))


def calibrated(den: LinearSymmetricUNet, size: int, target: tuple[float, float]) -> tuple[LinearSymmetricUNet, dict]:
    """A float64 copy of ``den`` whose spectrum on ``size`` x ``size`` images is mapped affinely onto ``target``."""
    d = copy.deepcopy(den).double()
    report = d.calibrate_spectrum(target, shape=(1, size, size), n_iter=60)
    print(f"[{size}x{size}] raw spectrum (Lanczos) [{report['raw_min']:.4g}, {report['raw_max']:.4g}] -> "
          f"calibrated [{report['lambda_min']:.4g}, {report['lambda_max']:.4g}] (D <- {report['scale']:.4g} D + "
          f"{report['shift']:.4g} Id)")
    return d, report

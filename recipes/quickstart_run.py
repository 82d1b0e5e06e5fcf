r"""The quickstart's experiment (``quickstart.py`` states the problem and parses the options): the CT physics, the
U-Net trained on the FBP (data-parallel under ``torchrun``), the classical reconstructions, the table and the
figure."""

from __future__ import annotations

import time
from argparse import Namespace
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from torch.utils.data import DataLoader

from deepinv_ext.checkpoint import resumable_checkpoints, train_resumably
from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.physics import AstraCT
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def ct_physics(size: int, views: int) -> dinv.physics.LinearPhysics:
    """deepinv-ext's ASTRA CT operator where ASTRA imports (the ``[ct]`` extra), deepinv's torch one otherwise.

    Decided here, at construction: ``AstraCT`` itself imports ASTRA only at its first projection."""
    try:
        import astra  # noqa: F401
    except ImportError:
        return dinv.physics.Tomography(views, size, circle=False, normalize=True)
    return AstraCT(size, angles=views)


def fbp(physics: dinv.physics.LinearPhysics, y: torch.Tensor) -> torch.Tensor:
    """Ramp-filtered back-projection with either physics (both take ``A_dagger(y, fbp=True)``)."""
    return physics.A_dagger(y, fbp=True)


class PostProcessing(dinv.models.Reconstructor):
    r"""A network applied to the FBP, :math:`x = N(\mathrm{FBP}(y))` (FBPConvNet-style; deepinv's
    ``ArtifactRemoval(mode="pinv")`` would feed it ``A_dagger(y)``, the least-squares solution)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor, physics: dinv.physics.LinearPhysics, **kwargs) -> torch.Tensor:
        return self.net(fbp(physics, y))


def least_squares(physics: dinv.physics.LinearPhysics, y: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """``steps`` conjugate-gradient iterations on the normal equations, started at zero."""
    return dinv.optim.utils.conjugate_gradient(lambda z: physics.A_adjoint(physics.A(z)), physics.A_adjoint(y),
                                               max_iter=steps, tol=1e-8)


def train_post_processing(physics, args: Namespace, output: Path, parallel: DataParallel) -> torch.nn.Module:
    """A small U-Net on the FBP, trained (or resumed) with deepinv's Trainer, its progress bar and a supervised
    loss, data-parallel over ``parallel``'s processes (batches of 8 split among them; rank 0 alone shows the bar and
    writes the checkpoints); the checkpoints of a run with other options (all but the output, the number of epochs,
    the TV weight and the thread count) are refused."""
    skip = ("output", "smoke", "epochs", "tv_lambda", "threads")
    options = {k: v for k, v in vars(args).items() if k not in skip}
    unet = dinv.models.UNet(in_channels=1, out_channels=1, scales=3, batch_norm=False,
                            channels_per_scale=[16, 32, 64])
    model = PostProcessing(unet)
    train = DataLoader(RandomEllipsesDataset(args.train_images, args.size, seed=args.seed), batch_size=8,
                       shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    checkpoints = parallel.on_main(resumable_checkpoints, output / "checkpoints", options)
    trainer = DataParallelTrainer(model=model, physics=physics, optimizer=optimizer, train_dataloader=train,
                                  epochs=args.epochs, online_measurements=True, device="cpu", **checkpoints,
                                  compute_train_metrics=False, verbose=True, show_progress_bar=True,
                                  freq_update_progress_bar=4, parallel=parallel,
                                  non_blocking_transfers=False)  # a CPU run: deepinv warns about both otherwise
    return train_resumably(trainer, output / "checkpoints")


def reconstruct(physics, model: torch.nn.Module, y: torch.Tensor, tv_lambda: float) -> dict[str, torch.Tensor]:
    """The four reconstructions of the measurements ``y``, by name."""
    sqnorm = physics.compute_sqnorm(physics.A_adjoint(y[:1]), verbose=False).item()  # x0: its shape only
    tv = dinv.optim.PGD(prior=dinv.optim.TVPrior(n_it_max=20), data_fidelity=dinv.optim.data_fidelity.L2(),
                        lambda_reg=tv_lambda * sqnorm, stepsize=1.0 / sqnorm, max_iter=100)
    with torch.no_grad():
        x_fbp = fbp(physics, y)
        return {"FBP": x_fbp, "least squares (CG)": least_squares(physics, y),
                f"TV (lambda={tv_lambda:g} ||A||^2)": tv(y, physics, init=x_fbp),
                "learned (U-Net on FBP)": model(y, physics)}


def scores(recons: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Per-image PSNR and SSIM (deepinv's metrics, images in [0, 1]) of each reconstruction."""
    psnr, ssim = dinv.metric.PSNR(), dinv.metric.SSIM()
    return {name: {"PSNR": psnr(r, x), "SSIM": ssim(r, x)} for name, r in recons.items()}


def figure(x: torch.Tensor, sinogram: torch.Tensor, recons: dict, per_image: dict, args: Namespace,
           path: Path) -> None:
    """The first test image: top, the ground truth and each reconstruction with this image's PSNR/SSIM (one gray
    scale and its colour bar); bottom, its measured ``sinogram`` (views x detector bins) and the absolute errors
    (one scale, one colour bar)."""
    n = len(recons) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n + 1, 6), layout="constrained")
    fig.suptitle(f"Sparse-view CT: a {args.size}x{args.size} ellipse phantom from {args.views} parallel-beam views, "
                 f"Gaussian noise of std {args.noise:g} x the sinogram's maximum\n(test image 1 of "
                 f"{args.test_images}; the table averages over all {args.test_images})", fontsize=10)
    errors = {name: (r[0, 0] - x[0, 0]).abs() for name, r in recons.items()}
    error_max = float(torch.quantile(torch.stack(list(errors.values())).flatten(), 0.99))
    image = axes[0, 0].imshow(x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("ground truth x", fontsize=9)
    axes[1, 0].imshow(sinogram.numpy(), cmap="gray", aspect="auto")
    axes[1, 0].set_title(f"measured sinogram y (rows: {args.views}\nviews, columns: {sinogram.shape[-1]} detector "
                         "bins)", fontsize=9)
    for j, (name, r) in enumerate(recons.items(), start=1):
        axes[0, j].imshow(r[0, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        row = per_image[name]
        axes[0, j].set_title(f"{name}\nPSNR {row['PSNR'][0]:.2f} dB, SSIM {row['SSIM'][0]:.3f}", fontsize=9)
        error = axes[1, j].imshow(errors[name].numpy(), cmap="inferno", vmin=0, vmax=error_max)
        axes[1, j].set_title(f"error |x_hat - x|: {name.split(' (')[0]}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[0, :], shrink=0.8, label="intensity (clipped to [0, 1])")
    fig.colorbar(error, ax=axes[1, :], shrink=0.8, extend="max", label="absolute error")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(physics, model: torch.nn.Module, x: torch.Tensor, args: Namespace,
             train_time: float) -> dict[str, dict[str, float]]:
    """Reconstruct the test phantoms ``x``, print the table, save the figure; return the table (rank 0's work under
    ``torchrun``)."""
    output = Path(args.output)
    torch.manual_seed(args.seed)
    y = physics(x)
    recons = reconstruct(physics, model, y, args.tv_lambda)
    per_image = scores(recons, x)
    table = {name: {k: v.mean().item() for k, v in row.items()} for name, row in per_image.items()}
    print(f"\n{args.size}x{args.size} ellipses, {args.views} views, noise {args.noise:g}, "
          f"{args.test_images} test images (U-Net trained in {train_time:.0f} s)")
    print(f"{'method':28s} {'PSNR (dB)':>10s} {'SSIM':>7s}")
    for name, row in table.items():
        print(f"{name:28s} {row['PSNR']:10.2f} {row['SSIM']:7.3f}")
    if args.smoke:
        print(f"smoke run: checks skipped (the U-Net saw {args.train_images} images of {args.size}x{args.size} for "
              f"{args.epochs} epoch(s): its row is no result)")
    sinogram = y[0, 0] if isinstance(physics, AstraCT) else y[0, 0].T  # deepinv's Tomography: (detector, view)
    figure(x, sinogram, recons, per_image, args, output / "quickstart.png")
    print(f"figure: {output / 'quickstart.png'}; run record: {output / 'run.json'}; "
          f"checkpoints: {output / 'checkpoints'}")
    return table


def run(args: Namespace, parallel: DataParallel) -> dict[str, dict[str, float]]:
    """Train (or resume; data-parallel over ``parallel``'s processes), reconstruct the test phantoms, print the table,
    save the figure; return the table (rank 0 alone reconstructs and writes; every process returns the table)."""
    seed_everything(args.seed)
    parallel.on_main(save_run_record, Path(args.output), vars(args), args.seed)
    physics = ct_physics(args.size, args.views)
    test = RandomEllipsesDataset(args.test_images, args.size, seed=args.seed + 1000)
    x = torch.stack([test[i]["x"] for i in range(len(test))])
    physics.noise_model = dinv.physics.GaussianNoise(args.noise * physics.A(x).max().item())
    start = time.time()
    model = train_post_processing(physics, args, Path(args.output), parallel).eval()
    return parallel.on_main(evaluate, physics, model, x, args, time.time() - start)

r"""Quickstart: sparse-view CT of random ellipse phantoms, classical and learned reconstructions side by side.

Problem: recover 64x64 random ellipse phantoms (:class:`deepinv_ext.datasets.RandomEllipsesDataset`) from 60
parallel-beam views with Gaussian noise of ``--noise`` times the largest sinogram value
(:class:`deepinv_ext.physics.AstraCT`, its sparse-matrix backend with an exact adjoint; deepinv's
:class:`deepinv.physics.Tomography` where ASTRA is not installed). Compared:

- FBP: ramp-filtered back-projection;
- least squares: 30 conjugate-gradient steps on :math:`A^\top A x = A^\top y` (early stopping regularises);
- TV: :math:`\min_x \tfrac12\|Ax-y\|^2 + \lambda\,\mathrm{TV}(x)` by deepinv's proximal gradient (``PGD``, 100
  steps from the FBP), :math:`\lambda` given relative to :math:`\|A\|^2` so that it suits either physics;
- learned: a small U-Net applied to the FBP (FBPConvNet-style), trained with :class:`deepinv.Trainer`.

It prints a PSNR/SSIM table on held-out phantoms, saves a figure and a provenance record (config, seed, package
versions) in ``--output``, and keeps the trained network's checkpoint so that a second run resumes instead of
retraining. Runs in about a minute on a laptop CPU, downloads nothing::

    python recipes/quickstart.py --output runs/quickstart
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from torch.utils.data import DataLoader

from deepinv_ext.checkpoint import resumable_checkpoints
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.physics import AstraCT
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/quickstart", help="output folder")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--views", type=int, default=60, help="number of parallel-beam views")
    parser.add_argument("--noise", type=float, default=0.01,
                        help="std of the Gaussian noise, relative to the largest value of the clean sinograms")
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--test-images", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate of the U-Net")
    parser.add_argument("--tv-lambda", type=float, default=5e-4, help="TV weight, relative to ||A||^2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.views, args.train_images, args.test_images, args.epochs = 32, 30, 16, 4, 1
    return args


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


def train_post_processing(physics, args, output: Path) -> torch.nn.Module:
    """A small U-Net on the FBP, trained (or resumed) with deepinv's Trainer and a supervised loss; the checkpoints
    of a run with other options (all but the output, the number of epochs and the TV weight) are refused."""
    options = {k: v for k, v in vars(args).items() if k not in ("output", "smoke", "epochs", "tv_lambda")}
    unet = dinv.models.UNet(in_channels=1, out_channels=1, scales=3, batch_norm=False,
                            channels_per_scale=[16, 32, 64])
    model = PostProcessing(unet)
    train = DataLoader(RandomEllipsesDataset(args.train_images, args.size, seed=args.seed), batch_size=8,
                       shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    trainer = dinv.Trainer(model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=args.lr),
                           train_dataloader=train, epochs=args.epochs, online_measurements=True, device="cpu",
                           verbose=False, **resumable_checkpoints(output / "checkpoints", options),
                           show_progress_bar=True, compute_train_metrics=False)
    return trainer.train()


def main(argv=None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    output = Path(args.output)
    seed_everything(args.seed)
    save_run_record(output, vars(args), args.seed)
    physics = ct_physics(args.size, args.views)
    test = RandomEllipsesDataset(args.test_images, args.size, seed=args.seed + 1000)
    x = torch.stack([test[i]["x"] for i in range(len(test))])
    physics.noise_model = dinv.physics.GaussianNoise(args.noise * physics.A(x).max().item())
    start = time.time()
    model = train_post_processing(physics, args, output).eval()
    train_time = time.time() - start

    torch.manual_seed(args.seed)
    y = physics(x)
    sqnorm = physics.compute_sqnorm(x[:1], verbose=False).item()
    tv = dinv.optim.PGD(prior=dinv.optim.TVPrior(n_it_max=20), data_fidelity=dinv.optim.data_fidelity.L2(),
                        lambda_reg=args.tv_lambda * sqnorm, stepsize=1.0 / sqnorm, max_iter=100)
    with torch.no_grad():
        x_fbp = fbp(physics, y)
        recons = {"FBP": x_fbp, "least squares (CG)": least_squares(physics, y),
                  f"TV (lambda={args.tv_lambda:g} ||A||^2)": tv(y, physics, init=x_fbp),
                  "learned (U-Net on FBP)": model(y, physics)}
    psnr, ssim = dinv.metric.PSNR(), dinv.metric.SSIM()
    table = {name: {"PSNR": psnr(r, x).mean().item(), "SSIM": ssim(r, x).mean().item()} for name, r in recons.items()}

    print(f"\n{args.size}x{args.size} ellipses, {args.views} views, noise {args.noise:g}, "
          f"{args.test_images} test images (U-Net trained in {train_time:.0f} s)")
    print(f"{'method':28s} {'PSNR (dB)':>10s} {'SSIM':>7s}")
    for name, row in table.items():
        print(f"{name:28s} {row['PSNR']:10.2f} {row['SSIM']:7.3f}")

    fig, axes = plt.subplots(1, len(recons) + 1, figsize=(3 * (len(recons) + 1), 3.8))
    for ax, (name, image) in zip(axes, [("ground truth", x), *recons.items()]):
        ax.imshow(image[0, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        label = name if name == "ground truth" else f"{name}\n{table[name]['PSNR']:.2f} dB"
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(output / "quickstart.png", dpi=120)
    print(f"figure: {output / 'quickstart.png'}")
    return table


if __name__ == "__main__":
    main()

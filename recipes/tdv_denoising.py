r"""Train (or evaluate) a Total Deep Variation network for Gaussian denoising.

Problem (Kobler et al., CVPR 2020, section 5.1): recover a gray image :math:`x` from :math:`y = x + \epsilon`,
:math:`\epsilon \sim \mathcal{N}(0, \sigma^2 I)`, :math:`\sigma = 25/255`, by :math:`S = 10` semi-implicit steps
of the gradient flow of :math:`\frac{\lambda}{2}\|x - y\|^2 + \mathrm{TDV}(x)`
(:class:`deepinv_ext.algorithms.TDVNetwork`), trained end to end with an :math:`\ell_2` loss on patches. The
paper trains on the 400 images of BSDS500's train and test splits (96x96 patches, batch 32) and tests on BSDS68.

Usage::

    # train on BSDS500 (deepinv's dataset class, root holding BSDS500-master/) and test on its val split
    python recipes/tdv_denoising.py --data /path/to/bsds --output runs/tdv
    # any folder of images: DIR/train/* and DIR/test/*
    python recipes/tdv_denoising.py --data DIR --layout folder --output runs/tdv
    # evaluate the published weights of VLOGroup/tdv instead of training
    python recipes/tdv_denoising.py --checkpoint tdv3-3-25-f32-gray.pth --data /path/to/bsds --output runs/pub
    # CPU smoke run (< 1 min): a small TDV on scikit-image's shipped images
    python recipes/tdv_denoising.py --smoke --output /tmp/tdv_smoke

Rerunning the same training command resumes from the newest checkpoint in ``OUTPUT/checkpoints`` (or pass
``--resume FILE``); checkpoints trained under other options (all but the output, the number of epochs and the
devices) are refused. Outputs: ``results.json`` (PSNR table), ``denoising.png`` (noisy / TDV / clean),
``run.json`` (provenance record) and the trainer's checkpoints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import deepinv as dinv
import matplotlib
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_ext.algorithms import TDVNetwork, constrain_optimizer
from deepinv_ext.checkpoint import resumable_checkpoints
from deepinv_ext.datasets import SkimageImagesDataset
from deepinv_ext.priors import TDV
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHARED_TDV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tdv"


def gray_transform(patch: int | None):
    """PIL image -> (1, H, W) float tensor in [0, 1] (mean of the RGB channels), randomly cropped to ``patch``."""
    import torchvision.transforms as T

    steps = [T.ToTensor(), T.Lambda(lambda t: t[:3].mean(0, keepdim=True))]
    if patch:
        steps += [T.RandomCrop(patch), T.RandomHorizontalFlip()]
    return T.Compose(steps)


class RandomPatches(Dataset):
    """Random ``patch`` x ``patch`` crops (dict items) of the images of another dataset, ``length`` per epoch."""

    def __init__(self, base: Dataset, patch: int, length: int, seed: int = 0) -> None:
        self.base, self.patch, self.length, self.seed = base, patch, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = np.random.default_rng(self.seed + i)
        x = self.base[int(g.integers(len(self.base)))]["x"]
        r, c = (int(g.integers(s - self.patch + 1)) for s in x.shape[-2:])
        return {"x": x[..., r:r + self.patch, c:c + self.patch].float()}


def water_castle(crop: bool) -> Dataset | None:
    """The shipped test image of the TDV authors (channel mean), or ``None`` where shared/data is absent."""
    path = SHARED_TDV / "water-castle.png"
    if not path.exists():
        return None
    from skimage.io import imread

    x = torch.from_numpy(imread(path).astype(np.float32) / 255).mean(-1)[None]
    if crop:
        x = x[:, 200:264, 100:196].contiguous()
    return dinv.datasets.TensorDataset(x=x[None], use_dict_output=True)


def datasets(args) -> tuple[Dataset | None, Dataset]:
    if args.smoke:
        base = SkimageImagesDataset(64, grayscale=True)
        train = RandomPatches(base, args.patch, args.batch_size * args.iterations_per_epoch, seed=args.seed)
        test = water_castle(crop=True)
        if test is None:
            test = SkimageImagesDataset(64, grayscale=True, names=("camera", "coins"))
        return train, test
    if args.data is None:
        raise SystemExit("--data is required unless --smoke")
    if args.layout == "bsds500":
        train = dinv.datasets.BSDS500(args.data, download=False, train=True, transform=gray_transform(args.patch),
                                      use_dict_output=True)
        test = dinv.datasets.BSDS500(args.data, download=False, train=False, transform=gray_transform(None),
                                     use_dict_output=True)
    else:
        train = dinv.datasets.ImageFolder(Path(args.data) / "train", x_path="*", transform=gray_transform(args.patch),
                                          use_dict_output=True)
        test = dinv.datasets.ImageFolder(Path(args.data) / "test", x_path="*", transform=gray_transform(None),
                                         use_dict_output=True)
    return train, test


def build_model(args) -> TDVNetwork:
    if args.checkpoint:
        return TDVNetwork.from_checkpoint(args.checkpoint, sigma_train=args.sigma / 255)
    prior = TDV(in_channels=1, num_features=args.features, num_scales=args.scales, num_macro_blocks=args.macro_blocks)
    return TDVNetwork(prior, steps=args.steps, T=args.T_init, lmbda=args.lmbda_init, sigma_train=args.sigma / 255)


def train(model: TDVNetwork, physics, train_set: Dataset, args, out: Path) -> None:
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = constrain_optimizer(torch.optim.Adam(model.parameters(), lr=args.lr), model)
    skip = ("output", "checkpoint", "resume", "smoke", "epochs", "max_batch_steps", "workers", "device")
    checkpointing = resumable_checkpoints(out / "checkpoints", {k: v for k, v in vars(args).items() if k not in skip})
    if args.resume:
        checkpointing["ckpt_pretrained"] = args.resume
    if checkpointing["ckpt_pretrained"]:
        print(f"resuming from {checkpointing['ckpt_pretrained']}")
    trainer = dinv.Trainer(model=model, physics=physics, optimizer=optimizer, train_dataloader=loader,
                           epochs=args.epochs, losses=dinv.loss.SupLoss(), online_measurements=True,
                           device=args.device, ckp_interval=1, **checkpointing, verbose=True, show_progress_bar=not args.smoke,
                           compute_train_metrics=False, max_batch_steps=args.max_batch_steps)
    trainer.train()


def figure(model: TDVNetwork, physics, test_set: Dataset, path: Path, device: str) -> None:
    x = test_set[0]["x"][None].to(device)
    torch.manual_seed(0)
    y = physics(x)
    with torch.no_grad():
        xs = model(y, physics)
    psnr = dinv.metric.PSNR()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, img, title in zip(axes, (y, xs, x), ("noisy", "TDV", "clean")):
        ax.imshow(img[0, 0].cpu().clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title if title == "clean" else f"{title}: {float(psnr(img, x)):.2f} dB")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help="dataset root (BSDS500: the folder holding BSDS500-master/)")
    p.add_argument("--layout", choices=("bsds500", "folder"), default="bsds500")
    p.add_argument("--output", default="runs/tdv_denoising")
    p.add_argument("--checkpoint", help="published .pth to evaluate instead of training")
    p.add_argument("--resume", help="trainer checkpoint to resume (default: newest in OUTPUT/checkpoints)")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run on shipped images (< 1 min)")
    p.add_argument("--sigma", type=float, default=25.0, help="noise level on the 0..255 scale")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--scales", type=int, default=3)
    p.add_argument("--macro-blocks", type=int, default=3)
    p.add_argument("--T-init", type=float, default=0.001)
    p.add_argument("--lmbda-init", type=float, default=0.01)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--iterations-per-epoch", type=int, default=100, help="smoke runs only")
    p.add_argument("--max-batch-steps", type=int, default=10**10)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.smoke:
        args.features, args.macro_blocks, args.steps, args.patch = 8, 1, 4, 32
        args.batch_size, args.epochs, args.iterations_per_epoch, args.lr = 8, 3, 6, 5e-3
        args.T_init, args.lmbda_init = 0.01, 0.5
        torch.set_num_threads(1)  # small convolutions: one thread is faster on a shared CPU
    seed_everything(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_run_record(out, vars(args), args.seed)

    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(args.sigma / 255)).to(args.device)
    train_set, test_set = datasets(args)
    model = build_model(args).to(args.device)
    if not args.checkpoint:
        train(model, physics, train_set, args, out)
    model.eval()
    metrics = dinv.test(model, DataLoader(test_set, batch_size=1), physics, metrics=dinv.metric.PSNR(),
                        online_measurements=True, device=args.device, verbose=False, show_progress_bar=False,
                        compare_no_learning=True)
    results = {"T": model.T.item(), "lambda": model.lmbda.item(), "steps": model.S,
               "test_images": len(test_set), **{k: float(v) for k, v in metrics.items()}}
    print(f"{'quantity':<28}{'value':>12}")
    for k, v in results.items():
        print(f"{k:<28}{v:>12.4f}" if isinstance(v, float) else f"{k:<28}{v:>12}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figure(model, physics, test_set, out / "denoising.png", args.device)
    return results


if __name__ == "__main__":
    main()

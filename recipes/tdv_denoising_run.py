r"""The experiment of ``tdv_denoising.py`` (which states the problem and parses the options): the data, the TDV
network, its training with deepinv's Trainer (data-parallel under ``torchrun``:
:class:`deepinv_ext.data_parallel.DataParallelTrainer`), the test and the figure."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import deepinv as dinv
import matplotlib
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_ext.algorithms import TDVNetwork, constrain_optimizer
from deepinv_ext.checkpoint import resumable_checkpoints, train_resumably
from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer
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


def on_cuda(device: str) -> bool:
    """Whether ``device`` is a CUDA device: deepinv's non-blocking transfers only apply there (and warn elsewhere)."""
    return torch.device(device).type == "cuda"


def build_model(args) -> TDVNetwork:
    if args.checkpoint:
        return TDVNetwork.from_checkpoint(args.checkpoint, sigma_train=args.sigma / 255)
    prior = TDV(in_channels=1, num_features=args.features, num_scales=args.scales, num_macro_blocks=args.macro_blocks)
    return TDVNetwork(prior, steps=args.steps, T=args.T_init, lmbda=args.lmbda_init, sigma_train=args.sigma / 255)


def train(model: TDVNetwork, physics, train_set: Dataset, args, out: Path, parallel: DataParallel) -> None:
    """Train ``model`` (or resume it from ``out/checkpoints``) with a global batch of ``args.batch_size`` patches,
    shared by ``parallel``'s processes; rank 0 alone prints and writes the checkpoints."""
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = constrain_optimizer(torch.optim.Adam(model.parameters(), lr=args.lr), model)
    skip = ("output", "checkpoint", "resume", "smoke", "epochs", "max_batch_steps", "workers", "device")
    checkpointing = parallel.on_main(resumable_checkpoints, out / "checkpoints",
                                     {k: v for k, v in vars(args).items() if k not in skip})
    if args.resume:
        checkpointing["ckpt_pretrained"] = args.resume
    if checkpointing["ckpt_pretrained"] and parallel.is_main:
        print(f"resuming from {checkpointing['ckpt_pretrained']}")
    trainer = DataParallelTrainer(model=model, physics=physics, optimizer=optimizer, train_dataloader=loader,
                                  epochs=args.epochs, losses=dinv.loss.SupLoss(), online_measurements=True,
                                  device=args.device, ckp_interval=1, **checkpointing, verbose=True,
                                  show_progress_bar=not args.smoke, compute_train_metrics=False,
                                  max_batch_steps=args.max_batch_steps, non_blocking_transfers=on_cuda(args.device),
                                  parallel=parallel)
    train_resumably(trainer, out / "checkpoints")


def figure(model: TDVNetwork, physics, test_set: Dataset, path: Path, device: str) -> None:
    x = test_set[0]["x"][None].to(device)
    torch.manual_seed(0)
    y = physics(x)
    with torch.no_grad():
        xs = model(y, physics)
    psnr = dinv.metric.PSNR()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, img, title in zip(axes, (y, xs, x), ("noisy", "TDV", "clean")):
        ax.imshow(img[0, 0].cpu().clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title if title == "clean" else f"{title}: {float(psnr(img, x)):.2f} dB")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(model: TDVNetwork, physics, test_set: Dataset, args, out: Path) -> dict:
    """Test ``model``, print and save the results and the figure (rank 0's work under ``torchrun``)."""
    metrics = dinv.test(model, DataLoader(test_set, batch_size=1), physics, metrics=dinv.metric.PSNR(),
                        online_measurements=True, device=args.device, verbose=False, show_progress_bar=False,
                        compare_no_learning=True, non_blocking_transfers=on_cuda(args.device))
    results = {"T": model.T.item(), "lambda": model.lmbda.item(), "steps": model.S,
               "test_images": len(test_set), **{k: float(v) for k, v in metrics.items()}}
    print(f"{'quantity':<28}{'value':>12}")
    for k, v in results.items():
        print(f"{k:<28}{v:>12.4f}" if isinstance(v, float) else f"{k:<28}{v:>12}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figure(model, physics, test_set, out / "denoising.png", args.device)
    print(f"results.json, denoising.png and run.json in {out}")
    return results


def run(args: Namespace, parallel: DataParallel) -> dict:
    """Train (unless ``--checkpoint``; data-parallel over ``parallel``'s processes), test, print and save the
    results and the figure (rank 0 alone tests and writes; every process returns the results)."""
    seed_everything(args.seed)
    out = Path(args.output)
    parallel.on_main(save_run_record, out, vars(args), args.seed)

    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(args.sigma / 255)).to(args.device)
    train_set, test_set = datasets(args)
    model = build_model(args).to(args.device)
    if not args.checkpoint:
        train(model, physics, train_set, args, out, parallel)
    model.eval()
    return parallel.on_main(evaluate, model, physics, test_set, args, out)

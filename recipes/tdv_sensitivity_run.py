r"""The experiment of ``tdv_sensitivity.py`` (which states the problem and parses the options): the two training sets,
the two trainings (``tdv_denoising_run``'s patches and Trainer, data-parallel under ``torchrun``), the two flows on
the test images, the bound, the figure."""

from __future__ import annotations

import copy
import json
import time
from argparse import Namespace
from pathlib import Path

import deepinv as dinv
import matplotlib
import numpy as np
import torch
from recipe_help import REPO, SHIPPED_IMAGES
from tdv_denoising_run import RandomPatches, build_model, train
from torch.utils.data import Dataset
from torchvision.transforms.functional import center_crop
from tqdm import tqdm

from deepinv_ext.algorithms import TDVNetwork
from deepinv_ext.analysis.sensitivity import tdv_sensitivity
from deepinv_ext.data_parallel import DataParallel
from deepinv_ext.datasets import SKIMAGE_IMAGES, ImageFolderDataset, SkimageImagesDataset
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: the options a training depends on (its checkpoints are refused under others)
TRAINING_OPTIONS = ("sigma", "steps", "features", "scales", "macro_blocks", "T_init", "lmbda_init", "patch",
                    "batch_size", "iterations_per_epoch", "lr", "seed", "train_size")
PAIRS = (("A", "B"), ("B", "A"))  # (reference network, other network)
BOUNDS = ("bound", "bound_stepwise", "bound_split", "bound_local")  # the bounds tdv_sensitivity returns


def training_sets(args: Namespace) -> dict[str, list[str]]:
    """A: scikit-image's shipped images but ``camera`` (a test image); B: ``args.subset`` of them, drawn with
    ``args.subset_seed``, in A's order."""
    names = [n for n in SKIMAGE_IMAGES if n != "camera"]
    if args.subset > len(names):
        raise SystemExit(f"--subset must be at most {len(names)} (the training images), got {args.subset}")
    drawn = np.random.default_rng(args.subset_seed).choice(len(names), args.subset, replace=False)
    return {"A": names, "B": [names[i] for i in sorted(drawn)]}


def training_images(names: list[str], args: Namespace) -> dict[str, torch.Tensor]:
    """The gray images ``names``, each centre-cropped and resized to ``args.train_size`` (loaded once for both
    sets)."""
    images = SkimageImagesDataset(args.train_size, grayscale=True, names=tuple(names))
    return {name: images[i]["x"] for i, name in enumerate(names)}


def patches(images: list[torch.Tensor], args: Namespace) -> Dataset:
    """``args.batch_size * args.iterations_per_epoch`` random patches of ``images`` per epoch."""
    return RandomPatches(dinv.datasets.TensorDataset(x=torch.stack(images), use_dict_output=True), args.patch,
                         args.batch_size * args.iterations_per_epoch, seed=args.seed)


def train_network(init: TDVNetwork, tag: str, names: list[str], pool: dict[str, torch.Tensor], physics,
                  args: Namespace, parallel: DataParallel) -> tuple[TDVNetwork, float]:
    """A copy of ``init`` trained on the images ``names`` of ``pool`` (resumably, in ``OUTPUT/tag``; data-parallel
    over ``parallel``'s processes); returns it and the seconds spent."""
    options = Namespace(**{k: getattr(args, k) for k in TRAINING_OPTIONS}, training_images=list(names),
                        checkpoint=None, resume=None, smoke=args.smoke, epochs=args.epochs,
                        max_batch_steps=args.max_batch_steps, workers=args.workers, device=args.device)
    model = copy.deepcopy(init)
    seed_everything(args.seed)  # the same noise draws for both trainings
    if parallel.is_main:
        print(f"training {tag} on {len(names)} images: {', '.join(names)}")
    start = time.perf_counter()
    train(model, physics, patches([pool[n] for n in names], args), options, Path(args.output) / tag, parallel)
    return model.eval(), time.perf_counter() - start


def test_images(args: Namespace) -> list[tuple[str, torch.Tensor]]:
    """The first ``args.test_images`` images of ``args.data`` (natural name order, BT.601 gray:
    :class:`~deepinv_ext.datasets.ImageFolderDataset`), or ``camera_96.png`` where it is absent, each ``(1, 1, H, W)``,
    centre-cropped to ``args.crop`` if given."""
    folder = Path(args.data)
    if not folder.is_dir():
        print(f"--data {folder} not found: testing on the shipped {SHIPPED_IMAGES.relative_to(REPO)}/camera_96.png")
        folder = SHIPPED_IMAGES
    try:
        data = ImageFolderDataset(folder, gray="bt601")
    except FileNotFoundError as err:
        raise SystemExit(f"--data: {err}") from None
    images = [(Path(data.x_paths[i]).name, data[i]["x"][None]) for i in range(min(args.test_images, len(data)))]
    return [(name, center_crop(x, [args.crop] * 2)) for name, x in images] if args.crop else images


def evaluate(nets: dict[str, TDVNetwork], images, physics, args: Namespace) -> list[dict]:
    """Both flows on each noisy test image, and the bound with each network as the reference, in ``args.dtype``."""
    dtype = getattr(torch, args.dtype)
    nets = {tag: copy.deepcopy(net).to(dtype) for tag, net in nets.items()}
    psnr, rows = dinv.metric.PSNR(), []
    for i, (name, x) in enumerate(tqdm(images, desc="test images", disable=args.smoke)):
        x = x.to(args.device, dtype)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(args.noise_seed + i))
        y = x + args.sigma / 255 * noise.to(args.device, dtype)
        row = {"image": name, "shape": list(x.shape[-2:]), "psnr_noisy": psnr(y, x).item()}
        for a, b in PAIRS:
            res = tdv_sensitivity(nets[a], nets[b], y, physics)
            row[f"psnr_{a}"] = psnr(res.x_a, x).item()
            rmse = {key: (getattr(res, key)[:, 0] / res.pixels ** 0.5).tolist() for key in BOUNDS}
            ratios = {key.replace("bound", "ratio"): (getattr(res, key)[1:, 0] / res.observed[1:, 0]).tolist()
                      for key in BOUNDS}
            holds = torch.stack([getattr(res, key) for key in BOUNDS]).amin(0) >= res.observed
            row[f"{a}|{b}"] = {"rmse": res.observed_rmse[:, 0].tolist(), **rmse, **ratios,
                               "lipschitz": res.lipschitz.item(), "factor": res.factor.item(),
                               "holds": bool(holds.all())}
        rows.append(row)
    return rows


def summarise(rows: list[dict], pair: str) -> dict:
    """Per step: the mean RMSE and bounds over the images, and the ratios bound / RMSE (mean, min, max)."""
    summary = {"holds_at_every_step_for_every_image": all(r[pair]["holds"] for r in rows)}
    for key in ("rmse", *BOUNDS, *(key.replace("bound", "ratio") for key in BOUNDS)):
        values = np.array([r[pair][key] for r in rows])
        summary[f"{key}_mean"] = values.mean(0).tolist()
        if key.startswith("ratio"):
            summary[f"{key}_min"], summary[f"{key}_max"] = values.min(0).tolist(), values.max(0).tolist()
    return summary


def figure(rows: list[dict], path: Path) -> None:
    """Fig. 7's shape: RMSE between the two flows and the bounds along the steps (each network as the reference;
    thin lines: images, thick: their mean), and the ratios bound / RMSE."""
    curves = (("rmse", "-", "observed RMSE"), ("bound", "--", "bound (Thm 3.2, one L)"),
              ("bound_stepwise", "-.", "bound, L of each step"), ("bound_split", ":", "bound, split deltas"),
              ("bound_local", (0, (1, 1)), "bound, expansion of each step"))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (a, b) in zip(axes, PAIRS):
        for k, (key, style, label) in enumerate(curves):
            values = np.array([r[f"{a}|{b}"][key] for r in rows])[:, 1:]
            steps = np.arange(1, values.shape[1] + 1)
            ax.semilogy(steps, values.T, linestyle=style, color=f"C{k}", alpha=0.25, lw=0.8)
            ax.semilogy(steps, values.mean(0), linestyle=style, color=f"C{k}", lw=2, label=label)
        ax.set(title=f"reference {a}, other {b} ({len(rows)} test images)", xlabel="step k", ylabel="RMSE")
        ax.legend(fontsize=8)
    for k, (a, b) in enumerate(PAIRS):
        for key, style, label in (("ratio", "o-", ""), ("ratio_stepwise", "s-.", ", L of each step"),
                                  ("ratio_local", "^:", ", expansion of each step")):
            ratio = np.array([r[f"{a}|{b}"][key] for r in rows])
            steps = np.arange(1, ratio.shape[1] + 1)
            axes[2].fill_between(steps, ratio.min(0), ratio.max(0), color=f"C{k}", alpha=0.1)
            axes[2].semilogy(steps, ratio.mean(0), style, color=f"C{k}", label=f"reference {a}{label}")
    axes[2].axhline(1.0, color="k", lw=0.8)
    axes[2].set(title="bound / observed RMSE (mean, range)", xlabel="step k", ylabel="ratio")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict) -> None:
    for tag, t in results["training"].items():
        print(f"network {tag}: {len(t['images'])} training images, T = {t['T']:.5f}, lambda = {t['lambda']:.5f}, "
              f"mean PSNR {t['psnr_mean']:.2f} dB (noisy {results['psnr_noisy_mean']:.2f} dB)")
    keys = {"rmse": "RMSE", "bound": "bound", "ratio": "ratio", "ratio_stepwise": "ratio(L_k)",
            "ratio_local": "ratio(rho_k)"}
    print("means over the test images; ratio = bound / RMSE, ratio(L_k): the bound with the L of each step, "
          "ratio(rho_k): with the expansion of each gradient step")
    print(f"{'step':>4}" + "".join(f"{p + ' ' + q:>17}" for p in results["pairs"] for q in keys.values()))
    pairs = list(results["pairs"].values())
    for k in range(1, len(pairs[0]["rmse_mean"])):  # the ratios start at step 1, where the flows first differ
        cells = [p[f"{q}_mean"][k - 1 if q.startswith("ratio") else k] for p in pairs for q in keys]
        print(f"{k:>4}" + "".join(f"{v:>17.3e}" for v in cells))
    for name, p in results["pairs"].items():
        print(f"{name}: every bound >= RMSE at every step for every image: {p['holds_at_every_step_for_every_image']}")


def conclude(nets: dict[str, TDVNetwork], sets: dict[str, list[str]], seconds: dict[str, float], physics,
             args: Namespace) -> dict:
    """Run the two flows on the test images, save and print the results and the figure (rank 0's work under
    ``torchrun``)."""
    start = time.perf_counter()
    rows = evaluate(nets, test_images(args), physics, args)
    results = {"training": {tag: {"images": names, "T": nets[tag].T.item(), "lambda": nets[tag].lmbda.item(),
                                  "train_seconds_this_run": seconds[tag],
                                  "psnr_mean": float(np.mean([r[f"psnr_{tag}"] for r in rows]))}
                            for tag, names in sets.items()},
               "psnr_noisy_mean": float(np.mean([r["psnr_noisy"] for r in rows])),
               "pairs": {f"{a}|{b}": summarise(rows, f"{a}|{b}") for a, b in PAIRS},
               "evaluation_seconds": time.perf_counter() - start, "images": rows}
    out = Path(args.output)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figure(rows, out / "tdv_sensitivity.png")
    report(results)
    print(f"results.json, tdv_sensitivity.png and run.json in {out}")
    return results


def run(args: Namespace, parallel: DataParallel) -> dict:
    """Train both networks (or resume; data-parallel over ``parallel``'s processes), run the flows on the test
    images, save and print the results (rank 0 alone evaluates and writes; every process returns the results)."""
    if args.smoke and parallel.is_main:
        print("smoke run: tiny networks after two batches each, on one crop (the numbers are no result; the bound "
              "is checked all the same)")
    parallel.on_main(save_run_record, Path(args.output), vars(args), args.seed)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(args.sigma / 255)).to(args.device)
    sets = training_sets(args)
    seed_everything(args.seed)
    init = build_model(Namespace(**vars(args), checkpoint=None)).to(args.device)  # one initialisation for both
    pool, nets, seconds = training_images(sets["A"], args), {}, {}
    for tag, names in sets.items():
        nets[tag], seconds[tag] = train_network(init, tag, names, pool, physics, args, parallel)
    return parallel.on_main(conclude, nets, sets, seconds, physics, args)

r"""The experiment of ``tdv_eigenfunctions.py`` (which states the problem and parses the options): the images, the
published TDV regulariser, one eigenfunction per image (each saved as it finishes), the table and the figure."""

from __future__ import annotations

import copy
import json
import time
from argparse import Namespace
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F

from deepinv_ext.analysis.eigenfunctions import nonlinear_eigenfunction
from deepinv_ext.checkpoint import resume_checkpoint, save_checkpoint
from deepinv_ext.datasets import ImageFolderDataset
from deepinv_ext.priors import TDV
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOT_PER_IMAGE = ("output", "images", "smoke", "seed")  # options that do not change an image's result
COLUMNS = ("image", "index", "lambda", "residual", "iterations", "converged", "seconds")


def images(args: Namespace) -> ImageFolderDataset:
    """The images of ``--data`` in natural name order (``--images`` indexes them), gray by ITU-R BT.601 luma rounded
    to 8 bits (the BSD68 convention) unless ``--color``."""
    try:
        return ImageFolderDataset(args.data, gray=None if args.color else "bt601")
    except FileNotFoundError as err:
        raise SystemExit(f"--data: {err}") from None


def crop(x: torch.Tensor, downscale: int, size: int, name: str) -> torch.Tensor:
    """The image ``x`` ``(C, H, W)`` reduced by ``downscale`` (box filter) and centre-cropped to ``size``: shape
    ``(1, C, size, size)``."""
    x = F.avg_pool2d(x[None], downscale) if downscale > 1 else x[None]
    h, w = x.shape[-2:]
    if min(h, w) < size:
        raise SystemExit(f"{name}: {h}x{w} after --downscale {downscale} is smaller than --size {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size].contiguous()


def load_prior(args: Namespace) -> TDV:
    prior = TDV.from_checkpoint(args.checkpoint)
    if prior.in_channels != (3 if args.color else 1):
        raise SystemExit(f"--checkpoint {args.checkpoint} takes {prior.in_channels}-channel images: "
                         f"{'drop' if args.color else 'add'} --color or pass other weights")
    return prior


def eigenfunction(prior: TDV, x0: torch.Tensor, args: Namespace) -> dict:
    """One eigenpair from ``x0`` (zero-mean search: see the recipe's docstring) and what it took."""
    start = time.perf_counter()
    result = nonlinear_eigenfunction(prior, x0, tol=args.tol, max_iter=args.max_iter, zero_mean=True,
                                     progress=not args.smoke)
    return {"x0": x0[0], "x": result.x[0], "lambda": result.eigenvalue.item(), "residual": result.residual.item(),
            "iterations": result.iterations.item(), "converged": result.converged.item(),
            "seconds": time.perf_counter() - start, "energy_history": result.energy_history[:, 0],
            "residual_history": result.residual_history[:, 0]}


def solve_all(prior: TDV, args: Namespace, out: Path) -> list[dict]:
    """Every image of ``--images``: computed and saved to ``out/images/<name>.pt``, or read back from there."""
    data = images(args)
    if max(args.images) >= len(data):
        raise SystemExit(f"--images: {args.data} holds {len(data)} images (indices 0..{len(data) - 1}), "
                         f"got {max(args.images)}")
    config = {k: v for k, v in vars(args).items() if k not in NOT_PER_IMAGE}
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in args.images:
        path = Path(data.x_paths[i])
        saved, options = out / "images" / f"{path.stem}.pt", {**config, "image": path.name}
        record = resume_checkpoint(saved, options)
        if record is None:
            record = {"image": path.name, "index": i,
                      **eigenfunction(prior, crop(data[i]["x"], args.downscale, args.size, path.name), args)}
            save_checkpoint(saved, record, options)
        else:
            print(f"{path.name}: done in an earlier run, read from {saved}")
        print(" ".join(f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
                       for k in COLUMNS), flush=True)
        records.append(record)
    return records


def residual_in_float64(prior: TDV, records: list[dict]) -> list[float]:
    """The relative residual of each eigenfunction with the regulariser evaluated in float64 (the solves evaluate it
    in float32, as the published weights are): how much of the residual is float32 rounding."""
    x = torch.stack([r["x"] for r in records]).double()
    check = nonlinear_eigenfunction(copy.deepcopy(prior).double(), x, tol=1.0, max_iter=0, zero_mean=True)
    return check.residual.tolist()


def show(ax, img: torch.Tensor, stretch: bool) -> None:
    img = img.detach().float()
    if stretch:  # each eigenfunction on its own range
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    img = img.clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def figure(records: list[dict], path: Path) -> None:
    """Input over eigenfunction (shown as :math:`x + \\bar x_0`, contrast-stretched) with :math:`\\lambda`, as
    Fig. 6."""
    n = len(records)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.3), squeeze=False)
    for k, r in enumerate(records):
        show(axes[0, k], r["x0"], stretch=False)
        show(axes[1, k], r["x"] + r["x0"].mean(), stretch=True)
        axes[0, k].set_title(r["image"], fontsize=8)
        axes[1, k].set_xlabel(f"λ = {r['lambda']:.4f}\nρ = {r['residual']:.2e}", fontsize=8)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("eigenfunction")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def run(args: Namespace) -> dict:
    """Compute (or read back) every eigenpair, print and save the table, the figure and the run record."""
    seed_everything(args.seed)
    out = Path(args.output)
    save_run_record(out, vars(args), args.seed)  # creates the folder
    prior = load_prior(args)
    records = solve_all(prior, args, out)
    rows = [{**{k: r[k] for k in COLUMNS}, "residual_float64": check}
            for r, check in zip(records, residual_in_float64(prior, records))]
    below = sum(r["residual"] <= args.tol for r in rows)
    results = {"tol": args.tol, "size": args.size, "downscale": args.downscale, "color": args.color,
               "checkpoint": Path(args.checkpoint).name, "images": rows, "below_tol": below,
               "below_tol_float64": sum(r["residual_float64"] <= args.tol for r in rows)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figure(records, out / "eigenfunctions.png")
    print(f"relative residual <= {args.tol:g} for {below} of {len(rows)} images ({results['below_tol_float64']} "
          f"re-evaluated in float64); {sum(r['seconds'] for r in rows):.0f} s of solves")
    if args.smoke:
        print(f"smoke run: checks skipped ({args.max_iter} iterations on a {args.size}x{args.size} crop: no residual "
              "target is expected)")
    print(f"results.json, eigenfunctions.png and run.json in {out}")
    return results

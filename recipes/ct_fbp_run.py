r"""The experiment of ``ct_fbp.py`` (which states the problem and parses the options): the images, the FBP and
least-squares reconstructions at each sampling, the table, the figure and the run record."""

from __future__ import annotations

import time
from argparse import Namespace
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.physics import AstraCT
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def images(size: int, n_ellipses: int, seed: int) -> tuple[list[str], torch.Tensor]:
    phantom = torch.tensor(resize(shepp_logan_phantom(), (size, size), anti_aliasing=True), dtype=torch.float32)
    ellipses = RandomEllipsesDataset(length=max(n_ellipses, 1), size=size, seed=seed)
    stack = [phantom[None]] + [ellipses[i]["x"][:1] for i in range(n_ellipses)]
    names = ["Shepp-Logan"] + [f"ellipses {i}" for i in range(n_ellipses)]
    return names, torch.stack(stack)


def run(args: Namespace) -> dict:
    """The table of every image, sampling and method; the figure and the run record."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    names, x = images(args.size, args.ellipses, args.seed)
    psnr, ssim = dinv.metric.PSNR(max_pixel=1.0), dinv.metric.SSIM(max_pixel=1.0)
    start = time.perf_counter()
    physics = AstraCT(args.size, angles=args.views)
    physics.A(x[:1])  # the sparse backend builds (or loads from the disk cache) its matrix on first use
    print(f"{physics.extra_repr()}; operator ready in {time.perf_counter() - start:.1f} s")
    rng = torch.Generator().manual_seed(args.seed)
    results, recs = [], {}
    for factor in args.factors:
        physics.update(angles=physics.full_angles[::factor])
        y = physics.A(x)
        y = y + args.noise * float(y.abs().max()) * torch.randn(y.shape, generator=rng)
        for method in ("FBP", "least squares"):
            start = time.perf_counter()
            if method == "FBP":
                rec = physics.A_dagger(y, fbp=True, filter=args.filter)
            else:
                rec = physics.A_dagger(y, solver="CG", max_iter=args.ls_iters, tol=1e-8)
            seconds = time.perf_counter() - start
            recs[(factor, method)] = rec
            for i, name in enumerate(names):
                results.append({"image": name, "views": physics.angles.numel(), "factor": factor, "method": method,
                                "psnr": float(psnr(rec[i: i + 1], x[i: i + 1])),
                                "ssim": float(ssim(rec[i: i + 1], x[i: i + 1])), "seconds": seconds})
    print(f"\n{'image':<14} {'views':>5} {'method':<14} {'PSNR [dB]':>9} {'SSIM':>6} {'time [s]':>8}")
    for r in results:
        print(f"{r['image']:<14} {r['views']:>5} {r['method']:<14} {r['psnr']:9.2f} {r['ssim']:6.3f} "
              f"{r['seconds']:8.2f}")
    figure(names, x, recs, args.factors, args.views, out / "ct_fbp.png")
    save_run_record(out, vars(args) | {"results": results}, args.seed)
    print(f"\nfigure: {out / 'ct_fbp.png'}; record: {out / 'run.json'}")
    return {"results": results}


def figure(names: list[str], x: torch.Tensor, recs: dict, factors: list[int], views: int, path: Path) -> None:
    columns = [("ground truth", None)] + [(f"{m}, {views // f} views", (f, m)) for f in factors
                                         for m in ("FBP", "least squares")]
    rows = min(len(names), 2)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns), 2.3 * rows), squeeze=False)
    for i in range(rows):
        for j, (title, key) in enumerate(columns):
            image = x[i, 0] if key is None else recs[key][i, 0]
            axes[i, j].imshow(image.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_title(title if i == 0 else "", fontsize=8)
            axes[i, j].axis("off")
        axes[i, 0].set_ylabel(names[i])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

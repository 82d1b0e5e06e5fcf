r"""The experiment of ``ct_fbp.py`` (which states the problem and parses the options): the images, the FBP and
least-squares reconstructions at each sampling (through the operator split into view blocks with ``--view-blocks``,
across the processes of ``torchrun``), the table, the figure and the run record."""

from __future__ import annotations

import time
from argparse import Namespace
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from deepinv.distributed import DistributedContext
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from deepinv_ext.data_parallel import DataParallel
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.physics import AstraCT
from deepinv_ext.physics.split import ConcatenatedLinearPhysics, split_fbp, view_blocks
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
    """The table of every image, sampling and method; the figure and the run record (``--view-blocks``: in every
    process of ``torchrun``, or in this one alone, through ``deepinv.distributed``; process 0 writes)."""
    if args.view_blocks is None:
        return experiment(args, None)
    with DataParallel("cpu") as parallel:  # one process, or torchrun's (a failing one ends the run: no hang)
        return experiment(args, parallel.context)


def operator(physics: AstraCT, args: Namespace, ctx: DistributedContext | None) -> dinv.physics.LinearPhysics:
    """``physics`` at its current views, or (``ctx``) those views split into ``--view-blocks`` blocks, each process
    of ``ctx`` building only its own (``physics`` itself is not applied then: it builds nothing)."""
    if ctx is None:
        return physics
    blocks = view_blocks(physics, args.view_blocks)
    return ConcatenatedLinearPhysics(blocks.distribute(ctx), blocks)


def reconstruct(op: dinv.physics.LinearPhysics, y: torch.Tensor, method: str, args: Namespace) -> torch.Tensor:
    """FBP (through the blocks: :func:`~deepinv_ext.physics.split.split_fbp`) or least squares (deepinv's CG)."""
    if method == "FBP":
        return split_fbp(op, y, args.filter) if isinstance(op, ConcatenatedLinearPhysics) else \
            op.A_dagger(y, fbp=True, filter=args.filter)
    return op.A_dagger(y, solver="CG", max_iter=args.ls_iters, tol=1e-8)


def experiment(args: Namespace, ctx: DistributedContext | None) -> dict:
    main = ctx is None or ctx.rank == 0
    out = Path(args.output)
    seed_everything(args.seed)
    names, x = images(args.size, args.ellipses, args.seed)
    psnr, ssim = dinv.metric.PSNR(max_pixel=1.0), dinv.metric.SSIM(max_pixel=1.0)
    start = time.perf_counter()
    physics = AstraCT(args.size, angles=args.views)
    if ctx is None:
        physics.A(x[:1])  # the sparse backend builds (or loads from the disk cache) its matrix on first use
        print(f"{physics.extra_repr()}; operator ready in {time.perf_counter() - start:.1f} s")
    elif main:
        print(f"{physics.extra_repr()}; split into {args.view_blocks} view blocks over {ctx.world_size} process(es)")
    rng = torch.Generator().manual_seed(args.seed)
    results, recs = [], {}
    for factor in args.factors:
        physics.update(angles=physics.full_angles[::factor])
        op = operator(physics, args, ctx)
        y = op.A(x)
        y = y + args.noise * float(y.abs().max()) * torch.randn(y.shape, generator=rng)
        for method in ("FBP", "least squares"):
            start = time.perf_counter()
            rec = reconstruct(op, y, method, args)
            seconds = time.perf_counter() - start
            recs[(factor, method)] = rec
            for i, name in enumerate(names):
                results.append({"image": name, "views": physics.angles.numel(), "factor": factor, "method": method,
                                "psnr": float(psnr(rec[i: i + 1], x[i: i + 1])),
                                "ssim": float(ssim(rec[i: i + 1], x[i: i + 1])), "seconds": seconds})
    if main:
        report(results)
        out.mkdir(parents=True, exist_ok=True)
        figure(names, x, recs, args.factors, args.views, out / "ct_fbp.png")
        save_run_record(out, vars(args) | {"results": results}, args.seed)
        print(f"\nfigure: {out / 'ct_fbp.png'}; record: {out / 'run.json'}")
    return {"results": results, "reconstructions": recs}


def report(results: list[dict]) -> None:
    """Print the table."""
    print(f"\n{'image':<14} {'views':>5} {'method':<14} {'PSNR [dB]':>9} {'SSIM':>6} {'time [s]':>8}")
    for r in results:
        print(f"{r['image']:<14} {r['views']:>5} {r['method']:<14} {r['psnr']:9.2f} {r['ssim']:6.3f} "
              f"{r['seconds']:8.2f}")


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

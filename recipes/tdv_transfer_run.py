r"""The experiment of ``tdv_transfer.py`` (which states the problem and parses the options): the published TDV
regulariser, the CT and MRI tasks, the choice of lambda, the table and the figure."""

from __future__ import annotations

import json
import time
from argparse import Namespace
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from deepinv.optim import Prior
from deepinv.physics.generator import EquispacedMaskGenerator

from deepinv_ext.algorithms import VariationalSolver
from deepinv_ext.datasets import SkimageImagesDataset
from deepinv_ext.physics import AstraCT, SigpyMultiCoilMRI
from deepinv_ext.priors import TDV, RealImagPrior
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_prior(args) -> TDV:
    if Path(args.checkpoint).is_file():
        return TDV.from_checkpoint(args.checkpoint)
    if not args.smoke:
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} not found")
    print(f"--checkpoint {args.checkpoint} not found: smoke run with a small untrained TDV")
    torch.manual_seed(args.seed)
    return TDV(in_channels=1, num_features=8, num_scales=2, num_macro_blocks=1)


def image(name: str, size: int) -> torch.Tensor:
    return SkimageImagesDataset(size=size, grayscale=True, names=(name,))[0]["x"][None].float()


def complex_image(x: torch.Tensor, phase: float) -> torch.Tensor:
    """Magnitude ``x`` (B, 1, H, W) with a linear phase ramp from -phase to +phase, as (B, 2, H, W)."""
    h, w = x.shape[-2:]
    ramp = phase * (torch.linspace(-1, 1, h)[:, None] + torch.linspace(-1, 1, w)[None]) / 2
    return torch.cat([x * torch.cos(ramp), x * torch.sin(ramp)], dim=1)


def psnr(rec: torch.Tensor, ref: torch.Tensor) -> float:
    if rec.shape[1] == 2:  # complex: compare magnitudes
        rec, ref = rec.norm(dim=1, keepdim=True), ref.norm(dim=1, keepdim=True)
    return float(dinv.metric.PSNR(max_pixel=1.0)(rec.clamp(0, 1), ref))


def ct_task(factor: int, args, gen: torch.Generator):
    physics = AstraCT(args.size, angles=360)
    physics.update(angles=physics.full_angles[::factor])

    def measure(x: torch.Tensor) -> torch.Tensor:
        y = physics.A(x)
        return y + args.ct_noise * float(y.abs().max()) * torch.randn(y.shape, generator=gen)

    baselines = {"FBP": (lambda y, _: physics.A_dagger(y, fbp=True), [None])}
    return physics, measure, baselines, lambda x: x


def mri_task(factor: int, args, gen: torch.Generator):
    maps = SigpyMultiCoilMRI.birdcage_maps(args.coils, (args.size, args.size))
    mask = EquispacedMaskGenerator((args.size, args.size), acceleration=factor, center_fraction=0.08).step(
        1, seed=args.seed)["mask"]
    physics = SigpyMultiCoilMRI(maps, mask=mask)

    def measure(x: torch.Tensor) -> torch.Tensor:
        y = physics.A(x)
        return y + physics.mask[:, :, None] * args.mri_noise * torch.randn(y.shape, generator=gen)

    baselines = {"zero-filled": (lambda y, _: physics.A_dagger(y, mode="dcf"), [None]),
                 "CG-SENSE": (lambda y, it: physics.A_dagger(y, mode="cg", max_iter=it, tol=1e-8), args.cg_iters)}
    return physics, measure, baselines, lambda x: complex_image(x, args.phase)


def run_task(name: str, task, prior: Prior, lambdas: list[float], x_val: torch.Tensor, x_test: torch.Tensor,
             args) -> tuple[list, dict]:
    physics, measure, baselines, prepare = task
    truth_val, truth = prepare(x_val), prepare(x_test)
    y_val, y = measure(truth_val), measure(truth)
    scores = {}
    for lam in lambdas if len(lambdas) > 1 else []:
        solver = VariationalSolver(prior, weight=lam, max_iter=args.max_iter, cg_init_iter=10)
        with torch.no_grad():
            scores[lam] = psnr(solver(y_val, physics), truth_val)
    lam = max(scores, key=scores.get) if scores else lambdas[0]
    rows, recs = [], {"ground truth": truth}
    for method, (fn, grid) in baselines.items():
        param = max(grid, key=lambda q: psnr(fn(y_val, q), truth_val)) if len(grid) > 1 else grid[0]
        start = time.perf_counter()
        rec = fn(y, param)
        rows.append({"task": name, "method": method, "psnr": psnr(rec, truth), "lambda": None, "param": param,
                     "seconds": time.perf_counter() - start})
        recs[method] = rec
    solver = VariationalSolver(prior, weight=lam, max_iter=args.max_iter, cg_init_iter=10)
    start = time.perf_counter()
    with torch.no_grad():
        rec = solver(y, physics)
    energies = torch.stack(solver.history)[:, 0]
    rows.append({"task": name, "method": "TDV", "psnr": psnr(rec, truth), "lambda": lam,
                 "seconds": time.perf_counter() - start, "iterations": solver.iterations,
                 "energy_first": float(energies[0]), "energy_last": float(energies[-1]),
                 "val_psnr_per_lambda": {str(k): v for k, v in scores.items()}})
    recs["TDV"] = rec
    return rows, recs


def figure(all_recs: dict, path: Path) -> None:
    tasks = list(all_recs)
    cols = max(len(r) for r in all_recs.values())
    fig, axes = plt.subplots(len(tasks), cols, figsize=(2.6 * cols, 2.6 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for ax in row:
            ax.axis("off")
        truth = all_recs[task]["ground truth"]
        for ax, (method, rec) in zip(row, all_recs[task].items()):
            img = rec.norm(dim=1) if rec.shape[1] == 2 else rec[:, 0]
            ax.imshow(img[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            label = method if method == "ground truth" else f"{method}\n{psnr(rec, truth):.2f} dB"
            ax.set_title(f"{task}: {label}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()  # inference only (the caller's grad mode is back afterwards)
def run(args: Namespace) -> list[dict]:
    """Every task: lambda chosen on the validation image, the baselines and TDV on the test image; the table, the
    figure and the run record."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        print("smoke run: checks skipped (3 iterations on 32x32 images: the table is no result, and the solver's "
              "NotConvergedWarning is expected)")
    seed_everything(args.seed)
    prior = load_prior(args).eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    x_val, x_test = image(args.val_image, args.size), image(args.test_image, args.size)
    results, all_recs = [], {}
    gen = torch.Generator().manual_seed(args.seed)
    tasks = [(f"CT {f}x", ct_task(f, args, gen), prior, args.ct_lambdas) for f in args.ct_factors]
    tasks += [(f"MRI {f}x", mri_task(f, args, gen), RealImagPrior(prior), args.mri_lambdas)
              for f in args.mri_factors]
    for name, task, task_prior, lambdas in tasks:
        start = time.perf_counter()
        rows, recs = run_task(name, task, task_prior, lambdas, x_val, x_test, args)
        results += rows
        all_recs[name] = recs
        print(f"{name} done in {time.perf_counter() - start:.1f} s")
    print(f"\n{'task':<10} {'method':<12} {'PSNR [dB]':>9} {'lambda/iters':>12} {'time [s]':>8}")
    for r in results:
        par = r["lambda"] if r["lambda"] is not None else r.get("param")
        par = "" if par is None else f"{par:g}"
        print(f"{r['task']:<10} {r['method']:<12} {r['psnr']:9.2f} {par:>12} {r['seconds']:8.2f}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figure(all_recs, out / "tdv_transfer.png")
    save_run_record(out, vars(args), args.seed)
    return results

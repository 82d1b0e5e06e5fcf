r"""The sweep and the evaluation of ``gs_pnp_convergence.py``: gradient-step PnP on one blurred image at every noise
level :math:`\delta` and at :math:`\delta = 0` (:math:`x^\dagger`), the distances to :math:`x^\dagger`, the
monotonicity of :math:`F(x_k)`, the table and the figure."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from deepinv.physics.functional.blur import gaussian_blur
from gs_pnp_convergence_train import load_denoiser, train_denoiser
from tqdm import tqdm

from deepinv_ext.algorithms import AffineParameterRule, GradientStepPnP
from deepinv_ext.checkpoint import resume_checkpoint, save_checkpoint
from deepinv_ext.data_parallel import DataParallel
from deepinv_ext.datasets import SkimageImagesDataset
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(-10 * torch.log10((x - ref).pow(2).mean()))


def reconstruct(denoiser, lam: float, args, y, physics, x0) -> tuple[torch.Tensor, dict, float]:
    model = GradientStepPnP(denoiser, lambda_=lam, sigma_denoiser=args.sigma_denoiser, max_iter=args.max_iter,
                            tol=args.tol, crit="iterate")
    start = time.perf_counter()
    with torch.no_grad():
        x_hat = model(y, physics, init=x0)
    return x_hat, {k: v.clone() for k, v in model.history.items()}, time.perf_counter() - start


def summarize(history: dict) -> dict:
    objective, steps = history["objective"][:, 0], history["step"][:, 0]
    moved = steps[steps > 0]  # the last entry is 0 when a rejected candidate showed convergence to rounding level
    increases = objective.diff()
    return {"iterations": int(steps.numel()), "backtracks": int(history["backtracks"].sum()),
            "converged": bool(history["converged"][0]), "F_first": float(objective[0]),
            "F_last": float(objective[-1]), "F_max_increase": float(increases.max().clamp_min(0)),
            "F_monotone": bool((increases <= 0).all()),
            "step_ratio": float(moved[-1] / moved[0]) if moved.numel() else 0.0}


def sweep_cache(output: Path, args, weights: Path) -> dict:
    """The finished reconstructions of an earlier run with the same problem, solver and weights (``sweep.pt``), or an
    empty cache."""
    key = {k: vars(args)[k] for k in ("image", "size", "blur", "sigma_denoiser", "c", "eps", "max_iter", "tol", "seed",
                                      "dtype")} | {"weights": str(weights)}
    done = resume_checkpoint(output / "sweep.pt", key, refuse_changed=False)
    return done if done is not None else {"config": key, "runs": {}}


def print_table(args, rows: list[dict], dagger: dict, checks: dict) -> None:
    print(f"\nGS-PnP deblurring, {args.image} {args.size}x{args.size}, Gaussian kernel std {args.blur}, "
          f"sigma_denoiser {args.sigma_denoiser}, lambda = {args.c}*delta + {args.eps}")
    print(f"{'delta':>8} {'lambda':>9} {'PSNR(y)':>8} {'PSNR':>7} {'|x-x_dag|':>10} {'rel':>8} {'iters':>6} "
          f"{'bt':>4} {'conv':>5} {'F mono':>6} {'step K/1':>9} {'s':>6}")
    for r in rows:
        print(f"{r['delta']:8.4f} {r['lambda']:9.5f} {r['psnr_observation']:8.2f} {r['psnr']:7.2f} "
              f"{r['error_to_dagger']:10.4f} {r['rel_error_to_dagger']:8.4f} {r['iterations']:6d} "
              f"{r['backtracks']:4d} {str(r['converged']):>5} {str(r['F_monotone']):>6} {r['step_ratio']:9.1e} "
              f"{r['seconds']:6.1f}")
    print(f"{'x_dag':>8} {dagger['lambda']:9.5f} {'':>8} {dagger['psnr']:7.2f} {'':>10} {'':>8} "
          f"{dagger['iterations']:6d} {dagger['backtracks']:4d} {str(dagger['converged']):>5} {str(dagger['F_monotone']):>6} "
          f"{dagger['step_ratio']:9.1e}")
    print("checks:", json.dumps(checks))


def run(args, parallel: DataParallel) -> dict:
    """The whole experiment for parsed options: the denoiser trained by ``parallel``'s processes (one, or each of
    ``torchrun``'s), then the sweep and its outputs on rank 0 alone (the other processes return ``{}`` and wait at
    the end of ``parallel``'s context, a barrier whose time-out, should a long sweep reach it, only ends their
    wait)."""
    output = Path(args.output)
    parallel.on_main(output.mkdir, parents=True, exist_ok=True)
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    # the denoiser D = Id - grad g, trained here (or given)
    weights = Path(args.weights) if args.weights else train_denoiser(
        output, steps=args.train_steps, channels=args.channels, depth=args.depth, train_size=args.train_size,
        exclude=args.image, seed=args.seed, parallel=parallel)
    return sweep(args, weights, t_start) if parallel.is_main else {}


def sweep(args, weights: Path, t_start: float) -> dict:
    """The sweep over the noise levels with the denoiser ``weights``, the table, the figure and the records."""
    output = Path(args.output)
    dtype = getattr(torch, args.dtype)
    denoiser = load_denoiser(weights).to(dtype)
    t_train = time.perf_counter() - t_start
    # the problem: one image, one blur, one fixed noise direction w scaled by delta, one starting point
    x_true = SkimageImagesDataset(size=args.size, names=(args.image,))[0]["x"][None].to(dtype)
    physics = dinv.physics.BlurFFT((1, args.size, args.size),
                                   filter=gaussian_blur(sigma=(args.blur, args.blur), dtype=dtype))
    w = torch.randn(x_true.shape, generator=torch.Generator().manual_seed(args.seed + 1), dtype=dtype)
    y_clean = physics.A(x_true)
    x0 = torch.full_like(x_true, 0.5)  # one starting point for every run (mid-grey)
    rule = AffineParameterRule(c=args.c, eps=args.eps)
    done = sweep_cache(output, args, weights)

    def solve(name: str, delta: float, lam: float) -> tuple[torch.Tensor, dict]:
        if name not in done["runs"]:
            x_hat, history, seconds = reconstruct(denoiser, lam, args, y_clean + delta * w, physics, x0)
            done["runs"][name] = {"x": x_hat, "history": history, "seconds": seconds}
            save_checkpoint(output / "sweep.pt", {"runs": done["runs"]}, done["config"])
        return done["runs"][name]["x"], done["runs"][name]["history"]

    # the sweep: x_dagger (delta = 0, lambda = eps), then every noise level, largest first
    x_dagger, hist_dagger = solve("dagger", 0.0, rule.limit)
    rows = []
    for delta in tqdm(sorted(args.deltas, reverse=True), desc="noise levels"):
        x_hat, history = solve(f"delta={delta:g}", delta, rule(delta))
        rows.append({"delta": delta, "lambda": rule(delta), "psnr": psnr(x_hat, x_true),
                     "error_to_dagger": float((x_hat - x_dagger).norm()),
                     "rel_error_to_dagger": float((x_hat - x_dagger).norm() / x_dagger.norm()),
                     "psnr_observation": psnr(y_clean + delta * w, x_true), **summarize(history),
                     "seconds": done["runs"][f"delta={delta:g}"]["seconds"]})
    # evaluation: convergence to x_dagger, monotone energies; the table, the figure, the record
    dagger = {"lambda": rule.limit, "psnr": psnr(x_dagger, x_true), **summarize(hist_dagger)}
    errors = [r["error_to_dagger"] for r in rows]  # ordered by decreasing delta
    checks = {"error_decreases_monotonically": all(b < a for a, b in zip(errors, errors[1:], strict=False)),
              "every_run_F_monotone": all(r["F_monotone"] for r in rows) and dagger["F_monotone"],
              "decades_spanned": math.log10(max(args.deltas) / min(args.deltas)), "levels": len(args.deltas)}
    print_table(args, rows, dagger, checks)
    plot(output, rows, done, x_true, y_clean + rows[0]["delta"] * w, x_dagger, rows[len(rows) // 2], args)
    results = {"rows": rows, "dagger": dagger, "checks": checks, "train_seconds": t_train,
               "total_seconds": time.perf_counter() - t_start}
    (output / "results.json").write_text(json.dumps(results, indent=2))
    save_run_record(output, vars(args), args.seed)
    print(f"total {results['total_seconds']:.1f} s (training/loading {t_train:.1f} s); outputs in {output}")
    return results


def plot(output: Path, rows: list[dict], done: dict, x_true, y_worst, x_dagger, case: dict, args) -> None:
    deltas = [r["delta"] for r in rows]
    fig = plt.figure(figsize=(15, 7.5))
    grid = fig.add_gridspec(2, 6)
    ax = fig.add_subplot(grid[0, 0:2])
    ax.loglog(deltas, [r["error_to_dagger"] for r in rows], "o-")
    ax.set(xlabel=r"noise level $\delta$", ylabel=r"$\|\hat x(\delta) - x^\dagger\|_2$",
           title=r"(a) convergence to $x^\dagger$")
    ax.grid(True, which="both", alpha=0.3)
    ax = fig.add_subplot(grid[0, 2:4])
    ax.semilogx(deltas, [r["psnr"] for r in rows], "o-", label=r"$\hat x(\delta)$")
    ax.semilogx(deltas, [r["psnr_observation"] for r in rows], "s--", label=r"$y^\delta$")
    ax.set(xlabel=r"noise level $\delta$", ylabel="PSNR (dB)", title="(b) PSNR to the ground truth")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    history = done["runs"][f"delta={case['delta']:g}"]["history"]
    objective, steps = history["objective"][:, 0], history["step"][:, 0]
    ax = fig.add_subplot(grid[0, 4:6])
    ax.semilogy((objective[:-1] - objective[-1]).clamp_min(1e-12).numpy(), label=r"$F(x_k) - F(x_K)$")
    ax.semilogy(steps[steps > 0].numpy(), label=r"$\|x_{k+1} - x_k\|$")
    ax.set(xlabel="iteration k", title=rf"(c) per iteration, $\delta$ = {case['delta']:g}, "
                                       rf"$\lambda$ = {case['lambda']:.4g}")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    images = [(x_true, "ground truth"), (y_worst, rf"$y^\delta$, $\delta$ = {rows[0]['delta']:g}")]
    for r in (rows[0], rows[len(rows) // 2], rows[-1]):
        images.append((done["runs"][f"delta={r['delta']:g}"]["x"],
                       rf"$\hat x$, $\delta$ = {r['delta']:g}, {r['psnr']:.1f} dB"))
    images.append((x_dagger, r"$x^\dagger$ ($\delta = 0$, $\lambda = \varepsilon$)"))
    for i, (img, title) in enumerate(images):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(img[0, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(rf"Gradient-step PnP deblurring: $\lambda(\delta) = {args.c:g}\,\delta + {args.eps:g}$, "
                 rf"$\sigma$ = {args.sigma_denoiser:g} fixed (panel d: images)")
    fig.tight_layout()
    fig.savefig(output / "gs_pnp_convergence.png", dpi=120)
    plt.close(fig)

r"""Gradient-step PnP as a convergent regularisation (Hauptmann, Mukherjee, Schönlieb, Sherry, Fig. 2).

Problem. Deblur an image blurred by a Gaussian kernel, :math:`y^\delta = Ax + \delta w` (:math:`w` one fixed draw of
white Gaussian noise, so that only the level :math:`\delta` changes), by gradient-step PnP, i.e. by a stationary
point of

.. math::

    F_\delta(x) = \tfrac12\|Ax - y^\delta\|^2 + \lambda(\delta)\, g_\sigma(x), \qquad
    g_\sigma(x) = \tfrac12\|x - N_\sigma(x)\|^2,

reached by :math:`x_{k+1} = \operatorname{prox}_{\tau f}(x_k - \tau\lambda\nabla g_\sigma(x_k))` with Armijo
backtracking (:class:`deepinv_ext.algorithms.GradientStepPnP`). The denoiser :math:`D_\sigma = \operatorname{Id} -
\nabla g_\sigma` is trained here on scikit-image's images (the test image excluded); :math:`\sigma` is fixed and
:math:`\lambda` follows the a-priori rule :math:`\lambda(\delta) = c\delta + \varepsilon`
(:class:`deepinv_ext.algorithms.AffineParameterRule`; default :math:`c = 10`, :math:`\varepsilon = 10^{-4}`: the
survey's :math:`c = 0.04` per percent, ``--c 4`` here, was set for GS-DRUNet, and the small denoiser trained here
needs a larger weight at the highest noise levels to beat the PSNR of the data). As :math:`\delta \to 0` the reconstructions
:math:`\hat x(\delta)` should converge to :math:`x^\dagger`, the fixed point on the noiseless data at
:math:`\lambda = \varepsilon` from the same starting point.

Outputs (in ``--output``): ``gs_pnp_convergence.png`` (a: :math:`\|\hat x(\delta) - x^\dagger\|` vs :math:`\delta`,
b: PSNR vs :math:`\delta`, c: :math:`F(x_k)` and :math:`\|x_{k+1} - x_k\|` per iteration for one case, d: images),
``results.json`` (the table), ``denoiser.pt`` (trained weights; ``denoiser_ckpt.pt`` resumes training),
``sweep.pt`` (finished reconstructions; a rerun skips them) and ``run.json`` (provenance). Every run checks that
:math:`F(x_k)` never increased and reports :math:`\|x_{K}-x_{K-1}\| / \|x_1 - x_0\|`.

Run: ``python recipes/gs_pnp_convergence.py --smoke`` (about a minute on a CPU) or without ``--smoke`` for the
full sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from deepinv.physics.functional.blur import gaussian_blur
from tqdm import tqdm

from deepinv_ext.algorithms import AffineParameterRule, GradientStepPnP
from deepinv_ext.datasets import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SMOKE = {"size": 32, "train_size": 64, "train_steps": 300, "channels": 16, "depth": 4, "max_iter": 400,
         "tol": 1e-6, "deltas": [0.1, 0.03, 0.01, 0.003, 0.001]}
FULL = {"size": 64, "train_size": 128, "train_steps": 1000, "channels": 16, "depth": 4, "max_iter": 5000,
        "tol": 1e-7, "deltas": [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small, fast CPU run")
    parser.add_argument("--output", default="results/gs_pnp_convergence", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image", default="camera", choices=SKIMAGE_IMAGES, help="test image")
    parser.add_argument("--size", type=int, help="test image side (default: 32 smoke, 64 full)")
    parser.add_argument("--blur", type=float, default=1.6, help="std of the Gaussian kernel (pixels)")
    parser.add_argument("--sigma-denoiser", type=float, default=0.05, help="fixed sigma of the denoiser")
    parser.add_argument("--c", type=float, default=10.0, help="slope of lambda(delta) = c*delta + eps")
    parser.add_argument("--eps", type=float, default=1e-4, help="floor of lambda(delta) = c*delta + eps")
    parser.add_argument("--deltas", type=float, nargs="+", help="noise levels (std on [0, 1] images)")
    parser.add_argument("--max-iter", type=int, help="maximum PnP iterations")
    parser.add_argument("--tol", type=float, help="stopping tolerance on the relative change of the iterate")
    parser.add_argument("--weights", help="trained denoiser weights to use instead of training")
    parser.add_argument("--train-steps", type=int, help="denoiser training steps")
    parser.add_argument("--train-size", type=int, help="side of the training images before cropping")
    parser.add_argument("--channels", type=int, help="feature channels of the potential network")
    parser.add_argument("--depth", type=int, help="convolutions of the potential network")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                        help="dtype of the reconstructions (float64: F resolves smaller decreases)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared box)")
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.deltas) <= 0:
        parser.error("--deltas must be positive")
    return args


# -- the denoiser ----------------------------------------------------------------------------------------
def build_denoiser(channels: int, depth: int) -> GradientStepDenoiser:
    return GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=channels, depth=depth))


def train_denoiser(output: Path, *, steps: int, channels: int, depth: int, train_size: int, exclude: str,
                   seed: int = 0, patch: int = 32, batch: int = 16, sigma_range: tuple[float, float] = (0.01, 0.1),
                   lr: float = 2e-3, checkpoint_every: int = 100) -> Path:
    r"""Train a :class:`SmallPotentialNet` gradient-step denoiser on random patches of scikit-image's images
    (``exclude`` left out) with :math:`\sigma \sim U(\text{sigma\_range})`, MSE loss; resumable from
    ``output/denoiser_ckpt.pt``. Returns the path of the final weights ``output/denoiser.pt``."""
    output.mkdir(parents=True, exist_ok=True)
    final, ckpt_path = output / "denoiser.pt", output / "denoiser_ckpt.pt"
    config = {"steps": steps, "channels": channels, "depth": depth, "train_size": train_size, "exclude": exclude,
              "seed": seed, "patch": patch, "batch": batch, "sigma_range": list(sigma_range), "lr": lr}
    if final.is_file():
        saved = torch.load(final, map_location="cpu", weights_only=True)
        if saved.get("config") == config:
            return final
    torch.manual_seed(seed)
    denoiser = build_denoiser(channels, depth)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    names = tuple(n for n in SKIMAGE_IMAGES if n != exclude)
    data = SkimageImagesDataset(size=train_size, grayscale=True, names=names)
    images = torch.stack([data[i]["x"] for i in range(len(data))])
    gen = torch.Generator().manual_seed(seed)
    start = 0
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt["config"] == config:
            denoiser.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            gen.set_state(ckpt["rng"])
            start = ckpt["step"]
    denoiser.train()
    bar = tqdm(range(start, steps), desc="train GS denoiser", initial=start, total=steps)
    for step in bar:
        idx = torch.randint(len(images), (batch,), generator=gen)
        i0 = torch.randint(train_size - patch + 1, (batch,), generator=gen)
        j0 = torch.randint(train_size - patch + 1, (batch,), generator=gen)
        rows = (i0[:, None] + torch.arange(patch))[:, :, None]
        cols = (j0[:, None] + torch.arange(patch))[:, None, :]
        x = images[idx, 0][torch.arange(batch)[:, None, None], rows, cols][:, None]
        flip = torch.rand(batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * torch.rand(batch, generator=gen)
        y = x + sigma[:, None, None, None] * torch.randn(x.shape, generator=gen)
        loss = (denoiser(y, sigma) - x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(psnr=f"{-10 * math.log10(loss.item()):.2f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            torch.save({"config": config, "model": denoiser.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": gen.get_state(), "step": step + 1}, ckpt_path)
    torch.save({"config": config, "model": denoiser.state_dict()}, final)
    return final


def load_denoiser(path: Path) -> GradientStepDenoiser:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    denoiser = build_denoiser(saved["config"]["channels"], saved["config"]["depth"])
    denoiser.load_state_dict(saved["model"])
    return denoiser.eval().requires_grad_(False)


# -- the sweep -------------------------------------------------------------------------------------------
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


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    config = {k: v for k, v in vars(args).items()}
    t_start = time.perf_counter()

    weights = Path(args.weights) if args.weights else train_denoiser(
        output, steps=args.train_steps, channels=args.channels, depth=args.depth, train_size=args.train_size,
        exclude=args.image, seed=args.seed)
    dtype = getattr(torch, args.dtype)
    denoiser = load_denoiser(weights).to(dtype)
    t_train = time.perf_counter() - t_start

    x_true = SkimageImagesDataset(size=args.size, names=(args.image,))[0]["x"][None].to(dtype)
    physics = dinv.physics.BlurFFT((1, args.size, args.size),
                                   filter=gaussian_blur(sigma=(args.blur, args.blur), dtype=dtype))
    w = torch.randn(x_true.shape, generator=torch.Generator().manual_seed(args.seed + 1), dtype=dtype)
    y_clean = physics.A(x_true)
    x0 = torch.full_like(x_true, 0.5)  # one starting point for every run (mid-grey)
    rule = AffineParameterRule(c=args.c, eps=args.eps)

    key = json.dumps({k: config[k] for k in ("image", "size", "blur", "sigma_denoiser", "c", "eps", "max_iter",
                                             "tol", "seed", "dtype")} | {"weights": str(weights)}, sort_keys=True)
    sweep_path = output / "sweep.pt"
    done = torch.load(sweep_path, weights_only=True) if sweep_path.is_file() else {}
    if done.get("key") != key:
        done = {"key": key, "runs": {}}

    def run(name: str, delta: float, lam: float) -> tuple[torch.Tensor, dict]:
        if name not in done["runs"]:
            y = y_clean + delta * w
            x_hat, history, seconds = reconstruct(denoiser, lam, args, y, physics, x0)
            done["runs"][name] = {"x": x_hat, "history": history, "seconds": seconds}
            torch.save(done, sweep_path)
        entry = done["runs"][name]
        return entry["x"], entry["history"]

    x_dagger, hist_dagger = run("dagger", 0.0, rule.limit)
    rows = []
    for delta in tqdm(sorted(args.deltas, reverse=True), desc="noise levels"):
        x_hat, history = run(f"delta={delta:g}", delta, rule(delta))
        rows.append({"delta": delta, "lambda": rule(delta), "psnr": psnr(x_hat, x_true),
                     "error_to_dagger": float((x_hat - x_dagger).norm()),
                     "rel_error_to_dagger": float((x_hat - x_dagger).norm() / x_dagger.norm()),
                     "psnr_observation": psnr(y_clean + delta * w, x_true), **summarize(history),
                     "seconds": done["runs"][f"delta={delta:g}"]["seconds"]})
    dagger = {"lambda": rule.limit, "psnr": psnr(x_dagger, x_true), **summarize(hist_dagger)}
    errors = [r["error_to_dagger"] for r in rows]  # ordered by decreasing delta
    checks = {
        "error_decreases_monotonically": all(b < a for a, b in zip(errors, errors[1:], strict=False)),
        "every_run_F_monotone": all(r["F_monotone"] for r in rows) and dagger["F_monotone"],
        "decades_spanned": math.log10(max(args.deltas) / min(args.deltas)),
        "levels": len(args.deltas),
    }

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

    case = rows[len(rows) // 2]
    plot(output, rows, done, x_true, y_clean + rows[0]["delta"] * w, x_dagger, case, args)
    results = {"rows": rows, "dagger": dagger, "checks": checks, "train_seconds": t_train,
               "total_seconds": time.perf_counter() - t_start}
    (output / "results.json").write_text(json.dumps(results, indent=2))
    save_run_record(output, config, args.seed)
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


if __name__ == "__main__":
    main()

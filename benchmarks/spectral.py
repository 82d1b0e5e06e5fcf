r"""Benchmark: one matrix-free filtered application h_tau(D)v against one denoiser application D v (the anchor).

The symmetric linear U-Net (trained weights from ``--denoiser`` if given, e.g. the ``denoiser.pt`` written by
``recipes/spectral_pnp_ct.py``; otherwise random weights) is calibrated to a spectrum in ``[0.01, 0.99]`` at the
benchmark size (Lanczos); for each tau and method we time ``h_tau(D)v`` and print the ratio to the time of one
``D v`` (target: at most 60x at 256x256) and the number of denoiser applications per filtered application.

Usage::

    python benchmarks/spectral.py                       # 256x256, float32, CPU
    python benchmarks/spectral.py --size 64 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch
from _summary import emit

from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.denoisers import LinearSymmetricUNet
from deepinv_ext.spectral import NeumannFilter, ScalingFilter


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - t0) / repeats, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--denoiser", default=None, help="state_dict of a trained LinearSymmetricUNet")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--taus", type=float, nargs="+", default=[1.0, 0.1, 0.01, 1e-3])
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    den = LinearSymmetricUNet(channels=tuple(args.channels), convs_per_scale=2)
    if args.denoiser:
        den.load_state_dict(torch.load(args.denoiser, weights_only=True))
    cal = den.calibrate_spectrum((0.01, 0.99), shape=(1, args.size, args.size), n_iter=60)
    bounds = (cal["lambda_min"], cal["lambda_max"])
    v = RandomEllipsesDataset(length=1, size=args.size, seed=5)[0]["x"][None]
    v = v + 0.05 * torch.randn_like(v)
    matvec = lambda u: den(u)  # noqa: E731
    with torch.no_grad():
        t_den, _ = timed(lambda: den(v), max(10, args.repeats))
        print(f"{args.size}x{args.size} float32, {torch.get_num_threads()} thread(s); spectrum (Lanczos) "
              f"[{bounds[0]:.4g}, {bounds[1]:.4g}]; one denoiser application D v: {1e3 * t_den:.1f} ms (anchor)")
        print(f"{'filter':>10} {'tau':>8} {'method':>10} {'D calls':>8} {'estimate':>9} {'ms':>9} {'ratio':>7}")
        worst = 0.0
        for filt, methods in ((ScalingFilter(), ("cg", "chebyshev", "lanczos")), (NeumannFilter(2), ("polynomial",))):
            for tau in args.taus:
                if tau >= filt.tau_max(bounds):
                    continue
                for method in methods:
                    t, (u, info) = timed(lambda f=filt, m=method, tau=tau: f.apply(
                        matvec, v, tau, method=m, tol=args.tol, bounds=bounds), args.repeats)
                    ratio = t / t_den
                    worst = max(worst, ratio) if filt.name == "scaling" and method == "cg" else worst
                    print(f"{filt.name:>10} {tau:>8.0e} {method:>10} {info.n_matvecs:>8d} "
                          f"{info.error_estimate:>9.1e} {1e3 * t:>9.1f} {ratio:>6.1f}x")
    print(f"\nworst ratio of the scaling filter by CG (tol {args.tol:.0e}): {worst:.1f}x one denoiser application "
          f"(target <= 60x)")
    emit("", f"one filtered application h_tau(D)v, scaling filter by CG (tol {args.tol:.0e}), worst over tau in "
             f"{args.taus}, {args.size}x{args.size}", "one denoiser application D v", {"worst": worst},
         "time / anchor's (target <= 60x)")


if __name__ == "__main__":
    main()

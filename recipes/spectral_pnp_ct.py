r"""Spectral-filtered linear PnP for CT is a convergent regularisation (Hauptmann et al., Sect. 4.3, Figs. 5-6).

Problem. Parallel-beam CT with 150 equispaced views of random-ellipse phantoms: :math:`y^\delta = Ax^* + e`,
:math:`\|e\| = \delta\|Ax^*\|` (one fixed noise direction, scaled). A bias-free, activation-free symmetric U-Net
:math:`D` (:class:`deepinv_ext.denoisers.LinearSymmetricUNet`) is trained as a Gaussian denoiser with
:class:`deepinv.Trainer` and its spectrum is mapped into :math:`[0.01, 0.99]` (measured by Lanczos). PnP-FBS

.. math:: x_{k+1} = h_\tau(D)\bigl(x_k - \eta A^\top(Ax_k - y^\delta)\bigr), \quad
          h_\tau(\lambda) = \frac{\lambda}{\tau - (\tau - 1)\lambda}, \quad \tau = c\,\delta,

(:class:`deepinv_ext.algorithms.SpectralPnP`, FISTA-accelerated, same fixed point) should give
:math:`\|\hat x(y^\delta, \tau^\delta) - x^\dagger\| \to 0` as :math:`\delta \to 0` (Theorem 5), where
:math:`x^\dagger = \arg\min\{J^*(x) : A^\top Ax = A^\top y\}`, :math:`J^*(x) = \tfrac12\langle x, (D^{-1} - \mathrm{Id})x\rangle`.

1. Small images (64x64): :math:`h_\tau(D)` by exact eigendecomposition (as in the paper); :math:`x^\dagger` to high
   accuracy from the generalised eigendecomposition of :math:`(A^\top A, r^*(D))` (dense, float64); the matrix-free
   CG/Chebyshev/Lanczos filters are checked against the exact one at the recipe's :math:`\tau` values (relative
   error and denoiser applications, also for spectra with smaller :math:`\lambda_{\min}`); FBP for comparison.
2. Large images (256x256, default): the same curve with the matrix-free CG filter (no eigendecomposition is
   possible); :math:`x^\dagger` is approximated by Richardson extrapolation of noise-free solutions of the
   fixed-point system at :math:`\tau_{\rm ref}` and :math:`\tau_{\rm ref}/2` (error :math:`O(\tau_{\rm ref}^2)`),
   computed by CG on :math:`[\eta DA^\top AD + \tau(D - D^2)]w = \eta DA^\top y`, :math:`x = Dw`
   (:meth:`SpectralPnP.solve_linear_system`), which also checks each PnP result.

Outputs in ``--output``: ``convergence.png``, ``filter_accuracy.csv``, ``convergence_<size>.csv``, the trained
denoiser ``denoiser.pt`` (reused when present: the run resumes), and ``run.json`` (provenance).

Usage::

    python recipes/spectral_pnp_ct.py --output runs/spectral_pnp            # full run (CPU: tens of minutes)
    python recipes/spectral_pnp_ct.py --smoke --output /tmp/spectral_smoke  # < 2 minutes on a CPU
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import time
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from torch.utils.data import DataLoader

from deepinv_ext.algorithms import SpectralPnP
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.denoisers import LinearSymmetricUNet
from deepinv_ext.physics import AstraCT
from deepinv_ext.provenance import save_run_record, seed_everything
from deepinv_ext.spectral import NeumannFilter, OperatorEig, ScalingFilter

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def make_ct(size: int, views: int) -> tuple[dinv.physics.LinearPhysics, torch.dtype]:
    """Parallel-beam CT: the ASTRA physics where ASTRA imports (the ``[ct]`` extra; float64 in/out), else deepinv's
    Tomography (float32). Decided here, at construction: ``AstraCT`` itself imports ASTRA only at its first
    projection."""
    try:
        import astra  # noqa: F401
    except ImportError:
        print("ASTRA is not installed: using deepinv.physics.Tomography")
        return dinv.physics.Tomography(angles=views, img_width=size, circle=False, normalize=False), torch.float32
    return AstraCT(size, angles=views), torch.float64


def fbp(physics: dinv.physics.LinearPhysics, y: torch.Tensor) -> torch.Tensor:
    return physics.fbp(y) if hasattr(physics, "fbp") else physics.A_dagger(y)


def train_denoiser(args: argparse.Namespace, out: Path) -> LinearSymmetricUNet:
    """Train (or reload) the symmetric linear U-Net as a Gaussian denoiser with deepinv.Trainer."""
    ckpt = out / "denoiser.pt"
    den = LinearSymmetricUNet(channels=tuple(args.channels), convs_per_scale=2, sigma=args.sigma)
    if ckpt.exists():
        den.load_state_dict(torch.load(ckpt, weights_only=True))
        print(f"loaded the trained denoiser from {ckpt}")
        return den
    data = RandomEllipsesDataset(length=args.train_images, size=args.train_size, seed=args.seed)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(args.sigma))
    trainer = dinv.Trainer(model=dinv.models.ArtifactRemoval(den, mode="direct"), physics=physics,
                           optimizer=torch.optim.Adam(den.parameters(), lr=args.lr), train_dataloader=loader,
                           epochs=args.epochs, losses=dinv.loss.SupLoss(), online_measurements=True,
                           save_path=None, verbose=False, show_progress_bar=True, compute_train_metrics=False,
                           device="cpu")
    trainer.train()
    torch.save(den.state_dict(), ckpt)
    x = torch.stack([RandomEllipsesDataset(length=4, size=args.train_size, seed=args.seed + 1)[i]["x"]
                     for i in range(4)])
    y = x + args.sigma * torch.randn_like(x)
    with torch.no_grad():
        psnr_in = float(dinv.metric.PSNR()(y, x).mean())
        psnr_out = float(dinv.metric.PSNR()(den(y), x).mean())
    print(f"denoiser PSNR on held-out phantoms: noisy {psnr_in:.2f} dB -> denoised {psnr_out:.2f} dB")
    return den


def calibrated(den: LinearSymmetricUNet, size: int, target: tuple[float, float]) -> tuple[LinearSymmetricUNet, dict]:
    d = copy.deepcopy(den).double()
    report = d.calibrate_spectrum(target, shape=(1, size, size), n_iter=60)
    print(f"[{size}x{size}] raw spectrum (Lanczos) [{report['raw_min']:.4g}, {report['raw_max']:.4g}] -> "
          f"calibrated [{report['lambda_min']:.4g}, {report['lambda_max']:.4g}] (D <- {report['scale']:.4g} D + "
          f"{report['shift']:.4g} Id)")
    return d, report


def filter_accuracy(den: LinearSymmetricUNet, eig: OperatorEig, taus: list[float], lmins: list[float],
                    tol: float, out: Path) -> list[dict]:
    """Matrix-free vs exact h_tau(D)v at the recipe's taus, also for spectra [lmin, 0.99] (affine remaps)."""
    lam0 = eig.eigenvalues
    a0, b0 = float(lam0.min()), float(lam0.max())
    v = torch.stack([RandomEllipsesDataset(length=1, size=eig.shape[-1], seed=99)[0]["x"]]).double()
    v = v + 0.05 * torch.randn_like(v)
    rows, f = [], ScalingFilter()
    for lmin in lmins:
        s = (0.99 - lmin) / (b0 - a0)
        matvec = lambda u, s=s, lmin=lmin: s * den(u) + (lmin - s * a0) * u  # noqa: E731
        lam = s * lam0 + (lmin - s * a0)
        for tau in taus:
            ref = eig.apply(lambda l, s=s, lmin=lmin, tau=tau: f.h(s * l + (lmin - s * a0), tau), v)
            for method in ("cg", "chebyshev", "lanczos"):
                t0 = time.perf_counter()
                with torch.no_grad():
                    u, info = f.apply(matvec, v, tau, method=method, tol=tol,
                                      bounds=(float(lam.min()), float(lam.max())))
                err = float((u - ref).norm() / ref.norm())
                rows.append({"lambda_min": lmin, "tau": tau, "method": method, "denoiser_calls": info.n_matvecs,
                             "rel_error": err, "error_estimate": info.error_estimate,
                             "seconds": time.perf_counter() - t0})
    with open(out / "filter_accuracy.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nmatrix-free h_tau(D)v vs eigendecomposition ({eig.shape[-1]}x{eig.shape[-1]}, float64, tol {tol:.0e})")
    print(f"{'lambda_min':>10} {'tau':>9} {'method':>10} {'D calls':>8} {'rel.err':>9} {'estimate':>9}")
    for r in rows:
        print(f"{r['lambda_min']:>10.3g} {r['tau']:>9.2e} {r['method']:>10} {r['denoiser_calls']:>8d} "
              f"{r['rel_error']:>9.1e} {r['error_estimate']:>9.1e}")
    return rows


def noisy_data(y: torch.Tensor, deltas: list[float], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(y.shape, generator=g, dtype=y.dtype)
    e = e / e.norm()
    return [y + d * y.norm() * e for d in deltas]


def pnp(model: SpectralPnP, tau, y, physics, x_init=None):
    model.tau = tau
    t0 = time.perf_counter()
    with torch.no_grad():
        x = model(y, physics, x_init=x_init)
    return x, model.last_info, time.perf_counter() - t0


def experiment_small(den0, args, out, deltas, taus) -> dict:
    size = args.small_size
    den, cal = calibrated(den0, size, (0.01, 0.99))
    physics, _ = make_ct(size, args.views)
    n = size * size
    t0 = time.perf_counter()
    eig = OperatorEig(lambda u: den(u), (1, size, size), max_dim=max(4096, n), chunk=128)
    lam = eig.eigenvalues
    print(f"[{size}x{size}] eigendecomposition of D: {time.perf_counter() - t0:.1f} s, exact spectrum "
          f"[{float(lam.min()):.4g}, {float(lam.max()):.4g}], asymmetry {eig.asymmetry:.1e}")
    for filt, ts in ((ScalingFilter(), taus), (NeumannFilter(2), [t for t in taus if t < 0.9])):
        rep = filt.check_conditions(lam, ts)
        print(f"  {filt!r}: A.1 {rep.a1}, A.2 {rep.a2} (rates {', '.join(f'{r:.1e}' for r in rep.a2_rates)}), "
              f"A.3 {rep.a3} (r in [{rep.r_range[0]:.3g}, {rep.r_range[1]:.3g}])")
    acc = filter_accuracy(den, eig, taus, args.lmins, args.filter_check_tol, out)

    # dense A^T A (float64) and the generalised eigendecomposition of (A^T A, R), R = r*(D) = (Id - D) D^{-1}
    t0 = time.perf_counter()
    eye = torch.eye(n, dtype=torch.float64)
    cols = [physics.A_adjoint(physics.A(eye[i:i + 64].reshape(-1, 1, size, size))).reshape(-1, n)
            for i in range(0, n, 64)]
    AtA = torch.cat(cols).T
    AtA = 0.5 * (AtA + AtA.T)
    V, r = eig.eigenvectors, ScalingFilter().r_star(lam)
    Rm12 = (V * r.rsqrt()) @ V.T
    mu, U = torch.linalg.eigh(Rm12 @ AtA @ Rm12)
    W = Rm12 @ U  # x(alpha) = W diag(1/(mu + alpha)) W^T A^T y
    print(f"[{size}x{size}] dense A^T A and generalised eigendecomposition: {time.perf_counter() - t0:.1f} s; "
          f"mu in [{float(mu.min()):.3g}, {float(mu.max()):.3g}], "
          f"{int((mu < 1e-10 * mu.max()).sum())} numerically in the kernel")
    x_star = RandomEllipsesDataset(length=1, size=size, seed=args.seed + 7)[0]["x"][None].double()
    y = physics.A(x_star)
    keep = mu > 1e-10 * mu.max()

    def direct(yy, alpha=None):
        c = W.T @ physics.A_adjoint(yy).reshape(n)
        c = torch.where(keep, c / (mu if alpha is None else mu + alpha), torch.zeros_like(c)) if alpha is None \
            else c / (mu + alpha)
        return (W @ c).reshape(1, 1, size, size)

    x_dag = direct(y)
    print(f"  x_dagger: |A x_dagger - y| / |y| = {float((physics.A(x_dag) - y).norm() / y.norm()):.1e}, "
          f"|x_dagger - x*| / |x*| = {float((x_dag - x_star).norm() / x_star.norm()):.3f}")
    rows, recon = [], {}
    x_prev = None
    model = SpectralPnP(den, ScalingFilter(), 1.0, method="eig", eig=eig, acceleration="fista", tol=args.pnp_tol,
                        filter_tol=args.filter_tol, max_iter=args.max_iter, cache_norm=True)
    for delta, tau, yd in zip(deltas, taus, noisy_data(y, deltas, args.seed), strict=True):
        x, info, secs = pnp(model, tau, yd, physics, x_init=x_prev)
        x_prev = x
        x_dir = direct(yd, tau / info["stepsize"])
        x_fbp = fbp(physics, yd)
        rows.append({"delta": delta, "tau": tau, "err_pnp": float((x - x_dag).norm() / x_dag.norm()),
                     "err_direct": float((x_dir - x_dag).norm() / x_dag.norm()),
                     "pnp_vs_direct": float((x - x_dir).norm() / x_dir.norm()),
                     "err_fbp": float((x_fbp - x_dag).norm() / x_dag.norm()),
                     "err_pnp_vs_xstar": float((x - x_star).norm() / x_star.norm()),
                     "iterations": info["iterations"], "converged": info["converged"], "seconds": secs})
        recon[delta] = (x, x_fbp)
        print(f"  delta {delta:.1e} tau {tau:.1e}: |x_hat - x_dag|/|x_dag| {rows[-1]['err_pnp']:.4e} "
              f"(direct solve {rows[-1]['err_direct']:.4e}, PnP vs direct {rows[-1]['pnp_vs_direct']:.1e}), "
              f"FBP {rows[-1]['err_fbp']:.3e}, {info['iterations']} it, {secs:.1f} s")
    return {"size": size, "rows": rows, "accuracy": acc, "calibration": cal, "x_star": x_star, "x_dag": x_dag,
            "recon": recon, "spectrum": (float(lam.min()), float(lam.max()))}


def experiment_large(den0, args, out, deltas, taus) -> dict:
    size = args.large_size
    den, cal = calibrated(den0, size, (0.01, 0.99))
    physics, dtype = make_ct(size, args.views)
    x_star = RandomEllipsesDataset(length=1, size=size, seed=args.seed + 7)[0]["x"][None].to(dtype)
    y = physics.A(x_star)
    den = den.to(dtype)
    tau_ref = args.tau_ref_factor * min(taus)
    model = SpectralPnP(den, ScalingFilter(), tau_ref, method="cg", acceleration="fista", tol=args.pnp_tol,
                        filter_tol=args.filter_tol, max_iter=args.max_iter, progress=True, cache_norm=True)
    t0 = time.perf_counter()
    x1 = model.solve_linear_system(y, physics, tol=args.ref_tol)
    n1, w1 = model.last_info["iterations"], model.last_info["w"]
    model.tau = tau_ref / 2
    x2 = model.solve_linear_system(y, physics, tol=args.ref_tol, w_init=w1)
    x_dag = 2 * x2 - x1  # Richardson: x(tau) = x_dag + c tau + O(tau^2)
    extrap = float((x2 - x1).norm() / x_dag.norm())
    print(f"[{size}x{size}] x_dagger ~ Richardson extrapolation of noise-free solutions of the fixed-point system "
          f"(CG, residual {args.ref_tol:.0e}) at tau_ref={tau_ref:.1e}, {tau_ref / 2:.1e} ({n1} + "
          f"{model.last_info['iterations']} CG it, {time.perf_counter() - t0:.0f} s); |x(tau) - x(tau/2)| / |x| = "
          f"{extrap:.1e}; |A x_dag - y| / |y| = {float((physics.A(x_dag) - y).norm() / y.norm()):.1e}")
    rows, x_prev = [], None
    for delta, tau, yd in zip(deltas, taus, noisy_data(y, deltas, args.seed), strict=True):
        x, info, secs = pnp(model, tau, yd, physics, x_init=x_prev)
        x_prev = x
        x_fbp = fbp(physics, yd)
        gap = math.nan
        if args.check_direct:
            x_dir = model.solve_linear_system(yd, physics, tol=args.ref_tol)
            gap = float((x - x_dir).norm() / x_dir.norm())
        rows.append({"delta": delta, "tau": tau, "err_pnp": float((x - x_dag).norm() / x_dag.norm()),
                     "pnp_vs_direct": gap,
                     "err_fbp": float((x_fbp - x_dag).norm() / x_dag.norm()),
                     "err_pnp_vs_xstar": float((x - x_star).norm() / x_star.norm()),
                     "iterations": info["iterations"], "converged": info["converged"],
                     "denoiser_calls": info["denoiser_calls"],
                     "calls_per_filter": info["denoiser_calls"] / max(info["iterations"], 1), "seconds": secs})
        print(f"  delta {delta:.1e} tau {tau:.1e}: |x_hat - x_dag|/|x_dag| {rows[-1]['err_pnp']:.4e} (PnP vs "
              f"direct CG solve {rows[-1]['pnp_vs_direct']:.1e}), FBP "
              f"{rows[-1]['err_fbp']:.3e}, {info['iterations']} it, {rows[-1]['calls_per_filter']:.1f} D calls "
              f"per filtered application, {secs:.0f} s")
    return {"size": size, "rows": rows, "calibration": cal, "reference_extrapolation": extrap, "tau_ref": tau_ref}


def write_rows(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(results: list[dict], out: Path) -> None:
    has_recon = bool(results) and "recon" in results[0]
    ncols = len(results) + int(has_recon)
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.5), squeeze=False)
    axes = list(axes[0])
    for res, ax in zip(results, axes, strict=False):
        d = [r["delta"] for r in res["rows"]]
        ax.loglog(d, [r["err_pnp"] for r in res["rows"]], "o-", label=r"spectral PnP $\|\hat x - x^\dagger\|$")
        ax.loglog(d, [r["err_fbp"] for r in res["rows"]], "s--", label=r"FBP $\|x_{FBP} - x^\dagger\|$")
        ax.set_xlabel(r"relative noise level $\delta$")
        ax.set_ylabel(r"relative error to $x^\dagger$")
        ax.set_title(f"{res['size']}x{res['size']}, " + ("exact filter (eig)" if "recon" in res else "CG filter"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if has_recon:
        res, ax = results[0], axes[-1]
        deltas = sorted(res["recon"])
        tiles = [res["x_star"], res["x_dag"], res["recon"][deltas[0]][0], res["recon"][deltas[-1]][0],
                 res["recon"][deltas[-1]][1]]  # deltas ascending: [0] is the smallest noise level
        ax.imshow(torch.cat([t[0, 0] for t in tiles], 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(r"$x^*$ | $x^\dagger$ | PnP $\delta_{min}$ | PnP $\delta_{max}$ | FBP $\delta_{max}$")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", default="runs/spectral_pnp_ct")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, short training: < 2 minutes on a CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared box)")
    p.add_argument("--views", type=int, default=150)
    p.add_argument("--small-size", type=int, default=64, help="0 skips the small (eigendecomposition) experiment")
    p.add_argument("--large-size", type=int, default=256, help="0 skips the large matrix-free experiment")
    p.add_argument("--sigma", type=float, default=0.05, help="training noise level of the denoiser")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--train-images", type=int, default=256)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--deltas", type=float, nargs=3, default=[1e-1, 1e-4, 7], metavar=("MAX", "MIN", "N"),
                   help="relative noise levels: N log-spaced from MAX to MIN")
    p.add_argument("--large-deltas", type=float, nargs=3, default=[1e-1, 1e-4, 6], metavar=("MAX", "MIN", "N"))
    p.add_argument("--tau-factor", type=float, default=10.0, help="tau = tau_factor * delta")
    p.add_argument("--ref-tol", type=float, default=1e-7, help="large size: CG residual of the reference solves")
    p.add_argument("--check-direct", action="store_true", help="large size: also solve each level's system by CG")
    p.add_argument("--tau-ref-factor", type=float, default=0.5, help="large size: tau_ref = factor * min(tau)")
    p.add_argument("--lmins", type=float, nargs="+", default=[0.1, 0.03, 0.01, 0.003])
    p.add_argument("--filter-check-tol", type=float, default=1e-4)
    p.add_argument("--filter-tol", type=float, default=1e-6)
    p.add_argument("--pnp-tol", type=float, default=1e-7)
    p.add_argument("--max-iter", type=int, default=20000)
    args = p.parse_args(argv)
    if args.smoke:
        args.small_size, args.large_size, args.train_size, args.views = 16, 32, 16, 30
        args.train_images, args.epochs, args.batch_size, args.channels = 32, 5, 8, [4, 8, 8]
        args.deltas = [1e-1, 1e-4, 6]
        args.large_deltas = [1e-1, 1e-3, 3]
        args.pnp_tol, args.max_iter, args.lmins, args.check_direct = 1e-6, 3000, [0.03, 0.01], True
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    save_run_record(out, vars(args), args.seed)

    den = train_denoiser(args, out)

    def grid(spec):
        hi, lo, k = spec
        return [10 ** (math.log10(hi) + i * (math.log10(lo) - math.log10(hi)) / (int(k) - 1)) for i in range(int(k))]

    deltas, results = grid(args.deltas), []
    if args.small_size:
        results.append(experiment_small(den, args, out, deltas, [args.tau_factor * d for d in deltas]))
        write_rows(results[-1]["rows"], out / f"convergence_{args.small_size}.csv")
    if args.large_size:
        ld = grid(args.large_deltas)
        results.append(experiment_large(den, args, out, ld, [args.tau_factor * d for d in ld]))
        write_rows(results[-1]["rows"], out / f"convergence_{args.large_size}.csv")
    plot(results, out)
    for res in results:
        errs = [r["err_pnp"] for r in res["rows"]]
        mono = all(b < a for a, b in zip(errs, errs[1:]))
        print(f"\n{res['size']}x{res['size']}: |x_hat - x_dag| / |x_dag| over delta "
              f"{res['rows'][0]['delta']:.0e} -> {res['rows'][-1]['delta']:.0e}: "
              f"{', '.join(f'{e:.3e}' for e in errs)}; monotone decreasing: {mono}")
    print(f"\nsaved {out / 'convergence.png'} and the tables in {out}")


if __name__ == "__main__":
    main()

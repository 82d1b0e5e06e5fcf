r"""The experiments of ``spectral_pnp_ct.py``: the convergence of spectral PnP to :math:`x^\dagger` as the noise
vanishes, on small images with the exact filter and on large ones with the matrix-free CG filter, and the accuracy
of the matrix-free filters (under ``torchrun``: rank 0 alone, once the data-parallel training is over)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import matplotlib
import torch
from recipe_help import data_parallel
from spectral_pnp_ct_train import calibrated, fbp, make_ct, train_denoiser

from deepinv_ext.algorithms import SpectralPnP
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.denoisers import LinearSymmetricUNet
from deepinv_ext.provenance import save_run_record, seed_everything
from deepinv_ext.spectral import NeumannFilter, OperatorEig, ScalingFilter

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_rows(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


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
                rows.append({"lambda_min": lmin, "tau": tau, "method": method, "denoiser_calls": info.n_matvecs,
                             "rel_error": float((u - ref).norm() / ref.norm()),
                             "error_estimate": info.error_estimate, "seconds": time.perf_counter() - t0})
    write_rows(rows, out / "filter_accuracy.csv")
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


# ----------------------------------------------------------------------------------------------- small images
def exact_spectrum(den, size: int, taus: list[float]) -> OperatorEig:
    """The eigendecomposition of D and the filters' conditions A.1-A.3 on its spectrum."""
    t0 = time.perf_counter()
    eig = OperatorEig(lambda u: den(u), (1, size, size), max_dim=max(4096, size * size), chunk=128)
    lam = eig.eigenvalues
    print(f"[{size}x{size}] eigendecomposition of D: {time.perf_counter() - t0:.1f} s, exact spectrum "
          f"[{float(lam.min()):.4g}, {float(lam.max()):.4g}], asymmetry {eig.asymmetry:.1e}")
    for filt, ts in ((ScalingFilter(), taus), (NeumannFilter(2), [t for t in taus if t < 0.9])):
        rep = filt.check_conditions(lam, ts)
        print(f"  {filt!r}: A.1 {rep.a1}, A.2 {rep.a2} (rates {', '.join(f'{r:.1e}' for r in rep.a2_rates)}), "
              f"A.3 {rep.a3} (r in [{rep.r_range[0]:.3g}, {rep.r_range[1]:.3g}])")
    return eig


def direct_solver(eig: OperatorEig, physics, size: int):
    r"""``direct(y, alpha)``: :math:`x(\alpha) = W\,\mathrm{diag}(1/(\mu + \alpha))\,W^\top A^\top y` from the
    generalised eigendecomposition of :math:`(A^\top A, R)`, :math:`R = r^*(D) = (\mathrm{Id} - D)D^{-1}` (dense,
    float64); with ``alpha=None`` the minimum-:math:`J^*` solution :math:`x^\dagger` (the kernel left out)."""
    n, t0 = size * size, time.perf_counter()
    eye = torch.eye(n, dtype=torch.float64)
    cols = [physics.A_adjoint(physics.A(eye[i:i + 64].reshape(-1, 1, size, size))).reshape(-1, n)
            for i in range(0, n, 64)]
    AtA = torch.cat(cols).T
    AtA = 0.5 * (AtA + AtA.T)
    V, r = eig.eigenvectors, ScalingFilter().r_star(eig.eigenvalues)
    Rm12 = (V * r.rsqrt()) @ V.T
    mu, U = torch.linalg.eigh(Rm12 @ AtA @ Rm12)
    W = Rm12 @ U  # x(alpha) = W diag(1/(mu + alpha)) W^T A^T y
    print(f"[{size}x{size}] dense A^T A and generalised eigendecomposition: {time.perf_counter() - t0:.1f} s; "
          f"mu in [{float(mu.min()):.3g}, {float(mu.max()):.3g}], "
          f"{int((mu < 1e-10 * mu.max()).sum())} numerically in the kernel")
    keep = mu > 1e-10 * mu.max()

    def direct(yy, alpha=None):
        c = W.T @ physics.A_adjoint(yy).reshape(n)
        c = torch.where(keep, c / mu, torch.zeros_like(c)) if alpha is None else c / (mu + alpha)
        return (W @ c).reshape(1, 1, size, size)

    return direct


def experiment_small(den0, args, out, deltas, taus) -> dict:
    size = args.small_size
    den, cal = calibrated(den0, size, (0.01, 0.99))
    physics, _ = make_ct(size, args.views)
    eig = exact_spectrum(den, size, taus)
    acc = filter_accuracy(den, eig, taus, args.lmins, args.filter_check_tol, out)
    direct = direct_solver(eig, physics, size)
    x_star = RandomEllipsesDataset(length=1, size=size, seed=args.seed + 7)[0]["x"][None].double()
    y = physics.A(x_star)
    x_dag = direct(y)
    print(f"  x_dagger: |A x_dagger - y| / |y| = {float((physics.A(x_dag) - y).norm() / y.norm()):.1e}, "
          f"|x_dagger - x*| / |x*| = {float((x_dag - x_star).norm() / x_star.norm()):.3f}")
    rows, recon, x_prev = [], {}, None
    model = SpectralPnP(den, ScalingFilter(), 1.0, method="eig", eig=eig, acceleration="fista", tol=args.pnp_tol,
                        filter_tol=args.filter_tol, max_iter=args.max_iter, cache_norm=True)
    for delta, tau, yd in zip(deltas, taus, noisy_data(y, deltas, args.seed), strict=True):
        x, info, secs = pnp(model, tau, yd, physics, x_init=x_prev)
        x_prev, x_dir, x_fbp = x, direct(yd, tau / info["stepsize"]), fbp(physics, yd)
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
            "recon": recon, "spectrum": (float(eig.eigenvalues.min()), float(eig.eigenvalues.max()))}


# ----------------------------------------------------------------------------------------------- large images
def reference_solution(model: SpectralPnP, y, physics, args, size: int) -> tuple[torch.Tensor, float]:
    r""":math:`x^\dagger` by Richardson extrapolation of the noise-free solutions at :math:`\tau_{\rm ref}` and
    :math:`\tau_{\rm ref}/2`, :math:`x(\tau) = x^\dagger + c\tau + O(\tau^2)`; returns it and the relative gap."""
    tau_ref, t0 = model.tau, time.perf_counter()
    x1 = model.solve_linear_system(y, physics, tol=args.ref_tol)
    n1, w1 = model.last_info["iterations"], model.last_info["w"]
    model.tau = tau_ref / 2
    x2 = model.solve_linear_system(y, physics, tol=args.ref_tol, w_init=w1)
    x_dag = 2 * x2 - x1
    extrap = float((x2 - x1).norm() / x_dag.norm())
    print(f"[{size}x{size}] x_dagger ~ Richardson extrapolation of noise-free solutions of the fixed-point system "
          f"(CG, residual {args.ref_tol:.0e}) at tau_ref={tau_ref:.1e}, {tau_ref / 2:.1e} ({n1} + "
          f"{model.last_info['iterations']} CG it, {time.perf_counter() - t0:.0f} s); |x(tau) - x(tau/2)| / |x| = "
          f"{extrap:.1e}; |A x_dag - y| / |y| = {float((physics.A(x_dag) - y).norm() / y.norm()):.1e}")
    return x_dag, extrap


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
    x_dag, extrap = reference_solution(model, y, physics, args, size)
    rows, x_prev = [], None
    for delta, tau, yd in zip(deltas, taus, noisy_data(y, deltas, args.seed), strict=True):
        x, info, secs = pnp(model, tau, yd, physics, x_init=x_prev)
        x_prev, x_fbp, gap = x, fbp(physics, yd), math.nan
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


# ----------------------------------------------------------------------------------------------- figure and run
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


def grid(spec) -> list[float]:
    """``N`` log-spaced values from ``MAX`` to ``MIN`` (``spec = (MAX, MIN, N)``)."""
    hi, lo, k = spec
    return [10 ** (math.log10(hi) + i * (math.log10(lo) - math.log10(hi)) / (int(k) - 1)) for i in range(int(k))]


def run(args) -> None:
    """The denoiser, then each experiment, the figure and the convergence summary, for parsed options. Under
    ``torchrun`` every process trains the denoiser, then leaves; rank 0 runs the experiments alone."""
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    with data_parallel(args) as parallel:  # one process, or each of torchrun's (on its device)
        seed_everything(args.seed)
        parallel.on_main(save_run_record, out, vars(args), args.seed)
        den = train_denoiser(args, out, parallel)
        if not parallel.is_main:
            return
    results = []
    for size, spec, experiment in ((args.small_size, args.deltas, experiment_small),
                                   (args.large_size, args.large_deltas, experiment_large)):
        if size:
            deltas = grid(spec)
            results.append(experiment(den, args, out, deltas, [args.tau_factor * d for d in deltas]))
            write_rows(results[-1]["rows"], out / f"convergence_{size}.csv")
    plot(results, out)
    for res in results:
        errs = [r["err_pnp"] for r in res["rows"]]
        mono = all(b < a for a, b in zip(errs, errs[1:]))
        print(f"\n{res['size']}x{res['size']}: |x_hat - x_dag| / |x_dag| over delta "
              f"{res['rows'][0]['delta']:.0e} -> {res['rows'][-1]['delta']:.0e}: "
              f"{', '.join(f'{e:.3e}' for e in errs)}; monotone decreasing: {mono}")
    print(f"\nsaved {out / 'convergence.png'} and the tables in {out}")

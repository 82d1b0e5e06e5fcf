r"""Peak memory of each solver's inference on a 256x256 image: the README's calls, before and after the rule that
solvers keep no autograd graph unless asked to (``differentiable=True``) and published weights load frozen.

Cases (one gray 256x256 random-ellipse phantom, float32; the README's examples at the size of issue 29's
report):

- ``tdv_network``: :class:`~deepinv_ext.algorithms.TDVNetwork` with the published weights
  (``tests/data/tdv/tdv3-3-25-f32-gray.pth``, S = 10 steps), denoising at :math:`\sigma = 15/255`;
- ``variational_tdv``: the published TDV regulariser in :class:`~deepinv_ext.algorithms.VariationalSolver`
  (weight 1000) on a Gaussian blur of standard deviation 1.5, noise 0.01;
- ``spectral_pnp``: an (untrained) :class:`~deepinv_ext.denoisers.LinearSymmetricUNet` with channels (8, 16, 32),
  its spectrum calibrated into (0.01, 0.99), in :class:`~deepinv_ext.algorithms.SpectralPnP` (scaling filter,
  :math:`\tau = 10^{-2}`, FISTA) on the same blur;
- ``gs_pnp``: an (untrained) :class:`~deepinv_ext.denoisers.SmallPotentialNet` gradient-step denoiser in
  :class:`~deepinv_ext.algorithms.GradientStepPnP` (:math:`\lambda = 10\delta + 10^{-4}`, :math:`\sigma_d = 0.05`)
  on the same blur;
- ``fista_tv``: deepinv's ``TVPrior`` in :class:`~deepinv_ext.algorithms.FISTASolver` (:math:`\lambda = 0.01`) on
  the same blur.

Modes: ``before`` reproduces the previous defaults (published weights trainable, and ``differentiable=True``,
which is what every solver did before when its parameters required grad); ``after`` is the call as the README
writes it now (defaults); ``no_grad`` is ``after`` inside :func:`torch.no_grad`, the reference. The other modes
call with autograd enabled, as a user's script does. The solvers' tolerances are set so low that every run takes
exactly its iteration budget. Each run is a fresh process: printed are the peak resident set of the process
(imports, data and model included: what ``/usr/bin/time -v`` reports) and its growth during the solve (the peak
since a reset through ``/proc/self/clear_refs`` just before it, minus the resident set then), the wall time, and
per case the ratio of the peaks at the same budget and the growth per iteration (from two budgets).

Run (2-core CPU, one torch thread, about 5 minutes; peaks of ``before`` up to 9.4 GiB)::

    python benchmarks/solver_memory.py
    python benchmarks/solver_memory.py --cases variational_tdv --modes after --iters 200   # the README's budget
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from _summary import emit

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "data" / "tdv" / "tdv3-3-25-f32-gray.pth"  # the published weights, shipped
CASES = ("tdv_network", "variational_tdv", "spectral_pnp", "gs_pnp", "fista_tv")
MODES = ("before", "after", "no_grad")
# iteration budgets per case and mode: two of them give the growth per iteration (TDVNetwork: S = 10 steps)
BUDGETS = {"tdv_network": {"before": (10,), "after": (10,), "no_grad": (10,)},
           "variational_tdv": {"before": (1, 2), "after": (2, 20), "no_grad": (2,)},
           "spectral_pnp": {"before": (2, 5), "after": (5, 40), "no_grad": (5,)},
           "gs_pnp": {"before": (5, 40), "after": (5, 40), "no_grad": (5,)},
           "fista_tv": {"before": (5, 40), "after": (5, 40), "no_grad": (5,)}}


def _rss_mib() -> float:
    """The resident set now (``/proc/self/statm``)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """The peak resident set: since the start, or since the last reset through ``/proc/self/clear_refs``."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _problem(size: int, seed: int = 0):
    import deepinv as dinv
    import torch
    from deepinv.physics.functional.blur import gaussian_blur

    from deepinv_ext.datasets import RandomEllipsesDataset

    x = RandomEllipsesDataset(1, size, seed=seed)[0]["x"][None]
    blur = dinv.physics.BlurFFT((1, size, size), filter=gaussian_blur(sigma=(1.5, 1.5)),
                                noise_model=dinv.physics.GaussianNoise(0.01, rng=torch.Generator().manual_seed(seed)))
    return x, blur


def _build(case: str, mode: str, size: int, max_iter: int):
    """The model, the measurements and the physics of one run (the README's call; ``before``: the old defaults)."""
    import deepinv as dinv
    import torch

    from deepinv_ext.algorithms import (
        AffineParameterRule,
        FISTASolver,
        GradientStepPnP,
        SpectralPnP,
        TDVNetwork,
        VariationalSolver,
    )
    from deepinv_ext.denoisers import GradientStepDenoiser, LinearSymmetricUNet, SmallPotentialNet
    from deepinv_ext.priors import TDV
    from deepinv_ext.spectral import ScalingFilter

    before = mode == "before"
    x, blur = _problem(size)
    if case == "tdv_network":
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(15 / 255, rng=torch.Generator().manual_seed(0)))
        return TDVNetwork.from_checkpoint(WEIGHTS, trainable=before), physics(x), physics
    y = blur(x)
    if case == "variational_tdv":
        model = VariationalSolver(TDV.from_checkpoint(WEIGHTS, trainable=before), weight=1000.0, max_iter=max_iter,
                                  tol=1e-12, differentiable=before)
    elif case == "spectral_pnp":
        torch.manual_seed(0)
        den = LinearSymmetricUNet(channels=(8, 16, 32))
        den.calibrate_spectrum((0.01, 0.99), shape=(1, size, size))
        model = SpectralPnP(den, ScalingFilter(), tau=1e-2, acceleration="fista", max_iter=max_iter, tol=1e-12,
                            differentiable=before)
    elif case == "gs_pnp":
        torch.manual_seed(0)
        model = GradientStepPnP(GradientStepDenoiser(SmallPotentialNet(in_channels=1)),
                                lambda_=AffineParameterRule(c=10, eps=1e-4)(0.01), sigma_denoiser=0.05,
                                max_iter=max_iter, tol=1e-12, differentiable=before)
    else:
        model = FISTASolver(dinv.optim.TVPrior(n_it_max=20), lambda_reg=0.01, lipschitz=1.01, max_iter=max_iter,
                            tol=1e-12, differentiable=before)
    return model, y, blur


def child(case: str, mode: str, size: int, max_iter: int) -> dict:
    """One run in this (fresh) process."""
    import torch

    model, y, physics = _build(case, mode, size, max_iter)
    setup_peak, base = _peak_mib(), _rss_mib()
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the resident set now (Linux >= 4.0)
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.set_grad_enabled(mode != "no_grad"):
        warnings.simplefilter("ignore")  # NotConvergedWarning: the budgets are fixed on purpose
        out = model(y, physics)
    seconds = time.perf_counter() - start
    solve_peak = _peak_mib()
    return {"case": case, "mode": mode, "iterations": max_iter, "peak_mib": max(setup_peak, solve_peak),
            "setup_peak_mib": setup_peak, "growth_mib": solve_peak - base, "seconds": seconds,
            "output_has_graph": out.requires_grad}


def run(case: str, mode: str, size: int, max_iter: int, threads: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", case, mode, str(max_iter), "--size", str(size),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:  # e.g. killed for memory
        print(f"{case} {mode} {max_iter}: failed (exit {out.returncode})\n{out.stderr[-1500:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: list[dict], limit_mib: float) -> dict[str, float]:
    """Print the tables; return each case's ratio of the peaks before / after at the same budget."""
    print(f"\n{'case':<17}{'mode':<9}{'iters':>6}{'peak RSS MiB':>14}{'solve growth MiB':>18}{'time s':>9}"
          f"{'graph':>7}")
    for r in results:
        print(f"{r['case']:<17}{r['mode']:<9}{r['iterations']:>6}{r['peak_mib']:>14.0f}{r['growth_mib']:>18.0f}"
              f"{r['seconds']:>9.1f}{'yes' if r['output_has_graph'] else 'no':>7}")
    print(f"\n{'case':<17}{'before/after peak':>19}{'growth/iteration before':>25}{'after':>10}"
          f"{f'after < {limit_mib:.0f} MiB':>18}")
    ratios = {}
    for case in dict.fromkeys(r["case"] for r in results):
        rows = {(r["mode"], r["iterations"]): r for r in results if r["case"] == case}
        common = [k for (m, k) in rows if m == "before" and ("after", k) in rows]
        if common:
            ratios[case] = rows[("before", common[-1])]["peak_mib"] / rows[("after", common[-1])]["peak_mib"]
        ratio = f"{ratios[case]:.2f}x at {common[-1]}" if common else "-"
        slopes = []
        for mode in ("before", "after"):
            ks = sorted(k for (m, k) in rows if m == mode)
            slopes.append(f"{(rows[(mode, ks[-1])]['growth_mib'] - rows[(mode, ks[0])]['growth_mib']) / (ks[-1] - ks[0]):.1f}"
                          if len(ks) > 1 else "-")
        after = [r["peak_mib"] for (m, _), r in rows.items() if m == "after"]
        met = ("yes" if max(after) < limit_mib else "NO") if after else "-"
        print(f"{case:<17}{ratio:>19}{slopes[0] + ' MiB':>25}{slopes[1] + ' MiB':>10}{met:>18}")
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--modes", nargs="+", choices=MODES, default=["before", "after"])
    p.add_argument("--size", type=int, default=256, help="image side (default 256)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each run (default 1)")
    p.add_argument("--limit-mib", type=float, default=2048.0, help="the target peak of an inference call")
    p.add_argument("--iters", type=int, nargs="+", help="iteration budgets of every run (default: per case and mode; "
                                                       "TDVNetwork always runs its S = 10 steps)")
    p.add_argument("--child", nargs=3, metavar=("CASE", "MODE", "ITERS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        case, mode, iters = args.child
        print(json.dumps(child(case, mode, args.size, int(iters))))
        return
    print(f"solver memory, {args.size}x{args.size}, {args.threads} torch thread(s), one process per run", flush=True)
    results = []
    for case in args.cases:
        for mode in args.modes:
            for max_iter in args.iters if args.iters and case != "tdv_network" else BUDGETS[case][mode]:
                r = run(case, mode, args.size, max_iter, args.threads)
                if r is not None:
                    results.append(r)
                    print(f"  {case} {mode} {max_iter}: {r['peak_mib']:.0f} MiB, {r['seconds']:.1f} s", flush=True)
    after = max((r["peak_mib"] for r in results if r["mode"] == "after"), default=float("nan"))
    emit("", f"peak resident memory of each solver's inference, {args.size}x{args.size}, one process per run",
         "the previous defaults (weights trainable, iterations recorded)", report(results, args.limit_mib),
         "peak before / after at the same budget", f"largest peak now {after / 1024:.2f} GiB")


if __name__ == "__main__":
    main()

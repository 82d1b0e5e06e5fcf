r"""Hypergradients of bilevel learning: implicit differentiation against unrolling and Jacobian-free backpropagation.

:class:`deepinv_ext.algorithms.BilevelReconstructor` trains a regulariser through the minimiser of
:math:`\frac12\|x - y\|^2 + \lambda R_\theta(x)` (denoising, a small TDV, batch of 4). One training step (lower-level
solve, upper-level loss, backward) is timed for each hypergradient, with the lower level run for exactly ``--iters``
accelerated iterations; memory is the bytes autograd saves for backward during the step's forward
(:class:`deepinv_ext.algorithms.SavedTensorMeter`; on CUDA also the peak of the whole step, conjugate-gradient
solve included), and accuracy the relative distance to the implicit hypergradient at a tight solve (``1e-10``).
The anchor is unrolling, whose memory grows with the iterations::

    python benchmarks/bilevel_hypergradient.py              # CPU: about a minute
    python benchmarks/bilevel_hypergradient.py --device cuda --size 128 --iters 200
"""

from __future__ import annotations

import argparse
import time
import warnings

import deepinv as dinv
import torch
from _summary import emit

from deepinv_ext.algorithms import BilevelReconstructor, NotConvergedWarning, SavedTensorMeter
from deepinv_ext.priors import TDV


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iters", type=int, default=50, help="lower-level iterations of every step")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def hypergradient(model: BilevelReconstructor, y: torch.Tensor, x: torch.Tensor, device: str) -> dict:
    """One training step: its time, saved bytes, CUDA peak and the flat hypergradient."""
    physics = dinv.physics.Denoising()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    with SavedTensorMeter() as meter:
        loss = 0.5 * (model(y, physics) - x).pow(2).sum() / x.shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    peak = None
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return {"s": time.perf_counter() - t0, "saved_MB": meter.bytes / 2**20, "cuda_peak_MB": peak,
            "grad": torch.cat([g.reshape(-1) for g in grads])}


def main(argv=None) -> dict:
    a = parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(a.batch, 1, a.size, a.size, generator=g), 3, 1, 1).to(a.device)
    y = x + 0.1 * torch.randn(x.shape, generator=g).to(a.device)

    def model(mode: str, **solve) -> BilevelReconstructor:
        torch.manual_seed(0)
        prior = TDV(num_features=8, num_macro_blocks=1, num_scales=2)
        return BilevelReconstructor(prior, lam=0.5, hypergradient=mode, **solve).to(a.device)

    fixed = {"grad_tol": 1e-12, "max_iter": a.iters}  # every mode runs exactly --iters iterations, by design
    warnings.filterwarnings("ignore", category=NotConvergedWarning, message="VariationalSolver")
    reference = hypergradient(model("implicit", grad_tol=1e-6, max_iter=20 * a.iters, cg_tol=1e-10), y, x,
                              a.device)["grad"]
    results = {}
    for mode in ("unrolled", "implicit", "jfb"):
        runs = [hypergradient(model(mode, **fixed), y, x, a.device) for _ in range(a.repeats)]
        best = min(runs, key=lambda r: r["s"])
        best["error"] = float((best["grad"] - reference).norm() / reference.norm())
        results[mode] = best
        cuda = "" if best["cuda_peak_MB"] is None else f" | CUDA peak {best['cuda_peak_MB']:8.1f} MB"
        print(f"{mode:>9s}: {best['s']:.3f} s/step | saved {best['saved_MB']:8.2f} MB{cuda} | "
              f"relative error {best['error']:.2e}")
    ref = results["unrolled"]
    ratios = {f"{mode} memory": r["saved_MB"] / ref["saved_MB"] for mode, r in results.items() if mode != "unrolled"}
    ratios |= {f"{mode} time": r["s"] / ref["s"] for mode, r in results.items() if mode != "unrolled"}
    ratios |= {f"{mode} error": r["error"] for mode, r in results.items()}
    emit("", f"bilevel training step, TDV (8 features, 2 scales) denoising {a.size}x{a.size}, batch {a.batch}, "
             f"{a.iters} lower-level iterations", "unrolled differentiation", ratios,
         "memory and time: ours / unrolled's (saved-for-backward bytes); error: relative distance to the "
         "implicit hypergradient of a tight solve", device=a.device)
    return results


if __name__ == "__main__":
    main()

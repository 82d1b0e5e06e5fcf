r"""Benchmark: :class:`deepinv_ext.physics.AstraCT` against deepinv's CT operators, side by side in one run.

Problem: time the forward projection :math:`A` and back-projection :math:`A^\top` of 2D parallel-beam CT on a
batch of images, and measure the adjoint error
:math:`|\langle Ax, y\rangle - \langle x, A^\top y\rangle| / |\langle Ax, y\rangle|` of each path.

- CPU (batch 8, 256x256, 180 views): AstraCT (sparse backend, the ``"auto"`` choice at this size, and ASTRA's CPU
  projector) against :class:`deepinv.physics.Tomography`; ratio = deepinv time / ours.
- GPU, when CUDA and ASTRA's CUDA build are there (batch 8, 512x512, 360 views): AstraCT's CUDA path (and the
  sparse backend on the GPU at 256x256/180) against :class:`deepinv.physics.TomographyWithAstra` and
  :class:`deepinv.physics.Tomography`.

Run: ``python benchmarks/ct_operator.py`` (``--smoke`` for a quick small run, ``--device cpu|cuda|all``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import deepinv as dinv
import torch
from _summary import emit

from deepinv_ext.physics import AstraCT


def _timer(fn: Callable[[], torch.Tensor], reps: int, cuda: bool) -> float:
    """Median wall time of ``fn`` in milliseconds (after one warm-up call; CUDA synchronised)."""
    fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def adjoint_error(physics: dinv.physics.LinearPhysics, x: torch.Tensor) -> float:
    """The relative adjoint error for a Gaussian (white-noise) sinogram ``y``, the hardest case."""
    y = torch.randn_like(physics.A(x))
    lhs = (physics.A(x).double() * y.double()).sum()
    rhs = (x.double() * physics.A_adjoint(y).double()).sum()
    return float((lhs - rhs).abs() / lhs.abs())


def _row(name: str, a_ms: float, at_ms: float, ref: tuple[float, float] | None, extra: str = "") -> dict:
    """Print a row; return its ratios (anchor time / this row's) for A and A^T, empty without an anchor."""
    ratios = {"A": ref[0] / a_ms, "A^T": ref[1] / at_ms} if ref else {}
    ratio = f"{ratios['A']:8.1f}x {ratios['A^T']:8.1f}x" if ref else f"{'-':>9} {'-':>9}"
    print(f"{name:<46} {a_ms:10.2f} {at_ms:10.2f} {ratio}  {extra}")
    return ratios


def _named(prefix: str, ratios: dict) -> dict:
    return {f"{prefix} {k}": v for k, v in ratios.items()}


def _header(title: str) -> None:
    print(f"\n{title}\n{'operator':<46} {'A [ms]':>10} {'A^T [ms]':>10} {'ratio A':>9} {'ratio AT':>9}")


def _time_physics(physics, x: torch.Tensor, reps: int, cuda: bool) -> tuple[float, float]:
    with torch.no_grad():
        y = physics.A(x)
        return _timer(lambda: physics.A(x), reps, cuda), _timer(lambda: physics.A_adjoint(y), reps, cuda)


def bench_cpu(size: int, views: int, batch: int, reps: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(batch, 1, size, size)
    _header(f"CPU ({torch.get_num_threads()} threads): batch {batch}, {size}x{size}, {views} views")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_op = dinv.physics.Tomography(angles=views, img_width=size, normalize=False)
    ref = _time_physics(ref_op, x, reps, False)
    _row("deepinv Tomography (anchor)", *ref, None, f"adjoint error {adjoint_error(ref_op, x):.1e}")
    start = time.perf_counter()
    sparse = AstraCT(size, views, backend="sparse")
    sparse.A(x[:1])
    setup = time.perf_counter() - start
    ratios = _named("sparse", _row("AstraCT sparse (linear; = auto here)", *_time_physics(sparse, x, reps, False), ref,
                                   f"adjoint error {adjoint_error(sparse, x):.1e}; matrix "
                                   f"{sparse._matrix().nnz / 1e6:.1f}M nnz, setup {setup:.1f} s (build or disk cache)"))
    for projector in ("linear", "line", "strip"):
        op = AstraCT(size, views, projector=projector, backend="astra")
        got = _row(f"AstraCT astra CPU ({projector})", *_time_physics(op, x, reps, False), ref,
                   f"adjoint error {adjoint_error(op, x):.1e}")
        ratios.update(_named(f"ASTRA {projector}", got) if projector == "linear" else {})
    for projector in ("line_fanflat", "strip_fanflat"):
        op = AstraCT(size, views, geometry="fanbeam", projector=projector, backend="astra")
        _row(f"AstraCT astra CPU fan beam ({projector})", *_time_physics(op, x, reps, False), None,
             f"adjoint error {adjoint_error(op, x):.1e}")
    emit("", f"A and A^T, 2D parallel beam, batch {batch}, {size}x{size}, {views} views", "deepinv Tomography",
         ratios, "anchor time / ours")


def bench_gpu(size: int, views: int, batch: int, reps: int, sparse_size: int, sparse_views: int) -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    x = torch.rand(batch, 1, size, size, device=device)
    _header(f"GPU ({torch.cuda.get_device_name()}): batch {batch}, {size}x{size}, {views} views")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        astra_ref = dinv.physics.TomographyWithAstra(img_size=(size, size), angles=views, normalize=False,
                                                     device=device)
        torch_ref = dinv.physics.Tomography(angles=views, img_width=size, normalize=False, device=device)
    ref = _time_physics(astra_ref, x, reps, True)
    _row("deepinv TomographyWithAstra (anchor)", *ref, None, f"adjoint error {adjoint_error(astra_ref, x):.1e}")
    ref_torch = _time_physics(torch_ref, x, reps, True)
    _row("deepinv Tomography", *ref_torch, None, f"adjoint error {adjoint_error(torch_ref, x):.1e}")
    ours = AstraCT(size, views, backend="astra", device=device)
    timings = _time_physics(ours, x, reps, True)
    ratios = _row("AstraCT astra CUDA (ratio vs TomographyWithAstra)", *timings, ref,
                  f"adjoint error {adjoint_error(ours, x):.1e}")
    ratios.update(_named("vs Tomography", _row("AstraCT astra CUDA (ratio vs Tomography)", *timings, ref_torch)))
    emit("", f"A and A^T by ASTRA's CUDA projector, 2D parallel beam, batch {batch}, {size}x{size}, {views} views",
         "deepinv TomographyWithAstra (and Tomography)", ratios, "anchor time / ours", device="cuda")
    fan = AstraCT(size, views, geometry="fanbeam", backend="astra", device=device)
    _row("AstraCT astra CUDA fan beam (per sample)", *_time_physics(fan, x, reps, True), None,
         f"adjoint error {adjoint_error(fan, x):.1e}")
    if sparse_size:
        xs = torch.rand(batch, 1, sparse_size, sparse_size, device=device)
        _header(f"GPU sparse: batch {batch}, {sparse_size}x{sparse_size}, {sparse_views} views")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            astra_small = dinv.physics.TomographyWithAstra(img_size=(sparse_size, sparse_size), angles=sparse_views,
                                                           normalize=False, device=device)
        ref_small = _time_physics(astra_small, xs, reps, True)
        _row("deepinv TomographyWithAstra (anchor)", *ref_small, None)
        cuda_small = AstraCT(sparse_size, sparse_views, backend="astra", device=device)
        _row("AstraCT astra CUDA", *_time_physics(cuda_small, xs, reps, True), ref_small,
             f"adjoint error {adjoint_error(cuda_small, xs):.1e}")
        start = time.perf_counter()
        sparse = AstraCT(sparse_size, sparse_views, backend="sparse", device=device)
        sparse.A(xs[:1])
        setup = time.perf_counter() - start
        _row("AstraCT sparse (cuSPARSE, exact adjoint)", *_time_physics(sparse, xs, reps, True), ref_small,
             f"adjoint error {adjoint_error(sparse, xs):.1e}; {sparse._matrix().nnz / 1e6:.0f}M nnz, "
             f"setup {setup:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--smoke", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--sparse-size", type=int, default=256, help="image side of the GPU sparse-backend run")
    parser.add_argument("--sparse-views", type=int, default=180, help="views of the GPU sparse-backend run")
    args = parser.parse_args()
    reps = args.reps or (2 if args.smoke else 5)
    if args.device in ("cpu", "all"):
        bench_cpu(*((64, 45, 4) if args.smoke else (256, 180, 8)), reps)
    if args.device in ("cuda", "all"):
        if not torch.cuda.is_available():
            print("\nGPU: skipped (no CUDA device)")
            emit("", "A and A^T by ASTRA's CUDA projector, batch 8, 512x512, 360 views", "deepinv TomographyWithAstra",
                 {}, device="cuda", needs="a CUDA GPU and ASTRA's CUDA build")
            return
        gpu = (128, 90, 4, 64, 45) if args.smoke else (512, 360, 8, args.sparse_size, args.sparse_views)
        bench_gpu(gpu[0], gpu[1], gpu[2], max(reps, 20) if not args.smoke else reps, gpu[3], gpu[4])


if __name__ == "__main__":
    main()

r"""Benchmark: an :class:`~deepinv_ext.physics.AstraCT` split into view blocks (:mod:`deepinv_ext.physics.split`)
against the single operator, side by side in one run.

Problem: time the forward projection :math:`A` and back-projection :math:`A^\top` of 2D parallel-beam CT on a batch
of images with

- the single ``AstraCT`` (the anchor; in process 0 only);
- ``K`` view blocks stacked in one process (:meth:`~deepinv_ext.physics.split.PhysicsBlocks.stack`), in process 0;
- under ``torchrun`` with ``N`` processes, the ``K`` blocks spread over the processes through
  :mod:`deepinv.distributed` (:meth:`~deepinv_ext.physics.split.PhysicsBlocks.distribute`: each process builds
  only its own blocks, on its own GPU or on the CPU), timed end to end through
  :class:`~deepinv_ext.physics.split.ConcatenatedLinearPhysics`: :math:`A` includes deepinv's gather of every
  block's sinogram to every process, :math:`A^\top` its sum over the processes.

Ratio = single operator's time / this row's (above 1: faster than the single operator). Also printed: the relative
difference from the single operator, the set-up time (``AstraCT`` builds its sparse matrix or ASTRA projector on
first use) and, on a GPU, the peak memory of process 0. Defaults: on a GPU 512x512, 1440 views (ASTRA's CUDA
projector, ``backend="auto"``), batch 4; on the CPU 64x64, 180 views, batch 4 (seconds).

Run::

    python benchmarks/split_ct_operator.py [--size 512 --views 1440 --blocks 4 --batch 4]
    torchrun --standalone --nproc_per_node N benchmarks/split_ct_operator.py [--blocks K ...]  # K defaults to N
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _summary import emit
from deepinv.distributed import DistributedContext

from deepinv_ext.physics import AstraCT
from deepinv_ext.physics.split import ConcatenatedLinearPhysics, view_blocks


def _timer(fn: Callable[[], torch.Tensor], reps: int, device: torch.device, ctx: DistributedContext | None) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call; with ``ctx``, every process of it starts
    each call together (barrier); CUDA synchronised."""
    times = []
    for _ in range(reps + 1):
        if ctx is not None:
            ctx.barrier()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times[1:])


def _measure(physics, x: torch.Tensor, reps: int, ctx: DistributedContext | None = None) -> dict:
    """Set-up (first call), A and A^T times of ``physics`` on ``x``, and its A(x), A^T(A(x)); ``ctx``: the
    processes that apply ``physics`` together (``None``: this process alone)."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(x.device)
    start = time.perf_counter()
    with torch.no_grad():
        y = physics.A(x)
        setup = time.perf_counter() - start
        out = {"y": y, "x": physics.A_adjoint(y), "setup": setup,
               "A": _timer(lambda: physics.A(x), reps, x.device, ctx),
               "AT": _timer(lambda: physics.A_adjoint(y), reps, x.device, ctx)}
    out["memory"] = torch.cuda.max_memory_allocated(x.device) / 2**30 if cuda else None
    return out


def _row(name: str, got: dict, ref: dict | None) -> dict:
    """Print a row; return its ratios (anchor time / this row's) for A and A^T, empty without an anchor."""
    ratios = {"A": ref["A"] / got["A"], "A^T": ref["AT"] / got["AT"]} if ref else {}
    ratio = f"{ratios['A']:8.2f}x {ratios['A^T']:8.2f}x" if ref else f"{'-':>9} {'-':>9}"
    diff = "" if ref is None else (f"; difference A {_rel(got['y'], ref['y']):.1e}, "
                                   f"A^T {_rel(got['x'], ref['x']):.1e}")
    memory = "" if got["memory"] is None else f"; peak memory {got['memory']:.2f} GiB"
    print(f"{name:<44} {got['A']:9.2f} {got['AT']:9.2f} {ratio}  set-up {got['setup']:.1f} s{diff}{memory}",
          flush=True)
    return ratios


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def run(args: argparse.Namespace, ctx: DistributedContext) -> None:
    blocks_count = args.blocks or max(ctx.world_size, 2)
    x = torch.rand(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(ctx.device)
    template = AstraCT(args.size, angles=args.views, backend=args.backend, device="cpu")  # read only, never applied
    blocks = view_blocks(template, blocks_count)
    ratios = {}
    if ctx.rank == 0:
        print(f"{ctx.device} ({torch.cuda.get_device_name(ctx.device) if ctx.device.type == 'cuda' else 'CPU'}), "
              f"{ctx.world_size} process(es) x {torch.get_num_threads()} thread(s): batch {args.batch}, "
              f"{args.size}x{args.size}, {args.views} views, backend {template.backend!r}, {blocks_count} blocks "
              f"of {min(blocks.sizes)}-{max(blocks.sizes)} views\n"
              f"{'operator':<44} {'A [ms]':>9} {'A^T [ms]':>9} {'ratio A':>9} {'ratio AT':>9}", flush=True)
        single = AstraCT(args.size, angles=args.views, backend=template.backend, device=ctx.device)
        ref = _measure(single, x, args.reps)
        _row("single AstraCT (anchor)", ref, None)
        del single
        stacked = ConcatenatedLinearPhysics(blocks.stack(ctx.device), blocks)
        got = _row(f"{blocks_count} blocks stacked in one process", _measure(stacked, x, args.reps), ref)
        ratios.update({f"stacked {k}": v for k, v in got.items()})
        del stacked
    ctx.barrier()  # the other processes wait here (gloo's barrier sleeps: it does not slow process 0's timings)
    if ctx.world_size > 1:
        distributed = ConcatenatedLinearPhysics(blocks.distribute(ctx), blocks)
        got = _measure(distributed, x, args.reps, ctx)
        if ctx.rank == 0:
            got = _row(f"{blocks_count} blocks over {ctx.world_size} processes", got, ref)
            ratios.update({f"{ctx.world_size} processes {k}": v for k, v in got.items()})
    elif ctx.rank == 0:
        print("(run under torchrun --nproc_per_node N for the blocks spread over N processes)")
    if ctx.rank == 0:
        emit("", f"A and A^T of AstraCT split into {blocks_count} view blocks, batch {args.batch}, {args.size}x{args.size}, "
                 f"{args.views} views, backend {template.backend!r}, {ctx.world_size} process(es)",
             "the single AstraCT", ratios, "anchor time / the blocks'", device=str(ctx.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=None, help="image side (default: 512 on a GPU, 64 on the CPU)")
    parser.add_argument("--views", type=int, default=None, help="views (default: 1440 on a GPU, 180 on the CPU)")
    parser.add_argument("--blocks", type=int, default=None, help="view blocks K (default: the number of processes, "
                                                                 "at least 2)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--backend", choices=("auto", "sparse", "astra"), default="auto")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto: each process on its GPU when CUDA is there, else the CPU")
    args = parser.parse_args()
    with DistributedContext(device_mode=None if args.device == "auto" else args.device) as ctx:
        gpu = ctx.device.type == "cuda"
        args.size = args.size or (512 if gpu else 64)
        args.views = args.views or (1440 if gpu else 180)
        run(args, ctx)


if __name__ == "__main__":
    main()

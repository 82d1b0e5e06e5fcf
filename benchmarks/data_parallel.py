r"""Data-parallel training: time per step and peak memory of 1 process against N under ``torchrun``, side by side.

The workload is the TDV recipe's training (:class:`deepinv_ext.algorithms.TDVNetwork` on a TDV prior, denoising at
sigma = 25/255, supervised loss) in :class:`deepinv_ext.data_parallel.DataParallelTrainer`, the same global batch
for every process count (each of N processes computes ``batch / N`` patches). For each count the script launches
``torchrun --standalone --nproc_per_node N`` on itself (``--worker``); rank 0 stamps the clock at each optimiser step
(after the gradient all-reduce) and the median interval over ``--steps`` steps after ``--warmup`` is the time per
step. Peak memory is rank 0's ``torch.cuda.max_memory_allocated`` on a GPU, its peak resident set (``VmHWM``) on a
CPU. The ratio printed is time per step of 1 process / of N processes (the speed-up; ideal: N).

Usage::

    python benchmarks/data_parallel.py                          # CPU: 1 vs 2 gloo processes, one thread each
    python benchmarks/data_parallel.py --device cuda --processes 1 2 4 8 --features 32 --blocks 3 --scales 3 \
        --stages 10 --patch 96 --batch 32                         # the TDV paper's network and batch, NCCL
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import deepinv as dinv
import torch
from _summary import emit
from torch.utils.data import DataLoader

from deepinv_ext.algorithms import TDVNetwork
from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer
from deepinv_ext.priors import TDV


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to compare (first: anchor)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu (gloo) or cuda (NCCL, one GPU each)")
    p.add_argument("--features", type=int, default=8, help="TDV features")
    p.add_argument("--blocks", type=int, default=1, help="TDV macro-blocks")
    p.add_argument("--scales", type=int, default=2, help="TDV scales")
    p.add_argument("--stages", type=int, default=5, help="TDV network steps S")
    p.add_argument("--patch", type=int, default=32, help="training patch side")
    p.add_argument("--batch", type=int, default=8, help="global batch (split over the processes)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run as one of torchrun's processes, write here
    return p.parse_args(argv)


@dataclass
class StampedTrainer(DataParallelTrainer):
    """A :class:`DataParallelTrainer` that records the time of each optimiser step (after the all-reduce)."""

    stamps: list = field(default_factory=list)

    def check_clip_grad(self):
        norm = super().check_clip_grad()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        return norm


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with DataParallel(args.device) as parallel:
        device = parallel.device
        images = torch.rand((args.steps + args.warmup) * args.batch, 1, args.patch, args.patch)
        loader = DataLoader(dinv.datasets.TensorDataset(x=images), batch_size=args.batch, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        prior = TDV(in_channels=1, num_features=args.features, num_scales=args.scales,
                    num_macro_blocks=args.blocks)
        model = TDVNetwork(prior, steps=args.stages, sigma_train=25 / 255).to(device)
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255)).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer = StampedTrainer(model=model, physics=physics, train_dataloader=loader, epochs=1,
                                 optimizer=torch.optim.Adam(model.parameters(), lr=1e-4), online_measurements=True,
                                 device=device, save_path=None, verbose=False, show_progress_bar=False,
                                 compute_train_metrics=False, non_blocking_transfers=False, parallel=parallel)
        trainer.train()
        if parallel.is_main:
            steps = [b - a for a, b in zip(trainer.stamps[args.warmup:], trainer.stamps[args.warmup + 1:])]
            memory = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss()) / 2**20
            Path(args.worker).write_text(json.dumps({"step_s": statistics.median(steps), "memory_mib": memory,
                                                     "device": str(device), "world": parallel.world_size}))


def _peak_rss() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return float("nan")


def launch(args: argparse.Namespace, processes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        forwarded = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("processes", "worker")]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                        __file__, *forwarded, f"--worker={out}"], env=env, check=True)
        return json.loads(out.read_text())


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.batch % max(args.processes):
        raise SystemExit(f"--batch {args.batch} must split evenly over {max(args.processes)} processes")
    print(f"TDV training step: {args.features} features, {args.blocks} blocks, {args.scales} scales, S = "
          f"{args.stages}, global batch {args.batch} of {args.patch}x{args.patch}, {args.device}, "
          f"{args.threads} thread(s) a process, median of {args.steps} steps")
    print(f"{'processes':>9} {'step (ms)':>10} {'rank-0 peak (MiB)':>18} {'speed-up vs 1st':>16}")
    anchor, ratios = None, {}
    for n in args.processes:
        result = launch(args, n)
        anchor = anchor or result["step_s"]
        ratios[f"{n} processes"] = anchor / result["step_s"]
        print(f"{n:>9} {1e3 * result['step_s']:>10.1f} {result['memory_mib']:>18.0f} "
              f"{ratios[f'{n} processes']:>15.2f}x")
    emit("", f"TDV training step ({args.features} features, S = {args.stages}), global batch {args.batch} of "
             f"{args.patch}x{args.patch}, data-parallel", f"{args.processes[0]} process(es)",
         {k: v for k, v in ratios.items() if k != f"{args.processes[0]} processes"},
         "speed-up: anchor's time per step / N processes'", device=args.device)


if __name__ == "__main__":
    main()

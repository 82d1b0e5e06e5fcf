r"""TDV benchmark: our gradient and training step against the authors' code (VLOGroup/tdv), side by side.

1. :math:`\nabla R` of the published TDV\ :sub:`3` (3 macro-blocks, 3 scales, 32 features) on one 481x321 image:
   ours (:class:`deepinv_ext.priors.TDV`) against the authors' ``TDV.grad`` (their fused energy/gradient sweep,
   run with the pure-torch ``optoth`` padding stand-in of ``shared/tools``), interleaved, median time of
   ``--repeats`` calls each, the ratio printed, and the relative difference of the two gradients. With
   ``--compile MODE [MODE ...]`` also ours after ``TDV.compile_sweeps(MODE)`` (``torch.compile``; on a GPU one
   481x321 gradient is bound by kernel launches, and ``reduce-overhead`` replays CUDA graphs).
2. One training step (forward + backward of an :math:`\ell_2` loss) of the S-step network on a batch of patches:
   peak memory and time of ours with per-step checkpointing, ours differentiated naively, and the authors' ``VNet``
   differentiated naively and with their own per-step checkpointing (``efficient=True``). Each configuration runs
   in a fresh process; memory is ``torch.cuda.max_memory_allocated`` on a GPU and the growth of the peak resident
   set (``VmHWM`` - ``VmRSS`` before the step) on a CPU.

The authors' code is not part of this package: pass a checkout with ``--reference DIR`` (the folder holding
``ddr/`` and ``model.py``); without it only our figures are printed.

Usage::

    python benchmarks/tdv.py --reference /tmp/tdv-ref                       # CPU: 481x321 grad, batch 4 of 64x64
    python benchmarks/tdv.py --reference /tmp/tdv-ref --batch 32 --patch 96  # the issue's GPU setting
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _summary import emit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
WEIGHTS = ROOT / "tests" / "data" / "tdv" / "tdv3-3-25-f32-gray.pth"  # the published weights, shipped


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_reference(reference: str | None):
    if not reference:
        return None
    sys.path.insert(0, str(SHARED / "tools"))  # optoth stand-in
    sys.path.insert(0, str(Path(reference)))
    import model as ref_model  # noqa: F401  (the authors' model.py)
    from ddr.tdv import TDV as RefTDV

    return ref_model, RefTDV


def published(path: Path):
    if not path.exists():
        raise SystemExit(f"published weights not found at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def bench_grad(args, ref) -> None:
    from deepinv_ext.priors import TDV

    ck = published(args.weights)
    ours = TDV.from_checkpoint(args.weights).to(args.device)
    h, w = args.image
    x = torch.rand(1, 1, h, w, device=args.device)
    rows = [("ours", ours.grad)]
    for mode in args.compile:
        compiled = TDV.from_checkpoint(args.weights).to(args.device).compile_sweeps(mode)
        rows.append((f"ours, compile_sweeps({mode})", compiled.grad))
    if ref is not None:
        theirs = ref[1](ck["config"]["R"]["config"])
        theirs.load_state_dict({k[2:]: v for k, v in ck["model"].items() if k.startswith("R.")})
        theirs.to(args.device)
        rows.append(("authors", theirs.grad))
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    with torch.no_grad():
        outs = {name: [f(x) for _ in range(3)][-1].clone() for name, f in rows}  # warm-up (and compilation)
        for _ in range(args.repeats):
            for name, f in rows:
                sync(args.device)
                t = time.perf_counter()
                f(x)
                sync(args.device)
                times[name].append(time.perf_counter() - t)
    tf32 = ", TF32 convolutions" if args.device.startswith("cuda") and torch.backends.cudnn.allow_tf32 else ""
    print(f"\n== grad R on a {h}x{w} image ({args.device}{tf32}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}) ==")
    width = max(len(name) for name in times) + 2
    print(f"{'code':<{width}}{'median s':>12}{'min s':>10}")
    for name, ts in times.items():
        print(f"{name:<{width}}{statistics.median(ts):>12.4f}{min(ts):>10.4f}")
    what, anchor = f"grad R of the published TDV3, one {h}x{w} image{tf32}", "the authors' TDV.grad (VLOGroup/tdv)"
    if ref is None:
        emit("grad", what, anchor, {}, device=args.device, needs="the authors' code (--reference DIR)")
        return
    ratios = {}
    for name in (n for n in times if n != "authors"):
        diff = float((outs[name] - outs["authors"]).abs().max() / outs["authors"].abs().max())
        ratios[name] = statistics.median(times["authors"]) / statistics.median(times[name])
        print(f"speed-up {name} vs authors (median): {ratios[name]:.2f}x   max relative difference: {diff:.2e}")
    emit("grad", what, anchor, ratios, "anchor time / ours (median)", device=args.device)


def child(config: str, args) -> dict:
    """One training step of one configuration, in this (fresh) process."""
    import deepinv as dinv

    from deepinv_ext.algorithms import TDVNetwork

    torch.manual_seed(0)
    ck = published(args.weights)
    dev = args.device
    x = torch.rand(args.batch, 1, args.patch, args.patch, device=dev)
    y = x + 25 / 255 * torch.randn_like(x)
    if config.startswith("ours"):
        net = TDVNetwork.from_checkpoint(args.weights, checkpointing=(config == "ours-checkpointed"),
                                          trainable=True).to(dev)  # trained here: unfreeze
        net.S = args.steps
        physics = dinv.physics.Denoising()

        def run():
            return net(y, physics, sigma=25 / 255)
    else:
        ref_model, _ = load_reference(args.reference)
        cfg = dict(ck["config"], S=args.steps)
        net = ref_model.VNet(cfg, efficient=(config == "authors-checkpointed"))
        net.load_state_dict(ck["model"])
        net.to(dev)

        def run():
            return net(y, y)[-1]

    def step():
        net.zero_grad(set_to_none=True)
        loss = (run() - x).pow(2).sum()
        loss.backward()

    if args.measure == "time":
        step()  # warm-up
        times = []
        for _ in range(args.train_repeats):
            sync(dev)
            t = time.perf_counter()
            step()
            sync(dev)
            times.append(time.perf_counter() - t)
        return {"config": config, "seconds": statistics.median(times)}
    # memory: the first step (on a CPU the allocator would keep the pages of a warm-up step mapped)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_hwm()
        base = _rss_kib("VmRSS")
    step()
    sync(dev)
    peak = (torch.cuda.max_memory_allocated() - base) if dev.startswith("cuda") else (_rss_kib("VmHWM") - base) * 1024
    return {"config": config, "peak_bytes": int(peak)}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_hwm() -> None:
    try:  # writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def bench_training(args) -> None:
    configs = ["ours-checkpointed", "ours-naive"]
    if args.reference:
        configs += ["authors-naive", "authors-checkpointed"]
    results = {}
    for config in configs:
        cmd = [sys.executable, __file__, "--child", config, "--device", args.device, "--batch", str(args.batch),
               "--patch", str(args.patch), "--steps", str(args.steps), "--threads", str(args.threads),
               "--weights", str(args.weights)]
        if args.reference:
            cmd += ["--reference", args.reference]
        cmd += [flag for flag, on in (("--cudnn-benchmark", args.cudnn_benchmark), ("--no-tf32", args.no_tf32)) if on]
        results[config] = {}
        for measure in ("memory", "time"):
            env = dict(os.environ)
            if measure == "memory":  # a fixed mmap threshold makes glibc unmap freed tensors: RSS = live memory
                env["MALLOC_MMAP_THRESHOLD_"] = "65536"
            out = subprocess.run(cmd + ["--measure", measure, "--train-repeats", str(args.train_repeats)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(f"{config} ({measure}): failed\n{out.stderr[-2000:]}")
                results.pop(config)
                break
            results[config].update(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\n== one training step, S = {args.steps}, batch {args.batch} of {args.patch}x{args.patch} "
          f"({args.device}) ==")
    print(f"{'configuration':<24}{'peak MiB':>12}{'time s':>10}{'memory vs ours':>16}{'time vs ours':>14}")
    ref = results.get("ours-checkpointed")
    ratios = {}
    for name, r in results.items():
        mem_ratio = r["peak_bytes"] / ref["peak_bytes"] if ref else float("nan")
        time_ratio = r["seconds"] / ref["seconds"] if ref else float("nan")
        print(f"{name:<24}{r['peak_bytes'] / 2**20:>12.1f}{r['seconds']:>10.3f}{mem_ratio:>15.2f}x{time_ratio:>13.2f}x")
        ratios.update({f"{name} memory": mem_ratio, f"{name} time": time_ratio} if name != "ours-checkpointed" else {})
    emit("training", f"one training step of TDVNetwork, S = {args.steps}, batch {args.batch} of "
                     f"{args.patch}x{args.patch}", "ours with per-step checkpointing", ratios,
         "peak memory and time of each / anchor's",
         "" if args.reference else "the authors' VNet not run: needs their code (--reference DIR)", device=args.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="checkout of VLOGroup/tdv (folder with ddr/ and model.py)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--image", type=int, nargs=2, default=(321, 481), metavar=("H", "W"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--weights", type=Path, default=WEIGHTS, help="the published tdv3-3-25-f32-gray.pth")
    p.add_argument("--compile", metavar="MODE", nargs="+", default=[],
                   help="also time ours after TDV.compile_sweeps(MODE) for each MODE, e.g. reduce-overhead "
                        "(CUDA graphs on a GPU), default or max-autotune")
    p.add_argument("--no-tf32", action="store_true",
                   help="full float32 convolutions on the GPU (PyTorch lets cuDNN use TF32 by default)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN pick its fastest convolution algorithms (for both codes)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--train-repeats", type=int, default=2, help="timed training steps (median)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--skip-grad", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--measure", choices=("memory", "time"), default="memory", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = not args.no_tf32
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    ref = load_reference(args.reference)
    if not args.skip_grad:
        bench_grad(args, ref)
    if not args.skip_training:
        bench_training(args)


if __name__ == "__main__":
    main()

r"""Benchmark: SigpyMultiCoilMRI against its anchors, side by side in one process.

- Cartesian: :math:`A` and :math:`A^H` against deepinv's :class:`deepinv.physics.MultiCoilMRI` (same maps, mask, x;
  ours calls deepinv's operator after its input checks, so the ratio is the price of those checks).
- Non-Cartesian: :math:`A` and :math:`A^H` against deepinv's :class:`deepinv.physics.NonCartesianMRI` (mri-nufft
  with finufft) on the same radial samples, if ``mrinufft`` and ``finufft`` import (``pip install mri-nufft
  finufft``), and always against SigPy's own :class:`sigpy.mri.linop.Sense` on NumPy arrays (the wrapper's overhead).

Ratios are ours / anchor time (below 1: ours faster). Medians of ``--repeats`` runs after a warm-up, ours and the
anchor timed alternately.

Usage::

    python benchmarks/mri.py                 # 256x256, 8 coils, batch 1
    python benchmarks/mri.py --smoke         # 64x64, 4 coils, a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from _summary import emit
from deepinv.physics import MultiCoilMRI
from deepinv.physics.generator import EquispacedMaskGenerator

from deepinv_ext.physics.sigpy_mri import SigpyMultiCoilMRI


def _row(name: str, ours: Callable[[], object], anchor: Callable[[], object], repeats: int) -> float:
    """Time ours and the anchor alternately (so that load from other processes hits both alike); the ratio of the
    medians, ours / anchor."""
    ours(), anchor()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, acc in ((ours, times[0]), (anchor, times[1])):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    t_ours, t_anchor = statistics.median(times[0]), statistics.median(times[1])
    print(f"{name:<46} {1e3 * t_ours:10.2f} {1e3 * t_anchor:10.2f} {t_ours / t_anchor:8.2f}")
    return t_ours / t_anchor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--spokes", type=int, default=None, help="radial spokes (default: size/2)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="64x64, 4 coils, 3 repeats")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.coils, args.repeats = 64, 4, 3
    n, nc, b = args.size, args.coils, args.batch
    spokes = args.spokes or n // 2
    torch.manual_seed(0)
    maps = SigpyMultiCoilMRI.birdcage_maps(nc, (n, n))
    x = torch.randn(b, 2, n, n)
    print(f"{n}x{n}, {nc} coils, batch {b}, float32, torch threads {torch.get_num_threads()}")
    print(f"{'operator':<46} {'ours ms':>10} {'anchor ms':>10} {'ratio':>8}")

    mask = EquispacedMaskGenerator((n, n), acceleration=4).step(1, seed=0)["mask"]
    ours, ref = SigpyMultiCoilMRI(maps, mask=mask), MultiCoilMRI(mask=mask, coil_maps=maps, img_size=(n, n))
    y = ref.A(x)
    setting = f"multi-coil MRI, {n}x{n}, {nc} coils, batch {b}"
    emit("Cartesian", f"A and A^H, {setting}, 4x equispaced mask", "deepinv MultiCoilMRI",
         {"A": _row("Cartesian A vs deepinv MultiCoilMRI", lambda: ours.A(x), lambda: ref.A(x), args.repeats),
          "A^H": _row("Cartesian A^H vs deepinv MultiCoilMRI", lambda: ours.A_adjoint(y), lambda: ref.A_adjoint(y),
                      args.repeats)}, "ours / anchor time")

    samples = None
    try:
        from deepinv.physics import NonCartesianMRI

        anchor = NonCartesianMRI((n, n), num_shots=spokes, num_samples_per_shot=2 * n, coil_maps=maps)
        samples = torch.from_numpy(np.asarray(anchor.samples, dtype=np.float32)).reshape(-1, 2) * n
    except ImportError as err:
        print(f"deepinv NonCartesianMRI unavailable ({err}); comparing with SigPy's own linop only")
    if samples is None:
        from deepinv_ext.physics.functional import radial_trajectory

        samples = radial_trajectory((n, n), spokes, 2 * n)
    samples = samples.clamp(-n / 2, n / 2)
    ours = SigpyMultiCoilMRI(maps, trajectory=samples, dcf=None)
    y = ours.A(x)
    radial = f"A and A^H, {setting}, radial ({spokes} spokes x {2 * n})"
    if "anchor" in locals():
        emit("NUFFT vs deepinv", radial, "deepinv NonCartesianMRI (mri-nufft with finufft)",
             {"A": _row("NUFFT A vs deepinv NonCartesianMRI (finufft)", lambda: ours.A(x), lambda: anchor.A(x),
                        args.repeats),
              "A^H": _row("NUFFT A^H vs deepinv NonCartesianMRI (finufft)", lambda: ours.A_adjoint(y),
                          lambda: anchor.A_adjoint(y), args.repeats)}, "ours / anchor time")
    else:
        emit("NUFFT vs deepinv", radial, "deepinv NonCartesianMRI (mri-nufft with finufft)", {},
             needs="pip install mri-nufft finufft")

    import sigpy.mri as mr

    sense = mr.linop.Sense(maps.numpy(), coord=samples.numpy())
    xc = ours.to_torch_complex(x).numpy()
    yc = ours.to_torch_complex(y).numpy()
    emit("NUFFT vs SigPy", radial, "SigPy's linop Sense on NumPy arrays, per image",
         {"A": _row("NUFFT A vs SigPy linop Sense (per image)", lambda: ours.A(x), lambda: [sense(xi) for xi in xc],
                    args.repeats),
          "A^H": _row("NUFFT A^H vs SigPy linop Sense.H (per image)", lambda: ours.A_adjoint(y),
                      lambda: [sense.H(yi) for yi in yc], args.repeats)}, "ours / anchor time")
    print(f"non-Cartesian: {samples.shape[0]} samples ({spokes} spokes x {2 * n})")


if __name__ == "__main__":
    main()

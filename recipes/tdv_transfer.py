r"""Transfer a TDV regulariser trained for denoising, unchanged, to CT and multi-coil MRI (TDV paper, 4.3-4.4).

Problem: reconstruct :math:`x` from :math:`y = Ax + \epsilon` by minimising

.. math::

    E(x) = \frac{\lambda}{2}\|Ax - y\|_2^2 + R(x)

with the TDV regulariser :math:`R` of Kobler et al. trained for Gaussian denoising of gray natural images (the
published weights ``tdv3-3-25-f32-gray.pth`` via ``--checkpoint``), through
:class:`deepinv_ext.algorithms.VariationalSolver` (accelerated gradient descent with Lipschitz backtracking, CG
initialisation), for

(a) parallel-beam CT (:class:`deepinv_ext.physics.AstraCT`, 360 views over 180 degrees, every 4th / 8th view kept,
    Gaussian noise of ``--ct-noise`` times the largest sinogram value), against FBP;
(b) 8-coil Cartesian MRI (:class:`deepinv_ext.physics.SigpyMultiCoilMRI`, normalised SigPy birdcage maps,
    deepinv's equispaced 4x / 6x masks with 8% fully sampled centre, complex Gaussian noise of std ``--mri-noise``
    per real channel), against the zero-filled SENSE combination and CG-SENSE (its iteration count, which
    regularises by early stopping, chosen like lambda below).

A one-channel real regulariser acts on a complex image :math:`x = u + iv` as :math:`R(u) + R(v)` (real and
imaginary parts as two images; the MRI ground truth carries a smooth phase ramp of +-``--phase`` radians so that
both parts matter). The data weight :math:`\lambda` is chosen per task from a grid by PSNR on a separate
validation image (``--val-image``; grids ``--ct-lambdas``, ``--mri-lambdas``), then applied to the test image (``--test-image``); images are scikit-image's
shipped gray images in [0, 1], nothing is downloaded. PSNR (max 1) on the image (CT) or its magnitude (MRI).

Usage::

    python recipes/tdv_transfer.py --checkpoint tests/data/tdv/tdv3-3-25-f32-gray.pth --output runs/tdv_transfer
    python recipes/tdv_transfer.py --smoke --output /tmp/tdv_transfer_smoke     # < 1 min on a CPU

Outputs in ``--output``: ``results.json`` (table), ``tdv_transfer.png`` (figure), ``run.json`` (provenance). The
experiment itself is in ``tdv_transfer_run.py``.
"""

from __future__ import annotations

import argparse
import math

from recipe_help import HelpFormatter, published_tdv


def add_task_options(parser: argparse.ArgumentParser) -> None:
    """The CT and MRI problems and their baselines."""
    parser.add_argument("--ct-lambdas", type=float, nargs="+", default=[5.0, 10.0, 20.0],
                        help="CT: grid of data weights lambda, chosen on --val-image")
    parser.add_argument("--mri-lambdas", type=float, nargs="+", default=[1000.0, 3000.0],
                        help="MRI: grid of data weights lambda, chosen on --val-image")
    parser.add_argument("--max-iter", type=int, default=100, help="iterations of the variational solver")
    parser.add_argument("--ct-factors", type=int, nargs="*", default=[4, 8],
                        help="CT: angular undersampling factors of 360 views (none: no CT task)")
    parser.add_argument("--ct-noise", type=float, default=0.005,
                        help="CT: noise std relative to the largest sinogram value")
    parser.add_argument("--mri-factors", type=int, nargs="*", default=[4, 6],
                        help="MRI: accelerations of the equispaced masks (none: no MRI task)")
    parser.add_argument("--mri-noise", type=float, default=0.01, help="MRI: complex noise std per real channel")
    parser.add_argument("--coils", type=int, default=8, help="MRI: number of birdcage coils")
    parser.add_argument("--phase", type=float, default=math.pi / 8,
                        help="MRI: the ground truth's phase ramp spans -phase..+phase radians (default: pi/8)")
    parser.add_argument("--cg-iters", type=int, nargs="+", default=[5, 10, 20, 40],
                        help="CG-SENSE iterations of the baseline (early stopping regularises), chosen on --val-image")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", default=str(published_tdv()), help="published TDV weights (gray)")
    parser.add_argument("--size", type=int, default=96, help="image side (pixels)")
    parser.add_argument("--test-image", default="camera", help="scikit-image image of the table")
    parser.add_argument("--val-image", default="moon", help="scikit-image image on which lambda is chosen")
    add_task_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and the masks")
    parser.add_argument("--smoke", action="store_true",
                        help="32x32, one lambda, 3 iterations, 4 coils (seconds)")
    parser.add_argument("--output", default="runs/tdv_transfer", help="output folder (results, figure, run record)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.max_iter, args.cg_iters, args.coils = 32, 3, [5], 4
        args.ct_lambdas, args.mri_lambdas = [300.0], [3000.0]
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)  # --help and option errors answer here, before torch, deepinv and ASTRA load
    from tdv_transfer_run import run

    return run(args)


if __name__ == "__main__":
    main()

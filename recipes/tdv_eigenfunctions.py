r"""Nonlinear eigenfunctions of the published TDV regulariser on natural test images (TDV paper, Sect. 4.2, Fig. 6).

Problem (Kobler et al., CVPR 2020, eq. (15)): for an image :math:`x_0`, a saddle point of
:math:`R(x) - \frac{\lambda}{2}(\|x\|^2 - \|x_0\|^2)`, i.e. a pair with :math:`\nabla R(x) = \lambda x`, by
accelerated projected gradient descent of the TDV energy :math:`R` on the sphere through :math:`x_0`
(:func:`deepinv_ext.analysis.eigenfunctions.nonlinear_eigenfunction`), stopped at the relative residual
:math:`\|\nabla R(x) - \lambda x\| / \|\nabla R(x)\| \le` ``--tol``. TDV does not change when a constant is added to
the image (its first kernel has zero mean), so its gradient is orthogonal to constants and an eigenfunction with
:math:`\lambda \ne 0` has zero mean: the search runs among zero-mean images, on the sphere of radius
:math:`\|x_0 - \bar x_0\|`, and the figure shows :math:`x + \bar x_0`.

Images: the CBSD68 test images (``../shared/data/natural/CBSD68``, or any folder via ``--data``; ``--images`` are
indices into its files in natural name order, :class:`deepinv_ext.datasets.ImageFolderDataset`), in gray by ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B rounded to 8 bits, /255,
the BSD68 convention) or in colour with ``--color`` (and the colour weights), reduced by the integer factor
``--downscale`` (box filter; 1 = the native scale TDV was trained at) and centre-cropped to ``--size`` pixels. The
default six show stripes, a logo, a roof, a glass roof and a face, as the paper's Fig. 6 does.

Usage::

    # the default run: 6 gray images, 64x64 native-scale crops, tol 8e-4 (19 min on one loaded CPU thread)
    python recipes/tdv_eigenfunctions.py --output runs/tdv_eigen
    python recipes/tdv_eigenfunctions.py --color --output runs/tdv_eigen_color
    python recipes/tdv_eigenfunctions.py --smoke --output /tmp/tdv_eigen_smoke      # seconds

A rerun in the same ``--output`` skips the images already done (their results are saved one by one under
``images/``); results made under other options are refused. Outputs: ``results.json`` (per image: lambda, residual,
iterations, converged, and the residual re-evaluated with the regulariser in float64), ``eigenfunctions.png`` (input /
eigenfunction / lambda, as Fig. 6) and ``run.json`` (provenance). The experiment itself is in
``tdv_eigenfunctions_run.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recipe_help import CBSD68, SHIPPED_IMAGES, HelpFormatter, published_tdv

DEFAULT_IMAGES = [5, 10, 14, 46, 52, 62]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", help="TDV weights (default: the published gray ones, the colour ones with --color)")
    p.add_argument("--color", action="store_true", help="colour images and the colour weights")
    p.add_argument("--data", default=str(CBSD68), help="folder of test images")
    p.add_argument("--images", type=int, nargs="+", default=DEFAULT_IMAGES, help="indices into the folder (natural name order)")
    p.add_argument("--size", type=int, default=64, help="side of the centre crop (pixels)")
    p.add_argument("--downscale", type=int, default=1, help="integer reduction factor before the crop (box filter)")
    p.add_argument("--tol", type=float, default=8e-4,
                   help="stopping tolerance on the relative residual (the solves evaluate the float32 weights; 8e-4 "
                        "keeps the float64 recheck of every default image below 1e-3)")
    p.add_argument("--max-iter", type=int, default=3000, help="iterations per image at most")
    p.add_argument("--output", default="runs/tdv_eigenfunctions", help="output folder (results, figure, run record)")
    p.add_argument("--smoke", action="store_true",
                   help="one 16x16 crop, 30 iterations (seconds); tests/data/camera_96.png where --data is absent")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random generators (the computation draws nothing: kept for the run record)")
    args = p.parse_args(argv)
    if min(args.images) < 0 or args.size < 16 or args.downscale < 1 or not args.tol > 0 or args.max_iter < 0:
        p.error("--images must be >= 0, --size >= 16, --downscale >= 1, --tol > 0 and --max-iter >= 0")
    args.checkpoint = args.checkpoint or str(published_tdv(args.color))
    if args.smoke:
        args.images, args.size, args.downscale, args.max_iter = args.images[:1], 16, 1, 30
        if not Path(args.data).is_dir():
            args.data, args.images = str(SHIPPED_IMAGES), [0]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch and deepinv load
    from tdv_eigenfunctions_run import run

    return run(args)


if __name__ == "__main__":
    main()

r"""CT reconstruction with AstraCT: filtered back-projection against least squares, full and undersampled views.

Problem: recover a 256x256 image :math:`x` from parallel-beam sinograms :math:`y = Ax + \epsilon`
(:class:`deepinv_ext.physics.AstraCT`, 360 views over 180 degrees, Gaussian noise of ``--noise`` times the
largest sinogram value) at full sampling and at 4- and 8-fold angular undersampling (every 4th / 8th view, the
undersampling of the TDV paper). Two linear reconstructions, both through the physics' ``A_dagger``:

- FBP, ``A_dagger(y, fbp=True)``: ramp-filtered back-projection computed in torch;
- least squares, ``A_dagger(y)``: deepinv's conjugate gradients on the normal equations (``--ls-iters`` steps;
  stopping early regularises).

Images: scikit-image's Shepp-Logan phantom and random ellipse phantoms (deepinv-ext's dataset), nothing
downloaded. One operator serves all samplings: ``physics.update(angles=subset)`` selects rows of the cached system
matrix of the full set of views. Prints a PSNR/SSIM table, saves a figure and a provenance record (the experiment
itself is in ``ct_fbp_run.py``)::

    python recipes/ct_fbp.py --output runs/ct_fbp          # about a minute on a laptop CPU
    python recipes/ct_fbp.py --smoke --output runs/ct_fbp_smoke

With ``--view-blocks K`` both reconstructions go through the operator split into ``K`` blocks of consecutive views
(:mod:`deepinv_ext.physics.split`, one ``AstraCT`` per block): FBP as the blocks' FBPs weighted by their share of
the views, least squares through the blocks' ``A`` (concatenated) and ``A^T`` (summed); the results equal those
without it (to float rounding). Under ``torchrun`` the blocks spread over the processes through
``deepinv.distributed`` (gloo, CPU), each process building only its own; process 0 writes the outputs::

    torchrun --standalone --nproc_per_node 2 recipes/ct_fbp.py --view-blocks 2 --output runs/ct_fbp_split
"""

from __future__ import annotations

import argparse
import math

from recipe_help import HelpFormatter


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--output", default="runs/ct_fbp", help="output folder (table, figure, run record)")
    parser.add_argument("--size", type=int, default=256, help="image side (pixels)")
    parser.add_argument("--views", type=int, default=360, help="full number of views over 180 degrees")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 8],
                        help="angular undersampling factors (every k-th view kept)")
    parser.add_argument("--ellipses", type=int, default=2, help="number of random ellipse phantoms")
    parser.add_argument("--noise", type=float, default=0.005, help="noise std relative to the largest sinogram value")
    parser.add_argument("--ls-iters", type=int, default=30, help="conjugate-gradient steps of least squares")
    parser.add_argument("--filter", default="ramp", help="FBP filter (ramp, shepp-logan, cosine, hamming, hann)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ellipse phantoms and of the noise")
    parser.add_argument("--view-blocks", type=int, default=None,
                        help="split the operator into this many blocks of views (across the torchrun processes)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run for CI (seconds): 64x64, 96 views, one ellipse phantom, 10 CG steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.views, args.ellipses, args.ls_iters = 64, 96, 1, 10
    if args.view_blocks is not None:  # every block needs a view at every sampling
        fewest = min((math.ceil(args.views / factor) for factor in args.factors if factor > 0), default=0)
        if not 1 <= args.view_blocks <= fewest:
            parser.error(f"--view-blocks must be between 1 and the fewest views sampled ({fewest}), "
                         f"got {args.view_blocks}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch, deepinv and ASTRA load
    from ct_fbp_run import run

    return run(args)


if __name__ == "__main__":
    main()

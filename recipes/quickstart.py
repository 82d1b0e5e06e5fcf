r"""Quickstart: sparse-view CT of random ellipse phantoms, classical and learned reconstructions side by side.

Problem: recover 64x64 random ellipse phantoms (:class:`deepinv_ext.datasets.RandomEllipsesDataset`) from 60
parallel-beam views with Gaussian noise of ``--noise`` times the largest sinogram value
(:class:`deepinv_ext.physics.AstraCT`, its sparse-matrix backend with an exact adjoint; deepinv's
:class:`deepinv.physics.Tomography` where ASTRA is not installed). Compared:

- FBP: ramp-filtered back-projection;
- least squares: 30 conjugate-gradient steps on :math:`A^\top A x = A^\top y` (early stopping regularises);
- TV: :math:`\min_x \tfrac12\|Ax-y\|^2 + \lambda\,\mathrm{TV}(x)` by deepinv's proximal gradient (``PGD``, 100
  steps from the FBP), :math:`\lambda` given relative to :math:`\|A\|^2` so that it suits either physics;
- learned: a small U-Net applied to the FBP (FBPConvNet-style), trained with :class:`deepinv.Trainer` (with its
  progress bar).

It prints a PSNR/SSIM table on held-out phantoms, saves a figure (the first test image, each reconstruction with
its PSNR/SSIM, their error maps) and a provenance record (config, seed, thread count, package versions) in
``--output``, and keeps the trained network's checkpoint so that a second run resumes instead of retraining. Images
of 128x128 or less run on one torch thread unless ``--threads`` (or ``OMP_NUM_THREADS``) says otherwise (see
:func:`torch_threads`). About 40 s on a 2-core CPU, downloads nothing; the experiment itself is in
``quickstart_run.py``::

    python recipes/quickstart.py --output runs/quickstart
    torchrun --nproc_per_node 2 recipes/quickstart.py --output runs/quickstart  # the U-Net trained data-parallel

Under ``torchrun`` (gloo, CPU processes) each process trains on its share of every batch of 8, the gradients
averaged; rank 0 alone prints, writes and reconstructs.
"""

from __future__ import annotations

import argparse
import os

from recipe_help import HelpFormatter

SMALL_IMAGE = 128  # images up to SMALL_IMAGE x SMALL_IMAGE run on one torch thread by default


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--output", default="runs/quickstart",
                        help="output folder (figure, run record, checkpoints; a rerun resumes from them)")
    parser.add_argument("--size", type=int, default=64, help="image side (pixels)")
    parser.add_argument("--views", type=int, default=60, help="number of parallel-beam views over 180 degrees")
    parser.add_argument("--noise", type=float, default=0.01,
                        help="std of the Gaussian noise, relative to the largest value of the clean sinograms")
    parser.add_argument("--train-images", type=int, default=256, help="random phantoms the U-Net is trained on")
    parser.add_argument("--test-images", type=int, default=16, help="held-out phantoms of the table")
    parser.add_argument("--epochs", type=int, default=8,
                        help="training epochs of the U-Net (more epochs extend a finished run's training)")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate of the U-Net (Adam)")
    parser.add_argument("--tv-lambda", type=float, default=5e-4, help="TV weight, relative to ||A||^2")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (default: 1 for images of {SMALL_IMAGE}x{SMALL_IMAGE} or less "
                             "unless OMP_NUM_THREADS is set, else torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms, the noise and the training")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run for CI (seconds): 32x32, 30 views, 16 training images, one epoch")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"argument --threads: expected a positive integer, got {args.threads}")
    if args.smoke:
        args.size, args.views, args.train_images, args.test_images, args.epochs = 32, 30, 16, 4, 1
    return args


def torch_threads(threads: int | None, size: int) -> tuple[int | None, str]:
    """The torch CPU thread count a run should set (``None``: leave torch's) and why.

    ``--threads`` wins; else ``OMP_NUM_THREADS``, where set, is left to torch; else images of ``SMALL_IMAGE`` pixels
    a side or less get one thread, larger ones torch's default. Why, measured on a 2-core CPU with the default
    quickstart (64x64): on an idle machine two threads save a little (the whole run 32 s instead of 40 s), but with
    one other busy process an epoch of training takes 6 to 13 times longer on two threads than on one (26-77 s
    against 4-6 s), and the README's table is the one-thread result (the thread count changes the last digit).
    """
    if threads is not None:
        return threads, "--threads"
    if "OMP_NUM_THREADS" in os.environ:
        return None, "OMP_NUM_THREADS"
    if size <= SMALL_IMAGE:
        return 1, f"images of {SMALL_IMAGE}x{SMALL_IMAGE} or less; --threads to change"
    return None, f"torch's default for images over {SMALL_IMAGE}x{SMALL_IMAGE}"


def main(argv=None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)  # --help and option errors answer here, before torch, deepinv and ASTRA load
    import torch
    from quickstart_run import run

    from deepinv_ext.data_parallel import DataParallel

    threads, reason = torch_threads(args.threads, args.size)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    args.threads = torch.get_num_threads()  # recorded in run.json
    try:
        with DataParallel("cpu") as parallel:  # one process, or each of torchrun's (gloo: the quickstart is CPU work)
            if parallel.is_main:
                print(f"torch threads: {args.threads} ({reason})")
            return run(args, parallel)
    finally:
        torch.set_num_threads(previous)  # a caller's own setting (tests call main) is left as it was


if __name__ == "__main__":
    main()

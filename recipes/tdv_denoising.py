r"""Train (or evaluate) a Total Deep Variation network for Gaussian denoising.

Problem (Kobler et al., CVPR 2020, section 5.1): recover a gray image :math:`x` from :math:`y = x + \epsilon`,
:math:`\epsilon \sim \mathcal{N}(0, \sigma^2 I)`, :math:`\sigma = 25/255`, by :math:`S = 10` semi-implicit steps
of the gradient flow of :math:`\frac{\lambda}{2}\|x - y\|^2 + \mathrm{TDV}(x)`
(:class:`deepinv_ext.algorithms.TDVNetwork`), trained end to end with an :math:`\ell_2` loss on patches. The
paper trains on the 400 images of BSDS500's train and test splits (96x96 patches, batch 32) and tests on BSDS68.

Usage::

    # train on BSDS500 (deepinv's dataset class, root holding BSDS500-master/) and test on its val split
    python recipes/tdv_denoising.py --data /path/to/bsds --output runs/tdv
    # any folder of images: DIR/train/* and DIR/test/*
    python recipes/tdv_denoising.py --data DIR --layout folder --output runs/tdv
    # evaluate the published weights of VLOGroup/tdv instead of training
    python recipes/tdv_denoising.py --checkpoint tdv3-3-25-f32-gray.pth --data /path/to/bsds --output runs/pub
    # CPU smoke run (< 1 min): a small TDV on scikit-image's shipped images
    python recipes/tdv_denoising.py --smoke --output /tmp/tdv_smoke
    # data-parallel training: one process per GPU (or CPU process, gloo), --batch-size global (split evenly)
    torchrun --nproc_per_node 4 recipes/tdv_denoising.py --data /path/to/bsds --output runs/tdv

Rerunning the same training command resumes from the newest checkpoint in ``OUTPUT/checkpoints`` (or pass
``--resume FILE``); checkpoints trained under other options (all but the output, the number of epochs and the
devices) are refused. Under ``torchrun`` (``--nproc_per_node N``, also ``--nnodes``) each process trains on ``1/N``
of every batch with the gradients averaged; rank 0 alone prints, writes the checkpoints and tests, and the
checkpoints resume with any number of processes. Outputs: ``results.json`` (PSNR table), ``denoising.png`` (noisy /
TDV / clean), ``run.json`` (provenance record) and the trainer's checkpoints. The experiment itself is in
``tdv_denoising_run.py``.
"""

from __future__ import annotations

import argparse

from recipe_help import HelpFormatter, data_parallel, setup_torch


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The TDV network, its initial parameters and its training."""
    p.add_argument("--sigma", type=float, default=25.0, help="noise level on the 0..255 scale")
    p.add_argument("--steps", type=int, default=10, help="S, semi-implicit gradient-flow steps of the network")
    p.add_argument("--features", type=int, default=32, help="feature channels of the TDV regulariser")
    p.add_argument("--scales", type=int, default=3, help="scales of each macro-block (U-Net levels)")
    p.add_argument("--macro-blocks", type=int, default=3, help="macro-blocks of the TDV regulariser")
    p.add_argument("--T-init", type=float, default=0.001, help="initial stopping time T of the gradient flow")
    p.add_argument("--lmbda-init", type=float, default=0.01, help="initial data weight lambda")
    p.add_argument("--patch", type=int, default=96, help="side of the training patches")
    p.add_argument("--batch-size", type=int, default=32, help="training patches per batch")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (more epochs extend a finished training)")
    p.add_argument("--iterations-per-epoch", type=int, default=100,
                   help="smoke runs only: batches per epoch of random patches")
    p.add_argument("--max-batch-steps", type=int, default=10**10, help="stop the training after this many batches")
    p.add_argument("--lr", type=float, default=4e-4, help="learning rate (Adam)")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data", help="dataset root (BSDS500: the folder holding BSDS500-master/); required unless --smoke")
    p.add_argument("--layout", choices=("bsds500", "folder"), default="bsds500",
                   help="bsds500: deepinv's BSDS500 (train split to train, val to test); folder: DIR/train/*, "
                        "DIR/test/*")
    p.add_argument("--output", default="runs/tdv_denoising", help="output folder (results, figure, checkpoints)")
    p.add_argument("--checkpoint", help="published .pth to evaluate instead of training")
    p.add_argument("--resume", help="trainer checkpoint to resume (default: newest in OUTPUT/checkpoints)")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run on shipped images (< 1 min)")
    add_training_options(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda where available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patches, the noise and the initialisation")
    args = p.parse_args(argv)
    if args.smoke:
        args.features, args.macro_blocks, args.steps, args.patch = 8, 1, 4, 32
        args.batch_size, args.epochs, args.iterations_per_epoch, args.lr = 8, 3, 6, 5e-3
        args.T_init, args.lmbda_init = 0.01, 0.5
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch and deepinv load
    setup_torch(args)
    from tdv_denoising_run import run

    with data_parallel(args) as parallel:  # one process, or each of torchrun's
        return run(args, parallel)


if __name__ == "__main__":
    main()

r"""Sensitivity of a learned TDV flow to its training set: Theorem 3.2 and Fig. 7 of the TDV paper.

Two TDV\ :sub:`1` denoising networks (:class:`deepinv_ext.algorithms.TDVNetwork`, one macro-block, :math:`S`
semi-implicit steps, trained at :math:`\sigma = 25/255` on random patches with deepinv's Trainer) differ only in their
training set: the same initialisation, seed and options, trained on (A) all of scikit-image's shipped natural images
except ``camera`` (the cameraman is in the Set12 test set) and on (B) ``--subset`` of them drawn with
``--subset-seed``. On gray test images (BSD68: the colour PNGs of ``--data``, ITU-R BT.601 luma rounded to 8 bits;
``tests/data/camera_96.png`` where the folder is absent) with Gaussian noise from ``--noise-seed``, both flows run from
the same noisy image, and :func:`deepinv_ext.analysis.sensitivity.tdv_sensitivity` gives at each step :math:`k` the
observed RMSE between them and the computable bound of the theorem,

.. math::

    \|x_k - \tilde x_k\| \le \sum_{r<k} \big(\|P_\tau\|(1 + tL)\big)^{k-1-r}\,\delta_r,

with :math:`L` the local Lipschitz constant of the reference network's :math:`\nabla R` estimated from the sequences
(each network serves once as the reference: pairs A|B and B|A), beside the tighter bound with the secant :math:`L_k`
of each step, the paper's looser one with split :math:`\delta_k`, and the tightest, with the exact expansion
:math:`\rho_k \le 1 + tL_k` of each gradient step. The paper's Fig. 7 (trained on BSDS400 and on 10
of its images) shows the RMSE roughly constant in :math:`k` and the bound above it and efficient.

The default sizes fit a CPU (each training about 15-25 minutes on one thread): TDV\ :sub:`1` with 16 features (the
paper's has 32) and 3 scales, :math:`S = 10`, 25 epochs of 16 batches of 8 random 64x64 patches of the training
images resized to 256x256, Adam at 4e-4 from :math:`T = 0.01`, :math:`\lambda = 0.2`; 8 whole BSD68 test images.

Usage::

    python recipes/tdv_sensitivity.py --output runs/tdv_sensitivity
    python recipes/tdv_sensitivity.py --smoke --output /tmp/tdv_sensitivity_smoke     # seconds
    torchrun --nproc_per_node 2 recipes/tdv_sensitivity.py --output runs/tdv_sensitivity  # data-parallel trainings

Rerunning the command resumes each training from the newest checkpoint in ``OUTPUT/A/checkpoints`` and
``OUTPUT/B/checkpoints``. Under ``torchrun`` both trainings are data-parallel (``--batch-size`` is the global batch,
split evenly over the processes) and rank 0 alone prints, writes and evaluates. Outputs: ``results.json`` (trained
:math:`T`, :math:`\lambda`, PSNRs, the RMSE, the bounds and their ratios per step and image),
``tdv_sensitivity.png`` (Fig. 7's shape), ``run.json`` (provenance). The experiment is in
``tdv_sensitivity_run.py``.
"""

from __future__ import annotations

import argparse

from recipe_help import CBSD68, HelpFormatter, data_parallel, setup_torch
from tdv_denoising import add_training_options

FULL = {"features": 16, "scales": 3, "macro_blocks": 1, "steps": 10, "patch": 64, "batch_size": 8, "epochs": 25,
        "iterations_per_epoch": 16, "T_init": 0.01, "lmbda_init": 0.2}
SMOKE = {"features": 4, "scales": 2, "steps": 4, "patch": 24, "batch_size": 4, "epochs": 1, "iterations_per_epoch": 2,
         "train_size": 48, "test_images": 1, "crop": 48, "lr": 5e-3, "dtype": "float64"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                                conflict_handler="resolve")  # tdv_denoising's --iterations-per-epoch is redefined
    p.add_argument("--data", default=str(CBSD68),
                   help="folder of colour test images (BSD68's CBSD68), converted to gray; where absent: "
                        "tests/data/camera_96.png")
    p.add_argument("--test-images", type=int, default=8, help="how many images of --data (sorted by name)")
    p.add_argument("--crop", type=int, default=0, help="centre crop of each test image to this side (0: whole)")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of the test noise (image i: seed + i)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the flows and bounds (--smoke: float64, as its two barely trained networks differ "
                        "by about float32's rounding)")
    p.add_argument("--train-size", type=int, default=256,
                   help="side to which each scikit-image training image is centre-cropped and resized")
    p.add_argument("--subset", type=int, default=10, help="images of the small training set B")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the draw of set B")
    add_training_options(p)
    p.add_argument("--iterations-per-epoch", type=int, help="batches of random patches per epoch")
    p.set_defaults(**FULL)
    p.add_argument("--output", default="runs/tdv_sensitivity", help="output folder (results, figure, checkpoints)")
    p.add_argument("--smoke", action="store_true", help="tiny networks, two batches each, one 48x48 crop (seconds)")
    p.add_argument("--device", default=None, help="torch device (default: cuda where available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the patches (both networks)")
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    for name in ("test_images", "subset", "train_size", "patch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch and deepinv load
    setup_torch(args)
    from tdv_sensitivity_run import run

    with data_parallel(args) as parallel:  # one process, or each of torchrun's
        return run(args, parallel)


if __name__ == "__main__":
    main()

r"""Bilevel-learned regularisers against adversarially trained ones, on sparse-view CT and on natural-image denoising.

Two smooth regularisers are learned by bilevel learning (:class:`deepinv_ext.algorithms.BilevelReconstructor`): the
reconstruction is the minimiser

.. math::

    \hat x(\theta, \lambda) = \arg\min_x \tfrac12\|Ax - y\|^2 + \lambda R_\theta(x),

computed by accelerated gradient descent from the FBP (the noisy image in denoising) until
:math:`\|\nabla E\| \le` ``--grad-tol`` :math:`\cdot \operatorname{median}\|A^\top y\|` per image, and
:math:`(\theta, \lambda)` are trained in :class:`deepinv.Trainer` by the supervised MSE
:math:`\|\hat x - x\|^2`, the hypergradient by implicit differentiation (conjugate gradients on Hessian-vector
products):

- **FoE**: a field-of-experts style filter bank :math:`w\sum_k \sum_{\text{pixels}} \phi_s(h_k * x)`,
  :math:`\phi_s(t) = \sqrt{t^2 + s^2} - s` (:class:`~deepinv_ext.priors.SparsifyingFilterBank`, filters
  :math:`h_k`, weight :math:`w` and :math:`\lambda` learned);
- **ACR**: the adversarial convex regulariser's architecture (:class:`~deepinv_ext.priors.ConvexAdversarialRegularizer`,
  smooth: ``--smoothing`` > 0) with :math:`\lambda` learned.

They are compared in one table with the adversarially trained AR and ACR (and FBP, TV) of ``ct_learned_regularizers.py``,
whose functions train and evaluate them here (Wasserstein critics between clean images and their FBPs, or noisy
images in denoising; :math:`\lambda` and the iteration budget chosen on validation images), on the same training
images, the same epochs and batches, and the same ACR architecture (with the same ``--smoothing``):

- **ct**: the sparse-view problem of ``ct_learned_regularizers.py`` (random-ellipse phantoms, 30 of 180 views,
  Gaussian noise of std 0.5 on the sinogram, :class:`deepinv_ext.physics.AstraCT`);
- **denoising**: gray natural images with Gaussian noise of std ``--sigma``/255, trained on random patches of
  scikit-image's images (:class:`deepinv_ext.datasets.SkimageImagesDataset`, as the smoke run of ``tdv_denoising.py``)
  and tested on centre crops of BSD68 (the BT.601 gray CBSD68 in ``../shared/data/natural``; the problem is skipped
  where it is absent).

Table (``results.md``/``results.json``): test PSNR/SSIM, training time, and lower-level iterations: per training
step for bilevel learning (mean), at test for every method. Also a figure of example reconstructions, per-epoch
checkpoints (a rerun with the same ``--output`` resumes; the adversarial ones as ``ct_learned_regularizers.py``'s)
and a provenance record::

    python recipes/bilevel_regularizers.py --output runs/bilevel_regularizers
    python recipes/bilevel_regularizers.py --smoke --output runs/bilevel_regularizers_smoke

``--ct-options`` passes further options to the AR/ACR part (``ct_learned_regularizers.py``'s, e.g.
``--ct-options "--acr-filters 8 --grid 0 1"``); its ACR options also shape the bilevel ACR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recipe_help import HelpFormatter

PROBLEMS = ("ct", "denoising")
BILEVEL = ("FoE", "ACR")


def add_problem_options(p: argparse.ArgumentParser) -> None:
    """The problems, their data and the run itself."""
    p.add_argument("--output", type=Path, default=Path("runs/bilevel_regularizers"),
                   help="output folder (table, figure, checkpoints, run record; a rerun resumes)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a CI check (seconds on a CPU)")
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS, help="problems to run")
    p.add_argument("--size", type=int, default=64, help="ct: phantom side; denoising: side of the training patches")
    p.add_argument("--image-size", type=int, default=256,
                   help="denoising: side the scikit-image training images are resized to")
    p.add_argument("--test-crop", type=int, default=96, help="denoising: side of the centre crops of BSD68")
    p.add_argument("--sigma", type=float, default=25.0, help="denoising: noise std on the 0..255 scale")
    p.add_argument("--n-train", type=int, default=2048, help="training images (ct: phantoms; denoising: patches)")
    p.add_argument("--n-val", type=int, default=8, help="validation images (the adversarial lambda choice)")
    p.add_argument("--n-test", type=int, default=16, help="test images of the table")
    p.add_argument("--device", default="cpu", help="torch device (e.g. cuda)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the noise and the training")


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Bilevel learning, and the budget shared with the adversarial training."""
    p.add_argument("--methods", nargs="+", default=list(BILEVEL), choices=BILEVEL,
                   help="bilevel-learned regularisers (AR and ACR are always trained adversarially)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs of every learned regulariser")
    p.add_argument("--batch", type=int, default=16, help="training batch size (all trainings)")
    p.add_argument("--lr", type=float, nargs=2, default=[1e-2, 1e-2], metavar=("FOE", "ACR"),
                   help="bilevel learning rates (Adam, cosine decay over the epochs)")
    p.add_argument("--smoothing", type=float, default=0.01,
                   help="smoothing of the FoE's absolute value and of both ACRs (> 0: smooth energies)")
    p.add_argument("--foe-filters", type=int, default=32, help="FoE: number of filters")
    p.add_argument("--foe-kernel", type=int, default=5, help="FoE: filter size")
    p.add_argument("--lam-init", type=float, default=0.0,
                   help="initial lambda of bilevel learning; 0: the gradient-balance rule on training pairs")
    p.add_argument("--grad-tol", type=float, default=1e-3,
                   help="lower-level tolerance on ||grad E|| per image, relative to the median ||A^T y|| of a "
                        "training batch")
    p.add_argument("--max-iter", type=int, default=200, help="lower level: maximum iterations (training and test)")
    p.add_argument("--cg-tol", type=float, default=1e-3, help="implicit derivative: relative CG tolerance")
    p.add_argument("--cg-max-iter", type=int, default=50, help="implicit derivative: maximum CG iterations")
    p.add_argument("--ct-options", default="",
                   help="further options of ct_learned_regularizers.py for the adversarial AR/ACR, their lambda "
                        "choice and the ACR architecture, one string (default: none)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    add_problem_options(p)
    add_training_options(p)
    if p.parse_known_args(argv)[0].smoke:  # smoke defaults; explicit options still win
        p.set_defaults(size=16, image_size=32, test_crop=16, n_train=8, n_val=2, n_test=2, epochs=1, batch=4,
                       foe_filters=4, foe_kernel=3, max_iter=10, cg_max_iter=5)
    args = p.parse_args(argv)
    for name in ("size", "image_size", "test_crop", "n_train", "n_val", "n_test", "epochs", "batch", "foe_filters",
                 "foe_kernel", "max_iter", "cg_max_iter", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.smoothing <= 0:
        p.error(f"--smoothing must be > 0 (the implicit derivative needs a smooth energy), got {args.smoothing}")
    if args.image_size < args.size:
        p.error(f"--image-size ({args.image_size}) must be at least --size ({args.size}), the patch side")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch, deepinv and ASTRA load
    from bilevel_regularizers_run import run

    return run(args)


if __name__ == "__main__":
    main()

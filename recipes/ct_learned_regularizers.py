r"""Learned regularisers for CT: adversarial (AR), adversarial convex (ACR) and NETT against FBP and TV.

Problem: recover 64x64 random-ellipse phantoms :math:`x` (:class:`deepinv_ext.datasets.RandomEllipsesDataset`)
from parallel-beam sinograms :math:`y = Ax + \epsilon` (:class:`deepinv_ext.physics.AstraCT`) in two settings:

- **sparse view**: 30 of 180 views (every 6th), Gaussian noise of standard deviation ``--sigma`` on the sinogram;
- **low dose**: all 180 views, post-log Poisson noise (deepinv's ``LogPoissonNoise``) at ``--photons`` incident
  photons per ray and attenuation scale ``--mu``.

Each learned regulariser :math:`R_\theta` is trained on the same phantoms inside :class:`deepinv.Trainer`
(``ct_learned_regularizers_train.py``): AR (:class:`~deepinv_ext.priors.AdversarialRegularizer`) and ACR
(:class:`~deepinv_ext.priors.ConvexAdversarialRegularizer`, an input-convex network with a sparsifying filter bank)
as Wasserstein critics between clean phantoms and their ramp-filtered FBPs, with gradient penalty
(:class:`~deepinv_ext.losses.WassersteinCriticLoss`); NETT (:class:`~deepinv_ext.priors.NETT`) by
:class:`~deepinv_ext.losses.NETTLoss`. A test image is then reconstructed by (``ct_learned_regularizers_evaluate.py``)

.. math::

    \hat x = \arg\min_x \tfrac12\|Ax - y\|^2 + \lambda R(x),

by accelerated gradient descent from the Hann-filtered FBP (:class:`deepinv_ext.algorithms.VariationalSolver`),
TV (deepinv's ``TVPrior``) by FISTA (:class:`~deepinv_ext.algorithms.fista.FISTASolver`). Every solve stops by its
relative change (``--tol``) or after an iteration budget :math:`K`, never by the ground truth. With the default
``--lambda-rule validation`` the pair :math:`(\lambda, K)` of best mean PSNR on validation phantoms is chosen among
:math:`\lambda_0 2^k` (``--grid``, :math:`\lambda_0` the gradient-balance heuristic) and ``--budgets``
(:func:`~deepinv_ext.algorithms.parameter_choice.select_lambda_and_budget`); ``heuristic`` takes :math:`\lambda_0`,
``discrepancy`` Morozov's principle. The AR critic is not coercive, so its solves add ``--ar-eps`` times the squared
distance to :math:`[0, 1]^n`. Every ``--select-every`` epochs the regulariser is scored by that choice on the
validation phantoms and the best epoch is kept (model selection).

Prints a PSNR/SSIM table (also ``results.md``/``results.json``), each regulariser's profile along the segment from
clean images to their FBPs, the convexity checks of the trained ACR, and saves a figure, per-epoch checkpoints (a
rerun with the same ``--output`` resumes; a checkpoint of other training options is refused) and a provenance
record. ``--methods`` trains and evaluates a subset, ``--device cuda`` runs on a GPU, ``--texture t`` shades the
ellipses with intensity ramps. The README gives the results of the default run and of the variants::

    python recipes/ct_learned_regularizers.py --output runs/ct_learned_regularizers
    python recipes/ct_learned_regularizers.py --smoke --output runs/ct_learned_regularizers_smoke

Under ``torchrun`` the training is data-parallel (:mod:`deepinv_ext.data_parallel`): each of the N processes (one
GPU each with ``--device cuda``) trains on ``--batch``/N of every batch, gradients averaged; rank 0 alone scores the
epochs, evaluates, prints and writes, and its checkpoints resume in any number of processes::

    torchrun --nproc_per_node 4 recipes/ct_learned_regularizers.py --device cuda --output runs/ct_learned_regularizers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recipe_help import HelpFormatter

METHODS = ("FBP", "TV", "AR", "ACR", "NETT")
LEARNED = ("AR", "ACR", "NETT")


def add_problem_options(p: argparse.ArgumentParser) -> None:
    """The data, the two CT problems and the run itself."""
    p.add_argument("--output", type=Path, default=Path("runs/ct_learned_regularizers"),
                   help="output folder (tables, figure, checkpoints, run record; a rerun resumes)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a CI check (< 2 min on a CPU)")
    p.add_argument("--size", type=int, default=64, help="phantom side (pixels)")
    p.add_argument("--n-train", type=int, default=2048, help="training phantoms")
    p.add_argument("--n-val", type=int, default=8, help="validation phantoms (choice of lambda, model selection)")
    p.add_argument("--n-test", type=int, default=16, help="test phantoms of the table")
    p.add_argument("--texture", type=float, default=0.0,
                   help="amplitude of linear intensity ramps inside the ellipses (0: piecewise constant)")
    p.add_argument("--problems", nargs="+", default=["sparse_view", "low_dose"], choices=["sparse_view", "low_dose"],
                   help="CT problems to run")
    p.add_argument("--sigma", type=float, default=0.5, help="sparse view: sinogram noise std")
    p.add_argument("--photons", type=float, default=1000.0, help="low dose: incident photons per ray (N0)")
    p.add_argument("--mu", type=float, default=1 / 50, help="low dose: attenuation scale of LogPoissonNoise")
    p.add_argument("--methods", nargs="+", default=list(LEARNED), choices=LEARNED,
                   help="learned regularisers to train and evaluate (FBP and TV always run)")
    p.add_argument("--device", default="cpu", help="torch device of the training and the solves (e.g. cuda)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these small images)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantoms, the noise and the training")


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The regularisers and their training (Adam with a cosine decay of the learning rate over the epochs)."""
    p.add_argument("--epochs", type=int, nargs=3, default=[20, 8, 10], metavar=("AR", "ACR", "NETT"),
                   help="training epochs of each regulariser")
    p.add_argument("--batch", type=int, default=16, help="training batch size")
    p.add_argument("--lr", type=float, nargs=3, default=[1e-3, 1e-2, 2e-3], metavar=("AR", "ACR", "NETT"),
                   help="initial learning rates (Adam, cosine decay over the epochs)")
    p.add_argument("--mu-gp", type=float, default=10.0, help="gradient-penalty weight")
    p.add_argument("--ar-eps", type=float, default=1.0,
                   help="AR: weight of eps*dist(x, [0, 1]^n)^2 added for the reconstruction (coercivity); 0 = plain AR")
    p.add_argument("--ar-noise", type=float, default=0.0,
                   help="AR: largest noise std of the noisy clean images that replace half of each artefact batch "
                        "(WassersteinCriticLoss noise_level); 0 = Lunz et al.'s training")
    p.add_argument("--acr-noise", type=float, default=0.0, help="ACR: the same as --ar-noise")
    p.add_argument("--ar-descent", type=int, default=3,
                   help="AR: normalised gradient steps on the critic from the first half of each artefact batch, "
                        "whose end points replace it (WassersteinCriticLoss descent_steps); 0 = off")
    p.add_argument("--acr-descent", type=int, default=3, help="ACR: the same as --ar-descent")
    p.add_argument("--acr-filters", type=int, default=16, help="ACR: hidden channels of its input-convex network")
    p.add_argument("--acr-layers", type=int, default=6, help="ACR: layers of its input-convex network")
    p.add_argument("--acr-smoothing", type=float, default=0.0,
                   help="ACR: > 0 replaces the leaky ReLU by its smooth convex version (Lipschitz gradient)")
    p.add_argument("--acr-sfb-filters", type=int, default=320,
                   help="ACR: filters of its sparsifying filter bank (Mukherjee et al.: 320); 0 = the ICNN alone")
    p.add_argument("--nett-width", type=int, default=16, help="NETT: channels of its U-Net")
    p.add_argument("--nett-noise", type=float, default=0.1,
                   help="NETT: largest std of the Gaussian perturbations n of clean images it also learns to "
                        "return, Phi(x + n) = n (NETTLoss noise_level); 0 = Li et al.'s loss")
    p.add_argument("--nett-descent", type=int, default=0,
                   help="NETT: normalised gradient steps on R from the artefact image, whose end point Phi also "
                        "learns (0: off)")
    p.add_argument("--train-filter", default="ramp", help="FBP filter of the training artefact images")


def add_evaluation_options(p: argparse.ArgumentParser) -> None:
    """The choice of lambda and of the iteration budget, the solves and the model selection."""
    p.add_argument("--lambda-rule", default="validation", choices=["validation", "heuristic", "discrepancy"],
                   help="choice of lambda (and budget K): best on the validation phantoms, the gradient-balance "
                        "heuristic lambda0, or Morozov's discrepancy principle")
    p.add_argument("--grid", type=int, nargs="+", default=[-1, 0, 1, 2], help="exponents k of lambda0*2^k")
    p.add_argument("--iters", type=int, default=300, help="max iterations of the test solves")
    p.add_argument("--val-iters", type=int, default=300, help="max iterations of the validation solves")
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 30, 50, 100, 200, 300],
                   help="iteration budgets K scored along each validation solve (lambda and K chosen jointly)")
    p.add_argument("--tol", type=float, default=1e-6, help="relative-change tolerance of the stopping rule")
    p.add_argument("--convexity-pairs", type=int, default=4096, metavar="N",
                   help="random pairs of the midpoint-convexity check of the trained ACR")
    p.add_argument("--select-every", type=int, default=1, metavar="N",
                   help="model selection: every N epochs, the validation PSNR of the regulariser with its lambda "
                        "rule (the validation rule: best over the lambda grid and budgets); the best epoch is kept; "
                        "0 keeps the last")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    add_problem_options(p)
    add_training_options(p)
    add_evaluation_options(p)
    if p.parse_known_args(argv)[0].smoke:  # smoke defaults; explicit options still win
        p.set_defaults(size=32, n_train=16, n_val=2, n_test=2, epochs=[1, 1, 1], acr_filters=8, acr_layers=3,
                       acr_sfb_filters=16, nett_width=8, grid=[-1, 1], iters=30, val_iters=15, budgets=[5, 15],
                       convexity_pairs=256)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch, deepinv and ASTRA load
    from ct_learned_regularizers_evaluate import run

    return run(args)


if __name__ == "__main__":
    main()

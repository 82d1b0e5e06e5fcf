r"""Gradient-step PnP as a convergent regularisation (Hauptmann, Mukherjee, Schönlieb, Sherry, Fig. 2).

Problem. Deblur an image blurred by a Gaussian kernel, :math:`y^\delta = Ax + \delta w` (:math:`w` one fixed draw of
white Gaussian noise, so that only the level :math:`\delta` changes), by gradient-step PnP, i.e. by a stationary
point of

.. math::

    F_\delta(x) = \tfrac12\|Ax - y^\delta\|^2 + \lambda(\delta)\, g_\sigma(x), \qquad
    g_\sigma(x) = \tfrac12\|x - N_\sigma(x)\|^2,

reached by :math:`x_{k+1} = \operatorname{prox}_{\tau f}(x_k - \tau\lambda\nabla g_\sigma(x_k))` with Armijo
backtracking (:class:`deepinv_ext.algorithms.GradientStepPnP`). The denoiser :math:`D_\sigma = \operatorname{Id} -
\nabla g_\sigma` is trained here on scikit-image's images (the test image excluded; ``gs_pnp_convergence_train.py``); :math:`\sigma`
is fixed and
:math:`\lambda` follows the a-priori rule :math:`\lambda(\delta) = c\delta + \varepsilon`
(:class:`deepinv_ext.algorithms.AffineParameterRule`; default :math:`c = 10`, :math:`\varepsilon = 10^{-4}`; the
survey's :math:`c = 0.04` per percent is ``--c 4`` here). As :math:`\delta \to 0` the reconstructions
:math:`\hat x(\delta)` should converge to :math:`x^\dagger`, the fixed point on the noiseless data at
:math:`\lambda = \varepsilon` from the same starting point.

The sweep and its evaluation: ``gs_pnp_convergence_evaluate.py``. Outputs (in ``--output``):
``gs_pnp_convergence.png`` (a: :math:`\|\hat x(\delta) - x^\dagger\|` vs :math:`\delta`,
b: PSNR vs :math:`\delta`, c: :math:`F(x_k)` and :math:`\|x_{k+1} - x_k\|` per iteration for one case, d: images),
``results.json`` (the table), ``denoiser.pt`` (trained weights; ``denoiser_ckpt.pt`` resumes training; a
checkpoint of other options is trained anew), ``sweep.pt`` (finished reconstructions; a rerun skips them) and
``run.json`` (provenance). Every run checks that
:math:`F(x_k)` never increased and reports :math:`\|x_{K}-x_{K-1}\| / \|x_1 - x_0\|`.

Run: ``python recipes/gs_pnp_convergence.py --smoke`` (about a minute on a CPU) or without ``--smoke`` for the
full sweep. ``torchrun --nproc_per_node N recipes/gs_pnp_convergence.py ...`` trains the denoiser data-parallel on
N CPU processes (gloo; the global batch stays 16, so it must split evenly), rank 0 alone then runs the sweep and
writes the outputs.
"""

from __future__ import annotations

import argparse

from recipe_help import HelpFormatter

SMOKE = {"size": 32, "train_size": 64, "train_steps": 300, "channels": 16, "depth": 4, "max_iter": 400,
         "tol": 1e-6, "deltas": [0.1, 0.03, 0.01, 0.003, 0.001]}
FULL = {"size": 64, "train_size": 128, "train_steps": 1000, "channels": 16, "depth": 4, "max_iter": 5000,
        "tol": 1e-7, "deltas": [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]}


def smoke_or_full(key: str) -> str:
    """The end of the help of an option whose default depends on ``--smoke``."""
    return f"(default: {SMOKE[key]} with --smoke, {FULL[key]} without)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small, fast CPU run (its own defaults, stated below)")
    parser.add_argument("--output", default="results/gs_pnp_convergence", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the denoiser's training and of the noise draw w")
    parser.add_argument("--image", default="camera", help="test image (one of deepinv_ext.datasets.SKIMAGE_IMAGES)")
    parser.add_argument("--size", type=int, help=f"test image side {smoke_or_full('size')}")
    parser.add_argument("--blur", type=float, default=1.6, help="std of the Gaussian kernel (pixels)")
    parser.add_argument("--sigma-denoiser", type=float, default=0.05, help="fixed sigma of the denoiser")
    parser.add_argument("--c", type=float, default=10.0, help="slope of lambda(delta) = c*delta + eps")
    parser.add_argument("--eps", type=float, default=1e-4, help="floor of lambda(delta) = c*delta + eps")
    parser.add_argument("--deltas", type=float, nargs="+", help=f"noise levels (std on [0, 1] images) {smoke_or_full('deltas')}")
    parser.add_argument("--max-iter", type=int, help=f"maximum PnP iterations {smoke_or_full('max_iter')}")
    parser.add_argument("--tol", type=float, help=f"stopping tolerance on the relative change of the iterate {smoke_or_full('tol')}")
    parser.add_argument("--weights", help="trained denoiser weights to use instead of training")
    parser.add_argument("--train-steps", type=int, help=f"denoiser training steps {smoke_or_full('train_steps')}")
    parser.add_argument("--train-size", type=int, help=f"side of the training images before cropping {smoke_or_full('train_size')}")
    parser.add_argument("--channels", type=int, help=f"feature channels of the potential network {smoke_or_full('channels')}")
    parser.add_argument("--depth", type=int, help=f"convolutions of the potential network {smoke_or_full('depth')}")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                        help="dtype of the reconstructions (float64: F resolves smaller decreases)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared box)")
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.deltas) <= 0:
        parser.error("--deltas must be positive")
    from deepinv_ext.datasets import SKIMAGE_IMAGES  # after --help: it loads torch

    if args.image not in SKIMAGE_IMAGES:
        parser.error(f"argument --image: invalid choice: {args.image!r} (choose from "
                     f"{', '.join(map(repr, SKIMAGE_IMAGES))})")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch and deepinv load
    from gs_pnp_convergence_evaluate import run

    from deepinv_ext.data_parallel import DataParallel

    with DataParallel("cpu") as parallel:  # one process, or one of torchrun's (gloo: this recipe runs on the CPU)
        return run(args, parallel)


if __name__ == "__main__":
    main()

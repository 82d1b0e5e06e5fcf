r"""ReTune: learn a forward-backward / PnP layer at equilibrium with restarted truncated unrolling.

Problem: deblur (Gaussian kernel, circular boundary, Gaussian noise; ``--task denoise`` for denoising) grayscale
natural images shipped with scikit-image (:class:`deepinv_ext.datasets.SkimageImagesDataset`, or the images of
``--data-dir``, read by deepinv's :class:`~deepinv.datasets.ImageFolder`). Every model iterates the same kind of
layer

.. math::

    T_\theta(x) = P_\theta\bigl(x - \gamma A^\top(Ax - y)\bigr)

towards its fixed point :math:`x^* = T_\theta(x^*)`, and is trained on the same patches with the same budget
(steps, batch, Adam), deepinv's supervised loss and, for the PnP layers, a Jacobian spectral-norm penalty that keeps
the layer contractive (``retune_train.py``):

- **wavelet** layers (:math:`P_\theta` = prox of a weighted :math:`\ell_1` norm in an orthonormal wavelet basis):
  untrained (initial parameters), standard unrolling of :math:`L` layers, ReTune (:math:`R` restarts + :math:`L`);
- **PnP** layers (:math:`P_\theta` = a relaxed DnCNN denoiser, first pretrained here on Gaussian denoising of the
  same patches): untrained PnP, standard unrolling, full unrolling of :math:`(R+1)L` layers, deepinv's
  Jacobian-free DEQ (``PGD(..., DEQ=DEQConfig(jacobian_free=True))``) and ReTune (denoiser fine-tuned). The
  layer's scalars (step, noise level, relaxation) learn at ``--lr``, the pretrained denoiser's weights at the
  smaller ``--denoiser-lr``.

Reported (``retune_evaluate.py``): PSNR of each at depth (as trained) and at its fixed point (restarted until
:math:`\|x_{k+1}-x_k\|/\|x_k\| < 10^{-5}` or a cap), restarts needed, the layer's Lipschitz constant at the fixed
point (power iteration), peak training memory (bytes saved for backward; CUDA peak on a GPU) and time per step;
the issue's checks (fixed point reached, contractive there, better than the untrained layer, at least as good
as standard unrolling at depth :math:`L`); a figure of the depth/restart interplay (wavelet layer: PSNR at the
fixed point and measured Jacobian-free error as functions of :math:`L` and :math:`R`) and of the inference
residuals. Checkpoints in ``--output/ckpt`` resume exactly (they keep the RNG state; a checkpoint of other options
is refused); a provenance record is saved beside the results. The README gives the results::

    python recipes/retune.py --output runs/retune
    python recipes/retune.py --smoke --output runs/retune_smoke

Data-parallel training on N devices or CPU processes (``--batch`` is the global batch; it and the DnCNN's
pretraining batch 8 must split evenly over the processes; rank 0 alone evaluates and writes)::

    torchrun --nproc_per_node N recipes/retune.py --output runs/retune
"""

from __future__ import annotations

import argparse

from recipe_help import HelpFormatter, data_parallel


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--output", default="runs/retune",
                   help="output folder (table, figures, results.json, run.json; checkpoints in OUTPUT/ckpt)")
    p.add_argument("--task", choices=("deblur", "denoise"), default="deblur",
                   help="Gaussian deblurring (circular boundary) or denoising, both with Gaussian noise")
    p.add_argument("--data-dir", default=None, help="folder of images (default: scikit-image's bundled images)")
    p.add_argument("--size", type=int, default=64, help="side of the test images")
    p.add_argument("--patch", type=int, default=32, help="side of the training patches")
    p.add_argument("--noise", type=float, default=0.02, help="std of the Gaussian noise (images in [0, 1])")
    p.add_argument("--blur-sigma", type=float, default=1.5, help="std of the Gaussian blur kernel (pixels)")
    p.add_argument("--depth", type=int, default=5, help="L, layers per restart (training backpropagates through the last L)")
    p.add_argument("--restarts", type=int, default=10, help="R, training restarts of L layers without gradient before the last L")
    p.add_argument("--steps", type=int, default=150, help="training steps per model (same budget for all)")
    p.add_argument("--batch", type=int, default=4, help="training patches per step")
    p.add_argument("--lr", type=float, default=5e-3, help="learning rate of the layer's scalar parameters")
    p.add_argument("--denoiser-lr", type=float, default=5e-4,
                   help="learning rate of a trained denoiser's weights (fine-tuning a pretrained network)")
    p.add_argument("--parts", nargs="+", choices=("wavelet", "pnp", "sweep"), default=["wavelet", "pnp", "sweep"],
                   help="which experiments to run")
    p.add_argument("--pretrain-steps", type=int, default=300, help="Gaussian-denoising pretraining of the DnCNN")
    p.add_argument("--penalty", type=float, default=1.0, help="weight of the Lipschitz penalty (PnP layers)")
    p.add_argument("--penalty-eps", type=float, default=0.1, help="penalty active above Lipschitz 1 - eps")
    p.add_argument("--anchor", type=float, default=0.0,
                   help="anchor weight c of the trained PnP layers (AnchoredLayer: Lipschitz (1-c) Lip(T); 0: none)")
    p.add_argument("--penalty-iters", type=int, default=10, help="power iterations of the penalty")
    p.add_argument("--tol", type=float, default=1e-5,
                   help="fixed point reached when ||x_{k+1} - x_k|| / ||x_k|| < tol (inference)")
    p.add_argument("--max-restarts", type=int, default=400,
                   help="cap on the restarts (of L layers) of the inference to the fixed point")
    p.add_argument("--sweep-depths", type=int, nargs="+", default=[1, 3, 10], help="sweep: depths L of the wavelet layer")
    p.add_argument("--sweep-restarts", type=int, nargs="+", default=[0, 3, 10],
                   help="sweep: restarts R of the wavelet layer")
    p.add_argument("--sweep-steps", type=int, default=80, help="sweep: training steps of each (L, R)")
    p.add_argument("--lip-iters", type=int, default=30, help="power iterations of the Lipschitz estimate")
    p.add_argument("--jf-iters", type=int, default=300, help="iterations of the exact adjoint solve (JF error)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patches, the noise and the initialisations")
    p.add_argument("--device", default=None, help="torch device (default: cuda where available, else cpu)")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (well under two minutes on a CPU)")
    if p.parse_known_args(argv)[0].smoke:  # smoke defaults; explicit options still win
        p.set_defaults(size=32, patch=16, depth=2, restarts=2, steps=3, batch=2, pretrain_steps=4, max_restarts=10,
                       sweep_depths=[2], sweep_restarts=[0, 2], sweep_steps=2, penalty_iters=2, lip_iters=5,
                       jf_iters=30)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)  # --help and option errors answer here, before torch and deepinv load
    import torch
    from retune_evaluate import run

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with data_parallel(a) as parallel:  # one process, or one of torchrun's on its own device
        return run(a, parallel)


if __name__ == "__main__":
    main()

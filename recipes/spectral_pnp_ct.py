r"""Spectral-filtered linear PnP for CT is a convergent regularisation (Hauptmann et al., Sect. 4.3, Figs. 5-6).

Problem. Parallel-beam CT with 150 equispaced views of random-ellipse phantoms: :math:`y^\delta = Ax^* + e`,
:math:`\|e\| = \delta\|Ax^*\|` (one fixed noise direction, scaled). A bias-free, activation-free symmetric U-Net
:math:`D` (:class:`deepinv_ext.denoisers.LinearSymmetricUNet`) is trained as a Gaussian denoiser with
:class:`deepinv.Trainer` (``spectral_pnp_ct_train.py``) and its spectrum is mapped into :math:`[0.01, 0.99]`
(measured by Lanczos). PnP-FBS

.. math:: x_{k+1} = h_\tau(D)\bigl(x_k - \eta A^\top(Ax_k - y^\delta)\bigr), \quad
          h_\tau(\lambda) = \frac{\lambda}{\tau - (\tau - 1)\lambda}, \quad \tau = c\,\delta,

(:class:`deepinv_ext.algorithms.SpectralPnP`, FISTA-accelerated, same fixed point) should give
:math:`\|\hat x(y^\delta, \tau^\delta) - x^\dagger\| \to 0` as :math:`\delta \to 0` (Theorem 5), where
:math:`x^\dagger = \arg\min\{J^*(x) : A^\top Ax = A^\top y\}`, :math:`J^*(x) = \tfrac12\langle x, (D^{-1} - \mathrm{Id})x\rangle`.
The experiments (``spectral_pnp_ct_evaluate.py``):

1. Small images (64x64): :math:`h_\tau(D)` by exact eigendecomposition (as in the paper); :math:`x^\dagger` to high
   accuracy from the generalised eigendecomposition of :math:`(A^\top A, r^*(D))` (dense, float64); the matrix-free
   CG/Chebyshev/Lanczos filters are checked against the exact one at the recipe's :math:`\tau` values (relative
   error and denoiser applications, also for spectra with smaller :math:`\lambda_{\min}`); FBP for comparison.
2. Large images (256x256, default): the same curve with the matrix-free CG filter (no eigendecomposition is
   possible); :math:`x^\dagger` is approximated by Richardson extrapolation of noise-free solutions of the
   fixed-point system at :math:`\tau_{\rm ref}` and :math:`\tau_{\rm ref}/2` (error :math:`O(\tau_{\rm ref}^2)`),
   computed by CG on :math:`[\eta DA^\top AD + \tau(D - D^2)]w = \eta DA^\top y`, :math:`x = Dw`
   (:meth:`SpectralPnP.solve_linear_system`), which also checks each PnP result.

Outputs in ``--output``: ``convergence.png``, ``filter_accuracy.csv``, ``convergence_<size>.csv``, the trained
denoiser ``denoiser.pt`` (reused when present: the run resumes; one trained under other options is refused), and
``run.json`` (provenance).

Usage::

    python recipes/spectral_pnp_ct.py --output runs/spectral_pnp
    python recipes/spectral_pnp_ct.py --smoke --output /tmp/spectral_smoke  # < 2 minutes on a CPU

Under ``torchrun`` the denoiser's training is data-parallel (:mod:`deepinv_ext.data_parallel`): each of the N
processes (one GPU each with ``--device cuda``) trains on ``--batch-size``/N of every batch, gradients averaged;
rank 0 alone writes the denoiser and then runs the experiments (on the CPU) alone::

    torchrun --nproc_per_node 4 recipes/spectral_pnp_ct.py --device cuda --output runs/spectral_pnp
"""

from __future__ import annotations

import argparse

from recipe_help import HelpFormatter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--output", default="runs/spectral_pnp_ct",
                   help="output folder (figure, tables, trained denoiser, run record; a rerun reuses the denoiser)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, short training: < 2 minutes on a CPU")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantoms, the noise and the training")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared box)")
    p.add_argument("--device", default="cpu",
                   help="torch device of the denoiser's training (e.g. cuda); the experiments run on the CPU")
    p.add_argument("--views", type=int, default=150, help="equispaced parallel-beam views over 180 degrees")
    p.add_argument("--small-size", type=int, default=64, help="side of the small images (exact eigendecomposition experiment); 0 skips it")
    p.add_argument("--large-size", type=int, default=256, help="side of the large images (matrix-free experiment); 0 skips it")
    p.add_argument("--sigma", type=float, default=0.05, help="training noise level of the denoiser")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32],
                   help="channels of the denoiser (symmetric linear U-Net) at each scale")
    p.add_argument("--train-size", type=int, default=64, help="side of the denoiser's training phantoms")
    p.add_argument("--train-images", type=int, default=256, help="training phantoms of the denoiser")
    p.add_argument("--epochs", type=int, default=20, help="training epochs of the denoiser")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size of the denoiser")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate of the denoiser (Adam)")
    p.add_argument("--deltas", type=float, nargs=3, default=[1e-1, 1e-4, 7], metavar=("MAX", "MIN", "N"),
                   help="relative noise levels: N log-spaced from MAX to MIN")
    p.add_argument("--large-deltas", type=float, nargs=3, default=[1e-1, 1e-4, 6], metavar=("MAX", "MIN", "N"),
                   help="large size: relative noise levels, N log-spaced from MAX to MIN")
    p.add_argument("--tau-factor", type=float, default=10.0, help="tau = tau_factor * delta")
    p.add_argument("--ref-tol", type=float, default=1e-7, help="large size: CG residual of the reference solves")
    p.add_argument("--check-direct", action="store_true", help="large size: also solve each level's system by CG")
    p.add_argument("--tau-ref-factor", type=float, default=0.5, help="large size: tau_ref = factor * min(tau)")
    p.add_argument("--lmins", type=float, nargs="+", default=[0.1, 0.03, 0.01, 0.003],
                   help="small size: the filter check also on spectra remapped to [lmin, 0.99]")
    p.add_argument("--filter-check-tol", type=float, default=1e-4,
                   help="small size: tolerance of the matrix-free filters checked against the exact one")
    p.add_argument("--filter-tol", type=float, default=1e-6,
                   help="tolerance of the matrix-free filter h_tau(D)v inside the PnP iterations")
    p.add_argument("--pnp-tol", type=float, default=1e-7, help="PnP stops at this relative change of the iterate")
    p.add_argument("--max-iter", type=int, default=20000, help="maximum PnP iterations")
    if p.parse_known_args(argv)[0].smoke:  # smoke defaults; explicit options still win
        p.set_defaults(small_size=16, large_size=32, train_size=16, views=30, train_images=32, epochs=5,
                       batch_size=8, channels=[4, 8, 8], deltas=[1e-1, 1e-4, 6], large_deltas=[1e-1, 1e-3, 3],
                       pnp_tol=1e-6, max_iter=3000, lmins=[0.03, 0.01], check_direct=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)  # --help and option errors answer here, before torch, deepinv and ASTRA load
    from spectral_pnp_ct_evaluate import run

    run(args)


if __name__ == "__main__":
    main()

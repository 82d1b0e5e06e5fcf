r"""Learned regularisers for CT: adversarial (AR), adversarial convex (ACR) and NETT against FBP and TV.

Problem: recover 64x64 random-ellipse phantoms :math:`x` (:class:`deepinv_ext.datasets.RandomEllipsesDataset`)
from parallel-beam sinograms (:class:`deepinv_ext.physics.AstraCT`, sparse-matrix backend), in two settings:

- **sparse view**: 30 of 180 views (every 6th), Gaussian noise of standard deviation ``--sigma`` on the sinogram
  (line integrals of up to about 27 at 64x64);
- **low dose**: all 180 views, post-log Poisson noise (deepinv's ``LogPoissonNoise``) at ``--photons`` incident
  photons per ray and attenuation scale ``mu = --mu``.

Each regulariser is trained on the same training phantoms inside :class:`deepinv.Trainer`, through
:class:`deepinv_ext.losses.RegularizerTrainingModel` (its output is the FBP, its ``.regularizer`` is trained), by
Adam with a cosine decay of the learning rate over the epochs:

- AR (:class:`~deepinv_ext.priors.AdversarialRegularizer`) and ACR
  (:class:`~deepinv_ext.priors.ConvexAdversarialRegularizer`: its input-convex network sized down to
  ``--acr-filters``/``--acr-layers`` for a CPU, with the authors' sparsifying filter bank of ``--acr-sfb-filters``
  7x7 filters and learned :math:`\|x\|^2` weight) by the Wasserstein critic loss with gradient penalty
  (:class:`~deepinv_ext.losses.WassersteinCriticLoss`), clean phantoms against FBPs;
- NETT (:class:`~deepinv_ext.priors.NETT`, :math:`p = 2`) by :class:`~deepinv_ext.losses.NETTLoss`, which also
  teaches :math:`\Phi` to return Gaussian perturbations of the clean phantoms (``--nett-noise``, standard deviation
  up to 0.1; 0 gives Li et al.'s loss). The critics can be trained the same way (``--ar-noise``, ``--acr-noise``:
  half of each artefact batch replaced by noisy clean images), off by default: with 0.1 AR gained 0.33 dB in
  sparse view (29.91, SSIM 0.786 against 0.821) and lost 0.11 dB in low dose (29.01), and ACR did not gain in a
  first epoch. The critics' artefact batches can also take the end points of ``--ar-descent``/``--acr-descent``
  normalised gradient steps down the critic (:class:`~deepinv_ext.losses.WassersteinCriticLoss`
  ``descent_steps``): on for both critics (3 steps), which lifted AR by 0.45 dB in sparse view (29.58 before) and
  0.20 dB in low dose (29.12), and ACR by 0.47 dB (29.52) and 0.35 dB (28.81).

The artefact images of the training are ramp-filtered FBPs (``--train-filter``): they carry the noise that the
regulariser must learn to penalise (Hann-filtered ones are smooth, and critics trained on them did not regularise
the noise that gradient descent on the data term brings back: worse than FBP in a first run). The AR critic is not
coercive: in sparse view, gradient descent ran off to :math:`g \to -\infty` on half of the images, so the AR
reconstructions add ``--ar-eps`` times the squared distance of :math:`x` to :math:`[0, 1]^n`
(:class:`~deepinv_ext.priors.AdversarialRegularizer` ``eps``/``box``; zero on valid images).

Reconstruction of held-out phantoms: :math:`\min_x \tfrac12\|Ax - y\|^2 + \lambda R(x)` by
:class:`deepinv_ext.algorithms.VariationalSolver` (accelerated gradient descent with Lipschitz backtracking, started
at the FBP); TV (deepinv's ``TVPrior``) by FISTA; FBP with the Hann filter (the better of deepinv-ext's FBP
filters here; also the artefact images of the training). Every solve stops by the relative change (``--tol``) or
after an iteration budget :math:`K`, never by the ground truth. The weight :math:`\lambda` of each method and,
with the default rule, its budget :math:`K` (``--lambda-rule``):

- ``validation`` (default): the pair :math:`(\lambda, K)` of best mean PSNR on validation phantoms (disjoint from
  the test phantoms), :math:`\lambda` on a grid :math:`\lambda_0 2^k` (``--grid``), with :math:`\lambda_0` the
  gradient-balance heuristic (:func:`~deepinv_ext.algorithms.parameter_choice.gradient_balance_lambda`; for AR/ACR
  it is Lunz et al.'s :math:`\lambda = \mathbb{E}\|A^\top(Ax - y)\|` over training pairs), and :math:`K` among
  ``--budgets`` (the iterates of one validation solve per :math:`\lambda`, recorded at each budget). The test
  solves then run at most :math:`K` iterations. Lunz et al. reconstruct with AR by a fixed number of gradient
  steps: the non-convex AR energy is not minimised but followed from the FBP (its PSNR peaks after 10-30 steps
  and then falls); every method, TV included, gets the same rule, and a converged solve remains a candidate
  (:math:`K` = the largest budget);
- ``heuristic``: :math:`\lambda_0` itself, no search, ``--iters`` iterations;
- ``discrepancy``: Morozov's discrepancy principle on the validation measurements (no ground truth at all),
  ``--iters`` iterations.

**Model selection** (``--select-every N``, default 1): every N epochs (and after the last) the regulariser is
scored by its validation PSNR under the lambda rule (the validation rule: the best pair :math:`(\lambda, K)`); the
best epoch is kept (``<method>_best.pt``) and its lambda choice reused for the test solves. A NETT trained longer
regularises worse although its loss keeps falling, so the last epoch is not the best one by default: the solver
finds images on which its :math:`\Phi` is blind. ``--nett-descent K`` also trains :math:`\Phi` on the end points
of :math:`K` normalised gradient steps on :math:`R` from the artefact images
(:class:`~deepinv_ext.losses.NETTLoss` ``descent_steps``); with 3 steps the decline almost vanished, but the best
epochs did worse (validation 29.87 and 29.52 dB against 30.30 and 29.67 in the default run), so it is off.

Prints a PSNR/SSIM table (also saved as ``results.md``/``results.json``), each regulariser's profile along the
segment from the clean validation images to their training FBPs (:func:`segment_profile`), checks the convexity of
the trained ACR (midpoint inequality on random pairs and second differences along random lines) and its solver's
monotonicity and convergence, saves a figure, per-epoch training checkpoints (a rerun with the same ``--output``
resumes; a checkpoint of other training options is refused) and a provenance record. ``--methods`` trains and
evaluates a subset of AR/ACR/NETT; ``--device cuda`` trains and solves on a GPU (run on an H100 with ASTRA's CUDA
projector: an epoch of AR or ACR in 25-40 s; the README gives its figures). ``--texture t`` shades the ellipses
with linear intensity ramps of relative amplitude :math:`t` (:func:`deepinv_ext.datasets.phantoms.random_ellipses`),
images that are no longer piecewise constant.

Default run (2048 training, 8 validation, 16 test phantoms; AR 20, ACR 8, NETT 10 epochs at batch 16, every epoch
scored): 2-core CPU, the trainings in separate ``--methods`` processes, one thread each (an epoch of AR about 2 min,
of ACR 10-14 min, of NETT 2-4 min); then one run of all methods a problem evaluated them from the checkpoints
(``--output runs/s9 --problems P``). PSNR (dB) on the test phantoms:

============  =====  =====  =====  =====  =====
problem       FBP    TV     AR     ACR    NETT
============  =====  =====  =====  =====  =====
sparse view   27.76  30.55  30.58  30.40  30.52
low dose      27.09  29.65  29.87  29.35  29.60
============  =====  =====  =====  =====  =====

The kept epochs: AR its 15th and 17th of 20, ACR its 7th and 4th of 8, NETT its 7th (sparse view) and 10th of
10. The chosen budgets: AR 20 (sparse view) and 30 (low dose) iterations, ACR 300 and 200, NETT 100 and 50, TV 300
(its PSNR flat from 100 on). The filter bank lifted ACR (trained without the descent) by 0.27 and 0.35 dB over the
network alone (29.25 and 28.46); the perturbation term lifted NETT by 0.14 dB in sparse view (30.38 without it)
and left it level in low dose (29.63). AR beats TV by 0.03 and 0.22 dB (and in SSIM, 0.852 and 0.819 against
0.832 and 0.787); ACR comes within 0.5 dB of TV in both problems (-0.15, -0.30). Short of the issue's other
targets (learned +3 dB over FBP, AR/NETT +0.5 dB over TV): on piecewise-constant ellipses TV itself gains less than
3 dB over FBP, and NETT only matches TV at this training size; a wider NETT (32 channels, 6 epochs, 2.4x the cost
per epoch) did worse on the validation phantoms (29.55 against 29.96 dB in sparse view). ::

    python recipes/ct_learned_regularizers.py --output runs/ct_learned_regularizers
    python recipes/ct_learned_regularizers.py --smoke --output runs/ct_learned_regularizers_smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from torch.utils.data import DataLoader

from deepinv_ext.algorithms.parameter_choice import (
    RelativeChangeStop,
    discrepancy_lambda,
    gradient_balance_lambda,
    noise_norm_gaussian,
    noise_norm_log_poisson,
)
from deepinv_ext.algorithms.variational import VariationalSolver
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.losses import NETTLoss, RegularizerTrainingModel, WassersteinCriticLoss
from deepinv_ext.physics import AstraCT
from deepinv_ext.priors.adversarial import AdversarialRegularizer, ConvexAdversarialRegularizer
from deepinv_ext.priors.nett import NETT
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ("FBP", "TV", "AR", "ACR", "NETT")
LEARNED = ("AR", "ACR", "NETT")
# option added after checkpoints were made -> its value that reproduces the training from before it
OPTIONS_ADDED_LATER = {"nett_descent": 0, "ar_descent": 0, "acr_descent": 0, "texture": 0.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("runs/ct_learned_regularizers"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a CI check (< 2 min on a CPU)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=2048)
    p.add_argument("--n-val", type=int, default=8)
    p.add_argument("--n-test", type=int, default=16)
    p.add_argument("--texture", type=float, default=0.0,
                   help="amplitude of linear intensity ramps inside the ellipses (0: piecewise constant)")
    p.add_argument("--problems", nargs="+", default=["sparse_view", "low_dose"], choices=["sparse_view", "low_dose"])
    p.add_argument("--sigma", type=float, default=0.5, help="sparse view: sinogram noise std")
    p.add_argument("--photons", type=float, default=1000.0, help="low dose: incident photons per ray (N0)")
    p.add_argument("--mu", type=float, default=1 / 50, help="low dose: attenuation scale of LogPoissonNoise")
    p.add_argument("--epochs", type=int, nargs=3, default=[20, 8, 10], metavar=("AR", "ACR", "NETT"))
    p.add_argument("--batch", type=int, default=16)
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
    p.add_argument("--acr-filters", type=int, default=16)
    p.add_argument("--acr-layers", type=int, default=6)
    p.add_argument("--acr-smoothing", type=float, default=0.0)
    p.add_argument("--acr-sfb-filters", type=int, default=320,
                   help="ACR: filters of its sparsifying filter bank (Mukherjee et al.: 320); 0 = the ICNN alone")
    p.add_argument("--nett-width", type=int, default=16)
    p.add_argument("--nett-noise", type=float, default=0.1,
                   help="NETT: largest std of the Gaussian perturbations n of clean images it also learns to "
                        "return, Phi(x + n) = n (NETTLoss noise_level); 0 = Li et al.'s loss")
    p.add_argument("--nett-descent", type=int, default=0,
                   help="NETT: normalised gradient steps on R from the artefact image, whose end point Phi also "
                        "learns (0: off)")
    p.add_argument("--train-filter", default="ramp", help="FBP filter of the training artefact images")
    p.add_argument("--lambda-rule", default="validation", choices=["validation", "heuristic", "discrepancy"])
    p.add_argument("--grid", type=int, nargs="+", default=[-1, 0, 1, 2], help="exponents k of lambda0*2^k")
    p.add_argument("--iters", type=int, default=300, help="max iterations of the test solves")
    p.add_argument("--val-iters", type=int, default=300, help="max iterations of the validation solves")
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 30, 50, 100, 200, 300],
                   help="iteration budgets K scored along each validation solve (lambda and K chosen jointly)")
    p.add_argument("--tol", type=float, default=1e-6, help="relative-change tolerance of the stopping rule")
    p.add_argument("--methods", nargs="+", default=list(LEARNED), choices=LEARNED,
                   help="learned regularisers to train and evaluate (FBP and TV always run)")
    p.add_argument("--select-every", type=int, default=1, metavar="N",
                   help="model selection: every N epochs, the validation PSNR of the regulariser with its lambda "
                        "rule (the validation rule: best over the lambda grid and budgets); the best epoch is kept; "
                        "0 keeps the last")
    p.add_argument("--device", default="cpu", help="torch device of the training and the solves (e.g. cuda)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    if p.parse_known_args(argv)[0].smoke:  # smoke defaults; explicit options still win
        p.set_defaults(size=32, n_train=16, n_val=2, n_test=2, epochs=[1, 1, 1], acr_filters=8, acr_layers=3,
                       acr_sfb_filters=16, nett_width=8, grid=[-1, 1], iters=30, val_iters=15, budgets=[5, 15])
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ problems
def make_physics(problem: str, args) -> AstraCT:
    if problem == "sparse_view":
        noise = dinv.physics.GaussianNoise(args.sigma)
        return AstraCT(args.size, angles=torch.arange(0, 180, 6, dtype=torch.float64), noise_model=noise,
                       device=args.device)
    noise = dinv.physics.LogPoissonNoise(N0=args.photons, mu=args.mu)
    return AstraCT(args.size, angles=180, noise_model=noise, device=args.device)


def fbp(y: torch.Tensor, physics: AstraCT, filter: str = "hann") -> torch.Tensor:
    return physics.A_dagger(y, fbp=True, filter=filter)


class TrainingFBP:
    """The pseudo-inverse of the training (a picklable callable): FBP with the ``--train-filter`` filter."""

    def __init__(self, filter: str):
        self.filter = filter

    def __call__(self, y: torch.Tensor, physics: AstraCT) -> torch.Tensor:
        return fbp(y, physics, self.filter)


def noise_norm(problem: str, y: torch.Tensor, args) -> torch.Tensor:
    if problem == "sparse_view":
        return noise_norm_gaussian(args.sigma, y)
    return noise_norm_log_poisson(y, args.photons, args.mu)


def stack(dataset, device, n: int | None = None) -> torch.Tensor:
    """The first ``n`` images of ``dataset`` (all by default) as one batch on ``device``."""
    return torch.stack([dataset[i]["x"] for i in range(min(len(dataset), n or len(dataset)))]).to(device)


def measure(physics: AstraCT, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return physics(x)


# ------------------------------------------------------------------------------------------------ training
def make_prior(method: str, args) -> torch.nn.Module:
    if method == "AR":
        return AdversarialRegularizer()
    if method == "ACR":
        return ConvexAdversarialRegularizer(num_filters=args.acr_filters, num_layers=args.acr_layers,
                                            smoothing=args.acr_smoothing, sfb_filters=args.acr_sfb_filters)
    return NETT(width=args.nett_width, depth=2)


def for_reconstruction(method: str, regularizer: torch.nn.Module, args) -> torch.nn.Module:
    """The trained regulariser frozen for the solves (AR: with its coercive term, not used in the training)."""
    prior = regularizer.eval()
    prior.requires_grad_(False)
    if method == "AR":
        prior.eps, prior.box = args.ar_eps, (0.0, 1.0)
    return prior


def training_config(args, method: str) -> dict:
    """The options a training checkpoint of ``method`` depends on (a resumed run must not mix two
    configurations): all but the output, the selection of problems and methods, the device and the test solves;
    of the per-method options, those of ``method`` only."""
    index = LEARNED.index(method)
    skip = {"output", "smoke", "problems", "methods", "device", "threads", "iters", "n_test"}
    own = {"AR": ("ar_",), "ACR": ("acr_",), "NETT": ("nett_",)}
    foreign = tuple(prefix for m, prefixes in own.items() if m != method for prefix in prefixes)
    config = {k: v for k, v in sorted(vars(args).items()) if k not in skip and not k.startswith(foreign)}
    config.update(epochs=args.epochs[index], lr=args.lr[index])
    for option, off in OPTIONS_ADDED_LATER.items():  # left out when off: older checkpoints keep loading
        if config.get(option) == off:
            del config[option]
    return config


def train(method: str, physics: AstraCT, train_set, args, ckpt: Path,
          score: Callable[[torch.nn.Module], dict] | None = None) -> tuple[torch.nn.Module, dict]:
    """Train one regulariser in deepinv.Trainer, one epoch per Trainer call, checkpointing every epoch.

    With ``--select-every N`` and ``score`` (a frozen regulariser's lambda choice, with its validation PSNR as
    ``"score"``), the regulariser is scored every N epochs and after the last one, and the best-scoring epoch is
    kept (``<method>_best.pt``). Returns the frozen regulariser and the selection record: the chosen epoch, the
    scores, and the lambda choice of the chosen epoch (``"choice"``).
    """
    index = LEARNED.index(method)
    torch.manual_seed(args.seed + 10 + index)
    model = RegularizerTrainingModel(make_prior(method, args), pseudo_inverse=TrainingFBP(args.train_filter))
    model.to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr[index])
    start, selection = 0, {"epoch": 0, "scores": {}}
    best_path = ckpt.with_name(f"{ckpt.stem}_best.pt")
    config = training_config(args, method)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location=args.device)
        if state.get("config") != config:
            changed = sorted(k for k in config if state.get("config", {}).get(k) != config[k])
            raise RuntimeError(f"{ckpt} was trained with other options ({', '.join(changed)}): use another "
                               "--output, or delete it to retrain")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        selection = state.get("selection", selection)
    if method == "NETT":
        loss = NETTLoss(noise_level=args.nett_noise, descent_steps=args.nett_descent)
    else:
        noise, descent = (args.ar_noise, args.ar_descent) if method == "AR" else (args.acr_noise, args.acr_descent)
        loss = WassersteinCriticLoss(mu=args.mu_gp, noise_level=noise, descent_steps=descent)
    epochs = args.epochs[index]
    for epoch in range(start, epochs):
        t0 = time.time()
        for group in optimizer.param_groups:  # cosine decay of the learning rate, set per epoch (resumable)
            group["lr"] = 0.5 * args.lr[index] * (1 + math.cos(math.pi * epoch / epochs))
        torch.manual_seed(args.seed + 1000 * (index + 1) + epoch)
        trainer = dinv.Trainer(model=model, physics=physics, optimizer=optimizer, losses=[loss], epochs=1,
                               train_dataloader=DataLoader(train_set, batch_size=args.batch, shuffle=True),
                               online_measurements=True, save_path=None, verbose=False, device=args.device,
                               non_blocking_transfers=str(args.device).startswith("cuda"),
                               show_progress_bar=False, compute_train_metrics=False)
        trainer.train()
        message = f"  {method} epoch {epoch + 1}/{epochs}: loss {trainer.logs_total_loss_train.avg:.4f}"
        if score is not None and args.select_every > 0 and ((epoch + 1) % args.select_every == 0
                                                             or epoch + 1 == epochs):
            choice = score(for_reconstruction(method, copy.deepcopy(model.regularizer), args))
            value = selection["scores"][str(epoch + 1)] = choice["score"]
            if value >= max(selection["scores"].values()):
                selection.update(epoch=epoch + 1, choice=choice)
                torch.save(model.regularizer.state_dict(), best_path)
            message += f", validation PSNR {value:.2f} dB (best: epoch {selection['epoch']})"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                    "selection": selection, "config": config}, ckpt)
        print(f"{message} ({time.time() - t0:.0f} s)", flush=True)
    if selection["epoch"]:
        model.regularizer.load_state_dict(torch.load(best_path, weights_only=True, map_location=args.device))
    else:
        selection["epoch"] = epochs
    return for_reconstruction(method, model.regularizer, args), selection


# ------------------------------------------------------------------------------------------------ solvers
class ScaledPrior(torch.nn.Module):
    r""":math:`\lambda R`, so that the solver's energy :math:`\tfrac12\|Ax-y\|^2 + \lambda R(x)` has weight 1."""

    def __init__(self, prior, lam: float):
        super().__init__()
        self.prior, self.lam = prior, float(lam)

    def fn(self, x):
        return self.lam * self.prior.fn(x)

    def grad(self, x):
        return self.lam * self.prior.grad(x)

    def energy_and_grad(self, x):
        e, g = self.prior.energy_and_grad(x)
        return self.lam * e, self.lam * g


def operator_sqnorm(physics: AstraCT, device, iters: int) -> float:
    r""":math:`\|A\|^2` by ``iters`` power iterations from a random image."""
    start = torch.rand(1, 1, *physics.img_size, device=device)
    return float(physics.compute_sqnorm(start, max_iter=iters, verbose=False))


def solve_variational(prior, lam: float, y, physics, max_iter: int, tol: float, info: dict | None = None,
                      record: tuple[int, ...] = ()):
    r"""Accelerated gradient descent on :math:`\tfrac12\|Ax-y\|^2 + \lambda R(x)` from the FBP; returns the result
    and the iterates at the iterations ``record``."""
    solver = VariationalSolver(ScaledPrior(prior, lam), weight=1.0, max_iter=max_iter, tol=tol, record=record,
                               lipschitz_init=operator_sqnorm(physics, y.device, iters=20))
    x = solver(y, physics, x_init=fbp(y, physics))
    if info is not None:
        info.update(iterations=solver.iterations, monotone=solver.monotone(), max_iter=max_iter)
    return x, solver.snapshots


def solve_tv(lam: float, y, physics, max_iter: int, tol: float, info: dict | None = None,
             record: tuple[int, ...] = ()):
    r"""FISTA on :math:`\tfrac12\|Ax-y\|^2 + \lambda TV(x)` (step :math:`1/\|A\|^2`, TV prox by deepinv's
    ``TVPrior``), from the FBP, per image stopped by :class:`RelativeChangeStop`; returns the result and the
    iterates at ``record``."""
    tv = dinv.optim.TVPrior(def_crit=1e-6, n_it_max=100)
    lip = operator_sqnorm(physics, y.device, iters=50) * 1.01
    stop = RelativeChangeStop(tol)
    x = x_prev = fbp(y, physics)
    snapshots = {0: x.clone()} if 0 in record else {}
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    t, k = 1.0, 0
    while k < max_iter:
        k += 1
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x + (t - 1) / t_new * (x - x_prev)
        x_new = tv.prox(z - physics.A_adjoint(physics.A(z) - y) / lip, gamma=lam / lip)
        done = stop(x_new, x)
        keep = active[:, None, None, None]
        x_prev, x, t = torch.where(keep, x, x_prev), torch.where(keep, x_new, x), t_new
        if k in record:
            snapshots[k] = x.clone()
        active &= ~done
        if not active.any():
            break
    for j in record:
        snapshots.setdefault(j, x.clone())
    if info is not None:
        info.update(iterations=k, max_iter=max_iter)
    return x, snapshots


def smoothed_tv(x: torch.Tensor) -> torch.Tensor:
    dx, dy = x[..., 1:, :-1] - x[..., :-1, :-1], x[..., :-1, 1:] - x[..., :-1, :-1]
    return torch.sqrt(dx ** 2 + dy ** 2 + 1e-4).sum(dim=(1, 2, 3))


class _SmoothTV(torch.nn.Module):
    def grad(self, x):
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            return torch.autograd.grad(smoothed_tv(z).sum(), z)[0]


def reconstruct(method: str, prior, lam: float, y, physics, max_iter: int, tol: float, info=None,
                record: tuple[int, ...] = ()):
    """The reconstruction of ``method`` and its iterates at ``record`` (none for FBP)."""
    if method == "FBP":
        return fbp(y, physics), {}
    if method == "TV":
        return solve_tv(lam, y, physics, max_iter, tol, info, record)
    return solve_variational(prior, lam, y, physics, max_iter, tol, info, record)


def psnr_ssim(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return dinv.metric.PSNR(max_pixel=1.0)(x_hat, x), dinv.metric.SSIM(max_pixel=1.0)(x_hat, x)


def choose_lambda(method, prior, problem, physics, train_x, val_x, val_y, args) -> dict:
    with torch.no_grad():
        pairs = [(train_x[i:i + 8], measure(physics, train_x[i:i + 8], args.seed + 7 + i))
                 for i in range(0, min(len(train_x), 32), 8)]
    # lambda0 balances the gradients at the training ground truths, E|A^T(Ax - y)| / E|grad R(x)|; for AR/ACR
    # Lunz et al.'s rule assumes |grad R| = 1 (recorded as "lambda_lunz"), which a short training does not reach
    lam0 = gradient_balance_lambda(pairs, physics, _SmoothTV() if method == "TV" else prior)
    record = {"lambda0": lam0, "rule": args.lambda_rule}
    if method in ("AR", "ACR"):
        record["lambda_lunz"] = gradient_balance_lambda(pairs, physics)
    if args.lambda_rule == "heuristic":
        record["lambda"] = lam0
    elif args.lambda_rule == "validation":
        # (lambda, K) jointly: one solve per lambda, its iterates at every budget K of --budgets scored
        budgets = tuple(k for k in args.budgets if k <= args.val_iters) or (args.val_iters,)
        scores = {}
        for k in args.grid:
            lam = lam0 * 2.0 ** k
            _, snapshots = reconstruct(method, prior, lam, val_y, physics, max(budgets), args.tol, record=budgets)
            scores[lam] = {K: float(psnr_ssim(snapshots[K], val_x)[0].mean()) for K in budgets}
        record["lambda"], record["budget"] = max(((lam, K) for lam in scores for K in scores[lam]),
                                                 key=lambda pair: scores[pair[0]][pair[1]])
        record["validation_psnr"] = scores
    else:
        lam, trace = discrepancy_lambda(
            lambda lam: reconstruct(method, prior, lam, val_y, physics, args.val_iters, args.tol)[0], val_y,
            physics, noise_norm(problem, val_y, args), lam_range=(lam0 / 64, lam0 * 64), steps=len(args.grid) + 2)
        record.update(**{"lambda": lam, "discrepancy_trace": trace})
    return record


# ------------------------------------------------------------------------------------------------ checks
SEGMENT = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def segment_profile(prior, clean: torch.Tensor, artefact: torch.Tensor) -> list[float]:
    r"""The regulariser along the segment from clean images :math:`x` to their artefact images :math:`z`,
    :math:`(R(x + t(z - x)) - R(x)) / (R(z) - R(x))` at :math:`t` in ``SEGMENT``, averaged over the images:
    :math:`t` for a linear rise (a Wasserstein critic), :math:`t^2` for a quadratic one; values near 0 for
    :math:`t \le 1/2` mean that the regulariser does not see half the artefact."""
    r0, r1 = prior.fn(clean), prior.fn(artefact)
    return [float(((prior.fn(clean + t * (artefact - clean)) - r0) / (r1 - r0)).mean()) for t in SEGMENT]


@torch.no_grad()
def acr_convexity(prior: ConvexAdversarialRegularizer, images: torch.Tensor, pairs: int, seed: int) -> dict:
    """Midpoint convexity on random pairs (phantom + noise and random images) and along random lines."""
    g = torch.Generator().manual_seed(seed)
    images, device = images.cpu(), images.device
    idx = torch.randint(len(images), (pairs,), generator=g)
    a = (images[idx] + 0.2 * torch.randn(images[idx].shape, generator=g)).to(device)
    b = (torch.rand(a.shape, generator=g) * 1.5 - 0.25).to(device)
    gaps = torch.cat([prior.midpoint_convexity_gap(a[i:i + 64], b[i:i + 64]) for i in range(0, pairs, 64)])
    scale = torch.cat([prior.fn(a[i:i + 64]).abs() for i in range(0, pairs, 64)])
    tol = 1e-5 * scale.clamp(min=1.0)
    lines, points = 16, 41
    t = torch.linspace(-1, 1, points, device=device).reshape(1, points, 1, 1, 1)
    base = images[torch.randint(len(images), (lines,), generator=g)].to(device)
    direction = torch.randn(base.shape, generator=g).to(device)
    values = torch.cat([prior.fn((base[i:i + 1, None] + t * direction[i:i + 1, None]).flatten(0, 1))
                        for i in range(lines)]).reshape(lines, points)
    second = values[:, 2:] - 2 * values[:, 1:-1] + values[:, :-2]
    line_tol = 1e-5 * values.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
    return {"pairs": pairs, "pair_failures": int((gaps > tol).sum()), "max_gap": float(gaps.max()),
            "lines": lines, "points_per_line": points, "line_failures": int((second < -line_tol).sum()),
            "min_second_difference": float(second.min())}


# ------------------------------------------------------------------------------------------------ main
def run_problem(problem: str, args, data: dict) -> tuple[dict, dict]:
    out = args.output / problem
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHODS if m not in LEARNED or m in args.methods]
    if (out / "results.json").exists() and (out / "images.pt").exists():  # finished before: resume
        done = json.loads((out / "results.json").read_text())
        # evaluated again: a run of more methods, or of a regulariser trained anew or under other options
        if all(m in done and (m not in LEARNED or ((out / f"{m}.pt").exists() and done["_checks"].get(
                f"{m}_config") == training_config(args, m))) for m in methods):
            print(f"[{problem}] results found in {out}, skipped", flush=True)
            return done, torch.load(out / "images.pt", weights_only=True)
    physics = make_physics(problem, args)
    train_x = stack(data["train"], args.device, n=32)  # the lambda heuristics use 32 training images
    val_x, test_x = stack(data["val"], args.device), stack(data["test"], args.device)
    val_y = measure(physics, val_x, args.seed + 1)
    test_y = measure(physics, test_x, args.seed + 2)
    results, images, extra = {}, {"GT": test_x}, {}
    priors = {}
    for method in (m for m in methods if m in LEARNED):
        t0 = time.time()
        print(f"[{problem}] training {method}", flush=True)

        def score(prior, method=method):
            choice = choose_lambda(method, prior, problem, physics, train_x, val_x, val_y, args)
            if "validation_psnr" in choice:
                choice["score"] = choice["validation_psnr"][choice["lambda"]][choice["budget"]]  # the best pair
            else:
                x_hat, _ = reconstruct(method, prior, choice["lambda"], val_y, physics, args.val_iters, args.tol)
                choice["score"] = float(psnr_ssim(x_hat, val_x)[0].mean())
            return choice

        priors[method], extra[f"{method}_selection"] = train(method, physics, data["train"], args,
                                                            out / f"{method}.pt", score)
        extra[f"{method}_config"] = training_config(args, method)
        extra[f"{method}_train_s"] = time.time() - t0
    for method in methods:
        t0 = time.time()
        prior = priors.get(method)
        info: dict = {}
        if method != "FBP":
            chosen = extra.get(f"{method}_selection", {}).get("choice")  # made when the kept epoch was scored
            info["lambda"] = chosen or choose_lambda(method, prior, problem, physics, train_x, val_x, val_y, args)
            lam = info["lambda"]["lambda"]
        else:
            lam = 0.0
        iters = info["lambda"].get("budget", args.iters) if method != "FBP" else args.iters
        x_hat, _ = reconstruct(method, prior, lam, test_y, physics, iters, args.tol, info)
        psnr, ssim = psnr_ssim(x_hat, test_x)
        results[method] = {"psnr": float(psnr.mean()), "ssim": float(ssim.mean()), "psnr_per_image":
                           psnr.tolist(), "seconds": time.time() - t0, **info}
        images[method] = x_hat
        print(f"[{problem}] {method:5s} PSNR {results[method]['psnr']:.2f} dB  SSIM {results[method]['ssim']:.4f}"
              f"  lambda {lam:.4g}  {info.get('iterations', '')} it  ({time.time() - t0:.0f} s)", flush=True)
    val_artefact = fbp(val_y, physics, args.train_filter)
    for method, prior in priors.items():
        extra[f"{method}_segment_profile"] = dict(zip(map(str, SEGMENT), segment_profile(prior, val_x, val_artefact)))
        print(f"[{problem}] {method} along clean -> FBP ({args.train_filter}), (R(x_t) - R(x)) / (R(z) - R(x)) at t = "
              + ", ".join(f"{t}: {v:.3f}" for t, v in extra[f"{method}_segment_profile"].items()), flush=True)
    if "ACR" in priors:
        n_pairs = 256 if args.smoke else 4096
        extra["acr_convexity"] = acr_convexity(priors["ACR"], test_x, n_pairs, args.seed + 3)
        print(f"[{problem}] ACR convexity: {extra['acr_convexity']}", flush=True)
    results["_checks"] = extra
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    torch.save({k: v[:1].cpu() for k, v in images.items()}, out / "images.pt")
    return results, images


def save_outputs(all_results: dict, all_images: dict, args) -> None:
    methods = [m for m in METHODS if any(m in res for res in all_results.values())]
    lines = ["| problem | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for problem, res in all_results.items():
        lines.append(f"| {problem} | " + " | ".join(f"{res[m]['psnr']:.2f} / {res[m]['ssim']:.3f}" if m in res
                                                    else "-" for m in methods) + " |")
    table = "PSNR (dB) / SSIM, mean over the test phantoms\n\n" + "\n".join(lines)
    print(table)
    (args.output / "results.md").write_text(table + "\n")
    (args.output / "results.json").write_text(json.dumps(all_results, indent=1, default=str))
    cols = ["GT", *methods]
    fig, axes = plt.subplots(len(all_images), len(cols), figsize=(2.2 * len(cols), 2.8 * len(all_images)),
                             squeeze=False)
    for row, (problem, imgs) in enumerate(all_images.items()):
        for col, name in enumerate(cols):
            ax = axes[row, col]
            if name not in imgs:
                ax.axis("off")
                continue
            ax.imshow(imgs[name][0, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            title = name if name == "GT" else f"{name}\n{all_results[problem][name]['psnr_per_image'][0]:.2f} dB"
            ax.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(problem.replace("_", " "))
    fig.tight_layout()
    fig.savefig(args.output / "ct_learned_regularizers.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    save_run_record(args.output, config, args.seed)
    data = {"train": RandomEllipsesDataset(args.n_train, args.size, seed=args.seed, texture=args.texture),
            "val": RandomEllipsesDataset(args.n_val, args.size, seed=args.seed + 1, texture=args.texture),
            "test": RandomEllipsesDataset(args.n_test, args.size, seed=args.seed + 2, texture=args.texture)}
    t0 = time.time()
    for problem in args.problems:
        run_problem(problem, args, data)
    # the table and figure gather every problem finished in --output (problems may run in separate processes)
    all_results, all_images = {}, {}
    for problem in ("sparse_view", "low_dose"):
        folder = args.output / problem
        if (folder / "results.json").exists():
            all_results[problem] = json.loads((folder / "results.json").read_text())
            all_images[problem] = torch.load(folder / "images.pt", weights_only=True)
    save_outputs(all_results, all_images, args)
    print(f"total {time.time() - t0:.0f} s; outputs in {args.output}")
    return all_results


if __name__ == "__main__":
    main()

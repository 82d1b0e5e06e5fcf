r"""Bilevel learning of ``bilevel_regularizers.py``: the two problems (their options for, and data from, the CT
recipe), the lower-level reconstruction, its training in deepinv's Trainer and its test.

Each bilevel regulariser is a :class:`deepinv_ext.algorithms.BilevelReconstructor` started at the FBP (the noisy image
in denoising), trained one epoch per call of ``ct_learned_regularizers_train.train_epoch`` (deepinv's Trainer, or its
data-parallel version under ``torchrun``; Adam, cosine decay, measurements simulated online) with the supervised MSE
loss, a checkpoint every epoch (a rerun resumes). The lower-level iterations of every training step are recorded.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

import deepinv as dinv
import torch
from bilevel_regularizers import BILEVEL
from ct_learned_regularizers import LEARNED
from ct_learned_regularizers import parse_args as ct_parse_args
from ct_learned_regularizers_evaluate import operator_sqnorm, psnr_ssim
from ct_learned_regularizers_train import datasets, fbp, make_physics, make_prior, measure, stack, train_epoch
from recipe_help import CBSD68
from tdv_denoising_run import RandomPatches
from torch.utils.data import Dataset

from deepinv_ext.algorithms import BilevelReconstructor, gradient_balance_lambda
from deepinv_ext.checkpoint import resume_checkpoint, save_checkpoint
from deepinv_ext.datasets import ImageFolderDataset, SkimageImagesDataset
from deepinv_ext.priors import SparsifyingFilterBank

# the CT recipe's options that make its smoke run last seconds
SMOKE_CT_OPTIONS = ["--grid", "0", "--budgets", "5", "--iters", "10", "--val-iters", "5", "--select-every", "0",
                    "--acr-sfb-filters", "4", "--acr-layers", "2"]


# ------------------------------------------------------------------------------------------------ the problems
def ct_options(args, problem: str) -> argparse.Namespace:
    """The options of ``ct_learned_regularizers.py`` for ``problem``: this recipe's sizes, budget, seed and ACR
    smoothing, then ``--ct-options``. Its convexity check of the ACR uses 256 random pairs, not 4096 (a side output here)."""
    epochs = [str(args.epochs)] * len(LEARNED)
    argv = ["--output", str(args.output / problem), "--problems", "sparse_view", "--methods", "AR", "ACR",
            "--size", str(args.size), "--n-train", str(args.n_train), "--n-val", str(args.n_val),
            "--n-test", str(args.n_test), "--epochs", *epochs, "--batch", str(args.batch),
            "--acr-smoothing", str(args.smoothing), "--device", args.device, "--threads", str(args.threads),
            "--seed", str(args.seed), "--convexity-pairs", "256"]
    if args.smoke:
        argv += ["--smoke", *SMOKE_CT_OPTIONS]
    return ct_parse_args(argv + shlex.split(args.ct_options))


class CentreCrops(Dataset):
    """Centre crops ``side`` x ``side`` of the first ``n`` images of another dataset (dict items)."""

    def __init__(self, base: Dataset, side: int, n: int) -> None:
        self.base, self.side, self.n = base, side, min(n, len(base))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        from torchvision.transforms.functional import center_crop

        return {"x": center_crop(self.base[i]["x"], [self.side, self.side])}


def setting(problem: str, args, ct_args) -> tuple[dinv.physics.LinearPhysics, dict] | None:
    """The physics and the training, validation and test images of ``problem`` (``None``: denoising without BSD68).
    CT: the sparse-view problem and phantoms of the CT recipe. Denoising: random patches of scikit-image's images
    (training and validation, disjoint seeds) and centre crops of the gray BSD68 (test)."""
    if problem == "ct":
        return make_physics("sparse_view", ct_args), datasets(ct_args)
    if not CBSD68.is_dir():
        return None
    base = SkimageImagesDataset(args.image_size, grayscale=True)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(args.sigma / 255), img_size=(args.size, args.size),
                                     device=args.device)  # img_size: for the power iterations of ||A||^2 = 1
    return physics, {"train": RandomPatches(base, args.size, args.n_train, seed=args.seed),
                     "val": RandomPatches(base, args.size, args.n_val, seed=args.seed + 10 ** 6),
                     "test": CentreCrops(ImageFolderDataset(CBSD68, gray="bt601"), args.test_crop, args.n_test)}


def split(physics, data: dict, args) -> dict:
    """The images and measurements the lambda rules and tests use: 32 training images, their measurement batches
    (``pairs``), the validation and the test pairs (the seeds of the CT recipe)."""
    train_x = stack(data["train"], args.device, n=32)
    pairs = [(train_x[i:i + 8], measure(physics, train_x[i:i + 8], args.seed + 7 + i))
             for i in range(0, len(train_x), 8)]
    val_x, test_x = stack(data["val"], args.device), stack(data["test"], args.device)
    return {"train_x": train_x, "pairs": pairs, "val": (val_x, measure(physics, val_x, args.seed + 1)),
            "test": (test_x, measure(physics, test_x, args.seed + 2))}


# ------------------------------------------------------------------------------------------------ the bilevel model
class FBPStartedBilevel(BilevelReconstructor):
    r"""A :class:`~deepinv_ext.algorithms.BilevelReconstructor` whose lower level starts at the Hann-filtered FBP
    (the measurement itself in denoising) and which records the lower-level iterations of every training forward
    (``step_iterations``). Constructor parameters as :class:`~deepinv_ext.algorithms.BilevelReconstructor`."""

    def __init__(self, prior, **kwargs) -> None:
        super().__init__(prior, **kwargs)
        self.step_iterations: list[int] = []

    def forward(self, y: torch.Tensor, physics, x_init: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Solve from ``x_init`` (default: the FBP of ``y``) and record the iterations of a training step.

        :param torch.Tensor y: the measurements.
        :param physics: the operator.
        :param torch.Tensor x_init: the start of the lower level.
        :param kwargs: ignored.
        """
        x = super().forward(y, physics, x_init=fbp(y, physics) if x_init is None else x_init)
        if torch.is_grad_enabled():
            self.step_iterations.append(self.lower_iterations)
        return x


def learned_lambda(model: BilevelReconstructor) -> float:
    """The current lambda of ``model``, a float."""
    return float(torch.as_tensor(model.regularizer.lam).detach())


def make_bilevel(name: str, physics, pairs, args, ct_args) -> FBPStartedBilevel:
    """The bilevel reconstruction of ``name`` ("FoE" or "ACR") before training: lambda from ``--lam-init`` or the
    gradient-balance rule on ``pairs``, the lower-level tolerance ``--grad-tol`` times the median ``||A^T y||``."""
    torch.manual_seed(args.seed + 20 + BILEVEL.index(name))
    if name == "FoE":
        prior = SparsifyingFilterBank(num_filters=args.foe_filters, kernel_size=args.foe_kernel, init_weight=1.0,
                                      smoothing=args.smoothing)
    else:
        prior = make_prior("ACR", ct_args)
    prior = prior.to(args.device)
    with torch.no_grad():  # no graph of the prior's gradients
        lam = args.lam_init or gradient_balance_lambda(pairs, physics, prior)
        scale = torch.cat([physics.A_adjoint(y).flatten(1).norm(dim=1) for _, y in pairs]).median()
    return FBPStartedBilevel(prior, lam=lam, grad_tol=args.grad_tol * float(scale), max_iter=args.max_iter,
                             cg_tol=args.cg_tol, cg_max_iter=args.cg_max_iter,
                             lipschitz_init=operator_sqnorm(physics, args.device, iters=20)).to(args.device)


def bilevel_config(args, name: str) -> dict:
    """The options a bilevel checkpoint of ``name`` depends on (all but output, selection, device and test)."""
    skip = {"output", "smoke", "problems", "methods", "device", "threads", "n_test", "test_crop", "n_val"}
    return {"method": name, **{k: v for k, v in sorted(vars(args).items()) if k not in skip}}


def train_bilevel(name: str, physics, data: dict, pairs, args, ct_args, folder: Path, parallel) -> tuple:
    """Train (or resume) the bilevel reconstruction ``name``, one epoch per Trainer call, a checkpoint
    ``folder/<name>_bilevel.pt`` every epoch. Returns the model and its record (training seconds, lower-level
    iterations of every step, loss per epoch)."""
    index = BILEVEL.index(name)
    model = make_bilevel(name, physics, pairs, args, ct_args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr[index])
    ckpt, config = folder / f"{name}_bilevel.pt", bilevel_config(args, name)
    record = {"train_s": 0.0, "step_iterations": [], "loss": [], "lambda_init": learned_lambda(model)}
    state = resume_checkpoint(ckpt, config, map_location=args.device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        record = state["record"]
    # the schedule of train_epoch (cosine decay over args.epochs, its data order and seeds) for this method
    schedule = argparse.Namespace(epochs=[args.epochs] * len(BILEVEL), lr=list(args.lr), seed=args.seed,
                                  batch=args.batch, device=args.device)
    for epoch in range(len(record["loss"]), args.epochs):
        t0, model.step_iterations = time.time(), []
        loss = train_epoch(model, physics, optimizer, dinv.loss.SupLoss(), data["train"], schedule, epoch, index,
                           parallel)
        record["train_s"] += time.time() - t0
        record["step_iterations"] += model.step_iterations
        record["loss"].append(loss)
        parallel.on_main(save_checkpoint, ckpt, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                 "record": record}, config)
        if parallel.is_main:
            steps = model.step_iterations
            print(f"  bilevel {name} epoch {epoch + 1}/{args.epochs}: MSE {loss:.3g}, lambda "
                  f"{learned_lambda(model):.4g}, lower-level iterations per step "
                  f"{sum(steps) / max(len(steps), 1):.1f} ({time.time() - t0:.0f} s)", flush=True)
    return model, record


def test_bilevel(problem: str, name: str, model: FBPStartedBilevel, record: dict, physics, test) -> tuple[dict, torch.Tensor]:
    """The test reconstructions of a trained bilevel model (its learned lambda, the training tolerance), scored."""
    t0 = time.time()
    model.eval()
    with torch.no_grad():
        x_hat = model(test[1], physics)
    psnr, ssim = psnr_ssim(x_hat, test[0])
    steps = record["step_iterations"]
    result = {"training": "bilevel", "psnr": float(psnr.mean()), "ssim": float(ssim.mean()),
              "psnr_per_image": psnr.tolist(), "lambda": learned_lambda(model),
              "lambda_init": record["lambda_init"], "iterations": model.lower_iterations,
              "max_iter": model.solver.max_iter, "grad_tol": model.grad_tol, "train_s": record["train_s"],
              "iterations_per_step": sum(steps) / max(len(steps), 1), "steps": len(steps),
              "loss_per_epoch": record["loss"], "seconds": time.time() - t0}
    print(f"[{problem}] {name} (bilevel) PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}  lambda "
          f"{result['lambda']:.4g}  {result['iterations']} it", flush=True)
    return result, x_hat

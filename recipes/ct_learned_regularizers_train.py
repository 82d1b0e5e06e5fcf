r"""The training job of ``ct_learned_regularizers.py``: data, physics, the regularisers and their training.

Each regulariser is a :class:`deepinv_ext.algorithms.RegularizerTrainingModel` (its output is the FBP, its
``.regularizer`` is trained) trained in :class:`deepinv.Trainer` one epoch per call, with measurements simulated
online, Adam, a cosine decay of the learning rate over the epochs, a checkpoint every epoch and, every
``--select-every`` epochs, a score of the frozen regulariser (its validation PSNR under the lambda rule) that decides
which epoch is kept. The artefact images are ramp-filtered FBPs (``--train-filter``): they carry the noise that the
regulariser must learn to penalise.

Under ``torchrun`` the Trainer is :class:`deepinv_ext.data_parallel.DataParallelTrainer`: each process trains on its
share of every batch of ``--batch`` (gradients averaged on the optimiser step, not by DDP: the losses call the
regulariser outside the model's ``forward``); rank 0 alone scores the epochs, prints and writes the checkpoints.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path

import deepinv as dinv
import torch
from ct_learned_regularizers import LEARNED
from torch.utils.data import DataLoader

from deepinv_ext.algorithms import RegularizerTrainingModel
from deepinv_ext.checkpoint import resume_checkpoint, save_checkpoint
from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.losses import NETTLoss, WassersteinCriticLoss
from deepinv_ext.physics import AstraCT
from deepinv_ext.priors import NETT, AdversarialRegularizer, ConvexAdversarialRegularizer

# option added after checkpoints were made -> its value that reproduces the training from before it
OPTIONS_ADDED_LATER = {"nett_descent": 0, "ar_descent": 0, "acr_descent": 0, "texture": 0.0}


# ------------------------------------------------------------------------------------------------ data and physics
def datasets(args) -> dict[str, RandomEllipsesDataset]:
    """Training, validation and test phantoms, disjoint by their seeds."""
    return {"train": RandomEllipsesDataset(args.n_train, args.size, seed=args.seed, texture=args.texture),
            "val": RandomEllipsesDataset(args.n_val, args.size, seed=args.seed + 1, texture=args.texture),
            "test": RandomEllipsesDataset(args.n_test, args.size, seed=args.seed + 2, texture=args.texture)}


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


def stack(dataset, device, n: int | None = None) -> torch.Tensor:
    """The first ``n`` images of ``dataset`` (all by default) as one batch on ``device``."""
    return torch.stack([dataset[i]["x"] for i in range(min(len(dataset), n or len(dataset)))]).to(device)


def measure(physics: AstraCT, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return physics(x)


# ------------------------------------------------------------------------------------------------ the regularisers
def make_prior(method: str, args) -> torch.nn.Module:
    if method == "AR":
        return AdversarialRegularizer()
    if method == "ACR":
        return ConvexAdversarialRegularizer(num_filters=args.acr_filters, num_layers=args.acr_layers,
                                            smoothing=args.acr_smoothing, sfb_filters=args.acr_sfb_filters)
    return NETT(width=args.nett_width, depth=2)


def make_loss(method: str, args) -> torch.nn.Module:
    if method == "NETT":
        return NETTLoss(noise_level=args.nett_noise, descent_steps=args.nett_descent)
    noise, descent = (args.ar_noise, args.ar_descent) if method == "AR" else (args.acr_noise, args.acr_descent)
    return WassersteinCriticLoss(mu=args.mu_gp, noise_level=noise, descent_steps=descent)


def for_reconstruction(method: str, regularizer: torch.nn.Module, args) -> torch.nn.Module:
    """The trained regulariser frozen for the solves (AR: with its coercive term, not used in the training)."""
    prior = regularizer.eval()
    prior.requires_grad_(False)
    if method == "AR":
        prior.eps, prior.box = args.ar_eps, (0.0, 1.0)
    return prior


# ------------------------------------------------------------------------------------------------ training
def training_config(args, method: str) -> dict:
    """The options a training checkpoint of ``method`` depends on (a resumed run must not mix two
    configurations): all but the output, the selection of problems and methods, the device and the test solves;
    of the per-method options, those of ``method`` only."""
    index = LEARNED.index(method)
    skip = {"output", "smoke", "problems", "methods", "device", "threads", "iters", "n_test", "convexity_pairs"}
    own = {"AR": ("ar_",), "ACR": ("acr_",), "NETT": ("nett_",)}
    foreign = tuple(prefix for m, prefixes in own.items() if m != method for prefix in prefixes)
    config = {k: v for k, v in sorted(vars(args).items()) if k not in skip and not k.startswith(foreign)}
    config.update(epochs=args.epochs[index], lr=args.lr[index])
    for option, off in OPTIONS_ADDED_LATER.items():  # left out when off: older checkpoints keep loading
        if config.get(option) == off:
            del config[option]
    return config


def train_epoch(model, physics, optimizer, loss, train_set, args, epoch: int, index: int,
                parallel: DataParallel) -> float:
    """One epoch in deepinv's Trainer (data-parallel under ``torchrun``) at the learning rate of the cosine decay;
    returns the mean loss (over the processes)."""
    epochs, seed = args.epochs[index], args.seed + 1000 * (index + 1) + epoch
    for group in optimizer.param_groups:  # cosine decay of the learning rate, set per epoch (resumable)
        group["lr"] = 0.5 * args.lr[index] * (1 + math.cos(math.pi * epoch / epochs))
    torch.manual_seed(seed)
    loader = parallel.shard(DataLoader(train_set, batch_size=args.batch, shuffle=True), seed=seed)  # a new order
    trainer = DataParallelTrainer(model=model, physics=physics, optimizer=optimizer, losses=[loss], epochs=1,
                                  train_dataloader=loader, online_measurements=True, save_path=None, verbose=False,
                                  device=args.device, non_blocking_transfers=str(args.device).startswith("cuda"),
                                  show_progress_bar=False, compute_train_metrics=False, parallel=parallel)
    trainer.train()
    return parallel.mean([trainer.logs_total_loss_train.avg])[0]


def train(method: str, physics: AstraCT, train_set, args, ckpt: Path,
          score: Callable[[torch.nn.Module], dict] | None = None,
          parallel: DataParallel | None = None) -> tuple[torch.nn.Module, dict]:
    """Train one regulariser, one epoch per Trainer call, checkpointing every epoch (a rerun resumes).

    With ``--select-every N`` and ``score`` (a frozen regulariser's lambda choice, with its validation PSNR as
    ``"score"``), the regulariser is scored every N epochs and after the last one, and the best-scoring epoch is
    kept (``<method>_best.pt``). Returns the frozen regulariser and the selection record: the chosen epoch, the
    scores, and the lambda choice of the chosen epoch (``"choice"``). With ``parallel`` (the processes of a
    ``torchrun``), every process trains and resumes from the same checkpoint; rank 0 alone scores, prints and writes.
    """
    parallel = parallel or DataParallel("cpu")  # not entered: one process
    index, epochs = LEARNED.index(method), args.epochs[LEARNED.index(method)]
    torch.manual_seed(args.seed + 10 + index)
    model = RegularizerTrainingModel(make_prior(method, args), pseudo_inverse=TrainingFBP(args.train_filter))
    model.to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr[index])
    start, selection = 0, {"epoch": 0, "scores": {}}
    best_path = ckpt.with_name(f"{ckpt.stem}_best.pt")
    config = training_config(args, method)
    state = resume_checkpoint(ckpt, config, map_location=args.device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, selection = int(state["epoch"]), state.get("selection", selection)
    loss = make_loss(method, args)
    for epoch in range(start, epochs):
        t0 = time.time()
        value = train_epoch(model, physics, optimizer, loss, train_set, args, epoch, index, parallel)
        message = f"  {method} epoch {epoch + 1}/{epochs}: loss {value:.4f}"
        if score is not None and args.select_every > 0 and ((epoch + 1) % args.select_every == 0
                                                             or epoch + 1 == epochs):
            choice = parallel.on_main(score, for_reconstruction(method, copy.deepcopy(model.regularizer), args))
            value = selection["scores"][str(epoch + 1)] = choice["score"]
            if value >= max(selection["scores"].values()):
                selection.update(epoch=epoch + 1, choice=choice)
                parallel.on_main(torch.save, model.regularizer.state_dict(), best_path)
            message += f", validation PSNR {value:.2f} dB (best: epoch {selection['epoch']})"
        parallel.on_main(save_checkpoint, ckpt, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                 "epoch": epoch + 1, "selection": selection}, config)
        if parallel.is_main:
            print(f"{message} ({time.time() - t0:.0f} s)", flush=True)
    if selection["epoch"]:
        model.regularizer.load_state_dict(torch.load(best_path, weights_only=True, map_location=args.device))
    else:
        selection["epoch"] = epochs
    return for_reconstruction(method, model.regularizer, args), selection

r"""
Learned regularisers for sparse-view CT: AR, ACR and NETT
=========================================================

Problem: recover an image :math:`x` from a sparse-view sinogram :math:`y = Ax + \epsilon` (30 of 180 views,
Gaussian noise) by

.. math::

    \hat x = \arg\min_x \tfrac12\|Ax - y\|_2^2 + \lambda R_\theta(x),

where the regulariser :math:`R_\theta` is a network trained to tell clean images from the streaky filtered
back-projections (FBP) of their sinograms. Three ways to train it are compared with FBP:

- the adversarial regulariser (AR) :footcite:p:`lunz2018adversarial`, a Wasserstein critic with gradient penalty
  :footcite:p:`gulrajani2017improved`;
- the adversarial convex regulariser (ACR) :footcite:p:`mukherjee2020learned`, the same critic restricted to an
  input-convex network, so that the variational problem is convex;
- NETT :footcite:p:`li2020nett`, :math:`R_\theta(x) = \|D_\theta(x)\|^2` with an encoder-decoder :math:`D_\theta`
  trained to output zero on clean images and the artefact on FBPs.

Each is trained here for a few dozen steps on 256 random-ellipse phantoms of 64 x 64 pixels, with networks far
smaller than the published ones: enough to show the mechanics (the training loop is :class:`deepinv.Trainer`
unchanged), not to reach the papers' numbers. For those, the recipe ``recipes/ct_learned_regularizers.py`` trains
them for over a thousand steps each on 2048 phantoms, chooses :math:`\lambda` and the iteration budget on
validation phantoms, adds TV as a baseline and a low-dose problem, and reports the full table.
"""

import time
import warnings

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from deepinv_ext.algorithms import (
    NotConvergedWarning,
    RegularizerTrainingModel,
    VariationalSolver,
    gradient_balance_lambda,
)
from deepinv_ext.datasets import RandomEllipsesDataset
from deepinv_ext.losses import NETTLoss, WassersteinCriticLoss
from deepinv_ext.physics import AstraCT
from deepinv_ext.priors import NETT, AdversarialRegularizer, ConvexAdversarialRegularizer, ScaledPrior

torch.manual_seed(0)
size = 64

# %%
# Phantoms and the operator
# -------------------------
# Random ellipses (training and test sets from different seeds) and a parallel-beam
# :class:`~deepinv_ext.physics.AstraCT` with every 6th of 180 views; the noise is added by the physics, so that the
# Trainer simulates new measurements at every step (``online_measurements=True``).

train_set = RandomEllipsesDataset(256, size, seed=0)
x = torch.stack([RandomEllipsesDataset(4, size, seed=2)[i]["x"] for i in range(4)])
physics = AstraCT(size, angles=torch.arange(0, 180, 6, dtype=torch.float64), cache_dir=None,
                  noise_model=dinv.physics.GaussianNoise(0.5))
y = physics(x)


def fbp(y, physics, filter="ramp"):
    """The artefact images of the training (ramp filter) and the starting point of the solves (Hann filter)."""
    return physics.A_dagger(y, fbp=True, filter=filter)


# %%
# Training in deepinv's Trainer
# -----------------------------
# :class:`~deepinv_ext.algorithms.RegularizerTrainingModel` makes a regulariser trainable by
# :class:`deepinv.Trainer`: its output is the FBP of the simulated sinogram (the artefact image), and the losses
# :class:`~deepinv_ext.losses.WassersteinCriticLoss` and :class:`~deepinv_ext.losses.NETTLoss` compare the
# regulariser on that image and on the clean one. Epochs of 32 batches of 8 phantoms, networks far smaller than
# the recipe's, the recipe's learning rates; the AR critic, the slowest to learn, gets two epochs and also sees
# points a few gradient steps down from the FBPs (``descent_steps``), as in the recipe.

regularizers = {  # name: (regulariser, loss, learning rate, epochs)
    "AR": (AdversarialRegularizer(widths=(8, 16, 16, 32), hidden=64),
           WassersteinCriticLoss(mu=10.0, descent_steps=3), 1e-3, 2),
    "ACR": (ConvexAdversarialRegularizer(num_filters=8, num_layers=3, sfb_filters=16),
            WassersteinCriticLoss(mu=10.0), 1e-2, 1),
    "NETT": (NETT(width=8, depth=2), NETTLoss(noise_level=0.1), 2e-3, 1),
}
for name, (prior, loss, lr, epochs) in regularizers.items():
    start = time.perf_counter()
    model = RegularizerTrainingModel(prior, pseudo_inverse=fbp)
    trainer = dinv.Trainer(model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=lr),
                           losses=[loss], epochs=epochs, online_measurements=True, save_path=None, verbose=False,
                           train_dataloader=DataLoader(train_set, batch_size=8, shuffle=True),
                           show_progress_bar=False, compute_train_metrics=False, non_blocking_transfers=False)
    trainer.train()
    prior.eval().requires_grad_(False)
    print(f"{name}: {time.perf_counter() - start:.1f} s of training")

# %%
# Reconstruction
# --------------
# :class:`~deepinv_ext.algorithms.VariationalSolver` minimises :math:`\tfrac12\|Ax - y\|^2 + \lambda R(x)` by
# accelerated gradient descent from the (Hann-filtered) FBP, stopped after a budget of 50 iterations, as Lunz et al.
# stop theirs (a :class:`~deepinv_ext.algorithms.NotConvergedWarning` says so, silenced here). :math:`\lambda`
# balances the gradients of the data term and of the regulariser at training images
# (:func:`~deepinv_ext.algorithms.gradient_balance_lambda`; the recipe chooses it on validation phantoms instead).
# The AR critic is not coercive, so its solve adds the squared distance to :math:`[0, 1]^n` (``eps``, ``box``).

warnings.simplefilter("ignore", NotConvergedWarning)
regularizers["AR"][0].eps, regularizers["AR"][0].box = 1.0, (0.0, 1.0)
x_train = torch.stack([train_set[i]["x"] for i in range(16)])
pairs = [(x_train, physics(x_train))]
psnr = dinv.metric.PSNR(max_pixel=1.0)
reconstructions = {"FBP": fbp(y, physics, "hann")}
for name, (prior, *_) in regularizers.items():
    lam = gradient_balance_lambda(pairs, physics, prior)
    solver = VariationalSolver(ScaledPrior(prior, lam), max_iter=50, tol=1e-6)
    reconstructions[name] = solver(y, physics, x_init=reconstructions["FBP"])

# %%
# The figure: the first test phantom, its FBP and the three reconstructions, titled with the mean PSNR over the four
# test phantoms. After a few dozen steps the critics (AR, ACR) already remove part of the streaks and the noise;
# NETT, whose encoder-decoder learns more slowly, stays close to its FBP starting point. The recipe's longer
# training, and its choice of :math:`\lambda` and budget on validation data, are what its result tables measure.

fig, axes = plt.subplots(1, 5, figsize=(12, 2.8))
vmax = float(x[0].max())
axes[0].imshow(x[0, 0], cmap="gray", vmin=0, vmax=vmax)
axes[0].set_title("ground truth")
for ax, (name, rec) in zip(axes[1:], reconstructions.items()):
    ax.imshow(rec[0, 0], cmap="gray", vmin=0, vmax=vmax)
    ax.set_title(f"{name}: {float(psnr(rec, x).mean()):.1f} dB")
for ax in axes:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

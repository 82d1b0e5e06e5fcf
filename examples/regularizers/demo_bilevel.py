r"""
Bilevel learning of a filter-bank regulariser: implicit hypergradients and MAID
===============================================================================

Problem: denoise small natural images, :math:`y = x + \epsilon` with :math:`\epsilon \sim \mathcal{N}(0, 0.1^2 I)`,
by the minimiser of a variational energy (the lower level)

.. math::

    \hat x(\theta) = \arg\min_x E_\theta(x), \qquad
    E_\theta(x) = \tfrac12\|x - y\|_2^2 + \lambda \sum_{k=1}^{K} \sum_{\text{pixels}} \phi_s(h_k * x),

a field-of-experts style filter bank (:class:`deepinv_ext.priors.SparsifyingFilterBank`) with the smoothed absolute
value :math:`\phi_s(t) = \sqrt{t^2 + s^2} - s`, and learn its filters :math:`h_k` and its weight :math:`\lambda`
(:math:`\theta = (h, \log\lambda)`) so that :math:`\hat x(\theta)` is close to the ground truth (the upper level)
:footcite:p:`kunisch2013bilevel`:

.. math::

    \min_\theta\ f(\theta) = \frac{1}{2B}\sum_{b=1}^B \|\hat x_b(\theta) - x_{\mathrm{true}, b}\|_2^2 .

The energy is 1-strongly convex in :math:`x` and, for :math:`s > 0`, twice differentiable, so the implicit function
theorem gives the hypergradient from one linear solve with the Hessian :math:`\nabla_x^2 E_\theta(\hat x)`
(:class:`~deepinv_ext.algorithms.BilevelReconstructor`). Two ways to learn are shown:

- in :class:`deepinv.Trainer` with Adam and a plain supervised loss, the implicit hypergradient against
  Jacobian-free backpropagation :footcite:p:`fung2022jfb`;
- with :class:`~deepinv_ext.algorithms.MAID` :footcite:p:`salehi2024adaptively` on one batch: the lower level solved
  only as accurately as a certified bound on the hypergradient error requires, against a fixed tight accuracy.

Everything is small (32 x 32 images, 8 filters of 5 x 5): enough to show the mechanics on a CPU in seconds, not to
compete with learned denoisers.
"""

import math
import time

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from deepinv_ext.algorithms import MAID, BilevelReconstructor, HypergradientBound
from deepinv_ext.datasets import SkimageImagesDataset
from deepinv_ext.priors import SparsifyingFilterBank

torch.manual_seed(0)
torch.set_num_threads(1)

# %%
# Data
# ----
# Twelve of scikit-image's bundled images for training, four for validation, resized to 32 x 32, each with one fixed
# noisy measurement (the training pairs of bilevel learning); ``camera``, kept out of both, for the figure.

sigma, size = 0.1, 32
train_names = ("astronaut", "coffee", "chelsea", "coins", "moon", "page", "text", "rocket", "grass", "gravel",
               "brick", "cell")
val_names = ("hubble_deep_field", "retina", "immunohistochemistry", "clock")
physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma, rng=torch.Generator().manual_seed(0)))


def pairs(names, size):
    """Ground truths and their noisy measurements, as deepinv dict items ``{"x": x, "y": y}``."""
    data = SkimageImagesDataset(size=size, names=names)
    x = torch.stack([data[i]["x"] for i in range(len(data))])
    return [{"x": xi, "y": yi} for xi, yi in zip(x, physics(x))]


train_pairs, val_pairs = pairs(train_names, size), pairs(val_names, size)
test = pairs(("camera",), 64)[0]
x_test, y_test = test["x"][None], test["y"][None]


def bilevel_model(hypergradient):
    r"""The same initial regulariser for every run: 8 random zero-mean 5x5 filters, :math:`s = 0.1`,
    :math:`\lambda = 0.01`. The filter bank's own weight is frozen at 1: :math:`\lambda` carries the scale."""
    torch.manual_seed(0)
    bank = SparsifyingFilterBank(num_filters=8, kernel_size=5, init_weight=1.0, smoothing=0.1)
    with torch.no_grad():
        bank.filters.weight -= bank.filters.weight.mean(dim=(2, 3), keepdim=True)
    bank.weight_raw.requires_grad_(False)
    return BilevelReconstructor(bank, lam=0.01, hypergradient=hypergradient, grad_tol=1e-4, max_iter=1000)


# %%
# Training in deepinv's Trainer
# -----------------------------
# :class:`~deepinv_ext.algorithms.BilevelReconstructor` is a :class:`deepinv.models.Reconstructor`: its forward
# pass solves the lower level (accelerated gradient descent until :math:`\|\nabla E_\theta(x)\| \le 10^{-4}` per
# image, without recording a graph) and attaches the chosen derivative, so that :class:`deepinv.Trainer` trains it
# with :class:`deepinv.loss.SupLoss` unchanged. ``hypergradient="implicit"`` solves
# :math:`\nabla_x^2 E_\theta(\tilde x)\, q = \nabla \ell(\tilde x)` by conjugate gradients on Hessian-vector products
# in the backward pass; ``"jfb"`` replaces the Hessian by :math:`L I` (no solve). Adam, 10 epochs of 3 batches of 4;
# the validation loss (the mean squared error on the four held-out images: the upper-level loss up to a constant
# factor) is recorded after every epoch.

mse = dinv.loss.SupLoss()
initial = bilevel_model("implicit")
with torch.no_grad():
    val_x, val_y = torch.stack([p["x"] for p in val_pairs]), torch.stack([p["y"] for p in val_pairs])
    start_loss = float(mse(x=val_x, x_net=initial(val_y, physics)).mean())

models, curves = {}, {}
for hypergradient in ("implicit", "jfb"):
    model = bilevel_model(hypergradient)
    start = time.perf_counter()
    trainer = dinv.Trainer(model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=2e-2),
                           losses=[mse], epochs=10, online_measurements=False, save_path=None, verbose=False,
                           train_dataloader=DataLoader(train_pairs, batch_size=4, shuffle=True),
                           eval_dataloader=DataLoader(val_pairs, batch_size=4), eval_interval=1,
                           compute_eval_losses=True, show_progress_bar=False, compute_train_metrics=False,
                           non_blocking_transfers=False)
    trainer.train()
    models[hypergradient] = model.eval()
    curves[hypergradient] = [start_loss] + trainer.eval_loss_history["SupLoss"]
    lam = float(model.regularizer.lam.detach())
    print(f"{hypergradient}: {time.perf_counter() - start:.1f} s, lambda = {lam:.4f}, "
          f"validation loss {curves[hypergradient][0]:.2e} -> {curves[hypergradient][-1]:.2e}")

# %%
# Both reach about the same validation loss. For denoising with a weak regulariser the Hessian
# :math:`I + \lambda\nabla^2 R_\theta` is close to the identity, so JFB's direction is close to the implicit one:
# their cosine at the initial parameters, on the whole training set, is printed below.

x_train, y_train = torch.stack([p["x"] for p in train_pairs]), torch.stack([p["y"] for p in train_pairs])
directions = []
for hypergradient in ("implicit", "jfb"):
    model = bilevel_model(hypergradient)
    mse(x=x_train, x_net=model(y_train, physics)).mean().backward()
    directions.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
cosine = torch.nn.functional.cosine_similarity(*directions, dim=0)
print(f"cosine between the implicit and JFB hypergradients: {float(cosine):.4f}")

fig, ax = plt.subplots(figsize=(5, 3.2))
for name, curve in curves.items():
    ax.plot(curve, marker="o", markersize=3, label=name)
ax.set(xlabel="epoch", ylabel="validation upper-level loss (MSE)", title="Trainer: implicit vs JFB")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# MAID: adaptive accuracy with a certified bound
# ----------------------------------------------
# An inexact lower-level solution :math:`\tilde x` and an inexact adjoint solve give an inexact hypergradient
# :math:`z`. :class:`~deepinv_ext.algorithms.HypergradientBound` bounds :math:`\|z - \nabla f(\theta)\|` a posteriori
# from the residuals, the strong convexity :math:`\mu = 1` and Lipschitz constants of :math:`\nabla\ell`
# (:math:`L_\ell = 1/B`), of the Hessian (:math:`L_H`) and of the mixed derivative
# :math:`\partial_\theta\nabla_x E_\theta` (:math:`L_J`). For this energy, with :math:`a = \lambda`,
# :math:`c_3 = \max|\phi_s'''| = 1.5/(1.25^{2.5} s^2)`, :math:`\|h_k * \cdot\| \le \|h_k\|_1`, filters of
# :math:`p \times p` and pixel values :math:`|x| \le M` (we take :math:`M = 1.5`, checked below):
#
# .. math::
#
#     L_H = a c_3 \sum_k \|h_k\|_1^2 \|h_k\|_2, \qquad
#     L_J = a \Big(\big(\tfrac1s \textstyle\sum_k \|h_k\|_1^2\big)^2
#     + \sum_k \|h_k\|_1^2 \big(\tfrac{2p}{s} + c_3 p M \|h_k\|_1\big)^2\Big)^{1/2}.
#
# They change with :math:`\theta`, so the bound is given to MAID as a function of the model. MAID then tightens the
# lower-level tolerance :math:`\varepsilon` and the adjoint tolerance :math:`\delta` only while the bound could
# make :math:`z` an ascent direction, loosens them after every accepted step, and accepts a step only when the
# certified sufficient-decrease test holds. Both runs below (float64, one batch of four training images, 30 steps)
# start from the same regulariser; the baseline keeps :math:`\varepsilon = \delta = 10^{-5}`.

smoothing, kernel, pixel_bound = 0.1, 5, 1.5
c3 = 1.5 / (1.25 ** 2.5 * smoothing ** 2)


def bound(model):
    """The constants of the hypergradient bound at the model's current filters and lambda."""
    bank = model.regularizer.prior
    a = float(model.regularizer.lam.detach() * bank.weight.detach())
    h = bank.filters.weight.detach().flatten(1)
    l1, l2 = h.abs().sum(1), h.norm(dim=1)
    hessian = a * c3 * float((l1 ** 2 * l2).sum())
    mixed = a * math.sqrt((float((l1 ** 2).sum()) / smoothing) ** 2
                          + float((l1 ** 2 * (2 * kernel / smoothing + c3 * kernel * pixel_bound * l1) ** 2).sum()))
    return HypergradientBound(1.0, loss_lipschitz=1 / 4, hessian_lipschitz=hessian, mixed_lipschitz=mixed)


batch_x = torch.stack([p["x"] for p in train_pairs[:4]]).double()
batch_y = torch.stack([p["y"] for p in train_pairs[:4]]).double()
runs = {}
for name, accuracy, adaptive in (("adaptive (MAID)", 1e-1, True), ("fixed, eps = 1e-5", 1e-5, False)):
    start = time.perf_counter()
    maid = MAID(bilevel_model("implicit").double(), bound, eps=accuracy, delta=accuracy,
                adaptive=adaptive, step=1e-2)
    maid.run(batch_y, physics, batch_x, steps=30)
    runs[name] = maid
    print(f"{name}: {time.perf_counter() - start:.1f} s, loss {maid.history[0]['loss']:.3f} -> "
          f"{maid.history[-1]['loss']:.3f}, {maid.lower_iterations} lower-level and {maid.cg_iterations} CG "
          f"iterations, largest |x| {float(maid.x.abs().max()):.2f}")

# %%
# The bound against the true error
# --------------------------------
# At the parameters MAID learned, the hypergradient is computed at a range of accuracies
# :math:`\varepsilon = \delta` from a cold start (:meth:`~deepinv_ext.algorithms.MAID.hypergradient`) and compared
# with a reference computed at :math:`\varepsilon = \delta = 10^{-9}`: the bound must lie above the true error.

maid = runs["adaptive (MAID)"]


def hypergradient_at(accuracy):
    maid.eps, maid.delta, maid.x = accuracy, accuracy, None
    return maid.hypergradient(batch_y, physics, batch_x)


reference = hypergradient_at(1e-9).grad
accuracies = [10.0 ** -k for k in range(1, 7)]
errors, bounds = [], []
for accuracy in accuracies:
    hg = hypergradient_at(accuracy)
    errors.append(float((hg.grad - reference).norm()))
    bounds.append(hg.bound)
print("bound / true error:", ", ".join(f"{b / e:.0f}" for b, e in zip(bounds, errors)))

# %%
# Left: the upper-level loss against the lower-level iterations spent (solves for the hypergradient and for every
# step tried). The adaptive run starts at :math:`\varepsilon = 0.1`, is tightened by the bound to between
# :math:`10^{-4}` and :math:`10^{-2}` and stays there, so each step costs a few warm-started iterations; it reaches
# the loss of the fixed run with fewer iterations, although one early step is rejected and redone at a tighter
# accuracy. Right: the bound is above the true error at every accuracy, by factors of a few thousand: the Lipschitz
# constants above are worst cases, and the bound is certified but pessimistic.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
for name, run in runs.items():
    ax1.plot([0] + [r["lower_iterations"] for r in run.history], [r["loss"] for r in run.history]
             + [float(run.loss(run.x, batch_x))], marker="o", markersize=3, label=name)
ax1.set(xlabel="cumulative lower-level iterations", ylabel="upper-level loss", title="MAID on one batch")
ax1.legend()
ax2.loglog(accuracies, bounds, marker="o", label="certified bound")
ax2.loglog(accuracies, errors, marker="s", label="true error")
ax2.set(xlabel=r"accuracy $\varepsilon = \delta$", ylabel=r"$\|z - \nabla f(\theta)\|$",
        title="hypergradient error")
ax2.legend()
fig.tight_layout()
plt.show()

# %%
# Reconstructions
# ---------------
# The test image (64 x 64: the filter bank is convolutional, so it applies at any size) denoised by the initial
# regulariser and by the three learned ones, with PSNR. A few dozen steps on a dozen 32 x 32 images (MAID: one
# batch of four) gain 4 to 5 dB over the noisy image and 3 to 4 dB over the initial random filters.

psnr = dinv.metric.PSNR(max_pixel=1.0)
reconstructions = {"noisy": y_test, "initial": initial, **models,
                   "MAID": maid.model.float()}
maid.model.grad_tol = 1e-4  # back from the bound check's tight accuracies
fig, axes = plt.subplots(1, len(reconstructions) + 1, figsize=(13, 2.6))
axes[0].imshow(x_test[0, 0], cmap="gray", vmin=0, vmax=1)
axes[0].set_title("ground truth")
for ax, (name, rec) in zip(axes[1:], reconstructions.items()):
    if not torch.is_tensor(rec):
        with torch.no_grad():
            rec = rec(y_test, physics)
    ax.imshow(rec[0, 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name}: {float(psnr(rec, x_test)):.1f} dB")
for ax in axes:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

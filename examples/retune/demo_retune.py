r"""
ReTune against unrolling: what happens past the training depth
==============================================================

Problem: deblur an image (Gaussian blur, Gaussian noise) with a learned forward-backward layer

.. math::

    T_\theta(x) = \operatorname{prox}_{\gamma\lambda g_\theta}\bigl(x - \gamma A^\top(Ax - y)\bigr),

where :math:`g_\theta` is a weighted :math:`\ell_1` norm of orthonormal wavelet coefficients
(:class:`deepinv_ext.priors.WaveletL1Prior`, one learned weight per band), and :math:`\gamma` and :math:`\lambda`
are learned too.
Standard unrolling trains :math:`T_\theta^L`, :math:`L` layers from :math:`A^\top y`; full unrolling trains
:math:`(R+1)L` layers. Both learn parameters for one depth, and nothing says what further iterations do.
ReTune :footcite:p:`davy2025restarted` (:class:`deepinv_ext.algorithms.ReTune`) restarts the :math:`L` layers
:math:`R` times without gradients before the :math:`L` it trains through, so that it learns at (or near) the fixed
point :math:`x^* = T_\theta(x^*)`, with the memory of :math:`L` layers. Here each is trained for 40 steps, then
iterated far past its training depth.
"""

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from deepinv.physics.functional import gaussian_blur

from deepinv_ext.algorithms import (
    AnchoredLayer,
    ForwardBackwardLayer,
    ReTune,
    full_unrolling,
    standard_unrolling,
)
from deepinv_ext.datasets import SkimageImagesDataset
from deepinv_ext.priors import WaveletL1Prior

torch.manual_seed(0)

# %%
# Data and operator
# -----------------
# Training patches of 32 x 32 pixels cut at random from ten of scikit-image's bundled images (resized to 64 x 64);
# the test image is ``camera``, kept out of training. Blur of standard deviation 1 pixel (circular boundary, so
# :math:`\|A\| = 1` and the step :math:`\gamma = 1` is admissible), noise 0.05.

patch, depth, restarts, steps = 32, 5, 10, 40
images = SkimageImagesDataset(size=64, names=("astronaut", "coffee", "moon", "page", "text", "rocket", "grass",
                                              "brick", "cell", "horse"))
images = torch.stack([images[i]["x"] for i in range(len(images))])
corners = torch.randint(64 - patch + 1, (steps, 4, 2))
which = torch.randint(len(images), (steps, 4))
batches = [torch.stack([images[k, :, r:r + patch, c:c + patch] for k, (r, c) in zip(ks, rc)])
           for ks, rc in zip(which, corners)]


def blur(size: int) -> dinv.physics.BlurFFT:
    return dinv.physics.BlurFFT((1, size, size), filter=gaussian_blur(sigma=(1.0, 1.0)),
                                noise_model=dinv.physics.GaussianNoise(0.05))


train_physics, test_physics = blur(patch), blur(64)
x_test = SkimageImagesDataset(size=64, names=("camera",))[0]["x"][None]
y_test = test_physics(x_test)

# %%
# Three models on the same layer, the same budget
# -----------------------------------------------
# The layer starts at :math:`\gamma = 1`, :math:`\lambda = 0.02` and unit band weights. On a blur, forward-backward
# is only nonexpansive; ReTune's analysis asks for a contraction, which :class:`deepinv_ext.algorithms.AnchoredLayer`
# gives: :math:`T_c(x) = (1 - c)\,T_\theta(x) + c\,A^\top y` has Lipschitz constant :math:`(1 - c)\,
# \mathrm{Lip}(T_\theta) \le 1 - c`, here :math:`c = 0.05`, so its iterates converge to a unique fixed point. Each
# model is trained by Adam on the mean squared error, 40 steps of 4 patches.


def layer() -> AnchoredLayer:
    prior = WaveletL1Prior(level=3, wavelet="haar")
    return AnchoredLayer(ForwardBackwardLayer(prior, step=1.0, lam=0.02), contraction=0.05)


models = {
    f"standard unrolling, L = {depth}": standard_unrolling(layer(), depth),
    f"full unrolling, (R+1)L = {(restarts + 1) * depth}": full_unrolling(layer(), depth, restarts),
    f"ReTune, L = {depth}, R = {restarts}": ReTune(layer(), depth=depth, restarts=restarts),
}
for model in models.values():
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
    model.train()
    for x in batches:
        loss = (model(train_physics(x), train_physics) - x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

# %%
# Iterating past the training depth
# ---------------------------------
# Every trained layer is now iterated 300 times from :math:`A^\top y` on the test image, recording the PSNR and
# the relative change :math:`\|x_{k+1} - x_k\| / \|x_k\|` of each iterate. (``model.eval()`` then ``model(y,
# physics)`` would run ReTune's own stopping rule, restarts until that change falls below ``tol``.)

psnr = dinv.metric.PSNR()
curves = {}
with torch.no_grad():
    for name, model in models.items():
        x_k, psnrs, changes = model.iteration.init(y_test, test_physics), [], []
        for _ in range(300):
            x_next = model.iteration(x_k, y_test, test_physics)
            changes.append(ReTune.relative_residual(x_next, x_k))
            psnrs.append(float(psnr(x_next, x_test)))
            x_k = x_next
        curves[name] = (psnrs, changes)
        trained = model.iteration.layer
        print(f"{name}: step {float(trained.step):.2f}, lambda {float(trained.lam):.4f}, PSNR {psnrs[depth - 1]:.2f} dB at iteration "
              f"{depth}, {psnrs[-1]:.2f} dB at iteration 300")
print(f"blurred and noisy input: {float(psnr(y_test, x_test)):.2f} dB")

# %%
# The figure: PSNR against the iteration (left; dotted lines at the training depths :math:`L` and
# :math:`(R+1)L`) and the relative change of the iterates (right). Every model converges (the layer is a
# contraction), but to different places: standard unrolling is best at its depth and then drifts down, towards a
# fixed point its parameters were never chosen for; ReTune, trained near its fixed point, settles higher and stays
# there however long it is iterated. Full unrolling, whose 55 trained layers nearly reach the fixed point, settles
# there too, but backpropagates through 11 times as many layers as ReTune. (With a convex prior the iterates pass through better early-stopped images on
# the way; only a network stopped at exactly its training depth keeps that.)

iterations = range(1, 301)
fig, (ax_psnr, ax_change) = plt.subplots(1, 2, figsize=(10, 3.8))
for name, (psnrs, changes) in curves.items():
    ax_psnr.semilogx(iterations, psnrs, label=name)
    ax_change.loglog(iterations, changes, label=name)
for ax in (ax_psnr, ax_change):
    for d in (depth, (restarts + 1) * depth):
        ax.axvline(d, color="gray", linestyle=":")
    ax.set_xlabel("iteration k")
    ax.grid(True, which="both", alpha=0.3)
ax_psnr.set_ylabel("PSNR (dB)")
ax_change.set_ylabel(r"$\|x_{k+1} - x_k\| / \|x_k\|$")
ax_psnr.legend()
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

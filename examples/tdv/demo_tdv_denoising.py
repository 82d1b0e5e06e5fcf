r"""
Denoising with the published Total Deep Variation network
=========================================================

Problem: recover a gray image :math:`x` from :math:`y = x + \epsilon`, :math:`\epsilon \sim \mathcal{N}(0,
\sigma^2 I)`, :math:`\sigma = 25/255`, with the Total Deep Variation (TDV) network of :footcite:t:`kobler2020total`
and the weights its authors published (trained on the 400 images of BSDS :footcite:p:`martin2001database`).
The network :class:`deepinv_ext.algorithms.TDVNetwork` runs :math:`S = 10` semi-implicit steps of the gradient flow
of the energy

.. math::

    E(x) = \frac{\lambda}{2T}\|x - y\|_2^2 + R(x)

up to the learned stopping time :math:`T`, where :math:`R` is the learned regulariser
:class:`deepinv_ext.priors.TDV`:

.. math::

    x_s = x_{s-1} - \tfrac{T}{S}\Big(\nabla R(x_{s-1}) + \tfrac{\lambda}{T}(x_s - y)\Big)
        = \operatorname{prox}_{\frac{\lambda}{S}f}\Big(x_{s-1} - \tfrac{T}{S}\nabla R(x_{s-1})\Big),
    \qquad f(x) = \tfrac12\|x - y\|_2^2.

The energy decreases along the steps; the PSNR does not keep rising with it: stopping at :math:`T` is part of the
trained model, and running the flow further smooths the image too much.
"""

from pathlib import Path

import deepinv as dinv
import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage.io import imread

from deepinv_ext.algorithms import TDVNetwork

# %%
# The published weights and a test image
# --------------------------------------
# Both are shipped with the repository's tests: the weights of the authors' repository (VLOGroup/tdv, MIT licence)
# and a 96 x 96 crop of scikit-image's ``camera``, two folders above this file (sphinx-gallery runs an example in
# its own folder, without ``__file__``). Published weights load frozen: inference records no graph.

data = Path(globals().get("__file__", "demo_tdv_denoising.py")).resolve().parents[2] / "tests" / "data"
x = torch.from_numpy(imread(data / "camera_96.png").astype(np.float32) / 255)[None, None]
model = TDVNetwork.from_checkpoint(data / "tdv" / "tdv3-3-25-f32-gray.pth")
print(f"S = {model.S} steps, learned T = {model.T.item():.4f}, lambda = {model.lmbda.item():.4f}")

# %%
# Denoising, step by step
# -----------------------
# ``return_all=True`` returns :math:`x_0 = y, x_1, \dots, x_S`. Starting again from :math:`x_S` runs the same
# flow for another :math:`T` (up to :math:`2T`), past the trained stopping time.

physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma=25 / 255))
torch.manual_seed(0)
y = physics(x)
with torch.no_grad():
    steps = model(y, physics, return_all=True)
    steps += model(y, physics, x_init=steps[-1], return_all=True)[1:]


def energy(z: torch.Tensor) -> float:
    r""":math:`E(z) = \frac{\lambda}{2T}\|z - y\|^2 + R(z)`."""
    with torch.no_grad():
        return float(model.lmbda / (2 * model.T) * (z - y).pow(2).sum() + model.R.fn(z).sum())


psnr = dinv.metric.PSNR(max_pixel=1.0)
energies = [energy(z) for z in steps]
psnrs = [float(psnr(z, x)) for z in steps]
print(f"noisy {psnrs[0]:.2f} dB, TDV (s = S) {psnrs[model.S]:.2f} dB, s = 2S {psnrs[-1]:.2f} dB")
print("energy never increases:", all(b <= a for a, b in zip(energies, energies[1:])))

# %%
# The figure: the noisy image, the output at the trained :math:`T` (:math:`s = S`), the clean image, and the energy
# and PSNR along the steps (dashed: the trained stopping time).

fig = plt.figure(figsize=(10, 5.6))
grid = fig.add_gridspec(2, 3, height_ratios=(1.1, 1))
for col, (img, title) in enumerate(((y, f"noisy: {psnrs[0]:.2f} dB"),
                                    (steps[model.S], f"TDV, s = S: {psnrs[model.S]:.2f} dB"), (x, "clean"))):
    ax = fig.add_subplot(grid[0, col])
    ax.imshow(img[0, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
ax = fig.add_subplot(grid[1, :])
ax.plot(energies, "o-", color="C0")
ax.set(xlabel="step s", ylabel=r"energy $E(x_s)$")
ax.axvline(model.S, color="gray", linestyle="--")
ax2 = ax.twinx()
ax2.plot(psnrs, "s-", color="C1")
ax2.set_ylabel("PSNR (dB)", color="C1")
ax.set_title(r"the energy decreases along the flow; the PSNR peaks near the trained $T$ ($s = S$)")
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

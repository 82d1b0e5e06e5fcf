r"""
Transferring the published TDV regulariser to CT and MRI
========================================================

Problem: reconstruct :math:`x` from :math:`y = Ax + \epsilon` for an operator the regulariser has never seen, by
minimising

.. math::

    E(x) = \frac{w}{2}\|Ax - y\|_2^2 + R(x),

where :math:`R` is the Total Deep Variation of :footcite:t:`kobler2020total` with the weights its authors trained
for Gaussian denoising (:class:`deepinv_ext.priors.TDV`), unchanged, and :math:`E` is minimised by
:class:`deepinv_ext.algorithms.VariationalSolver` (accelerated gradient descent with Lipschitz backtracking and a
monotone energy, started from a few conjugate-gradient steps on :math:`A^\top A x = A^\top y`). Two operators:

- sparse-view parallel-beam CT (:class:`deepinv_ext.physics.AstraCT`, 45 of 360 views), against filtered
  back-projection :footcite:p:`kak1988principles`;
- 4x accelerated 8-coil Cartesian MRI (:class:`deepinv_ext.physics.SigpyMultiCoilMRI`, birdcage coil maps of
  SigPy :footcite:p:`ong2019sigpy`), against the zero-filled coil combination :math:`A^H y` (density-compensated).

``python recipes/tdv_transfer.py`` runs the same problems at 96 x 96 with more views, accelerations and a choice of
:math:`w` on a validation image; here one size (64 x 64) and one :math:`w` per operator, chosen that way.
"""

import warnings
from pathlib import Path

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from deepinv.physics.generator import EquispacedMaskGenerator

from deepinv_ext.algorithms import NotConvergedWarning, VariationalSolver
from deepinv_ext.datasets import SkimageImagesDataset
from deepinv_ext.physics import AstraCT, SigpyMultiCoilMRI
from deepinv_ext.priors import TDV, RealImagPrior

# %%
# The regulariser and the image
# -----------------------------
# The published gray weights, shipped with the repository's tests two folders above this file (sphinx-gallery runs
# an example in its own folder, without ``__file__``), load frozen. The image is scikit-image's
# ``camera`` at 64 x 64, in [0, 1]. Each solve runs a fixed budget of 40 iterations (the energy never increases along
# them), so the solver's warning that it stopped before its tolerance is silenced.

root = Path(globals().get("__file__", "demo_tdv_transfer.py")).resolve().parents[2]
weights = root / "tests" / "data" / "tdv" / "tdv3-3-25-f32-gray.pth"
R = TDV.from_checkpoint(weights)
x = SkimageImagesDataset(size=64, grayscale=True, names=("camera",))[0]["x"][None].float()
psnr = dinv.metric.PSNR(max_pixel=1.0)
gen = torch.Generator().manual_seed(0)
results = {}
warnings.filterwarnings("ignore", category=NotConvergedWarning)

# %%
# Sparse-view CT
# --------------
# The system matrix of 360 views over 180 degrees, of which every 8th view is kept, and noise of 0.5 % of the
# largest sinogram value.

ct = AstraCT(64, angles=360, backend="sparse", cache_dir=None)
ct.update(angles=ct.full_angles[::8])
y = ct.A(x)
y = y + 0.005 * y.abs().max() * torch.randn(y.shape, generator=gen)
solver = VariationalSolver(R, weight=5.0, max_iter=40)
results["CT, 45 views"] = (x, {"FBP": ct.A_dagger(y, fbp=True), "TDV": solver(y, ct)})

# %%
# Multi-coil MRI
# --------------
# MRI images are complex, stored as real and imaginary parts in two channels (deepinv's layout). The ground truth
# is ``camera`` with a smooth phase ramp, and the one-channel TDV acts on the two parts as two images,
# :math:`R(u + iv) = R(u) + R(v)` (:class:`deepinv_ext.priors.RealImagPrior`).

ramp = torch.pi / 8 * (torch.linspace(-1, 1, 64)[:, None] + torch.linspace(-1, 1, 64)[None]) / 2
x_mri = torch.cat([x * torch.cos(ramp), x * torch.sin(ramp)], dim=1)
mask = EquispacedMaskGenerator((64, 64), acceleration=4, center_fraction=0.08).step(1, seed=0)["mask"]
mri = SigpyMultiCoilMRI(SigpyMultiCoilMRI.birdcage_maps(8, (64, 64)), mask=mask)
y = mri.A(x_mri)
y = y + mri.mask[:, :, None] * 0.01 * torch.randn(y.shape, generator=gen)
solver = VariationalSolver(RealImagPrior(R), weight=3000.0, max_iter=40)
results["MRI, 4x"] = (x_mri, {"zero-filled": mri.A_dagger(y, mode="dcf"), "TDV": solver(y, mri)})

# %%
# The figure: ground truth, baseline and TDV for each operator (MRI: magnitudes), with their PSNRs.


def magnitude(z: torch.Tensor) -> torch.Tensor:
    return z.norm(dim=1, keepdim=True) if z.shape[1] == 2 else z


fig, axes = plt.subplots(2, 3, figsize=(8, 5.6))
for row, (task, (truth, recs)) in zip(axes, results.items()):
    for ax, (name, img) in zip(row, {"ground truth": truth, **recs}.items()):
        img = magnitude(img).clamp(0, 1)
        ax.imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
        label = "" if name == "ground truth" else f": {float(psnr(img, magnitude(truth))):.2f} dB"
        if label:
            print(f"{task}, {name}{label}")
        ax.set_title(f"{task}\n{name}{label}", fontsize=10)
        ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

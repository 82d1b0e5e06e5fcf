r"""
CT with ASTRA: sinograms, the exact adjoint and filtered back-projection
========================================================================

Problem: recover an image :math:`x` from its parallel-beam sinogram :math:`y = Ax + \epsilon`, where :math:`A` is the
discrete Radon transform of :class:`deepinv_ext.physics.AstraCT` (ASTRA's projectors, here its sparse system matrix
on the CPU) and :math:`\epsilon` Gaussian noise. Filtered back-projection :footcite:p:`kak1988principles`
(``A_dagger(y, fbp=True)``) inverts it at full angular sampling; with 8 times fewer views it leaves streaks, which
the learned regularisers of the other examples remove.
"""

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_ext.datasets import SheppLoganPhantomDataset
from deepinv_ext.physics import AstraCT

# %%
# The operator and a phantom
# --------------------------
# 128 x 128 pixels and 180 views over 180 degrees. The adjoint is ASTRA's back-projection, exact: the adjointness
# test :math:`\langle Ax, y\rangle - \langle x, A^\top y\rangle` is at float rounding.

x = SheppLoganPhantomDataset(size=128)[0]["x"][None]
physics = AstraCT(128, angles=180, backend="sparse", cache_dir=None)
print(f"adjointness error: {float(physics.adjointness_test(x)):.1e}")

# %%
# Full and sparse views
# ---------------------
# Noise of 1% of the sinogram's range, then FBP with the ramp filter at all views and at every 8th view
# (``physics.update(angles=...)`` selects rows of the same system matrix).

torch.manual_seed(0)
psnr = dinv.metric.PSNR(max_pixel=1.0)
reconstructions = {}
for step in (1, 8):
    physics.update(angles=physics.full_angles[::step])
    y = physics.A(x)
    y = y + 0.01 * y.abs().max() * torch.randn_like(y)
    reconstructions[f"FBP, {physics.angles.numel()} views"] = (y, physics.A_dagger(y, fbp=True))

# %%
# The figure: sinograms above, their FBPs below.

fig, axes = plt.subplots(2, 2, figsize=(7, 7))
for column, (title, (y, rec)) in enumerate(reconstructions.items()):
    axes[0, column].imshow(y[0, 0], cmap="gray", aspect="auto")
    axes[0, column].set_title(f"sinogram, {y.shape[-2]} views")
    axes[1, column].imshow(rec[0, 0].clamp(0, 1), cmap="gray")
    axes[1, column].set_title(f"{title}: {float(psnr(rec, x)):.1f} dB")
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

r"""
Multi-coil radial MRI with SigPy: ESPIRiT coil maps and CG-SENSE
================================================================

Problem: recover an image :math:`x` from radial multi-coil k-space

.. math::

    y_n = F\, \mathrm{diag}(s_n)\, x + \epsilon_n, \qquad n = 1, \dots, N,

where :math:`s_n` is the sensitivity of coil :math:`n`, :math:`F` the non-uniform Fourier transform at the k-space
locations of the trajectory (SigPy's NUFFT :footcite:p:`ong2019sigpy,fessler2003nonuniform`, in
:class:`deepinv_ext.physics.SigpyMultiCoilMRI`) and :math:`\epsilon_n` Gaussian noise. The coil maps are not known:
they are estimated from the k-space centre by ESPIRiT :footcite:p:`uecker2014espirit`
(:func:`deepinv_ext.physics.estimate_coil_maps`), then the image is reconstructed by the density-compensated adjoint
(one pass) and by CG-SENSE :footcite:p:`pruessmann2001advances` (conjugate gradient on the normal equations), with
the estimated maps and, for reference, the true ones.
"""

import deepinv as dinv
import matplotlib.pyplot as plt
import sigpy
import torch

from deepinv_ext.physics import RadialTrajectoryGenerator, SigpyMultiCoilMRI, estimate_coil_maps

# %%
# Image, coils and trajectory
# ---------------------------
# SigPy's 128 x 128 Shepp-Logan phantom in deepinv's layout ``(B, 2, H, W)`` (real and imaginary parts as
# channels), 8 simulated birdcage coils, and 48 golden-angle spokes :footcite:p:`winkelmann2007optimal` of 256
# samples: about a quarter of the :math:`\pi/2 \times 128 \approx 200` spokes that Nyquist sampling needs. The
# generator also returns the Pipe-Menon density compensation :footcite:p:`pipe1999sampling` of the trajectory.

size = 128
image = torch.from_numpy(sigpy.shepp_logan((size, size))).to(torch.complex64)
x = torch.stack([image.real, image.imag])[None]
true_maps = SigpyMultiCoilMRI.birdcage_maps(8, (size, size))
radial = RadialTrajectoryGenerator((size, size), n_spokes=48, golden_angle=True, random_rotation=False)
params = radial.step(batch_size=1, seed=0)
trajectory, dcf = params["trajectory"], params["dcf"]

torch.manual_seed(0)
physics = SigpyMultiCoilMRI(true_maps, trajectory=trajectory, dcf=dcf,
                            noise_model=dinv.physics.GaussianNoise(0.01))
y = physics(x)
print(f"k-space: {tuple(y.shape)} (batch, real/imaginary, coils, samples)")

# %%
# ESPIRiT coil maps
# -----------------
# The samples inside the central 24 x 24 square of k-space, which every spoke crosses, are gridded to a Cartesian
# calibration region, from which ESPIRiT finds the maps. They are normalised to :math:`\sum_n |s_n|^2 = 1`, as the
# simulated ones, and are unique up to a phase per pixel shared by all coils, so they are compared by magnitude.
# Outside the object, where no signal constrains them, they differ from the simulated ones, harmlessly.

maps = estimate_coil_maps(y, calib_size=24, trajectory=trajectory, img_size=(size, size))

# %%
# Reconstructions
# ---------------
# ``A_dagger(y, mode="dcf")`` is the density-compensated adjoint divided by :math:`\sum_n |s_n|^2`; ``A_dagger(y)``
# runs CG-SENSE (30 iterations). The reconstruction with ESPIRiT maps carries their phase, so the PSNR compares
# magnitudes.

espirit = SigpyMultiCoilMRI(maps, trajectory=trajectory, dcf=dcf, max_iter=30)
physics.max_iter = 30
reconstructions = {
    "adjoint (DCF), ESPIRiT": espirit.A_dagger(y, mode="dcf"),
    "CG-SENSE, ESPIRiT": espirit.A_dagger(y),
    "CG-SENSE, true maps": physics.A_dagger(y),
}


def magnitude(z):
    return z.pow(2).sum(dim=1, keepdim=True).sqrt()


psnr = dinv.metric.PSNR(max_pixel=1.0)

# %%
# The figure: the magnitudes of four of the eight coil maps, simulated (top) and estimated (middle), and the
# reconstructions (bottom). The undersampling streaks of the adjoint are removed by CG-SENSE, and the ESPIRiT maps
# reconstruct as well as the true ones.

fig, axes = plt.subplots(3, 4, figsize=(9, 7))
for coil in range(4):
    axes[0, coil].imshow(true_maps[2 * coil].abs(), cmap="viridis", vmin=0, vmax=1)
    axes[0, coil].set_title(f"coil {2 * coil + 1}, simulated", fontsize=9)
    axes[1, coil].imshow(maps[0, 2 * coil].abs(), cmap="viridis", vmin=0, vmax=1)
    axes[1, coil].set_title(f"coil {2 * coil + 1}, ESPIRiT", fontsize=9)
axes[2, 0].imshow(magnitude(x)[0, 0], cmap="gray", vmin=0, vmax=1)
axes[2, 0].set_title("ground truth", fontsize=9)
for ax, (name, rec) in zip(axes[2, 1:], reconstructions.items()):
    ax.imshow(magnitude(rec)[0, 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name}\n{float(psnr(magnitude(rec), magnitude(x))):.1f} dB", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

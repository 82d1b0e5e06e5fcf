r"""
Gradient-step plug-and-play deblurring and its objective
========================================================

Problem: deblur an image, :math:`y = Ax + \epsilon` with :math:`A` a Gaussian blur and :math:`\epsilon` white
Gaussian noise, by plug-and-play with a gradient-step denoiser :footcite:p:`hurault2022gradient`
:math:`D_\sigma = \operatorname{Id} - \nabla g_\sigma`, :math:`g_\sigma(x) = \frac12\|x - N_\sigma(x)\|_2^2`
(:class:`deepinv_ext.denoisers.GradientStepDenoiser`). Because :math:`D_\sigma` is a gradient step, the PnP
iteration of :class:`deepinv_ext.algorithms.GradientStepPnP`,

.. math::

    x_{k+1} = \operatorname{prox}_{\tau_k f}\big(x_k - \tau_k\lambda\nabla g_\sigma(x_k)\big), \qquad
    f(x) = \tfrac12\|Ax - y\|_2^2,

is proximal gradient descent on the non-convex objective :math:`F = f + \lambda g_\sigma`
:footcite:p:`hauptmann2024convergent`. The Lipschitz constant of :math:`\nabla g_\sigma` is unknown for a trained
network, so the step :math:`\tau_k` is found by Armijo backtracking :footcite:p:`armijo1966minimization`: a
candidate is accepted only if :math:`F(x_k) - F(x_{k+1}) \ge \frac{\gamma}{\tau_k}\|x_{k+1} - x_k\|^2`, otherwise
:math:`\tau_k` shrinks. :math:`F(x_k)` therefore decreases monotonically, whatever the network, and that is what
this example shows.
"""

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import GradientStepPnP
from deepinv_ext.datasets import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet

# %%
# A small gradient-step denoiser
# ------------------------------
# :math:`N_\sigma` is a :class:`deepinv_ext.denoisers.SmallPotentialNet` (three convolutions), trained for a few
# seconds for blind Gaussian denoising, :math:`\sigma \in [0.01, 0.1]`, on random 32 x 32 patches of
# scikit-image's images, ``camera`` left out for the test. ``recipes/gs_pnp_convergence.py`` trains a larger one.

torch.manual_seed(0)
train = SkimageImagesDataset(size=64, grayscale=True, names=tuple(n for n in SKIMAGE_IMAGES if n != "camera"))
images = torch.stack([train[i]["x"] for i in range(len(train))])
denoiser = GradientStepDenoiser(SmallPotentialNet(in_channels=1, channels=16, depth=3))
optimizer = torch.optim.Adam(denoiser.parameters(), lr=5e-3)
for _ in range(200):
    rows, cols = torch.randint(64 - 32 + 1, (2,))
    x = images[torch.randint(len(images), (8,)), :, rows:rows + 32, cols:cols + 32]
    sigma = 0.01 + 0.09 * torch.rand(8)
    loss = (denoiser(x + sigma[:, None, None, None] * torch.randn_like(x), sigma) - x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"denoising PSNR on the last training batch: {-10 * torch.log10(loss.detach()):.2f} dB")
denoiser = denoiser.eval().requires_grad_(False).double()  # float64: F resolves small decreases

# %%
# The deblurring problem
# ----------------------
# ``camera`` at 64 x 64, a Gaussian kernel of standard deviation 1.6 pixels and noise of standard deviation 0.01.

x = SkimageImagesDataset(size=64, grayscale=True, names=("camera",))[0]["x"][None].double()
physics = dinv.physics.BlurFFT((1, 64, 64), filter=gaussian_blur(sigma=(1.6, 1.6), dtype=torch.float64),
                               noise_model=dinv.physics.GaussianNoise(sigma=0.01))
y = physics(x)

# %%
# Two runs of GS-PnP
# ------------------
# With :math:`\lambda = 0.1` and :math:`\sigma = 0.05`, from :math:`x_0 = A^\top y`: first with the plain PnP step
# :math:`\tau_0 = 1/\lambda`, where :math:`x_{k+1} = \operatorname{prox}_{\tau f}(D_\sigma(x_k))`, then from a
# step ten times longer, which Armijo's test shrinks in the first iterations until :math:`F` decreases enough.
# The step is never lengthened again, so :math:`\tau_k` is non-increasing; each run stops when the relative change
# of :math:`F` falls below ``tol``.

psnr = dinv.metric.PSNR(max_pixel=1.0)
runs = {}
for label, stepsize in (("τ₀ = 1/λ", 1 / 0.1), ("τ₀ = 10/λ", 10 / 0.1)):
    model = GradientStepPnP(denoiser, lambda_=0.1, sigma_denoiser=0.05, stepsize=stepsize, max_iter=300, tol=1e-6)
    with torch.no_grad():
        x_hat = model(y, physics)
    history = {key: value[:, 0] for key, value in model.history.items() if value.dim() == 2}
    runs[label] = (x_hat, history)
    print(f"{label}: {len(history['step'])} iterations, {int(history['backtracks'].sum())} rejected steps, "
          f"{float(psnr(x_hat, x)):.2f} dB, F never increases: {bool((history['objective'].diff() <= 0).all())}")

# %%
# The figure: the images above; below, :math:`F(x_k) - F(x_K)` (:math:`x_K` the last iterate of the run) and the
# accepted steps :math:`\tau_k`, with the iterations where Armijo rejected a candidate marked.

x_hat = runs["τ₀ = 10/λ"][0]
fig = plt.figure(figsize=(10, 6.5))
grid = fig.add_gridspec(2, 6, height_ratios=(1.1, 1))
for col, (img, title) in enumerate(((x, "ground truth"), (y, f"blurred, noisy: {float(psnr(y, x)):.2f} dB"),
                                    (x_hat, f"GS-PnP: {float(psnr(x_hat, x)):.2f} dB"))):
    ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
    ax.imshow(img[0, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
ax_F, ax_tau = fig.add_subplot(grid[1, :3]), fig.add_subplot(grid[1, 3:])
for color, (label, (_, history)) in zip(("C0", "C1"), runs.items()):
    ax_F.semilogy(history["objective"][:-1] - history["objective"][-1], color=color, label=label)
    ax_tau.plot(history["stepsize"], color=color, label=label)
    rejected = torch.nonzero(history["backtracks"] > 0).flatten()
    ax_tau.plot(rejected, history["stepsize"][rejected], "x", color=color)
ax_F.set(xlabel="iteration k", title=r"$F(x_k) - F(x_K)$: monotone decrease")
ax_tau.set(xlabel="iteration k", title=r"accepted step $\tau_k$ (x: a candidate rejected)")
for ax in (ax_F, ax_tau):
    ax.grid(True, alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

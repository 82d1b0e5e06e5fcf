r"""
A third-party plugin: a prior registered, checked and built from a config
=========================================================================

Problem: add a new prior to deepinv-ext without touching deepinv-ext. Here it is a smoothed total variation
(:footcite:t:`rudin1992nonlinear` with the Charbonnier smoothing of the gradient magnitude),

.. math::

    g(x) = \sum_{i} \sqrt{(D_h x)_i^2 + (D_v x)_i^2 + \varepsilon^2},

with :math:`D_h, D_v` forward differences. A package registers it in the entry-point group
``deepinv_ext.plugins``; from then on ``deepinv-ext plugins`` lists it, :mod:`deepinv_ext.testing` checks it as it
checks deepinv-ext's own priors, and :func:`deepinv_ext.plugins.build` builds it from a config, also inside the
config of a solver. The example then deblurs a phantom with it.
"""

import contextlib
import sys
import tempfile
import types
from pathlib import Path

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_ext import plugins, testing
from deepinv_ext.datasets import SheppLoganPhantomDataset
from deepinv_ext.priors import SmoothLearnedPrior

# %%
# The plugin's code
# -----------------
# In a real package this class would live in a module of its own, say ``tiny_tv_plugin.py``. Subclassing
# :class:`deepinv_ext.priors.SmoothLearnedPrior` and defining ``fn`` (one energy per image, shape ``(B,)``) is all
# it takes: the gradient comes from autograd and the proximal operator from an inner accelerated solve. The class
# method ``contract_example`` gives the contract checks a small instance and a batch to check it on.


class SmoothTV(SmoothLearnedPrior):
    r"""Smoothed total variation :math:`\sum_i \sqrt{|(\nabla x)_i|^2 + \varepsilon^2}`.

    :param float eps: the smoothing :math:`\varepsilon > 0`.
    """

    def __init__(self, eps: float = 0.01):
        super().__init__()
        self.eps = eps

    def fn(self, x, *args, **kwargs):
        dh = x[..., :-1, 1:] - x[..., :-1, :-1]
        dv = x[..., 1:, :-1] - x[..., :-1, :-1]
        return (dh.pow(2) + dv.pow(2) + self.eps**2).sqrt().flatten(1).sum(1)

    @classmethod
    def contract_example(cls, generator=None):
        g = testing.example_generator(generator)
        return {"prior": cls(eps=0.1), "x": torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)}


# %%
# Registering it: the entry point
# -------------------------------
# The package declares the class in its ``pyproject.toml``, under the name ``"<kind>.<name>"`` (kinds: physics,
# prior, denoiser, algorithm, loss, dataset):
#
# .. code-block:: toml
#
#     [project]
#     name = "tiny-tv-plugin"
#     version = "0.1"
#     dependencies = ["deepinv-ext"]
#
#     [project.entry-points."deepinv_ext.plugins"]
#     "prior.smooth_tv" = "tiny_tv_plugin:SmoothTV"
#
# ``pip install .`` then writes the metadata ``tiny_tv_plugin-0.1.dist-info/entry_points.txt`` into
# site-packages, and deepinv-ext's registry reads the installed metadata (nothing is imported until the plugin is
# used). An example cannot pip-install, so it does the two parts of the installation by hand, inside ``with
# plugin_installed():`` blocks only: the same ``dist-info`` metadata, written into a temporary folder, is put on
# ``sys.path``, and the class is made importable as the module ``tiny_tv_plugin``.

site = tempfile.TemporaryDirectory()
dist_info = Path(site.name) / "tiny_tv_plugin-0.1.dist-info"
dist_info.mkdir()
(dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-tv-plugin\nVersion: 0.1\n")
(dist_info / "entry_points.txt").write_text("[deepinv_ext.plugins]\nprior.smooth_tv = tiny_tv_plugin:SmoothTV\n")
module = types.ModuleType("tiny_tv_plugin")
module.SmoothTV = SmoothTV


@contextlib.contextmanager
def plugin_installed():
    """The package ``tiny-tv-plugin`` installed for the duration of a ``with`` block."""
    sys.path.insert(0, site.name)
    sys.modules["tiny_tv_plugin"] = module
    try:
        yield
    finally:
        sys.path.remove(site.name)
        del sys.modules["tiny_tv_plugin"]


with plugin_installed():
    print([f"{p.key} ({p.distribution})" for p in plugins.available("prior")])

# %%
# Checking it: the contract
# -------------------------
# :func:`deepinv_ext.testing.check_prior` checks the energy and its gradient against autograd and batching in a
# few milliseconds; :func:`deepinv_ext.testing.check_plugin` takes the plugin from the registry, builds its
# ``contract_example`` and runs the whole check of its kind, including convergence inside deepinv's own PGD, HQS,
# DRS, ADMM, PDCP and FISTA. A plugin's test suite runs the same call (see :mod:`deepinv_ext.testing`).

testing.check_prior(**SmoothTV.contract_example(), solvers=False)
with plugin_installed():
    (info,) = (p for p in plugins.available("prior") if p.name == "smooth_tv")
    testing.check_plugin(info)
print(f"{info.key} from {info.distribution} passes the prior contract")

# %%
# Using it: a config
# ------------------
# Deblurring of a 64 x 64 Shepp-Logan phantom (Gaussian blur of standard deviation 1.5 pixels, noise 0.02) by
# minimising :math:`\frac{w}{2}\|Ax - y\|^2 + g(x)` with deepinv-ext's :class:`deepinv_ext.algorithms.VariationalSolver`
# (accelerated gradient descent with backtracking). The solver and the prior come from one config, as a JSON or
# YAML file would give it: the nested ``{"kind": "prior", "name": "smooth_tv"}`` is built first.

config = {
    "kind": "algorithm",
    "name": "variational",
    "prior": {"kind": "prior", "name": "smooth_tv", "eps": 0.02},
    "weight": 1000.0,
    "max_iter": 500,
    "tol": 1e-5,
}
with plugin_installed():
    solver = plugins.build(config)

torch.manual_seed(0)
x = SheppLoganPhantomDataset(size=64)[0]["x"][None]
physics = dinv.physics.BlurFFT((1, 64, 64), filter=dinv.physics.functional.gaussian_blur(sigma=(1.5, 1.5)),
                               noise_model=dinv.physics.GaussianNoise(0.02))
y = physics(x)
x_hat = solver(y, physics)
print(f"{solver.iterations} iterations, converged: {solver.converged.tolist()}")

site.cleanup()

# %%
# The figure: the phantom, the blurred and noisy measurement, and its reconstruction with the plugin's prior.

psnr = dinv.metric.PSNR()
fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
for ax, (title, image) in zip(axes, (("phantom", x), (f"measurement: {float(psnr(y, x)):.1f} dB", y),
                                     (f"smooth_tv plugin: {float(psnr(x_hat, x)):.1f} dB", x_hat))):
    ax.imshow(image[0, 0].clamp(0, 1), cmap="gray")
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# :References:
#
# .. footbibliography::

r"""MAID's adaptive accuracy against fixed accuracies: lower-level iterations to the same upper-level loss.

Bilevel learning of the weight :math:`\lambda` of smoothed total variation for denoising
(:meth:`deepinv_ext.priors.SparsifyingFilterBank.total_variation`, :math:`s = 0.05`), with the certified constants
of :meth:`deepinv_ext.algorithms.HypergradientBound.total_variation_denoising`, on ``--images`` crops of
scikit-image's images (48x48, noise 0.1, float64). :class:`deepinv_ext.algorithms.MAID` runs ``--steps`` steps with
adaptive accuracies (from 0.1) and with fixed accuracies (the anchors, e.g. 1e-6 and 1e-8); every run starts at
:math:`\lambda = 0.01` and counts the lower-level iterations (accelerated gradient steps) it spends. Printed: the exact
upper-level loss at the end (a tight re-solve) and the iterations spent until the loss first came within 1e-6 of the
best final loss::

    python benchmarks/maid.py            # CPU: about 15 s
"""

from __future__ import annotations

import argparse

import deepinv as dinv
import torch
from _summary import emit

from deepinv_ext.algorithms import MAID, BilevelReconstructor, HypergradientBound
from deepinv_ext.datasets import SkimageImagesDataset
from deepinv_ext.priors import SparsifyingFilterBank

SMOOTHING = 0.05


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--fixed", type=float, nargs="+", default=[1e-6, 1e-8], help="the fixed accuracies compared")
    return p.parse_args(argv)


def model(lam: float, **solve) -> BilevelReconstructor:
    return BilevelReconstructor(SparsifyingFilterBank.total_variation(smoothing=SMOOTHING), lam=lam, max_iter=20000,
                                **solve).double()


def main(argv=None) -> dict:
    a = parse_args(argv)
    images = SkimageImagesDataset(size=96, dtype=torch.float64)
    x_true = torch.stack([images[i]["x"][:, 24:72, 24:72] for i in range(a.images)])
    y = x_true + 0.1 * torch.randn(x_true.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    physics = dinv.physics.Denoising()

    def constants(m: BilevelReconstructor) -> HypergradientBound:
        return HypergradientBound.total_variation_denoising(m.regularizer.lam.item(), m.regularizer.prior.weight.item(),
                                                            SMOOTHING, a.images)

    runs = {}
    for name, options in [("adaptive", {"eps": 0.1, "delta": 0.1})] + [
            (f"fixed {e:g}", {"eps": e, "delta": e, "adaptive": False}) for e in a.fixed]:
        learned = model(0.01)
        maid = MAID(learned, constants, **options)
        maid.run(y, physics, x_true, steps=a.steps)
        with torch.no_grad():
            exact = float(MAID.loss(model(learned.regularizer.lam.item(), grad_tol=1e-10)(y, physics), x_true))
        runs[name] = {"exact": exact, "history": maid.history, "total": maid.lower_iterations}
    best = min(r["exact"] for r in runs.values())
    for name, r in runs.items():
        reached = [h["lower_iterations"] for h in r["history"] if h["loss"] <= best * (1 + 1e-6)]
        r["to_best"] = reached[0] if reached else None
        print(f"{name:>12s}: exact loss {r['exact']:.8f} | lower-level iterations {r['total']:6d} in all, "
              f"{r['to_best'] if reached else 'never'} to within 1e-6 of the best")
    anchor = f"fixed {min(a.fixed):g}"
    ratios = {"iterations to the best loss": runs["adaptive"]["to_best"] / runs[anchor]["to_best"],
              "iterations in all": runs["adaptive"]["total"] / runs[anchor]["total"]}
    emit("", f"MAID, {a.steps} steps learning lambda of smoothed TV, denoising {a.images} skimage crops 48x48",
         f"MAID at a fixed accuracy {min(a.fixed):g}", ratios, "lower-level iterations: adaptive / fixed "
         f"(final exact losses: adaptive {runs['adaptive']['exact']:.8f}, fixed {runs[anchor]['exact']:.8f})")
    return runs


if __name__ == "__main__":
    main()

r"""Benchmark: :class:`deepinv_ext.algorithms.GradientStepPnP` against deepinv's own GS-PnP path.

The anchor is deepinv's GS-PnP example (``examples/plug-and-play/demo_RED_GSPnP_SR.py``) on a deblurring problem:
``optim_builder(iteration="PGD", prior=GSPnP(RED with explicit potential), g_first=True, data_fidelity=L2(),
params_algo=get_GSPnP_params("deblur", noise), early_stop=True, crit_conv="cost", thres_conv=1e-5,
backtracking=True, get_output=X["est"][1])`` with deepinv's :class:`deepinv.models.GSPnP.GSPnP` around the
potential network. Ours runs the same iteration (same :math:`\lambda`, :math:`\sigma`, initial step, Armijo
constants, stopping rule on the relative change of :math:`F`, output = last denoised iterate) with
:class:`deepinv_ext.denoisers.GradientStepDenoiser` around the *same* network weights (trained locally by
``recipes/gs_pnp_convergence.py``; nothing is downloaded), the same image, kernel and noise draw, in the same
process. Printed: PSNR of both, the difference, iterations, time per accepted iteration and the ratio.

Run: ``python benchmarks/gs_pnp.py --weights results/gs_pnp_convergence/denoiser.pt`` (without ``--weights`` a
small denoiser is trained first, as in the recipe's ``--smoke``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import deepinv as dinv
import torch
from _summary import emit
from deepinv.models.GSPnP import GSPnP as DeepinvGSPnP
from deepinv.optim import optim_builder
from deepinv.optim.data_fidelity import L2
from deepinv.optim.prior import RED
from deepinv.physics.functional.blur import gaussian_blur
from deepinv.utils.parameters import get_GSPnP_params

from deepinv_ext.algorithms import GradientStepPnP
from deepinv_ext.datasets import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.denoisers import GradientStepDenoiser

ROOT = Path(__file__).resolve().parents[1]


def _recipe():
    path = ROOT / "recipes" / "gs_pnp_convergence_train.py"  # train_denoiser and load_denoiser
    spec = importlib.util.spec_from_file_location("gs_pnp_convergence_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ExplicitGSPrior(RED):
    r"""deepinv's example prior: RED whose energy is the GS potential (so the cost and backtracking are on)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.explicit_prior = True

    def forward(self, x, *args, **kwargs):
        return self.denoiser.potential(x, *args, **kwargs)


def deepinv_model(net: torch.nn.Module, lamb: float, sigma: float, stepsize: float, max_iter: int,
                  thres: float):
    prior = ExplicitGSPrior(denoiser=DeepinvGSPnP(net))
    return optim_builder(iteration="PGD", prior=prior, g_first=True, data_fidelity=L2(),
                         params_algo={"stepsize": stepsize, "g_param": sigma, "lambda": lamb},
                         early_stop=True, max_iter=max_iter, crit_conv="cost", thres_conv=thres,
                         backtracking=True, get_output=lambda X: X["est"][1], verbose=False)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(-10 * torch.log10((x - ref).pow(2).mean()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="GradientStepPnP vs deepinv's GS-PnP (optim_builder)")
    parser.add_argument("--weights", help="denoiser weights written by recipes/gs_pnp_convergence.py")
    parser.add_argument("--output", default="results/gs_pnp_benchmark", help="where to train weights if needed")
    parser.add_argument("--image", default="camera", choices=SKIMAGE_IMAGES)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--blur", type=float, default=1.6, help="std of the Gaussian kernel")
    parser.add_argument("--noise", type=float, default=0.03, help="noise std on [0, 1] images")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    recipe = _recipe()
    weights = Path(args.weights) if args.weights else recipe.train_denoiser(
        Path(args.output), steps=300, channels=16, depth=4, train_size=64, exclude=args.image)
    net = recipe.load_denoiser(weights).potential_net  # one network, shared by both sides

    x = SkimageImagesDataset(size=args.size, names=(args.image,))[0]["x"][None]
    physics = dinv.physics.BlurFFT((1, args.size, args.size), filter=gaussian_blur(sigma=(args.blur, args.blur)))
    y = physics.A(x) + args.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    lamb, sigma, stepsize, max_iter = get_GSPnP_params("deblur", args.noise)
    thres = 1e-5

    theirs = deepinv_model(net, lamb, sigma, stepsize, max_iter, thres)
    ours = GradientStepPnP(GradientStepDenoiser(net), lambda_=lamb, sigma_denoiser=sigma, stepsize=stepsize,
                           max_iter=max_iter, tol=thres, crit="objective", backtracking=True, output="denoised")

    # iteration counts (untimed): deepinv records one metric entry per accepted iteration
    with torch.no_grad():
        _, metrics = theirs(y, physics, x_gt=x, compute_metrics=True)
    their_iters = len(metrics["psnr"][0])

    times: dict[str, list[float]] = {"deepinv": [], "ours": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, model in (("deepinv", theirs), ("ours", ours)):
            start = time.perf_counter()
            with torch.no_grad():
                outputs[name] = model(y, physics)
            times[name].append(time.perf_counter() - start)
    our_iters = int(ours.history["step"].shape[0])
    our_backtracks = int(ours.history["backtracks"].sum())

    t_theirs, t_ours = statistics.median(times["deepinv"]), statistics.median(times["ours"])
    per_theirs, per_ours = t_theirs / their_iters, t_ours / our_iters
    result = {
        "setting": {"image": args.image, "size": args.size, "blur": args.blur, "noise": args.noise, "lambda": lamb,
                    "sigma_denoiser": sigma, "stepsize": stepsize, "max_iter": max_iter, "thres_conv": thres,
                    "threads": args.threads, "weights": str(weights)},
        "psnr_input": psnr(y, x), "psnr_deepinv": psnr(outputs["deepinv"], x), "psnr_ours": psnr(outputs["ours"], x),
        "relative_difference": float((outputs["ours"] - outputs["deepinv"]).norm() / outputs["deepinv"].norm()),
        "iterations_deepinv": their_iters, "iterations_ours": our_iters, "backtracks_ours": our_backtracks,
        "seconds_deepinv": t_theirs, "seconds_ours": t_ours,
        "seconds_per_iteration_deepinv": per_theirs, "seconds_per_iteration_ours": per_ours,
        "time_per_iteration_ratio": per_ours / per_theirs, "total_time_ratio": t_ours / t_theirs,
        "F_monotone_ours": bool((ours.history["objective"].diff(dim=0) <= 0).all()),
    }
    result["psnr_difference"] = result["psnr_ours"] - result["psnr_deepinv"]
    print(f"GS-PnP deblurring {args.image} {args.size}x{args.size}, kernel std {args.blur}, noise {args.noise}: "
          f"lambda {lamb}, sigma {sigma:.3f}, stepsize {stepsize}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'':10} {'PSNR':>7} {'iters':>6} {'time (s)':>9} {'s/iter':>9}")
    print(f"{'deepinv':10} {result['psnr_deepinv']:7.2f} {their_iters:6d} {t_theirs:9.3f} {per_theirs:9.5f}")
    print(f"{'ours':10} {result['psnr_ours']:7.2f} {our_iters:6d} {t_ours:9.3f} {per_ours:9.5f}")
    print(f"PSNR difference (ours - deepinv): {result['psnr_difference']:+.3f} dB; relative difference of the "
          f"outputs {result['relative_difference']:.2e}")
    print(f"ratio ours/deepinv: time per iteration {result['time_per_iteration_ratio']:.3f}, "
          f"total time {result['total_time_ratio']:.3f}")
    print(json.dumps(result))
    emit("", f"GS-PnP deblurring, {args.image} {args.size}x{args.size}, blur std {args.blur}, noise {args.noise}, "
             "same network, image and noise", "deepinv's GS-PnP (optim_builder, PGD with backtracking)",
         {"time per iteration": result["time_per_iteration_ratio"], "total time": result["total_time_ratio"]},
         "ours / deepinv", f"PSNR difference {result['psnr_difference']:+.3f} dB (ours - deepinv)")
    return result


if __name__ == "__main__":
    main()

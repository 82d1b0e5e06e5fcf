r"""Benchmark: a prior (default the published colour TDV) inside deepinv's own ``test_priors_algo``.

deepinv's test (``deepinv/tests/test_optim.py``, shipped in the wheel) is called as it is, with only its prior
factory replaced: 3-channel 37x31 images, Gaussian blur, stepsize/lambda 1, at most 1000 iterations, convergence at
``thres_conv=1e-4``. For each algorithm it prints whether deepinv's criterion was met, the outer iterations, the
median and maximum inner iterations of :meth:`deepinv_ext.priors.SmoothLearnedPrior.prox`, how many prox calls
missed their tolerance, and the wall time. The anchor is deepinv's criterion itself: an outer run that "converges"
while its prox calls do not is reported as such.

Usage::

    python benchmarks/prior_in_deepinv_algorithms.py                     # published colour TDV, PGD and FISTA
    python benchmarks/prior_in_deepinv_algorithms.py --algorithms PGD HQS DRS ADMM PDCP FISTA
    python benchmarks/prior_in_deepinv_algorithms.py --weights path/to/tdv3-3-25-f32-color.pth --prox-max-iter 1000
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from _summary import emit

from deepinv_ext.priors import TDV
from deepinv_ext.priors.smooth import ProxConvergenceWarning

WEIGHTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "tdv" / "tdv3-3-25-f32-color.pth"


def run(prior: TDV, algorithm: str) -> tuple[str, str]:
    """The printed line of one algorithm and its short verdict for the summary."""
    from deepinv.tests import test_optim
    from deepinv.tests.dummy import DummyCircles

    test_optim.get_prior = lambda *args, **kwargs: prior
    prior.reset_prox()
    imsize = (3, 37, 31)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProxConvergenceWarning)
        try:
            test_optim.test_priors_algo(algorithm, "TDV", imsize, DummyCircles(samples=2, imsize=imsize), "cpu")
            verdict = "converged"
        except AssertionError:
            verdict = "NOT converged"
    missed = sum(issubclass(w.category, ProxConvergenceWarning) for w in caught)
    inner = torch.cat(list(prior.prox_iterations)).double()
    outer = len(prior.prox_iterations)
    return (f"{algorithm:5s} deepinv's criterion: {verdict:13s} outer {outer:4d}  inner median "
            f"{inner.median():.0f} max {inner.max():.0f}  prox calls that missed their tolerance {missed:4d}  "
            f"{time.perf_counter() - start:.0f} s",
            f"{algorithm} {verdict} in {outer} outer iterations, {missed} of its prox calls missed their tolerance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="a published TDV checkpoint (colour)")
    parser.add_argument("--algorithms", nargs="+", default=["PGD", "FISTA"])
    parser.add_argument("--prox-max-iter", type=int, default=None, help="inner budget (default: ProxConfig's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior = TDV.from_checkpoint(args.weights).requires_grad_(False)
    if args.prox_max_iter is not None:
        prior.prox_config.max_iter = args.prox_max_iter
    verdicts = []
    for algorithm in args.algorithms:
        line, verdict = run(prior, algorithm)
        print(line, flush=True)
        verdicts.append(verdict)
    emit("", f"the published colour TDV ({args.weights.name}) as the prior of deepinv's test_priors_algo "
             "(3x37x31 images, blur, at most 1000 iterations)", "deepinv's own convergence criterion (thres_conv 1e-4)",
         {}, note="; ".join(verdicts))


if __name__ == "__main__":
    main()

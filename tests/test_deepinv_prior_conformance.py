"""Every smooth learned prior converges in every deepinv splitting algorithm, by deepinv's own test.

deepinv's ``test_priors_algo`` (``deepinv/tests/test_optim.py``, shipped in the wheel) is imported and called as it
is: 3-channel 37x31 ``DummyCircles``, Gaussian blur, L2 data fidelity, stepsize/lambda/``g_param`` 1, at most 1000
iterations, ``assert opt_algo.has_converged`` at ``thres_conv=1e-4``. Only its prior factory ``get_prior`` is
monkeypatched to return one of our priors (small, randomly initialised, float32 as deepinv's images). Every
algorithm calls ``prior.prox`` once an iteration, so ``prior.prox_iterations`` gives both the outer iterations and
the inner iterations of each prox; they are printed (``pytest -s``).
"""

from __future__ import annotations

import time

import pytest
import torch
from helpers_priors import PRIOR_NAMES, make_prior

deepinv_test_optim = pytest.importorskip("deepinv.tests.test_optim")
from deepinv.tests.dummy import DummyCircles  # noqa: E402

ALGORITHMS = ("PGD", "HQS", "DRS", "ADMM", "PDCP", "FISTA")
FAST = {("SFB", a) for a in ALGORITHMS} | {("ACR", "PGD"), ("NETT", "HQS"), ("AR", "DRS"), ("TDV", "PGD")}


def _run_deepinv_test(prior_name: str, algorithm: str, monkeypatch) -> None:
    prior = make_prior(prior_name, in_channels=3, dtype=torch.float32)
    monkeypatch.setattr(deepinv_test_optim, "get_prior", lambda *args, **kwargs: prior)
    imsize = (3, 37, 31)  # deepinv's conftest fixture `imsize`
    start = time.perf_counter()
    deepinv_test_optim.test_priors_algo(algorithm, prior_name, imsize, DummyCircles(samples=2, imsize=imsize),
                                        "cpu")
    inner = torch.cat(list(prior.prox_iterations)).double()
    print(f"\n{prior_name:5s} {algorithm:5s} converged, outer {len(prior.prox_iterations):4d}, inner median "
          f"{inner.median():.0f} max {inner.max():.0f}, {time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize("prior_name, algorithm", sorted(FAST))
def test_deepinv_test_priors_algo_fast_subset(prior_name, algorithm, monkeypatch):
    _run_deepinv_test(prior_name, algorithm, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("prior_name", PRIOR_NAMES)
def test_deepinv_test_priors_algo_full_sweep(prior_name, algorithm, monkeypatch):
    if (prior_name, algorithm) in FAST:
        pytest.skip("run by the fast subset")
    _run_deepinv_test(prior_name, algorithm, monkeypatch)

"""Run by tests/test_physics_split.py under ``torchrun --nproc_per_node 2``: view blocks of a small AstraCT through
deepinv.distributed (gloo, CPU), each process building only its own blocks.

Usage: ``torchrun --standalone --nproc_per_node 2 tests/distributed_split_script.py OUTPUT_FOLDER``. Every process
writes the blocks it built (``built{rank}.pt``); process 0 writes A, A^T, deepinv's distributed L2 value and gradient,
and, in float64 (where the solvers' results can be compared tightly), deepinv's distributed least squares (CG) and
FISTA-TV through the split operator (``results.pt``), for the test to compare with the single operator.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import deepinv as dinv
import torch
from deepinv.distributed import DistributedContext, distribute
from deepinv.optim import L2

from deepinv_ext.algorithms import NotConvergedWarning
from deepinv_ext.algorithms.fista import FISTASolver
from deepinv_ext.physics import AstraCT
from deepinv_ext.physics.split import ConcatenatedLinearPhysics, view_blocks

SIZE, VIEWS, BLOCKS = 32, 24, 4


def problem() -> dict:
    """The inputs, the same in every process and in the test."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, SIZE, SIZE, generator=g)
    return {"x": x, "x0": torch.rand(2, 1, SIZE, SIZE, generator=g)}


def schur_bound(physics) -> float:
    r""":math:`\max(A\mathbf 1)\max(A^\top\mathbf 1) \ge \|A\|^2` (non-negative weights): a deterministic
    Lipschitz constant for FISTA."""
    ones = torch.ones(1, 1, SIZE, SIZE, dtype=torch.float64)
    return float(physics.A(ones).amax() * physics.A_adjoint(torch.ones_like(physics.A(ones))).amax())


def fista(physics, y):
    """FISTA with deepinv's TV prior, 15 iterations (a fixed count: no stopping, no warning about it)."""
    solver = FISTASolver(dinv.optim.TVPrior(n_it_max=20), lambda_reg=0.5, lipschitz=schur_bound(physics),
                         max_iter=15, tol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        return solver(y, physics)


def main(output: Path) -> None:
    torch.set_num_threads(1)
    data = problem()
    with DistributedContext(device_mode="cpu") as ctx:
        template = AstraCT(SIZE, angles=VIEWS, backend="sparse", cache_dir=None)  # read only, never applied
        blocks = view_blocks(template, BLOCKS)
        build, built = blocks.build, []
        blocks.build = lambda index, device: built.append(index) or build(index, device)
        dphysics = blocks.distribute(ctx)
        torch.save({"built": built, "local": list(dphysics.local_indexes)}, output / f"built{ctx.rank}.pt")
        op = ConcatenatedLinearPhysics(dphysics, blocks)
        y = op.A(data["x"])
        fidelity = distribute(L2(), ctx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deepinv: no implicit backward for TensorList inputs (none needed)
            cg = dphysics.A_dagger(blocks.split(y.double()), local_only=False, solver="CG", max_iter=10, tol=1e-10)
        results = {"A": y, "AT": op.A_adjoint(y), "fn": fidelity.fn(data["x0"], blocks.split(y), dphysics),
                   "grad": fidelity.grad(data["x0"], blocks.split(y), dphysics), "cg": cg,
                   "fista": fista(op, y.double()), "world_size": ctx.world_size}
        if ctx.rank == 0:
            torch.save(results, output / "results.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

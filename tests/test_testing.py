"""The contract checks pass on correct objects and catch broken ones."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_ext import testing
from deepinv_ext.datasets import RandomEllipsesDataset


class MatrixPhysics(dinv.physics.LinearPhysics):
    """y = M x on flattened 4x4 images, with an optionally wrong adjoint."""

    def __init__(self, broken_adjoint: bool = False, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("matrix", torch.randn(10, 16, generator=g, dtype=dtype))
        self.broken_adjoint = broken_adjoint

    def A(self, x, **kwargs):
        if x.shape[-2:] != (4, 4):
            raise ValueError(f"x must be (B, C, 4, 4), got {tuple(x.shape)}")
        return (x.flatten(2) @ self.matrix.T).unsqueeze(-1)

    def A_adjoint(self, y, **kwargs):
        matrix = self.matrix * (1.1 if self.broken_adjoint else 1.0)
        return (y.squeeze(-1) @ matrix).reshape(*y.shape[:2], 4, 4)


class MeanCouplingPhysics(MatrixPhysics):
    """A with a batch coupling bug: adds the batch mean."""

    def A(self, x, **kwargs):
        return super().A(x) + super().A(x).mean(0, keepdim=True)


def test_check_physics_accepts_a_correct_operator():
    testing.check_physics(MatrixPhysics(), torch.randn(3, 1, 4, 4, dtype=torch.float64))


def test_check_physics_catches_a_wrong_adjoint():
    with pytest.raises(AssertionError, match="adjointness"):
        testing.check_physics(MatrixPhysics(broken_adjoint=True), torch.randn(3, 1, 4, 4, dtype=torch.float64))


def test_check_physics_catches_batch_coupling():
    with pytest.raises(AssertionError, match="(per sample|adjointness)"):
        testing.check_physics(MeanCouplingPhysics(), torch.randn(3, 1, 4, 4, dtype=torch.float64))


def test_check_physics_catches_a_silent_wrong_shape():
    physics = dinv.physics.Denoising()  # accepts any shape: not a clear error
    with pytest.raises(AssertionError, match="without a ValueError"):
        testing.check_physics(physics, torch.randn(2, 1, 4, 4, dtype=torch.float64))


class Quadratic(dinv.optim.Prior):
    def __init__(self, wrong_grad=False):
        super().__init__()
        self.wrong_grad = wrong_grad

    def fn(self, x, *args, **kwargs):
        return 0.5 * x.flatten(1).pow(2).sum(1)

    def grad(self, x, *args, **kwargs):
        return x * (2.0 if self.wrong_grad else 1.0)

    def prox(self, x, *args, gamma=1.0, **kwargs):
        return x / (1 + gamma)


class QuadraticWithoutProx(Quadratic):
    prox = dinv.optim.Potential.prox  # deepinv's fallback: fixed-step gradient descent


def test_check_prior():
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    testing.check_prior(Quadratic(), x)
    with pytest.raises(AssertionError, match="autograd"):
        testing.check_prior(Quadratic(wrong_grad=True), x)


def test_check_prior_catches_a_prior_that_does_not_converge_in_deepinv_algorithms():
    with pytest.raises(AssertionError, match="no prox of its own"):
        testing.check_prior(QuadraticWithoutProx(), torch.randn(2, 1, 5, 5, dtype=torch.float64))


def test_check_prior_catches_a_scalar_energy():
    class Total(Quadratic):
        def fn(self, x, *args, **kwargs):
            return super().fn(x).sum()

    with pytest.raises(AssertionError, match="shape"):
        testing.check_prior(Total(), torch.randn(2, 1, 5, 5, dtype=torch.float64))


def test_check_denoiser_runs_a_deepinv_denoiser_in_trainer_and_test():
    testing.check_denoiser(dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None),
                           RandomEllipsesDataset(length=2, size=16))


def test_check_dataset_catches_non_reproducible_items():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"x": torch.rand(1, 4, 4)}

    with pytest.raises(AssertionError, match="differs between two calls"):
        testing.check_dataset(Noisy())


def test_check_plugin_requires_an_example():
    with pytest.raises(AssertionError, match="contract_example"):
        testing.check_plugin(MatrixPhysics, kind="physics")


def test_check_reconstructor_without_parameters():
    class Pseudoinverse(dinv.models.Reconstructor):
        def forward(self, y, physics, **kwargs):
            return physics.A_dagger(y)

    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.05))
    testing.check_reconstructor(Pseudoinverse(), physics, RandomEllipsesDataset(length=2, size=8))

"""AstraCT on a CUDA device: ASTRA's CUDA path (DLPack, stacked parallel beam) and the sparse backend on the GPU.

Skipped without a CUDA device or without ASTRA's CUDA build."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.physics import AstraCT

astra = pytest.importorskip("astra")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() and astra.use_cuda()),
                                 reason="needs a CUDA device and ASTRA's CUDA build")]
DEVICE = "cuda"


def _adjoint_error(physics, x, positive=False):
    y = torch.rand_like(physics.A(x)) if positive else torch.randn_like(physics.A(x))
    lhs = (physics.A(x).double() * y.double()).sum()
    return float(((lhs - (x.double() * physics.A_adjoint(y).double()).sum()) / lhs).abs())


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("geometry", ["parallel", "fanbeam"])
def test_cuda_projector_matches_cpu_projector(geometry):
    x = torch.rand(3, 2, 48, 40, generator=torch.Generator().manual_seed(0))
    kwargs = dict(img_size=(48, 40), angles=30, geometry=geometry, backend="astra")
    cpu = AstraCT(projector="linear" if geometry == "parallel" else "strip_fanflat", **kwargs)
    gpu = AstraCT(device=DEVICE, **kwargs)
    y_gpu, y_cpu = gpu.A(x.to(DEVICE)), cpu.A(x)
    assert y_gpu.device.type == "cuda"
    err = _rel(y_gpu.cpu(), y_cpu)
    print(f"{geometry}: CUDA vs CPU projection relative difference {err:.2e}")
    assert err < 3e-2
    y = torch.rand_like(y_cpu)
    err_t = _rel(gpu.A_adjoint(y.to(DEVICE)).cpu(), cpu.A_adjoint(y))
    print(f"{geometry}: CUDA vs CPU back-projection relative difference {err_t:.2e}")
    assert err_t < 5e-2


@pytest.mark.parametrize("geometry", ["parallel", "fanbeam"])
def test_cuda_batch_equals_per_sample_and_adjoint_error(geometry):
    physics = AstraCT((32, 32), angles=45, geometry=geometry, backend="astra", device=DEVICE)
    x = torch.rand(5, 1, 32, 32, device=DEVICE)
    y = physics.A(x)
    single = torch.cat([physics.A(x[i: i + 1]) for i in range(5)])
    assert _rel(y, single) < 1e-6
    back = physics.A_adjoint(y)
    single_t = torch.cat([physics.A_adjoint(y[i: i + 1]) for i in range(5)])
    assert _rel(back, single_t) < 1e-6
    # ASTRA's CUDA back-projection is not the exact adjoint: the error is largest for white-noise sinograms
    err, err_positive = _adjoint_error(physics, x), _adjoint_error(physics, x, positive=True)
    print(f"{geometry}: CUDA adjoint error {err:.2e} (Gaussian y), {err_positive:.2e} (uniform positive y)")
    assert err_positive < 5e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_on_gpu_is_exact_and_equals_cpu(dtype, tmp_path):
    physics = AstraCT(32, angles=20, backend="sparse", cache_dir=tmp_path)
    x = torch.rand(3, 1, 32, 32, dtype=dtype)
    y_cpu = physics.A(x)
    physics.to(DEVICE)
    y_gpu = physics.A(x.to(DEVICE))
    assert y_gpu.dtype == dtype and y_gpu.device.type == "cuda"
    assert _rel(y_gpu.cpu(), y_cpu) < 1e-6
    assert _adjoint_error(physics, x.to(DEVICE)) < (1e-5 if dtype == torch.float32 else 1e-12)


def test_autograd_and_fbp_on_gpu():
    physics = AstraCT(32, angles=30, backend="astra", device=DEVICE)
    x = torch.rand(2, 1, 32, 32, device=DEVICE, requires_grad=True)
    y = torch.rand(2, 1, 30, 46, device=DEVICE)
    (physics.A(x) * y).sum().backward()
    assert _rel(x.grad, physics.A_adjoint(y)) < 1e-6
    fan = AstraCT(32, angles=60, geometry="fanbeam", backend="astra", device=DEVICE)
    rec = fan.A_dagger(fan.A(x.detach()), fbp=True)
    assert rec.device.type == "cuda" and rec.shape == x.shape

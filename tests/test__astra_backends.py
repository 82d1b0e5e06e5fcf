"""The private ASTRA CPU backend of AstraCT: conservation of mass, batching, float32 adjointness."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.physics._astra_backends import AstraCPU
from deepinv_ext.physics._astra_geometry import CTGeometry

pytest.importorskip("astra")


def _backend(projector: str = "strip") -> AstraCPU:
    return AstraCPU(CTGeometry(img_size=(15, 15), angles=(0.0, 30.0, 60.0, 90.0, 135.0), n_detectors=25), projector)


def test_every_view_sees_the_whole_mass():
    """The strip projector integrates each pixel's area over unit detector cells, so each view of an image sums to
    its mass (the line and linear projectors only approximately: 2% off at 135 degrees for linear)."""
    x = torch.zeros(1, 15, 15)
    x[0, 5:10, 4:9] = torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    views = _backend().forward(x).sum(dim=-1)
    torch.testing.assert_close(views, x.sum().expand_as(views), rtol=1e-4, atol=0)


def test_stack_equals_one_image_at_a_time_and_adjoint():
    backend = _backend()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 15, 15, generator=g), torch.rand(3, 5, 25, generator=g)
    sino, back = backend.forward(x), backend.adjoint(y)
    assert sino.shape == (3, 5, 25) and back.shape == (3, 15, 15) and sino.dtype == torch.float32
    torch.testing.assert_close(sino[1:2], backend.forward(x[1:2]))
    torch.testing.assert_close(back[2:3], backend.adjoint(y[2:3]))
    lhs, rhs = (sino.double() * y.double()).sum(), (x.double() * back.double()).sum()
    assert float(((lhs - rhs) / lhs).abs()) < 1e-6

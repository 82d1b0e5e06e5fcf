r"""Direct ASTRA calls for :class:`deepinv_ext.physics.AstraCT` (private module).

Each backend maps a stack of images ``(N, H, W)`` to a stack of sinograms ``(N, n_angles, n_detectors)`` and
back, in float32 (ASTRA computes in float32 only). Data are handed to ASTRA in place through
``astra.experimental.direct_FP2D`` / ``direct_BP2D`` / ``direct_FP3D`` / ``direct_BP3D``, which take numpy arrays
or DLPack tensors, so nothing is copied on the GPU.

- :class:`AstraCPU`: ASTRA's CPU projectors (``line``, ``strip``, ``linear``, ``line_fanflat``,
  ``strip_fanflat``); ASTRA's 2D calls take one image, so the loop over the stack is here. Forward and back
  projection use the same weights: the adjoint is exact up to float32 rounding.
- :class:`AstraCUDA`: ASTRA's CUDA projectors on CUDA tensors. Parallel beam runs the whole stack in one call, as
  the slices of a ``parallel3d_vec`` volume whose detector rows see one slice each; fan beam runs the 2D
  ``cuda`` projector once per image. ASTRA's CUDA back-projection is not the exact adjoint of its projection.
"""

from __future__ import annotations

from typing import Any

import torch

from deepinv_ext.physics._astra_geometry import CTGeometry, import_astra

#: ASTRA's 3D volumes count rows along +y where its 2D volumes count them along -y: mirror the stacked geometry
FLIP_Y_3D = True


def _experimental() -> Any:
    import_astra()
    import astra.experimental

    return astra.experimental


class AstraCPU:
    """ASTRA's CPU projector ``projector`` for ``geometry`` (created once, freed with the object)."""

    def __init__(self, geometry: CTGeometry, projector: str) -> None:
        astra = import_astra()
        self.geometry = geometry
        self._astra = astra
        self.projector_id = astra.create_projector(projector, geometry.proj_geom(), geometry.vol_geom())

    def __del__(self) -> None:
        try:
            self._astra.projector.delete(self.projector_id)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exp = _experimental()
        x = x.detach().to(torch.float32).contiguous()
        out = torch.empty((x.shape[0],) + self.geometry.sino_shape, dtype=torch.float32)
        for i in range(x.shape[0]):
            exp.direct_FP2D(self.projector_id, x[i].numpy(), out[i].numpy())
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        exp = _experimental()
        y = y.detach().to(torch.float32).contiguous()
        out = torch.empty((y.shape[0],) + tuple(self.geometry.img_size), dtype=torch.float32)
        for i in range(y.shape[0]):
            exp.direct_BP2D(self.projector_id, out[i].numpy(), y[i].numpy())
        return out


class AstraCUDA:
    """ASTRA's CUDA projectors for ``geometry`` on CUDA tensors; 3D projectors are made once per stack size."""

    def __init__(self, geometry: CTGeometry) -> None:
        astra = import_astra()
        if not astra.use_cuda():
            raise RuntimeError("ASTRA was built without CUDA or finds no GPU: its CUDA projector cannot run")
        self.geometry = geometry
        self._astra = astra
        self._ids2d: int | None = None
        self._ids3d: dict[int, int] = {}

    def __del__(self) -> None:
        try:
            if self._ids2d is not None:
                self._astra.projector.delete(self._ids2d)
            for pid in self._ids3d.values():
                self._astra.projector3d.delete(pid)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _projector_3d(self, n: int) -> int:
        if n not in self._ids3d:
            proj_geom = self.geometry.proj_geom_3d(n)
            if FLIP_Y_3D:
                proj_geom["Vectors"][:, [1, 4, 7]] *= -1.0
            self._ids3d[n] = self._astra.create_projector("cuda3d", proj_geom, self.geometry.vol_geom(n))
        return self._ids3d[n]

    def _projector_2d(self) -> int:
        if self._ids2d is None:
            self._ids2d = self._astra.create_projector("cuda", self.geometry.proj_geom(), self.geometry.vol_geom())
        return self._ids2d

    @staticmethod
    def _prepare(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cuda":
            raise ValueError(f"the CUDA projector needs CUDA tensors, got a tensor on {t.device}")
        return t.detach().to(torch.float32).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exp = _experimental()
        x = self._prepare(x)
        out = torch.zeros((x.shape[0],) + self.geometry.sino_shape, dtype=torch.float32, device=x.device)
        with torch.cuda.device(x.device):
            if self.geometry.geometry == "parallel":
                # ASTRA 3D projection data are (detector rows, angles, detector columns): row i = slice i
                exp.direct_FP3D(self._projector_3d(x.shape[0]), x, out)
            else:
                pid = self._projector_2d()
                for i in range(x.shape[0]):
                    exp.direct_FP2D(pid, x[i], out[i])
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        exp = _experimental()
        y = self._prepare(y)
        out = torch.zeros((y.shape[0],) + tuple(self.geometry.img_size), dtype=torch.float32, device=y.device)
        with torch.cuda.device(y.device):
            if self.geometry.geometry == "parallel":
                exp.direct_BP3D(self._projector_3d(y.shape[0]), out, y)
            else:
                pid = self._projector_2d()
                for i in range(y.shape[0]):
                    exp.direct_BP2D(pid, out[i], y[i])
        return out

r"""Direct ASTRA calls for :class:`deepinv_ext.physics.AstraCT` (private module).

Each backend maps a stack of images ``(N, H, W)`` to a stack of sinograms ``(N, n_angles, n_detectors)`` and
back, in float32 (ASTRA computes in float32 only). Data are handed to ASTRA in place through
``astra.experimental.direct_FP2D`` / ``direct_BP2D`` / ``direct_FP3D`` / ``direct_BP3D``, which take numpy arrays
or DLPack tensors, so nothing is copied on the GPU.

- :class:`AstraCPU`: ASTRA's CPU projectors (``line``, ``strip``, ``linear``, ``line_fanflat``,
  ``strip_fanflat``); ASTRA's 2D calls take one image, so the loop over the stack is here. Forward and back
  projection use the same weights: the adjoint is exact up to float32 rounding.
- :class:`AstraCUDA`: ASTRA's CUDA projectors on CUDA tensors. Parallel beam runs the whole stack in one
  ``cuda3d`` call, as the slices of a ``parallel3d_vec`` volume whose detector rows see one slice each; fan beam
  runs the 2D ``cuda`` projector once per image (a one-row ``cone_vec`` geometry was tried: its back-projection
  is 0.55 away from the CPU ``strip_fanflat`` one, against 0.025 for the 2D projector, on an H100). ASTRA's
  CUDA back-projection is not the exact adjoint of its projection.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from deepinv_ext.physics._astra_geometry import CTGeometry, import_astra

#: ASTRA's 3D volumes count rows along +y where its 2D volumes count them along -y: mirror the 3D geometry
#: (checked on an H100: the CUDA projection then matches the CPU ``linear`` projector to 1.5e-4, 0.10 otherwise)
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
        self.projector_id = astra.create_projector(projector, geometry.proj_geom(), geometry.vol_geom())

    def __del__(self) -> None:
        # at interpreter shutdown ASTRA may be torn down first; any other error is reported by Python as unraisable
        if not sys.is_finalizing() and hasattr(self, "projector_id"):
            import_astra().projector.delete(self.projector_id)

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
        if not import_astra().use_cuda():
            raise RuntimeError("ASTRA was built without CUDA or finds no GPU: its CUDA projector cannot run")
        self.geometry = geometry
        self._ids: dict[int, int] = {}  # stack size (0: the 2D fan-beam projector) -> ASTRA projector id

    def __del__(self) -> None:
        if sys.is_finalizing() or not getattr(self, "_ids", None):  # see AstraCPU.__del__
            return
        astra = import_astra()
        for n, pid in self._ids.items():
            (astra.projector if n == 0 else astra.projector3d).delete(pid)

    def _projector(self, n: int) -> int:
        if n not in self._ids:
            astra = import_astra()
            if n == 0:
                self._ids[0] = astra.create_projector("cuda", self.geometry.proj_geom(), self.geometry.vol_geom())
            else:
                proj_geom = self.geometry.proj_geom_3d(n, flip_y=FLIP_Y_3D)
                self._ids[n] = astra.create_projector("cuda3d", proj_geom, self.geometry.vol_geom(n))
        return self._ids[n]

    @staticmethod
    def _prepare(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cuda":
            raise ValueError(f"the CUDA projector needs CUDA tensors, got a tensor on {t.device}")
        return t.detach().to(torch.float32).contiguous()

    def _run(self, source: torch.Tensor, out_shape: tuple[int, ...], forward: bool) -> torch.Tensor:
        exp = _experimental()
        source = self._prepare(source)
        n = source.shape[0]
        out = torch.zeros((n,) + out_shape, dtype=torch.float32, device=source.device)
        with torch.cuda.device(source.device):
            if self.geometry.geometry == "parallel":
                # ASTRA 3D data: volumes (slices, rows, cols), projections (detector rows, angles, detector cols)
                pid = self._projector(n)
                if forward:
                    exp.direct_FP3D(pid, source, out)
                else:
                    exp.direct_BP3D(pid, out, source)
            else:
                pid = self._projector(0)
                for i in range(n):
                    if forward:
                        exp.direct_FP2D(pid, source[i], out[i])
                    else:
                        exp.direct_BP2D(pid, out[i], source[i])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.geometry.sino_shape, forward=True)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, tuple(self.geometry.img_size), forward=False)


def astra_backend(geometry: CTGeometry, projector: str, device: torch.device) -> AstraCPU | AstraCUDA:
    """ASTRA's projector for tensors on ``device``: :class:`AstraCUDA` on a CUDA device, else :class:`AstraCPU` of
    ``projector`` (a ValueError for ``projector="cuda"``, which needs CUDA tensors)."""
    if device.type == "cuda":
        return AstraCUDA(geometry)
    if projector == "cuda":
        raise ValueError(f"projector='cuda' needs CUDA tensors, got a tensor on {device}")
    return AstraCPU(geometry, projector)


def choose_backend(backend: str, geometry: CTGeometry, projector: str, device: torch.device,
                   sparse_max_nnz: int) -> str:
    """``"sparse"`` or ``"astra"``: ``backend`` itself, ``"astra"`` for ASTRA's CUDA projector, and for ``"auto"``
    the sparse matrix when its estimated number of non-zeros is at most ``sparse_max_nnz``.

    :raises ValueError: ``projector="cuda"`` with ``backend="sparse"`` (it has no system matrix) or off CUDA.
    """
    if projector == "cuda":
        if backend == "sparse":
            raise ValueError("projector='cuda' has no system matrix: use backend='astra' (or 'auto')")
        if device.type != "cuda":
            raise ValueError(f"projector='cuda' runs ASTRA's CUDA projector on CUDA tensors: pass device='cuda' "
                             f"(got device='{device}')")
        return "astra"
    if backend == "auto":
        return "sparse" if geometry.nnz_estimate(projector) <= sparse_max_nnz else "astra"
    return backend

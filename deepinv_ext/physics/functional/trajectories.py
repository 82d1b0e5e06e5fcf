r"""Non-Cartesian k-space trajectories: radial spokes and variable-density spirals.

Trajectories follow SigPy's convention: a tensor ``(K, 2)`` (or ``(B, K, 2)``, one per sample) of ``K`` k-space
locations, in cycles per field of view, so that coordinate ``k[..., d]`` lies in :math:`[-n_d/2, n_d/2]` for an image
of size :math:`(n_0, n_1) = (H, W)`; ``k[..., 0]`` runs along the image rows (H) and ``k[..., 1]`` along the columns
(W). On a Cartesian grid these are the indices of deepinv's centred FFT minus :math:`n_d/2`. (deepinv's
:class:`deepinv.physics.NonCartesianMRI` and mri-nufft use :math:`[-1/2, 1/2)` instead: divide by the image size.)

Random trajectories for training (one random rotation per sample) come from the generators of
:mod:`deepinv_ext.physics.generator.mri`; their density compensation from
:mod:`deepinv_ext.physics.functional.density`. The golden-angle radial order is :footcite:t:`winkelmann2007optimal`'s.
"""

from __future__ import annotations

import math

import torch

from deepinv_ext._validation import boolean, finite_number, int_pair, positive_int
from deepinv_ext.physics._checks import real_dtype

__all__ = ["GOLDEN_ANGLE", "radial_trajectory", "spiral_trajectory"]

GOLDEN_ANGLE = math.pi / ((1.0 + math.sqrt(5.0)) / 2.0)  # 180 deg / golden ratio = 111.246 deg


def radial_trajectory(img_size: tuple[int, int], n_spokes: int, n_readout: int | None = None,
                      golden_angle: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Radial spokes through the k-space centre, ``(n_spokes * n_readout, 2)``.

    Spoke :math:`j` has angle :math:`\theta_j = j\pi/J` (uniform over :math:`[0, \pi)`) or :math:`j\,\pi/\phi`
    (golden angle :footcite:p:`winkelmann2007optimal`, :math:`\phi` the golden ratio); its samples are :math:`r\,(\cos\theta_j, \sin\theta_j)` with
    :math:`n_{ro}` radii equispaced in :math:`[-n/2, n/2)`, :math:`n = \min(H, W)`, so that the centre is sampled.
    Nyquist sampling of the rim needs :math:`J \geq \pi n / 2` spokes; the acceleration is
    :math:`\pi n / (2J)`.

    :param tuple img_size: image size ``(H, W)``.
    :param int n_spokes: number of spokes :math:`J`.
    :param int n_readout: samples per spoke (default :math:`2\min(H, W)`, two-fold readout oversampling).
    :param bool golden_angle: golden-angle instead of uniform angles.
    :param torch.dtype dtype: ``torch.float32`` or ``torch.float64``.
    :raises ValueError: a size or count that is not an integer in range (a float is refused, not truncated).
    :raises TypeError: ``golden_angle`` is not a bool, ``dtype`` not float32 or float64.

    |sep|

    :Examples:

        16 spokes of 64 samples through the centre, reaching the rim :math:`n/2 = 16`:

        >>> from deepinv_ext.physics.functional import radial_trajectory
        >>> k = radial_trajectory((32, 32), n_spokes=16)
        >>> k.shape, float(k.norm(dim=-1).max()), float(k.norm(dim=-1).min())
        (torch.Size([1024, 2]), 16.0, 0.0)
    """
    h, w = int_pair(img_size, "img_size", minimum=2)
    n_spokes = positive_int(n_spokes, "n_spokes")
    boolean(golden_angle, "golden_angle")
    real_dtype(dtype)
    n = min(h, w)
    n_readout = 2 * n if n_readout is None else positive_int(n_readout, "n_readout", minimum=2)
    j = torch.arange(n_spokes, dtype=torch.float64)
    theta = j * GOLDEN_ANGLE if golden_angle else j * math.pi / n_spokes
    r = (torch.arange(n_readout, dtype=torch.float64) - n_readout // 2) * (n / n_readout)
    k = torch.stack([r[None] * torch.cos(theta)[:, None], r[None] * torch.sin(theta)[:, None]], dim=-1)
    return k.reshape(-1, 2).to(dtype)


def spiral_trajectory(img_size: tuple[int, int], n_interleaves: int, n_turns: float = 8.0,
                      n_samples: int | None = None, alpha: float = 1.0,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Variable-density Archimedean spiral interleaves, ``(n_interleaves * n_samples, 2)``.

    Interleaf :math:`j` is :math:`k_j(t) = \tfrac n2\, t^{\alpha} \left(\cos(2\pi T t + \varphi_j),
    \sin(2\pi T t + \varphi_j)\right)`, :math:`t \in [0, 1]`, with :math:`T` turns and
    :math:`\varphi_j = 2\pi j/J`. :math:`\alpha = 1` is the uniform-density Archimedean spiral (radial spacing
    :math:`n / (2T)` within an interleaf, :math:`n/(2TJ)` over all of them: Nyquist needs :math:`TJ \geq n/2`);
    :math:`\alpha > 1` samples the centre more densely.

    :param tuple img_size: image size ``(H, W)``.
    :param int n_interleaves: number of interleaves :math:`J`.
    :param float n_turns: turns per interleaf :math:`T`.
    :param int n_samples: samples per interleaf (default :math:`4 T n`, enough for the arc length).
    :param float alpha: density exponent :math:`\alpha \geq 1`.
    :param torch.dtype dtype: ``torch.float32`` or ``torch.float64``.
    :raises ValueError: a count that is not an integer in range (``n_samples >= 2``), ``n_turns`` not finite and
        positive, ``alpha`` not finite and >= 1.
    :raises TypeError: ``n_turns`` or ``alpha`` is not a number, ``dtype`` not float32 or float64.

    |sep|

    :Examples:

        4 interleaves of 4 turns (:math:`TJ = 16 = n/2`: Nyquist-sampled), starting at the centre:

        >>> from deepinv_ext.physics.functional import spiral_trajectory
        >>> k = spiral_trajectory((32, 32), n_interleaves=4, n_turns=4, n_samples=100)
        >>> k.shape, float(k[0].norm()), round(float(k.norm(dim=-1).max()), 3)
        (torch.Size([400, 2]), 0.0, 16.0)
    """
    h, w = int_pair(img_size, "img_size", minimum=2)
    n_interleaves = positive_int(n_interleaves, "n_interleaves")
    n_turns = finite_number(n_turns, "n_turns", strict=True)
    alpha = finite_number(alpha, "alpha", minimum=1.0)
    real_dtype(dtype)
    n = min(h, w)
    n_samples = max(2, int(4 * n_turns * n)) if n_samples is None else positive_int(n_samples, "n_samples", minimum=2)
    t = torch.linspace(0.0, 1.0, n_samples, dtype=torch.float64)
    radius = (n / 2) * (1 - 1e-6) * t**alpha
    phi = 2 * math.pi * torch.arange(n_interleaves, dtype=torch.float64) / n_interleaves
    angle = 2 * math.pi * n_turns * t[None] + phi[:, None]
    k = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return k.reshape(-1, 2).to(dtype)

r"""A bias-free, activation-free, symmetric U-Net: a learned symmetric positive semi-definite linear denoiser.

:footcite:t:`hauptmann2024convergent` (Sect. 4.3) build a symmetric linear U-Net for spectral-filtered PnP by
averaging a linear U-Net with its transpose. :class:`LinearSymmetricUNet` uses the other construction the paper
mentions, **tied weights**: the decoder is the exact transpose of the encoder (``conv_transpose2d`` with the same
kernels, nearest upsampling / 4 as the adjoint of 2x2 average pooling) and the skip connections sum the scales, so
that :math:`D` is symmetric by construction (to rounding) and positive semi-definite; one application costs about two
encoder passes (the averaging construction costs three: a forward and a vector-Jacobian product).
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinv_ext._validation import (
    check_dtype,
    check_image,
    checked_device,
    finite_number,
    finite_values,
    positive_int,
)
from deepinv_ext.spectral import lanczos_extreme, symmetry_gap  # symmetry_gap: its old home, still importable

__all__ = ["LinearSymmetricUNet"]


class LinearSymmetricUNet(dinv.models.Denoiser):
    r"""Symmetric linear U-Net denoiser :math:`D = a E^\top E + b\,\mathrm{Id}` (tied weights, no bias, no activation).

    A learned symmetric positive semi-definite linear denoiser for spectral-filtered PnP
    (:footcite:t:`hauptmann2024convergent`, Sect. 4.3): the decoder is the exact transpose of the encoder, so that

    .. math::

        D = a\, E^\top E + b\,\mathrm{Id}, \qquad E x = (E_0 x, \dots, E_{L-1} x),\quad
        E_\ell = C_\ell P C_{\ell-1} P \cdots C_0,

    with :math:`C_\ell` stacks of bias-free 3x3 convolutions and :math:`P` 2x2 average pooling. The affine map
    :math:`(a, b)` (identity after construction) is set after training by :meth:`calibrate_spectrum` so that
    :math:`\mathrm{spec}\,D` lies in a target interval inside :math:`(0, 1)`, as the spectral filters of
    :mod:`deepinv_ext.spectral` need; the bounds are measured by Lanczos (:meth:`spectral_bounds`), never assumed.

    Trainable as a Gaussian denoiser with :class:`deepinv.Trainer` (wrap it in
    :class:`deepinv.models.ArtifactRemoval` on :class:`deepinv.physics.Denoising`); it is trained for one noise level
    and ignores ``sigma`` in :meth:`forward`.

    :param int in_channels: image channels.
    :param tuple channels: channels per scale (the number of scales is ``len(channels)``; image sizes must be
        divisible by :math:`2^{L-1}`).
    :param int convs_per_scale: bias-free 3x3 convolutions per scale.
    :param float sigma: the noise level it is trained for (informative; finite, > 0).
    :param str, torch.device device: device of the parameters.
    :raises ValueError: a count that is not an integer >= 1, ``channels`` empty, ``sigma`` not finite and > 0, a
        device that is not there.

    :meth:`forward` takes images ``(B, in_channels, H, W)`` in the precision of the parameters (another floating
    precision is refused, never cast); the spectral methods (:meth:`is_symmetric`, :meth:`spectral_bounds`,
    :meth:`calibrate_spectrum`) evaluate :math:`D` in their own ``dtype`` (float64 by default), the weights cast to
    it.

    |sep|

    :Examples:

    >>> import torch
    >>> from deepinv_ext.denoisers import LinearSymmetricUNet
    >>> D = LinearSymmetricUNet(channels=(4, 8), convs_per_scale=1)
    >>> D.is_symmetric((1, 16, 16))
    True
    >>> bounds = D.calibrate_spectrum((0.1, 0.9), shape=(1, 16, 16), n_iter=40)
    >>> 0.09 < bounds["lambda_min"] < bounds["lambda_max"] < 0.91
    True
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64), convs_per_scale: int = 2,
                 sigma: float = 0.1, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if not isinstance(channels, (tuple, list)) or not channels:
            raise ValueError(f"channels must be a non-empty tuple of integers >= 1, got {channels!r}")
        self.in_channels = positive_int(in_channels, "in_channels")
        self.channels = tuple(positive_int(c, "channels") for c in channels)
        positive_int(convs_per_scale, "convs_per_scale")
        self.sigma = finite_number(sigma, "sigma", strict=True)
        device = checked_device(device)
        self.weights = nn.ParameterList()
        self._layout: list[int] = []  # number of convs per scale
        c_in = in_channels
        for c in channels:
            for _ in range(convs_per_scale):
                w = torch.randn(c, c_in, 3, 3) / math.sqrt(9 * c_in) / math.sqrt(2 * len(channels))
                self.weights.append(nn.Parameter(w))
                c_in = c
            self._layout.append(convs_per_scale)
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("shift", torch.tensor(0.0))
        self.to(device)

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_denoiser`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            denoiser = cls(channels=(4, 8), convs_per_scale=1)
        return {"denoiser": denoiser, "dataset": example_images(4, 16, generator=g), "sigma": 0.1}

    def _check(self, x: Tensor) -> None:
        check_image(x, self.in_channels)
        m = 2 ** (len(self.channels) - 1)
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"x's height and width must be divisible by {m} ({len(self.channels)} scales), "
                             f"got shape {tuple(x.shape)}")

    def encode(self, x: Tensor) -> list[Tensor]:
        r"""The analysis operator :math:`E x = (E_0 x, \dots, E_{L-1} x)`.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :return: (list[torch.Tensor]) the features of the scales, finest first.
        """
        feats, h, i = [], x, 0
        for level, n in enumerate(self._layout):
            if level > 0:
                h = F.avg_pool2d(h, 2)
            for _ in range(n):
                h = F.conv2d(h, self.weights[i].to(h.dtype), padding=1)
                i += 1
            feats.append(h)
        return feats

    def decode(self, feats: list[Tensor]) -> Tensor:
        r"""The exact adjoint :math:`E^\top` of :meth:`encode`.

        :param list[torch.Tensor] feats: features of the scales, as :meth:`encode` returns them.
        :return: (:class:`torch.Tensor`) the images ``(B, in_channels, H, W)``.
        """
        i = len(self.weights)
        acc = feats[-1]
        for level in range(len(self._layout) - 1, -1, -1):
            for _ in range(self._layout[level]):
                i -= 1
                acc = F.conv_transpose2d(acc, self.weights[i].to(acc.dtype), padding=1)
            if level > 0:
                acc = feats[level - 1] + F.interpolate(acc, scale_factor=2, mode="nearest") / 4
        return acc

    def forward(self, x: Tensor, sigma: float | Tensor | None = None, **kwargs) -> Tensor:
        r"""Apply :math:`D x = a E^\top E x + b x` (``sigma`` is ignored: one trained noise level; it may be
        ``None``, else it must be a noise level, finite and >= 0).

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param float, torch.Tensor sigma: ignored (checked).
        :param kwargs: ignored (the signature of :class:`deepinv.models.Denoiser`).
        :raises TypeError: ``x`` not a real floating tensor, or of another precision than the parameters.
        :raises ValueError: ``x`` not ``(B, in_channels, H, W)`` with sides divisible by :math:`2^{L-1}`; ``sigma``
            negative or not finite.
        """
        if sigma is not None:
            finite_values(sigma, "sigma")
        return self._apply_in(x, own_precision=True)

    def _apply_in(self, x: Tensor, own_precision: bool = False) -> Tensor:
        """:math:`D x` in the dtype of ``x``: the weights are cast to it (the spectral methods' own precision),
        unless ``own_precision`` requires ``x`` in theirs (:meth:`forward`)."""
        self._check(x)
        if own_precision:
            check_dtype(x, self)
        out = self.decode(self.encode(x))
        return self.scale.to(x.dtype) * out + self.shift.to(x.dtype) * x

    def is_symmetric(self, shape: tuple[int, ...] = (1, 32, 32), *, n_probes: int = 3, rtol: float = 1e-5,
                     dtype: torch.dtype = torch.float64) -> bool:
        r"""Check :math:`\langle x, Dy\rangle = \langle Dx, y\rangle` on random probes (relative to
        :math:`\|x\|\|Dy\|`) in ``dtype``; returns ``True`` when the worst relative gap
        (:func:`deepinv_ext.spectral.symmetry_gap`) is below ``rtol``.

        :param tuple[int, ...] shape: the shape of one image, ``(in_channels, H, W)``.
        :param int n_probes: number of random probe pairs.
        :param float rtol: the tolerance on the relative gap.
        :param torch.dtype dtype: the precision of the check.
        """
        return symmetry_gap(self._apply_in, shape, n_probes=positive_int(n_probes, "n_probes"), dtype=dtype,
                            device=self.scale.device) < rtol

    @torch.no_grad()
    def spectral_bounds(self, shape: tuple[int, ...] = (1, 64, 64), *, n_iter: int = 60,
                        dtype: torch.dtype = torch.float64, seed: int = 0) -> dict[str, float]:
        r"""Extreme eigenvalues of :math:`D` on images of ``shape`` by Lanczos (``n_iter`` applications).

        Returns ``lambda_min``, ``lambda_max`` (Ritz values: inner estimates) and ``residual_min``/``residual_max``
        (each :math:`[\theta-\rho, \theta+\rho]` holds an eigenvalue); see :func:`deepinv_ext.spectral.lanczos_extreme`.

        :param tuple[int, ...] shape: the shape of one image, ``(in_channels, H, W)``.
        :param int n_iter: Lanczos steps.
        :param torch.dtype dtype: the precision of the computation.
        :param int seed: seed of the start vector.
        """
        g = torch.Generator().manual_seed(seed)
        v0 = torch.randn(1, *shape, generator=g, dtype=dtype).to(self.scale.device)
        return lanczos_extreme(self._apply_in, v0, n_iter=positive_int(n_iter, "n_iter"))

    @torch.no_grad()
    def calibrate_spectrum(self, target: tuple[float, float] = (0.01, 0.99), shape: tuple[int, ...] = (1, 64, 64),
                           *, n_iter: int = 60, margin: float = 0.0) -> dict[str, float]:
        r"""Set the affine map :math:`D \mapsto aD + b` so that the measured spectrum lies in ``target``.

        The spectrum of :math:`E^\top E` (with :math:`a=1, b=0`) is measured by Lanczos; the Ritz interval is
        widened by the residual bounds and by ``margin`` (relative), then mapped affinely onto ``target``. Returns
        the measured bounds before and after (re-measured), and ``(a, b)``.

        :param tuple[float, float] target: the interval, :math:`0 < lo < hi < 1`.
        :param tuple[int, ...] shape: the shape of one image, ``(in_channels, H, W)``.
        :param int n_iter: Lanczos steps of each measurement.
        :param float margin: relative widening of the measured interval (>= 0).
        :return: (dict) ``raw_min``, ``raw_max``, ``scale``, ``shift``, ``lambda_min``, ``lambda_max``.
        """
        lo_t, hi_t = target
        if not 0 < lo_t < hi_t < 1:
            raise ValueError(f"target must satisfy 0 < lo < hi < 1, got {target}")
        margin = finite_number(margin, "margin")
        self.scale.fill_(1.0)
        self.shift.fill_(0.0)
        raw = self.spectral_bounds(shape, n_iter=n_iter)
        lo = max(raw["lambda_min"] - raw["residual_min"], 0.0)
        hi = raw["lambda_max"] + raw["residual_max"]
        width = hi - lo
        lo, hi = max(lo - margin * width, 0.0), hi + margin * width
        a = (hi_t - lo_t) / (hi - lo)
        self.scale.fill_(a)
        self.shift.fill_(lo_t - a * lo)
        after = self.spectral_bounds(shape, n_iter=n_iter)
        return {"raw_min": raw["lambda_min"], "raw_max": raw["lambda_max"], "scale": a,
                "shift": float(self.shift), "lambda_min": after["lambda_min"], "lambda_max": after["lambda_max"]}

r"""Filtered back-projection in torch for 2D parallel- and fan-beam CT (no FFT from ASTRA, any device).

**Filters.** The ramp filter is discretised in the detector domain (the band-limited kernel
:math:`h[0] = 1/4`, :math:`h[k] = -1/(\pi k)^2` for odd :math:`k`, zero for even :math:`k \neq 0`, in units of the
detector spacing; :footcite:t:`kak1988principles`, eq. 3.61), applied by FFT on a
zero-padded detector axis (length the next power of two at least twice the detector), and optionally multiplied by
a window: ``"shepp-logan"`` (:math:`\mathrm{sinc}`), ``"cosine"``, ``"hamming"``, ``"hann"``.

**Parallel beam.** With views spread uniformly over :math:`[0, \pi)` or :math:`[0, 2\pi)` and a back-projection
:math:`A^\top` whose ray weights sum to :math:`1/d` per pixel (true of ASTRA's line, strip and linear projectors),

.. math::

    x_{\mathrm{FBP}} = \frac{\pi}{n_\theta} A^\top (h \ast y).

**Fan beam (flat detector).** Rebinned to a virtual detector through the rotation axis (spacing
:math:`\Delta = d R_s / (R_s + R_d)`), the sinogram is weighted by :math:`R_s / \sqrt{R_s^2 + s^2}`, filtered, and
back-projected pixel by pixel with the distance weight :math:`1/U^2`, :math:`U = \ell / R_s` (:math:`\ell` the
distance from the source to the pixel along the central ray), for views spread uniformly over :math:`[0, 2\pi)`
(:footcite:t:`kak1988principles`, section 3.4.2):

.. math::

    x_{\mathrm{FBP}}(p) = \frac{\pi}{n_\theta \Delta} \sum_\beta \frac{1}{U_\beta(p)^2}
    \Big(h \ast \frac{R_s\, y_\beta}{\sqrt{R_s^2 + s^2}}\Big)(s_\beta(p)).

The fan-beam back-projection runs in torch (linear interpolation on the detector), chunked over the views.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FILTERS", "fourier_filter", "filter_sinogram", "fan_beam_fbp"]

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def _padded_size(n_detectors: int) -> int:
    return max(64, 2 ** math.ceil(math.log2(2 * n_detectors)))


def fourier_filter(n_detectors: int, filter: str = "ramp", *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""The filter's frequency response on the padded detector axis, for ``torch.fft.rfft`` (real, length
    ``n_pad // 2 + 1``), in units of the detector spacing.

    The ramp is the band-limited kernel :math:`h[0] = 1/4`, :math:`h[k] = -1/(\pi k)^2` for odd :math:`k`, zero for
    even :math:`k \neq 0` :footcite:p:`kak1988principles`, whose response is close to :math:`|\omega| / (2\pi)`;
    the other filters multiply it by a window of :math:`\omega \in [0, \pi]`: :math:`\mathrm{sinc}(\omega/2)`
    (``"shepp-logan"``), :math:`\cos(\omega/2)` (``"cosine"``), :math:`0.54 + 0.46\cos\omega` (``"hamming"``) or
    :math:`(1 + \cos\omega)/2` (``"hann"``). The padded length ``n_pad`` is the next power of two at least twice
    ``n_detectors`` (at least 64).

    :param int n_detectors: number of detector cells.
    :param str filter: one of :data:`FILTERS`.
    :param torch.device, str device: device of the result.
    :param torch.dtype dtype: dtype of the result.
    :raises ValueError: ``filter`` is not one of :data:`FILTERS`.

    |sep|

    :Examples:

        >>> from deepinv_ext.physics.functional import fourier_filter
        >>> ramp = fourier_filter(20)  # n_pad = 64
        >>> ramp.shape
        torch.Size([33])
        >>> round(float(ramp[0]), 4), round(float(ramp[16]), 3)  # ~0 at DC, ~1/4 at half the Nyquist frequency
        (0.0032, 0.25)
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    size = _padded_size(n_detectors)
    k = torch.cat([torch.arange(1, size // 2 + 1, 2), torch.arange(size // 2 - 1, 0, -2)]).double()
    kernel = torch.zeros(size, dtype=torch.float64)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (math.pi * k) ** 2
    response = torch.fft.fft(kernel).real
    omega = 2 * math.pi * torch.fft.fftfreq(size, dtype=torch.float64)  # in [-pi, pi)
    if filter == "shepp-logan":
        half = omega[1:] / 2
        response[1:] *= torch.sin(half) / half
    elif filter == "cosine":
        response *= torch.cos(omega / 2)
    elif filter == "hamming":
        response *= 0.54 + 0.46 * torch.cos(omega)
    elif filter == "hann":
        response *= 0.5 + 0.5 * torch.cos(omega)
    return response[: size // 2 + 1].to(device=device, dtype=dtype)


def filter_sinogram(y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
    r"""Convolve every view of ``y`` (``(..., n_angles, n_detectors)``) with the filter along the detector,
    :math:`(h \ast y_\theta)[s]`, by FFT on a zero-padded detector axis (:func:`fourier_filter`; an empty ``y``
    gives an empty result).

    :param torch.Tensor y: sinograms ``(..., n_angles, n_detectors)``, real.
    :param str filter: one of :data:`FILTERS`.
    :return: (:class:`torch.Tensor`) the filtered sinograms, same shape and dtype.

    |sep|

    :Examples:

        Parallel-beam FBP is :math:`\frac{\pi}{n_\theta} A^\top (h \ast y)`:

        >>> import math
        >>> import torch
        >>> from deepinv_ext.physics import AstraCT
        >>> from deepinv_ext.physics.functional import filter_sinogram
        >>> physics = AstraCT(16, angles=40, backend="sparse", cache_dir=None)
        >>> y = physics.A(torch.rand(1, 1, 16, 16))
        >>> x = physics.A_adjoint(filter_sinogram(y, "hann")) * math.pi / 40
        >>> bool(torch.allclose(x, physics.fbp(y, filter="hann"), atol=1e-5))
        True
    """
    if y.numel() == 0:  # MKL's FFT refuses empty tensors
        return torch.zeros_like(y)
    n_det = y.shape[-1]
    response = fourier_filter(n_det, filter, device=y.device, dtype=y.dtype)
    size = _padded_size(n_det)
    spectrum = torch.fft.rfft(y, n=size, dim=-1) * response
    return torch.fft.irfft(spectrum, n=size, dim=-1)[..., :n_det]


def fan_beam_fbp(y: torch.Tensor, angles_deg: torch.Tensor, img_size: tuple[int, int], detector_spacing: float,
                 source_radius: float, detector_radius: float, filter: str = "ramp",
                 chunk: int = 16) -> torch.Tensor:
    r"""Fan-beam (flat detector) FBP of sinograms ``y`` of shape ``(B, ..., n_angles, n_detectors)`` in ASTRA's
    ``fanflat`` convention (source at :math:`R_s(\sin\beta, -\cos\beta)`, detector along
    :math:`(\cos\beta, \sin\beta)`); returns ``(B, ..., H, W)``.

    :param torch.Tensor y: sinograms.
    :param torch.Tensor angles_deg: view angles :math:`\beta` in degrees, ``(n_angles,)`` (or ``(1, n_angles)``)
        shared by the batch, or ``(B, n_angles)`` one set per sample (then one sample at a time).
    :param tuple img_size: image size ``(H, W)``, unit pixels centred on the rotation axis.
    :param float detector_spacing: detector cell width :math:`d`, in pixels.
    :param float source_radius: source to rotation axis :math:`R_s`, in pixels.
    :param float detector_radius: rotation axis to detector :math:`R_d`, in pixels.
    :param str filter: one of :data:`FILTERS`.
    :param int chunk: views back-projected together (memory ``chunk * H * W`` per sinogram).

    |sep|

    :Examples:

        The FBP of a fan-beam :class:`~deepinv_ext.physics.AstraCT` (what its :meth:`~deepinv_ext.physics.AstraCT.fbp`
        runs) recovers a smooth disc:

        >>> import torch
        >>> from deepinv_ext.physics import AstraCT
        >>> from deepinv_ext.physics.functional import fan_beam_fbp
        >>> physics = AstraCT(32, angles=180, geometry="fanbeam", backend="sparse", cache_dir=None)
        >>> grid = torch.linspace(-1, 1, 32)
        >>> x = torch.exp(-8 * (grid[:, None] ** 2 + grid[None, :] ** 2))[None, None]
        >>> y = physics.A(x)
        >>> x_fbp = fan_beam_fbp(y, physics.angles, physics.img_size, physics.detector_spacing,
        ...                      physics.source_radius, physics.detector_radius)
        >>> bool((x_fbp - x).abs().max() < 0.05)
        True
    """
    if angles_deg.ndim == 2 and angles_deg.shape[0] > 1:  # per-sample views: one sample at a time
        return torch.cat([fan_beam_fbp(y[i: i + 1], angles_deg[i], img_size, detector_spacing, source_radius,
                                       detector_radius, filter, chunk) for i in range(y.shape[0])])
    lead = y.shape[:-2]
    y, angles_deg = y.reshape(-1, *y.shape[-2:]), angles_deg.reshape(-1)
    n, n_angles, n_det = y.shape
    h, w = img_size
    magnification = (source_radius + detector_radius) / source_radius
    delta = detector_spacing / magnification
    s = (torch.arange(n_det, device=y.device, dtype=y.dtype) - (n_det - 1) / 2) * delta
    q = filter_sinogram(y * (source_radius / torch.sqrt(source_radius**2 + s**2)), filter)
    q = torch.nn.functional.pad(q, (1, 1))  # zero outside the detector
    xs = torch.arange(w, device=y.device, dtype=y.dtype) - (w - 1) / 2
    ys = (h - 1) / 2 - torch.arange(h, device=y.device, dtype=y.dtype)
    px, py = xs[None, :].expand(h, w).reshape(-1), ys[:, None].expand(h, w).reshape(-1)
    beta = torch.deg2rad(angles_deg.to(device=y.device, dtype=y.dtype))
    out = torch.zeros(n, h * w, device=y.device, dtype=y.dtype)
    for start in range(0, n_angles, chunk):
        b = beta[start: start + chunk, None]
        sin, cos = torch.sin(b), torch.cos(b)
        ell = source_radius - px * sin + py * cos  # source-to-pixel distance along the central ray
        t = px * cos + py * sin
        pos = (t * source_radius / ell) / delta + (n_det - 1) / 2 + 1  # +1: the padding
        pos = pos.clamp(0, n_det + 1)
        i0 = pos.floor().long().clamp(max=n_det)
        frac = pos - i0
        qc = q[:, start: start + chunk]
        index = i0.unsqueeze(0).expand(n, -1, -1)
        values = torch.gather(qc, 2, index) * (1 - frac) + torch.gather(qc, 2, index + 1) * frac
        out += (values * (source_radius / ell) ** 2).sum(1)
    return (out * (math.pi / (n_angles * delta))).reshape(*lead, h, w)

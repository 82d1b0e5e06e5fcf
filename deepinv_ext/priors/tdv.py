r"""Total Deep Variation (TDV) regulariser :footcite:p:`kobler2020total`, with a hand-derived gradient.

The energy, the network and the gradient are written out in :class:`TDV`; the padding and activation kernels (and
their adjoint and derivative) are in :mod:`deepinv_ext.priors._tdv_kernels`. The published weights (VLOGroup/tdv) load
with :meth:`TDV.from_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinv_ext._validation import boolean, finite_number, load_checkpoint, positive_int
from deepinv_ext.priors._tdv_kernels import student_t, symmetric_pad, symmetric_pad_adjoint
from deepinv_ext.priors.smooth import ProxConfig, SmoothLearnedPrior

__all__ = ["TDV", "symmetric_pad", "symmetric_pad_adjoint"]

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


class _Conv(nn.Module):
    """A bias-free convolution kernel ``weight`` (out, in, k, k); the maths lives in :class:`TDV`."""

    def __init__(self, out_channels: int, in_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.normal_(self.weight, 0.0, (in_channels * kernel_size**2) ** -0.5)


class _MicroBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _Conv(channels, channels, 3)
        self.conv2 = _Conv(channels, channels, 3)


class _MacroBlock(nn.Module):
    def __init__(self, num_features: int, num_scales: int, multiplier: int) -> None:
        super().__init__()
        ch = [num_features * multiplier**i for i in range(num_scales)]
        self.mb = nn.ModuleList(
            [nn.ModuleList([_MicroBlock(ch[i]), _MicroBlock(ch[i])]) for i in range(num_scales - 1)]
            + [nn.ModuleList([_MicroBlock(ch[-1])])])
        self.conv_down = nn.ModuleList([_Conv(ch[i], ch[i - 1], 3) for i in range(1, num_scales)])
        self.conv_up = nn.ModuleList([_Conv(ch[i], ch[i - 1], 3) for i in range(1, num_scales)])


class TDV(SmoothLearnedPrior):
    r"""Total Deep Variation prior TDV\ :sub:`l`, with a hand-derived gradient.

    The energy of :footcite:t:`kobler2020total` for an image :math:`x \in \mathbb{R}^{C \times H \times W}` is

    .. math::

        R(x) = \frac{1}{N_F}\sum_{i} \big(w^\top \mathcal{N}(K x)\big)_i + \varepsilon\|x\|_2^2,

    the sum over pixels :math:`i` of a 1x1 convolution :math:`w` of the :math:`N_F` feature maps of a multi-scale
    network :math:`\mathcal{N}` applied to a 3x3 convolution :math:`K x`. :math:`\mathcal{N}` is a chain of
    :math:`l` macro-blocks, each a U-Net over ``num_scales`` scales built of residual micro-blocks

    .. math::

        z \mapsto z + K_2\,\phi(K_1 z), \qquad \phi(s) = \tfrac12\log(1 + s^2) \quad \text{(log-Student-t)};

    stride-2 down/up convolutions use 3x3 kernels blurred by the 5x5 binomial filter, every convolution pads its
    input symmetrically (numpy's ``mode="symmetric"``) and has no bias, and the feature maps of all scales pass from
    one macro-block to the next. :math:`K` is zero-mean over (in, kh, kw) for every output filter (``zero_mean``)
    with :math:`\ell_2` norm at most one; :meth:`project` restores this in place (call it after each optimizer
    step; :class:`deepinv_ext.algorithms.tdv_network.ProjectedOptimizer` does).

    :math:`\nabla R` is derived by hand, a reverse sweep through the network that reuses :math:`\phi'(K_1 z)` saved
    by the forward sweep, in plain differentiable torch operations: it is differentiable in the parameters (training
    of :class:`deepinv_ext.algorithms.TDVNetwork`). Each blurred 7x7 stride-2 convolution is computed as a 5x5 blur
    followed by the 3x3 stride-2 convolution, the same map at about a quarter of the cost. The parameter names are those
    of the authors' state dicts (``K1.weight``, ``mb.{m}.mb.{scale}.{k}.conv1.weight``, ..., ``KN.weight``), so
    published weights load as they are (:meth:`from_checkpoint`). On a GPU, :meth:`compile_sweeps` runs the sweeps
    through :func:`torch.compile` (about 2.2x faster on an H100 for a 481x321 image, ``benchmarks/tdv.py``).

    :param int in_channels: image channels :math:`C`.
    :param int num_features: feature channels :math:`N_F` at the finest scale.
    :param int num_scales: scales of each macro-block's U-Net.
    :param int num_macro_blocks: number of macro-blocks (the ``l`` of TDV\ :sub:`l`).
    :param int multiplier: feature growth per scale (the published weights use 1).
    :param bool zero_mean: impose the zero-mean constraint on :math:`K`.
    :param float eps: weight :math:`\varepsilon \ge 0` of the :math:`\varepsilon\|x\|_2^2` term (0: the TDV of the
        paper; not trained). A random TDV can be unbounded below along the null space of the physics, where solvers
        drift; as :math:`R` grows at most linearly, any :math:`\varepsilon > 0` makes the energy coercive.
    :param deepinv_ext.priors.ProxConfig prox_config: settings of the inner solve of :meth:`prox`.
    :raises ValueError: a count that is not an integer >= 1 (``num_scales`` >= 2), ``eps`` negative or not finite.
    :raises TypeError: ``zero_mean`` not a bool, ``prox_config`` not a :class:`~deepinv_ext.priors.ProxConfig`.

    ``fn``, ``grad``, ``energy_and_grad``, ``energy_map`` and ``prox`` take images ``(B, in_channels, H, W)`` in
    the precision of the parameters (:meth:`check_input`), at least 6 pixels a side at the second-coarsest scale.

    |sep|

    :Examples:

    The hand-derived gradient is autograd's:

    >>> import torch
    >>> from deepinv_ext.priors import TDV
    >>> prior = TDV(num_features=4, num_macro_blocks=1).double()
    >>> x = torch.rand(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    >>> energy, grad = prior.energy_and_grad(x)
    >>> energy.shape, torch.allclose(grad, torch.autograd.grad(prior.fn(x).sum(), x)[0])
    (torch.Size([2]), True)
    """

    def __init__(self, in_channels: int = 1, num_features: int = 32, num_scales: int = 3,
                 num_macro_blocks: int = 3, multiplier: int = 1, zero_mean: bool = True,
                 eps: float = 0.0, prox_config: ProxConfig | None = None) -> None:
        super().__init__(prox_config)
        self.eps = finite_number(eps, "eps")
        self.in_channels = positive_int(in_channels, "in_channels")
        self.num_features = positive_int(num_features, "num_features")
        self.num_scales = positive_int(num_scales, "num_scales", minimum=2)
        self.num_macro_blocks = positive_int(num_macro_blocks, "num_macro_blocks")
        self.multiplier = positive_int(multiplier, "multiplier")
        self.zero_mean = boolean(zero_mean, "zero_mean")
        self.K1 = _Conv(num_features, in_channels, 3)
        self.mb = nn.ModuleList([_MacroBlock(num_features, num_scales, multiplier) for _ in range(num_macro_blocks)])
        self.KN = _Conv(1, num_features, 1)
        b = torch.tensor(_BINOMIAL)
        self.register_buffer("blur", (b / b.sum()), persistent=False)
        self.project(surface=True)
        self._compile_options: dict | None = None  # torch.compile's arguments, see compile_sweeps
        self._compiled: dict | None = None  # the compiled sweeps, built at their first call

    def compile_sweeps(self, mode: str | None = "default", **options) -> TDV:
        r"""Run :meth:`energy_map` (so :meth:`fn`) and :meth:`energy_and_grad` (so :meth:`grad`) through
        :func:`torch.compile`, which fuses the padding, activation and adjoint folds between the convolutions (same
        results to rounding; each new image size compiles once more, then sizes become dynamic). Only calls that
        autograd does not record take the compiled sweeps; the others, training included, stay eager (inductor's
        backward of the replicate padding breaks on channels-last features, torch 2.14). With
        ``mode="reduce-overhead"`` (CUDA graphs) a call's output is overwritten by the next call of the same size:
        ``clone()`` what must outlive it. A copy (:func:`copy.deepcopy`, pickling) compiles its own sweeps.

        :param str mode: :func:`torch.compile`'s mode (``"default"``, ``"reduce-overhead"``, ``"max-autotune"``).
        :param options: further keyword arguments of :func:`torch.compile`.
        :return: the prior itself.
        """
        self._compile_options, self._compiled = {"mode": mode, **options}, None
        return self

    def __getstate__(self) -> dict:
        # the compiled sweeps are bound to this instance (and cannot be pickled): a copy compiles its own
        return {**super().__getstate__(), "_compiled": None}

    # ----------------------------------------------------------------- constraints
    @torch.no_grad()
    def project(self, surface: bool = False) -> None:
        r"""Project :math:`K` (``K1.weight``) in place: subtract the mean of each output filter (if ``zero_mean``)
        and divide by :math:`\max(1, \|k\|_2)`.

        :param bool surface: divide by :math:`\|k\|_2` instead, i.e. project onto the unit sphere.
        """
        w = self.K1.weight
        if self.zero_mean:
            w.sub_(w.mean(dim=(1, 2, 3), keepdim=True))
        norm = w.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()
        w.div_(norm.clamp_min(torch.finfo(w.dtype).tiny) if surface else norm.clamp_min(1.0))

    # ----------------------------------------------------------------- linear pieces and their adjoints
    def _blur(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        b = self.blur.to(x.dtype)
        x = F.conv2d(x, b.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
        return F.conv2d(x, b.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)

    def _blur_adjoint(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        b = self.blur.to(x.dtype)
        x = F.conv_transpose2d(x, b.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
        return F.conv_transpose2d(x, b.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)

    @staticmethod
    def _conv(x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(symmetric_pad(x, w.shape[-1] // 2), w)

    @staticmethod
    def _conv_adjoint(y: Tensor, w: Tensor) -> Tensor:
        return symmetric_pad_adjoint(F.conv_transpose2d(y, w), w.shape[-1] // 2)

    def _down(self, x: Tensor, w: Tensor) -> Tensor:
        # symmetric pad 3, valid 7x7 stride-2 convolution with (3x3 kernel) * (5x5 binomial) = blur, then 3x3 stride 2
        return F.conv2d(self._blur(symmetric_pad(x, 3)), w, stride=2)

    def _down_adjoint(self, y: Tensor, w: Tensor, shape: torch.Size) -> Tensor:
        h, v = shape[-2] + 2, shape[-1] + 2
        op = (h - 3 - 2 * (y.shape[-2] - 1), v - 3 - 2 * (y.shape[-1] - 1))
        return symmetric_pad_adjoint(self._blur_adjoint(F.conv_transpose2d(y, w, stride=2, output_padding=op)), 3)

    # ----------------------------------------------------------------- forward and reverse sweeps
    def _micro(self, blk: _MicroBlock, z: Tensor, keep: list | None) -> Tensor:
        a, da = student_t(self._conv(z, blk.conv1.weight))
        if keep is not None:
            keep.append(da)
        return z + self._conv(a, blk.conv2.weight)

    @staticmethod
    def _micro_adjoint(blk: _MicroBlock, g: Tensor, da: Tensor) -> Tensor:
        return g + TDV._conv_adjoint(da * TDV._conv_adjoint(g, blk.conv2.weight), blk.conv1.weight)

    def _features(self, x: Tensor, keep: list | None) -> Tensor:
        n = self.num_scales
        # channels_last: about 1.6x faster convolutions on CPU (oneDNN) and no slower on GPU
        z0 = self._conv(x, self.K1.weight).contiguous(memory_format=torch.channels_last)
        z: list[Tensor | None] = [z0] + [None] * (n - 1)
        shapes = []
        for mac in self.mb:
            for i in range(n - 1):
                z[i] = self._micro(mac.mb[i][0], z[i], keep)
                d = self._down(z[i], mac.conv_down[i].weight)
                z[i + 1] = d if z[i + 1] is None else z[i + 1] + d
            z[n - 1] = self._micro(mac.mb[n - 1][0], z[n - 1], keep)
            for i in reversed(range(n - 1)):
                z[i] = z[i] + self._down_adjoint(z[i + 1], mac.conv_up[i].weight, z[i].shape)
                z[i] = self._micro(mac.mb[i][1], z[i], keep)
            shapes = [t.shape for t in z]
        if keep is not None:
            keep.append(shapes)
        return z[0]

    def _reverse(self, g0: Tensor, keep: list) -> Tensor:
        n = self.num_scales
        shapes = keep.pop()
        g: list[Tensor | None] = [g0] + [None] * (n - 1)
        for mac in reversed(self.mb):
            for i in range(n - 1):
                g[i] = self._micro_adjoint(mac.mb[i][1], g[i], keep.pop())
                u = self._down(g[i], mac.conv_up[i].weight)
                g[i + 1] = u if g[i + 1] is None else g[i + 1] + u
            g[n - 1] = self._micro_adjoint(mac.mb[n - 1][0], g[n - 1], keep.pop())
            for i in reversed(range(n - 1)):
                g[i] = g[i] + self._down_adjoint(g[i + 1], mac.conv_down[i].weight, shapes[i])
                g[i] = self._micro_adjoint(mac.mb[i][0], g[i], keep.pop())
        return self._conv_adjoint(g[0], self.K1.weight).contiguous()

    def check_input(self, x: Tensor, name: str = "x") -> None:
        r"""The check of :meth:`SmoothLearnedPrior.check_input`, and an image large enough for ``num_scales``.

        :param torch.Tensor x: the input to check.
        :param str name: its name in the error messages.
        """
        super().check_input(x, name)
        sizes = [min(x.shape[-2:])]
        for _ in range(self.num_scales - 1):
            sizes.append((sizes[-1] + 1) // 2)
        if sizes[-2] < 6 or sizes[-1] < 2:  # the symmetric padding by 3 needs 6 pixels on every downsampled scale
            raise ValueError(f"{name} of size {tuple(x.shape[-2:])} is too small for {self.num_scales} scales: each side "
                             f"must leave at least 6 pixels at scale {self.num_scales - 2}")

    # ----------------------------------------------------------------- public API
    def energy_map(self, x: Tensor) -> Tensor:
        r"""The pixelwise deep variation :math:`(w^\top\mathcal{N}(Kx))_i / N_F`, shape ``(B, 1, H, W)``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        """
        self.check_input(x)
        return self._sweep("energy_map", x)

    def _energy_map(self, x: Tensor) -> Tensor:
        return self._conv(self._features(x, None), self.KN.weight) / self.num_features

    def fn(self, x: Tensor, *args, **kwargs) -> Tensor:
        r"""The energy :math:`R(x)` (with :math:`\varepsilon\|x\|^2`) of each batch element, shape ``(B,)``.

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        energy = self.energy_map(x).sum(dim=(1, 2, 3))
        return energy + self.eps * x.pow(2).sum(dim=(1, 2, 3)) if self.eps else energy

    def energy_and_grad(self, x: Tensor, *, get_energy: bool = True) -> tuple[Tensor | None, Tensor]:
        r""":math:`(R(x), \nabla R(x))` in one forward and one reverse sweep, the gradient derived by hand (it
        overrides the autograd default of :class:`~deepinv_ext.priors.SmoothLearnedPrior`, called the same way).

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param bool get_energy: compute the energy (``False``: ``None`` in its place, one 1x1 convolution less).
        :return: the energies ``(B,)`` (or ``None``) and the gradient, shape of ``x``.
        """
        self.check_input(x)
        energy, grad = self._sweep("energy_and_grad", x, get_energy)
        if not self.eps:
            return energy, grad
        energy = None if energy is None else energy + self.eps * x.pow(2).sum(dim=(1, 2, 3))
        return energy, grad + 2 * self.eps * x

    def _sweep(self, name: str, x: Tensor, *args):
        if self._compile_options is None or (torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in self.parameters()))):  # eager, or recorded
            return getattr(self, "_" + name)(x, *args)
        if self._compiled is None:
            self._compiled = {sweep: torch.compile(getattr(self, "_" + sweep), **self._compile_options)
                              for sweep in ("energy_map", "energy_and_grad")}
        return self._compiled[name](x, *args)

    def _energy_and_grad(self, x: Tensor, get_energy: bool) -> tuple[Tensor | None, Tensor]:
        keep: list = []
        feats = self._features(x, keep)
        energy = None
        if get_energy:
            energy = self._conv(feats, self.KN.weight).sum(dim=(1, 2, 3)) / self.num_features
        del feats
        w = self.KN.weight.to(x.dtype) / self.num_features
        g0 = w.expand(x.shape[0], -1, *keep[-1][0][-2:]).contiguous(memory_format=torch.channels_last)
        return energy, self._reverse(g0, keep)

    def grad(self, x: Tensor, *args, **kwargs) -> Tensor:
        r""":math:`\nabla R(x)`, same shape as ``x`` (:meth:`energy_and_grad` without the energy).

        :param torch.Tensor x: images ``(B, in_channels, H, W)``.
        :param args: ignored (deepinv's iterators pass ``g_param``).
        :param kwargs: ignored.
        """
        return self.energy_and_grad(x, get_energy=False)[1]

    # ----------------------------------------------------------------- published weights
    @staticmethod
    def _published_config(checkpoint: dict) -> dict:
        cfg = checkpoint.get("config", {}).get("R", {})
        if cfg.get("type") != "tdv":
            raise ValueError(f"checkpoint holds no TDV regulariser (config['R'] = {cfg!r})")
        c = cfg["config"]
        return {"in_channels": c["in_channels"], "num_features": c["num_features"],
                "num_scales": c.get("num_scales", 3), "num_macro_blocks": c["num_mb"],
                "multiplier": c.get("multiplier", 1), "zero_mean": c.get("zero_mean", True)}

    @classmethod
    def from_state_dict(cls, config: dict, state_dict: dict[str, Tensor], prefix: str = "R.") -> TDV:
        r"""Build from the authors' regulariser config and state dict; the ``mask`` (all ones) and ``blur``
        (binomial) buffers are checked and dropped.

        :param dict config: the constructor's arguments.
        :param dict state_dict: the authors' state dict.
        :param str prefix: the prefix of its TDV keys.
        """
        prior = cls(**config)
        own = {}
        blur = torch.tensor(_BINOMIAL)
        blur = torch.outer(blur, blur) / 256
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
            if key.endswith(".mask"):
                if not torch.all(value == 1):
                    raise ValueError(f"{prefix}{key}: only all-ones masks are supported")
            elif key.endswith(".blur"):
                if not torch.allclose(value.reshape(5, 5).float(), blur):
                    raise ValueError(f"{prefix}{key}: expected the 5x5 binomial kernel")
            else:
                own[key] = value
        prior.load_state_dict(own, strict=True)
        return prior

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu",
                        trainable: bool = False) -> TDV:
        r"""Load the regulariser of a published checkpoint (e.g. ``tdv3-3-25-f32-gray.pth`` of VLOGroup/tdv),
        with ``torch.load(..., weights_only=True)``. The weights load **frozen** (``requires_grad=False``: for
        inference, recorded by no autograd graph); to fine-tune, pass ``trainable=True``.

        :param str, pathlib.Path path: the checkpoint file (a dict with the keys ``"config"`` and ``"model"``).
        :param str, torch.device map_location: where to load the tensors.
        :param bool trainable: whether the parameters require grad.
        :raises FileNotFoundError: no such file.
        :raises ValueError: naming the file: empty, truncated, not a torch checkpoint, or not a published TDV.
        :raises TypeError: ``trainable`` is not a bool.
        """
        boolean(trainable, "trainable")
        checkpoint = load_checkpoint(path, map_location, required=("config", "model"), what="TDV checkpoint")
        try:
            prior = cls.from_state_dict(cls._published_config(checkpoint), checkpoint["model"])
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as err:
            raise ValueError(f"TDV checkpoint {str(path)!r} does not hold a TDV regulariser of the published layout: "
                             f"{type(err).__name__}: {str(err)[:300]}") from err
        return prior.requires_grad_(trainable)

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A one-block, 4-feature TDV with :math:`\\varepsilon = 0.1` in float64 on two 17x14 images, for
        :func:`deepinv_ext.testing.check_prior`.

        :param torch.Generator generator: the only random source drawn from (side-effect free).
        """
        from deepinv_ext.testing.examples import example_generator, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = cls(in_channels=1, num_features=4, num_scales=3, num_macro_blocks=1, eps=0.1).double()
        return {"prior": prior, "x": torch.rand(2, 1, 17, 14, generator=g, dtype=torch.float64)}

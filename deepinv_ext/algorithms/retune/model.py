r"""ReTune, restarted truncated unrolling :footcite:p:`davy2025restarted`: a fixed-point network trained at equilibrium
with the memory of :math:`L` layers (:class:`ReTune`)."""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from tqdm.auto import tqdm

from deepinv_ext._convergence import warn_not_converged
from deepinv_ext._validation import boolean, check_measurement, finite_number, positive_int
from deepinv_ext.algorithms.retune.jacobian import jacobian_free_error_bound, layer_lipschitz
from deepinv_ext.algorithms.retune.layers import FixedPointLayer, ForwardBackwardLayer

__all__ = ["ReTune"]

_INFERENCE = ("fixed_point", "unrolled")


class ReTune(dinv.models.Reconstructor):
    r"""Restarted truncated unrolled network (ReTune) around a fixed-point layer with shared parameters.

    An unrolled network of :math:`L` layers with shared parameters, :math:`N_\theta = T_\theta^{L}`, is restarted
    :math:`R` times from its own output without gradients, then run :math:`L` more layers with gradients
    :footcite:p:`davy2025restarted`:

    .. math::

        x_0 = A^\top y, \qquad \bar x = \operatorname{sg}\big(N_\theta^{R}(x_0)\big), \qquad
        \hat x = N_\theta(\bar x),

    where :math:`\operatorname{sg}` stops the gradient. The loss :math:`\ell(\hat x, x)` is backpropagated through
    the last :math:`L` layers only: a Jacobian-free step whose relative error is at most :math:`\rho^L` when the
    layer is :math:`\rho`-contractive (:func:`~deepinv_ext.algorithms.jacobian_free_error_bound`), with the memory
    of :math:`L` layers whatever :math:`R`. At inference the network is restarted until the fixed point of
    :math:`T_\theta`, i.e. the solution of the underlying variational problem or PnP scheme, is reached.

    **Training mode** (``model.train()`` with gradients enabled): :math:`R` restarts of :math:`L` layers under
    ``torch.no_grad``, then :math:`L` layers with gradients from the detached warm start (``last_warm_start``).

    **Eval mode** (``inference="fixed_point"``, default): restarts of :math:`L` layers until the relative residual
    :math:`\|x_{k+1} - x_k\| / \|x_k\|` (per sample, maximum over the batch) of the last layer falls below ``tol``,
    or ``max_restarts`` restarts. The residual of every layer application is kept in ``residual_history`` and the
    number of restarts in ``last_restarts``; ``converged`` (shape ``(B,)``) says which images ended below ``tol``
    (a :class:`~deepinv_ext.algorithms.NotConvergedWarning` names the others; ``None`` after a call without
    stopping rule: training, ``inference="unrolled"``). With ``inference="unrolled"`` the network is evaluated as it was
    trained, :math:`(R+1)L` layers. Eval mode keeps no graph (``torch.no_grad``).

    Baselines in the same code path: ``restarts=0`` is standard unrolling with full backpropagation through
    :math:`L` layers, and ``depth=(R+1)L, restarts=0`` is full unrolling (the memory ceiling); ``depth=1`` is a
    Jacobian-free deep equilibrium model.

    :param FixedPointLayer iteration: the layer :math:`T_\theta(x; y)` (e.g. :class:`ForwardBackwardLayer`,
        :class:`PnPForwardBackwardLayer`), applied as ``iteration(x, y, physics)``.
    :param int depth: number of layers :math:`L \ge 1` backpropagated through.
    :param int restarts: number of gradient-free restarts :math:`R \ge 0` in training.
    :param float tol: relative-residual tolerance of the eval-mode fixed-point iteration.
    :param int max_restarts: cap on the number of restarts in eval mode.
    :param str inference: ``"fixed_point"`` or ``"unrolled"`` (see above).
    :param int monitor_every: every that many training forwards, estimate the layer's Lipschitz constant at the warm
        start and the Jacobian-free error bound :math:`\rho^L`, and append them to ``monitor_log`` (0: never).
    :param bool show_progress_bar: tqdm bar over eval-mode restarts.

    |sep|

    :Examples:

    >>> import deepinv as dinv, torch
    >>> from deepinv_ext.algorithms import ReTune, ForwardBackwardLayer
    >>> from deepinv_ext.priors import WaveletL1Prior
    >>> layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.05)
    >>> model = ReTune(layer, depth=5, restarts=20).eval()
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> x = torch.rand(1, 1, 16, 16)
    >>> x_hat = model(physics(x), physics)
    >>> bool(model.residual_history[-1] < 1e-5)
    True
    """

    def __init__(self, iteration: FixedPointLayer, depth: int = 10, restarts: int = 10, *, tol: float = 1e-5,
                 max_restarts: int = 1000, inference: str = "fixed_point", monitor_every: int = 0,
                 show_progress_bar: bool = False):
        super().__init__()
        if not isinstance(iteration, FixedPointLayer):
            raise TypeError(f"iteration must be a FixedPointLayer (a torch.nn.Module layer (x, y, physics) -> x with "
                            f"init(y, physics)), got {type(iteration).__name__}")
        if inference not in _INFERENCE:
            raise ValueError(f"inference must be one of {_INFERENCE}, got {inference!r}")
        self.iteration = iteration
        self.depth, self.restarts = positive_int(depth, "depth"), positive_int(restarts, "restarts", minimum=0)
        self.tol = finite_number(tol, "tol", strict=True)
        self.max_restarts, self.inference = positive_int(max_restarts, "max_restarts"), inference
        self.monitor_every = positive_int(monitor_every, "monitor_every", minimum=0)
        self.show_progress_bar = boolean(show_progress_bar, "show_progress_bar")
        self.converged: torch.Tensor | None = None
        self.residual_history: list[float] = []
        self.last_restarts = 0
        self.last_warm_start: torch.Tensor | None = None
        self.monitor_log: list[dict] = []
        self._n_train_calls = 0

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small deblurring instance for :func:`deepinv_ext.testing.check_reconstructor` (side-effect free: draws
        only from ``generator``).

        :param torch.Generator generator: the CPU generator of every random draw (``None``: one seeded with 0).
        :return: ``{"model", "physics", "dataset"}``.
        """
        from deepinv_ext.priors.wavelet import WaveletL1Prior
        from deepinv_ext.testing.examples import example_blur, example_generator, example_images

        g = example_generator(generator)
        physics = example_blur(16, 0.02)
        layer = ForwardBackwardLayer(WaveletL1Prior(level=2), step=1.0, lam=0.02)
        return {"model": cls(layer, depth=3, restarts=2, max_restarts=20),
                "physics": physics, "dataset": example_images(4, 16, generator=g)}

    @staticmethod
    def relative_residuals(x_new: torch.Tensor, x_old: torch.Tensor) -> torch.Tensor:
        r"""Per-sample :math:`\|x_{k+1} - x_k\| / \|x_k\|`, shape ``(B,)`` (no graph).

        :param torch.Tensor x_new: :math:`x_{k+1}`.
        :param torch.Tensor x_old: :math:`x_k`.
        """
        x_new, x_old = x_new.detach(), x_old.detach()
        num = torch.linalg.vector_norm((x_new - x_old).flatten(1), dim=1)
        den = torch.linalg.vector_norm(x_old.flatten(1), dim=1).clamp_min(torch.finfo(x_old.dtype).tiny)
        return num / den

    @staticmethod
    def relative_residual(x_new: torch.Tensor, x_old: torch.Tensor) -> float:
        r"""Largest per-sample :math:`\|x_{k+1} - x_k\| / \|x_k\|` over the batch, as a float.

        :param torch.Tensor x_new: :math:`x_{k+1}`.
        :param torch.Tensor x_old: :math:`x_k`.
        """
        return float(ReTune.relative_residuals(x_new, x_old).max())

    def unroll(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics,
               n_layers: int | None = None) -> torch.Tensor:
        r"""Apply :math:`n` layers (default :math:`L`) with the current grad mode: :math:`T_\theta^{n}(x)`.

        :param torch.Tensor x: the starting iterate.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator.
        :param int n_layers: the number of layers :math:`n` (``None``: ``depth``).
        """
        for _ in range(self.depth if n_layers is None else int(n_layers)):
            x = self.iteration(x, y, physics)
        return x

    def forward(self, y: torch.Tensor, physics: dinv.physics.Physics, x_init: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        r"""Reconstruct from ``y``: ReTune training pass in training mode, fixed-point iteration in eval mode.

        :param torch.Tensor y: measurements, of the shape ``physics.A`` gives, finite, in the layer's dtype.
        :param deepinv.physics.LinearPhysics physics: forward operator.
        :param torch.Tensor x_init: initial iterate (default: the layer's ``init(y, physics)``, :math:`A^\top y`), of
            the shape of :math:`A^\top y`.
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: the reconstruction, of the shape of :math:`A^\top y`.
        :raises TypeError: a physics that is not linear, a ``y`` or ``x_init`` that is not a real floating tensor of
            the layer's dtype.
        :raises ValueError: an empty batch, NaN or inf in ``y``, or a ``y`` that does not fit ``physics``.
        """
        check_measurement(y, physics, x_init, model=self)
        self.converged = None
        if x_init is None:
            with torch.no_grad():
                x_init = self.iteration.init(y, physics)
        if self.training and torch.is_grad_enabled():
            return self._train_forward(x_init, y, physics)
        if self.inference == "unrolled":
            with torch.no_grad():
                return self.unroll(x_init, y, physics, (self.restarts + 1) * self.depth)
        return self._fixed_point(y, physics, x_init)

    def _train_forward(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
        with torch.no_grad():
            x = self.unroll(x.detach(), y, physics, self.restarts * self.depth)
        x = x.detach()
        self.last_warm_start = x
        self._n_train_calls += 1
        if self.monitor_every and self._n_train_calls % self.monitor_every == 0:
            # the power iterations draw random vectors: on a forked RNG, so monitoring never changes the training
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                self.monitor_log.append(self.diagnostics(x, y, physics, step=self._n_train_calls))
        return self.unroll(x, y, physics)

    def fixed_point(self, y: torch.Tensor, physics: dinv.physics.Physics,
                    x_init: torch.Tensor | None = None) -> torch.Tensor:
        r"""Restart until :math:`\|x_{k+1} - x_k\| / \|x_k\| <` ``tol`` for every image (checked on the last
        layer of each restart) or ``max_restarts``; fills ``residual_history`` (one entry per layer, the largest
        over the batch), ``last_restarts`` and ``converged``; errors as :meth:`forward`. Runs without a graph.

        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the forward operator.
        :param torch.Tensor x_init: the starting iterate (default: the layer's ``init(y, physics)``).
        :return: the last iterate.
        """
        check_measurement(y, physics, x_init, model=self)
        return self._fixed_point(y, physics, x_init)

    @torch.no_grad()
    def _fixed_point(self, y: torch.Tensor, physics: dinv.physics.Physics,
                     x_init: torch.Tensor | None) -> torch.Tensor:
        x = self.iteration.init(y, physics) if x_init is None else x_init
        self.residual_history = []
        self.last_restarts = 0
        bar = tqdm(range(self.max_restarts), desc="ReTune restarts", disable=not self.show_progress_bar, leave=False)
        for r in bar:
            for _ in range(self.depth):
                x_new = self.iteration(x, y, physics)
                residuals = self.relative_residuals(x_new, x)
                self.residual_history.append(float(residuals.max()))
                x = x_new
            self.last_restarts = r + 1
            bar.set_postfix(residual=f"{self.residual_history[-1]:.2e}")
            if self.residual_history[-1] < self.tol:
                break
        self.converged = residuals < self.tol
        warn_not_converged(type(self).__name__, self.converged, {
            f"relative residual above tol={self.tol:g} after max_restarts={self.max_restarts}": ~self.converged})
        return x

    def diagnostics(self, x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics, *,
                    n_iter: int = 20, **extra) -> dict:
        r"""Lipschitz estimate :math:`\rho` of the layer at ``x`` (maximum over the batch), the Jacobian-free error
        bound :math:`\rho^L` and the relative residual of one more layer at ``x``.

        :param torch.Tensor x: where to linearise the layer (e.g. the warm start of a training step).
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.Physics physics: the forward operator.
        :param int n_iter: power iterations of :func:`~deepinv_ext.algorithms.layer_lipschitz`.
        :param extra: further entries of the returned dict (e.g. ``step=...``).
        :return: ``{**extra, "lipschitz", "jf_error_bound", "warm_start_residual"}``.
        """
        was_training = self.training
        lip = float(layer_lipschitz(self.iteration, x, y, physics, n_iter=n_iter).max())
        with torch.no_grad():
            res = self.relative_residual(self.iteration(x, y, physics), x)
        self.train(was_training)
        bound = jacobian_free_error_bound(lip, self.depth) if lip < 1 else math.inf
        return {**extra, "lipschitz": lip, "jf_error_bound": bound, "warm_start_residual": res}

r"""The TDV variational network of :footcite:t:`kobler2020total`: :math:`S` semi-implicit gradient-flow steps on
:math:`\lambda f + R` with a learned stopping time :math:`T` and data weight :math:`\lambda` (:class:`TDVNetwork`),
and the optimiser hook that keeps its constraints in training (:func:`constrain_optimizer`)."""

from __future__ import annotations

from pathlib import Path

import torch
from deepinv.models import Reconstructor
from deepinv.physics import Denoising, Physics
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from deepinv_ext._batch import per_sample
from deepinv_ext._validation import (
    boolean,
    check_measurement,
    finite_number,
    finite_values,
    load_checkpoint,
    positive_int,
)
from deepinv_ext.algorithms.data_fidelity import prox_data_fidelity
from deepinv_ext.priors.tdv import TDV

__all__ = ["TDVNetwork", "constrain_optimizer"]


def constrain_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    r"""Make ``optimizer`` call ``model.project()`` after every step (a torch step post-hook), so that
    :class:`deepinv.Trainer`, which has no post-step hook of its own, keeps the constraints.

    :param torch.optim.Optimizer optimizer: the optimiser of ``model``'s parameters.
    :param torch.nn.Module model: a model with a ``project()`` method, e.g. :class:`TDVNetwork`.
    :return: the same optimiser (its ``state_dict`` is unchanged, so Trainer checkpoints resume).
    :raises TypeError: not a torch optimiser, or a model without ``project()``.

    |sep|

    :Examples:

    A step that would make the stopping time negative is projected back onto ``T_range``:

    >>> import torch
    >>> from deepinv_ext.algorithms import TDVNetwork, constrain_optimizer
    >>> from deepinv_ext.priors import TDV
    >>> net = TDVNetwork(TDV(num_features=4, num_macro_blocks=1), steps=2, T=0.1)
    >>> optimizer = constrain_optimizer(torch.optim.SGD([net.T], lr=1.0), net)
    >>> net.T.grad = torch.tensor(1.0)
    >>> optimizer.step()
    >>> net.T.item()
    0.0
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not callable(getattr(model, "project", None)):
        raise TypeError(f"model must have a project() method, got {type(model).__name__}")
    optimizer.register_step_post_hook(lambda *_: model.project())
    return optimizer


class TDVNetwork(Reconstructor):
    r"""The TDV variational network: :math:`S` semi-implicit steps of the gradient flow of :math:`\lambda f + R`.

    The network of :footcite:t:`kobler2020total` (eq. (7)-(8)) discretises the gradient flow of the energy
    :math:`\lambda f(x, y) + R(x)`, :math:`f(x, y) = \frac12\|Ax - y\|_2^2`, on :math:`[0, T]` by :math:`S`
    semi-implicit steps, explicit in the regulariser :math:`R` (:class:`deepinv_ext.priors.TDV`) and implicit in the
    data term:

    .. math::

        x_0 = x_{\text{init}}, \qquad
        x_s = \operatorname{prox}_{\frac{\lambda}{S} f(\cdot, y)}\Big(x_{s-1} - \frac{T}{S}\nabla R(x_{s-1})\Big),
        \quad s = 1, \dots, S,

    with a learned stopping time :math:`T` and data weight :math:`\lambda`. The proximal map solves
    :math:`(\operatorname{Id} + \tau A^\top A)x = u + \tau A^\top y`, :math:`\tau = \lambda/S`: in closed form
    :math:`x = (u + \tau y)/(1 + \tau)` for denoising, through the singular value decomposition for deepinv's
    decomposable physics, and by conjugate gradients otherwise
    (:func:`~deepinv_ext.algorithms.prox_data_fidelity`, shared with the other solvers).

    A network trained at noise level :math:`\sigma_0` is applied at :math:`\sigma` by rescaling,
    :math:`\hat x(y) = \mathrm{VN}(s\,y)/s` with :math:`s = \sigma_0/\sigma` (:meth:`noise_scale`), since for a
    linear operator :math:`s y = A(s x) + s\epsilon` has noise level :math:`\sigma_0`. The stopping time that is
    optimal on given data solves :math:`J'(T) = 0` (Theorem 3.1 of the paper; :meth:`optimal_stopping_time`).

    Parameter names follow the authors' checkpoints (``T``, ``lmbda``, ``R.<TDV keys>``), so
    :meth:`from_checkpoint` loads the published files as they are.

    **Memory and training.** This is a trained network of :math:`S` steps, not a solver run to convergence: as any
    deepinv model, it is recorded by autograd whenever autograd is enabled and a parameter requires grad (that is
    how :class:`deepinv.Trainer` trains it), with per-step checkpointing (``checkpointing=True``: the graph of one
    step at a time, plus each step's input). Published weights load frozen (:meth:`from_checkpoint`), so their
    inference records nothing; for a network being trained, infer under :func:`torch.no_grad` (as
    :func:`deepinv.test` does). In training, :func:`constrain_optimizer` keeps the constraints of the paper
    (:meth:`project` after every optimiser step).

    :param deepinv_ext.priors.TDV prior: the regulariser :math:`R` (default: ``TDV()``, 3 macro-blocks, 3 scales,
        32 features).
    :param int steps: the number of steps :math:`S`.
    :param float T: initial stopping time :math:`T`.
    :param float lmbda: initial data weight :math:`\lambda`.
    :param float sigma_train: the noise level the network is (or was) trained for; at another ``sigma`` the input
        is rescaled by ``sigma_train / sigma`` and the output scaled back (``None``: never rescale).
    :param tuple T_range: the interval :math:`T` is projected onto by :meth:`project`.
    :param tuple lmbda_range: the interval :math:`\lambda` is projected onto.
    :param bool checkpointing: recompute each step in the backward pass instead of storing its graph (training
        only; no effect under ``torch.no_grad``).
    :param int cg_max_iter: CG iterations of the proximal map for non-decomposable physics.
    :param float cg_tol: relative CG tolerance.

    |sep|

    :Examples:

    An untrained network, two steps on a denoising problem:

    >>> import torch, deepinv as dinv
    >>> from deepinv_ext.algorithms import TDVNetwork
    >>> from deepinv_ext.priors import TDV
    >>> net = TDVNetwork(TDV(num_features=4, num_macro_blocks=1), steps=2, T=0.05, lmbda=1.0)
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255))
    >>> y = physics(torch.rand(1, 1, 16, 16))
    >>> with torch.no_grad():
    ...     xs = net(y, physics, return_all=True)
    >>> len(xs), xs[-1].shape, bool(torch.equal(xs[0], y))
    (3, torch.Size([1, 1, 16, 16]), True)
    """

    def __init__(self, prior: TDV | None = None, steps: int = 10, T: float = 0.001, lmbda: float = 0.01,
                 sigma_train: float | None = 25 / 255, T_range: tuple[float, float] = (0.0, 1000.0),
                 lmbda_range: tuple[float, float] = (0.0, 1000.0), checkpointing: bool = True,
                 cg_max_iter: int = 50, cg_tol: float = 1e-6) -> None:
        super().__init__()
        positive_int(steps, "steps")
        for name, bounds, value_name, v in (("T_range", T_range, "T", T), ("lmbda_range", lmbda_range, "lmbda", lmbda)):
            if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
                raise ValueError(f"{name} must be a pair (low, high), got {bounds!r}")
            lo, hi = (finite_number(b, name) for b in bounds)
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
            finite_number(v, f"{value_name} (inside {name})", minimum=lo, maximum=hi)
        if sigma_train is not None:
            finite_number(sigma_train, "sigma_train", strict=True)
        positive_int(cg_max_iter, "cg_max_iter")
        finite_number(cg_tol, "cg_tol", strict=True)
        boolean(checkpointing, "checkpointing")
        self.R = prior if prior is not None else TDV()
        if not isinstance(self.R, TDV):
            raise TypeError(f"prior must be a deepinv_ext.priors.TDV, got {type(self.R).__name__}")
        self.S = steps
        self.T = nn.Parameter(torch.tensor(float(T)))
        self.lmbda = nn.Parameter(torch.tensor(float(lmbda)))
        self.sigma_train = sigma_train
        self.T_range, self.lmbda_range = tuple(T_range), tuple(lmbda_range)
        self.checkpointing = checkpointing
        self.cg_max_iter, self.cg_tol = cg_max_iter, cg_tol

    @torch.no_grad()
    def project(self) -> None:
        r"""Restore the constraints in place: :math:`K` zero-mean with norm at most one, :math:`T` and
        :math:`\lambda` in their ranges."""
        self.R.project()
        self.T.clamp_(*self.T_range)
        self.lmbda.clamp_(*self.lmbda_range)

    def noise_scale(self, y: Tensor, physics: Physics, sigma: float | Tensor | None = None) -> Tensor | None:
        r"""The rescaling factor :math:`\sigma_0/\sigma` per batch element, shape ``(B,)``, or ``None`` (no
        rescaling: ``sigma_train`` is ``None``, or no noise level is given nor found in ``physics.noise_model``).

        It is a vector, not a tensor shaped after ``y``: measurements and images may have different numbers of
        dimensions (multi-coil MRI: ``y`` is ``(B, 2, N, H, W)``, ``x`` is ``(B, 2, H, W)``), and each is scaled
        by the factor broadcast to its own shape.

        :param torch.Tensor y: the measurements ``(B, ...)``.
        :param deepinv.physics.Physics physics: the physics, whose ``noise_model.sigma`` is the default noise level.
        :param float, torch.Tensor sigma: the noise level :math:`\sigma` of ``y``, one number or one per image.
        :raises ValueError: a ``sigma`` with neither one value nor one per image, or not positive and finite.
        """
        if self.sigma_train is None:
            return None
        if sigma is None:
            sigma = getattr(getattr(physics, "noise_model", None), "sigma", None)
        if sigma is None:
            return None
        sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).reshape(-1)
        if sigma.numel() not in (1, y.shape[0]) or sigma.numel() == 0:
            raise ValueError(f"sigma must be a scalar or one value per batch element ({y.shape[0]}), "
                             f"got {sigma.numel()} values")
        finite_values(sigma, "sigma (the noise level, to rescale to sigma_train)", strict=True)
        return (self.sigma_train / sigma).expand(y.shape[0])

    def step(self, x: Tensor, y: Tensor, physics: Physics, grad: Tensor | None = None) -> Tensor:
        r"""One step :math:`\operatorname{prox}_{\frac{\lambda}{S}f}(x - \frac{T}{S}\nabla R(x))`; ``grad`` is
        :math:`\nabla R(x)` where the caller has it already (default: computed here).

        :param torch.Tensor x: the iterate :math:`x_{s-1}`.
        :param torch.Tensor y: the (rescaled) measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor grad: :math:`\nabla R(x)`, or ``None``.
        :return: :math:`x_s`, of the shape of ``x``.
        """
        u = x - (self.T / self.S).to(x.dtype) * (self.R.grad(x) if grad is None else grad)
        tau = (self.lmbda / self.S).to(x.dtype)
        return prox_data_fidelity(u, y, physics, tau, self.cg_max_iter, self.cg_tol)

    def forward(self, y: Tensor, physics: Physics, x_init: Tensor | None = None,
                sigma: float | Tensor | None = None, return_all: bool = False, **kwargs) -> Tensor | list[Tensor]:
        r"""Run the :math:`S` steps.

        :param torch.Tensor y: measurements, of the shape ``physics.A`` gives, finite, in the network's dtype.
        :param deepinv.physics.LinearPhysics physics: the forward operator (with its noise model).
        :param torch.Tensor x_init: :math:`x_0` (default: ``y`` for denoising, :math:`A^\top y` otherwise), of the
            shape of :math:`A^\top y`.
        :param float, torch.Tensor sigma: noise level of ``y`` for the rescaling (default:
            ``physics.noise_model.sigma``).
        :param bool return_all: return the list :math:`[x_0, \dots, x_S]` instead of :math:`x_S`.
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: :math:`x_S`, or the list of every iterate.
        :raises TypeError: a physics that is not linear, a ``y`` or ``x_init`` that is not a real floating tensor of
            the network's dtype.
        :raises ValueError: an empty batch, NaN or inf in ``y``, a ``y`` that does not fit ``physics`` or whose image
            :math:`A^\top y` the prior cannot take (channels, size), or a ``sigma`` that is not positive and finite.
        """
        self.R.check_input(check_measurement(y, physics, x_init, model=self), "the image physics.A_adjoint(y)")
        boolean(return_all, "return_all")
        scale = self.noise_scale(y, physics, sigma)
        z = y if scale is None else y * per_sample(scale, y)
        if x_init is None:
            x = z if isinstance(physics, Denoising) else physics.A_adjoint(z)
        else:
            x = x_init if scale is None else x_init * per_sample(scale, x_init)
        use_cp = self.checkpointing and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        xs = [x]
        for _ in range(self.S):
            x = checkpoint(self.step, x, z, physics, use_reentrant=False) if use_cp else self.step(x, z, physics)
            xs.append(x)
        if scale is not None:
            xs = [t / per_sample(scale, t) for t in xs]
        return xs if return_all else xs[-1]

    def stopping_time_derivative(self, y: Tensor, physics: Physics, x: Tensor, T: float | None = None,
                                 sigma: float | Tensor | None = None) -> tuple[float, float]:
        r"""The loss :math:`J(T) = \frac{1}{2B}\sum_b\|x_S(T) - x\|^2` and its derivative :math:`J'(T)`.

        :math:`J'(T)` is the left-hand side of the optimality condition of the paper (Theorem 3.1, eq. (11)),
        :math:`-\frac1S\sum_{s} \langle p_s, \nabla R(x_{s-1})\rangle` with the discrete adjoint states
        :math:`p_s`, computed by backpropagation through the steps (which is that adjoint recursion).

        It works on a frozen network too (published weights): :math:`T` requires grad during the call only.

        :param torch.Tensor y: measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x: ground truth.
        :param float T: the stopping time to evaluate at (default: the learned one), >= 0.
        :param float, torch.Tensor sigma: noise level of ``y`` (as in :meth:`forward`).
        :return: ``(J(T), J'(T))`` as floats.
        """
        if T is not None:
            finite_number(T, "T")
        T0, T_trainable = self.T.detach().clone(), self.T.requires_grad
        try:
            with torch.no_grad():
                if T is not None:
                    self.T.fill_(T)
            self.T.requires_grad_(True)
            with torch.enable_grad():
                loss = 0.5 * (self(y, physics, sigma=sigma) - x).pow(2).flatten(1).sum(1).mean()
                (dT,) = torch.autograd.grad(loss, self.T)
        finally:
            self.T.requires_grad_(T_trainable)
            with torch.no_grad():
                self.T.copy_(T0)
        return loss.item(), dT.item()

    def optimal_stopping_time(self, y: Tensor, physics: Physics, x: Tensor, T_max: float | None = None,
                              iterations: int = 12, sigma: float | Tensor | None = None) -> float:
        r"""The stopping time :math:`T^*` on data :math:`(y, x)` at which :math:`J'(T^*) = 0`
        (:meth:`stopping_time_derivative`), by bisection on :math:`[0, T_{max}]` (default: twice the learned
        :math:`T`, doubled while :math:`J'` stays negative, at most 8 times).

        :param torch.Tensor y: measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x: ground truth.
        :param float T_max: the upper end of the first bracket (> 0).
        :param int iterations: bisection steps (each one forward and one backward pass of the network).
        :param float, torch.Tensor sigma: noise level of ``y`` (as in :meth:`forward`).
        :return: :math:`T^*`.
        """
        if T_max is not None:
            finite_number(T_max, "T_max", strict=True)
        positive_int(iterations, "iterations")
        lo, hi = 0.0, float(T_max) if T_max is not None else 2 * max(self.T.item(), 1e-6)
        for _ in range(8):
            if self.stopping_time_derivative(y, physics, x, hi, sigma)[1] >= 0:
                break
            lo, hi = hi, 2 * hi
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if self.stopping_time_derivative(y, physics, x, mid, sigma)[1] < 0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu",
                        sigma_train: float | None = 25 / 255, trainable: bool = False, **kwargs) -> TDVNetwork:
        r"""Load a published checkpoint of VLOGroup/tdv (e.g. ``tdv3-3-25-f32-gray.pth``, trained at
        :math:`\sigma_0 = 25/255`) with ``torch.load(..., weights_only=True)``; ``kwargs`` go to the constructor.

        The weights (:math:`T`, :math:`\lambda` and the regulariser's) load **frozen** (``requires_grad=False``),
        as :meth:`deepinv_ext.priors.TDV.from_checkpoint`'s: inference records no graph. To fine-tune, pass
        ``trainable=True`` (or call ``net.requires_grad_(True)`` later).

        :param str, pathlib.Path path: the checkpoint file.
        :param str, torch.device map_location: where to load the tensors.
        :param float sigma_train: the noise level the checkpoint was trained at (``None``: never rescale).
        :param bool trainable: whether the parameters require grad.
        :param kwargs: further arguments of the constructor (``checkpointing``, ``cg_max_iter``, ...).
        :return: the network (frozen unless ``trainable``).
        :raises FileNotFoundError: no such file.
        :raises ValueError: an empty, truncated or foreign file (no ``"model"`` entry).
        :raises TypeError: ``trainable`` is not a bool.
        """
        boolean(trainable, "trainable")
        ck = load_checkpoint(path, map_location, required=("model",), what="TDV checkpoint")
        cfg = ck.get("config", {})
        if cfg.get("D", {}).get("config", {}).get("use_prox", True) is not True:
            raise ValueError(f"{path}: only the proximal (semi-implicit) scheme is supported")
        prior = TDV.from_state_dict(TDV._published_config(ck), ck["model"])
        net = cls(prior, steps=int(cfg.get("S", 10)), sigma_train=sigma_train, **kwargs)
        with torch.no_grad():
            net.T.copy_(ck["model"]["T"].reshape(()))
            net.lmbda.copy_(ck["model"]["lmbda"].reshape(()))
        return net.requires_grad_(trainable)

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_reconstructor` (side-effect free: draws only from
        ``generator``).

        :param torch.Generator generator: the CPU generator of every random draw (``None``: one seeded with 0).
        :return: ``{"model", "physics", "dataset"}``.
        """
        from deepinv.physics import GaussianNoise

        from deepinv_ext.testing.examples import example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            prior = TDV(num_features=4, num_macro_blocks=1)
        model = cls(prior, steps=2, T=0.05, lmbda=1.0)
        physics = Denoising(GaussianNoise(0.1))
        return {"model": model, "physics": physics, "dataset": example_images(4, 24, generator=g)}

r"""Gradient-step plug-and-play :footcite:p:`hurault2022gradient`: proximal gradient descent on
:math:`f + \lambda g_\sigma` with a gradient-step denoiser, Armijo backtracking per image (:class:`GradientStepPnP`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from deepinv.models import Reconstructor
from deepinv.optim import BacktrackingConfig
from deepinv.physics import LinearPhysics
from torch import Tensor
from tqdm import tqdm

from deepinv_ext._batch import batch_sqnorm, per_sample
from deepinv_ext._convergence import PRECISION_MARGIN, warn_not_converged
from deepinv_ext._validation import boolean, check_measurement, finite_number, positive_int
from deepinv_ext.algorithms.data_fidelity import prox_data_fidelity
from deepinv_ext.priors.step_size import ArmijoStepSize, Backtracking

__all__ = ["GradientStepPnP"]


@dataclass
class _Iteration:
    r"""One iteration's outcome per image: the next iterate, :math:`F` and :math:`\nabla g_\sigma` there, the rejected
    candidates, and which images stopped at :math:`x_k` (stationary to working precision, or failed)."""

    x: Tensor
    F: Tensor
    grad: Tensor
    backtracks: Tensor
    stationary: Tensor
    failed: Tensor


class GradientStepPnP(Reconstructor):
    r"""Gradient-step PnP: proximal gradient descent on :math:`F = \frac12\|Ax-y\|^2 + \lambda g_\sigma`, Armijo steps.

    With a gradient-step denoiser :math:`D_\sigma = \operatorname{Id} - \nabla g_\sigma`
    (:class:`deepinv_ext.denoisers.GradientStepDenoiser`), the PnP iteration of :footcite:t:`hurault2022gradient`,
    from :math:`x_0` (default :math:`A^\top y`),

    .. math::

        x_{k+1} = \operatorname{prox}_{\tau_k f}\big(x_k - \tau_k\lambda\nabla g_\sigma(x_k)\big)
                = \operatorname{prox}_{\tau_k f}\circ\big(\tau_k\lambda D_\sigma + (1 - \tau_k\lambda)
                \operatorname{Id}\big)(x_k), \qquad f(x) = \tfrac12\|Ax - y\|_2^2,

    is exactly proximal gradient descent on the (non-convex) objective :math:`F = f + \lambda g_\sigma`. For
    :math:`\tau < 1/(\lambda L)` (:math:`L` the Lipschitz constant of :math:`\nabla g_\sigma`), :math:`F(x_k)` is
    non-increasing, :math:`\|x_{k+1} - x_k\| \to 0` and every limit point is a stationary point of :math:`F`
    (:footcite:t:`hauptmann2024convergent`, Theorem 3). :math:`L` is unknown for a trained network, so the step is
    found by Armijo backtracking :footcite:p:`armijo1966minimization`, which enforces the decrease at every
    iteration: a candidate is accepted if

    .. math::

        F(x_k) - F(x_{k+1}) \ge \frac{\gamma}{\tau_k}\|x_{k+1} - x_k\|^2,

    otherwise :math:`\tau_k \leftarrow \eta\tau_k` and the prox is recomputed (:math:`\nabla g_\sigma(x_k)` is
    reused). Step, acceptance and stopping are per image (a batch gives the results of its images one by one,
    unlike deepinv's batch-global backtracking). :math:`F(x_k)` costs no extra network pass (the forward pass that
    gives :math:`g_\sigma(x_{k+1})` is kept, its backward pass gives :math:`\nabla g_\sigma(x_{k+1})`) and is
    recorded in :attr:`history`. The steps, the Armijo test and the backtracking are those of
    :class:`~deepinv_ext.priors.step_size.ArmijoStepSize` (:meth:`step_size`), shared with
    :class:`~deepinv_ext.algorithms.VariationalSolver`. The data prox is
    :func:`~deepinv_ext.algorithms.prox_data_fidelity` (closed form for decomposable physics, conjugate gradients
    with ``prox_max_iter``/``prox_tol`` otherwise); an inexact prox cannot break the decrease: the test rejects it.

    An image stops converged (``converged``, shape ``(B,)``) when the relative change (:meth:`check_conv`) of the
    objective (``crit="objective"``, deepinv's ``crit_conv="cost"``) or of the iterate (``crit="iterate"``, also
    when the first candidate of an iteration is rejected but within ``tol`` of :math:`x_k`) falls below ``tol``,
    or when :math:`x_k` is stationary to working precision: a rejected candidate whose :math:`F` is within the
    round-off :math:`R = 8\,\epsilon_{\text{dtype}}|F(x_k)|` of :math:`F(x_k)` while the decrease predicted at
    :math:`\tau_k`, :math:`\|x_{k+1} - x_k\|^2/(2\tau_k)`, was already within :math:`16R` (elsewhere a candidate
    needs a predicted decrease above :math:`R`, so that a tiny step cannot pass on round-off). It stops
    unconverged at ``max_iter`` or when backtracking fails (``history["backtracking_failed"]``):
    ``backtracking.max_iter`` reductions in a row, or a stall (a decrease predicted at :math:`\tau_k` never
    showed: a potential whose gradient is not that of ``denoiser.potential``); a
    :class:`~deepinv_ext.algorithms.NotConvergedWarning` names these images. The output is :math:`x_K`
    (``output="iterate"``) or :math:`D_\sigma(x_K) = x_K - \nabla g_\sigma(x_K)` (``output="denoised"``, as the
    authors report).

    **Memory and training.** The iterations always run without a graph (:meth:`solve`, under
    :func:`torch.no_grad`; :math:`\nabla g_\sigma` by autograd on a detached copy, freed at once). By default
    (``differentiable=False``) the output carries no gradient either. With ``differentiable=True`` (training
    through the solver, e.g. in :class:`deepinv.Trainer`), when autograd is enabled and a parameter requires a
    gradient, one last differentiable step is taken from the fixed point (Jacobian-free back-propagation
    :footcite:p:`fung2022jfb`, as deepinv's ``DEQConfig(jacobian_free=True)``): the graph of one step.

    :param deepinv_ext.denoisers.GradientStepDenoiser denoiser: a gradient-step denoiser, or any module with
        ``potential(x, sigma)`` (shape ``(B,)``) and ``potential_and_grad(x, sigma, create_graph)``.
    :param float lambda\_: regularisation weight :math:`\lambda > 0` (e.g. from
        :class:`deepinv_ext.algorithms.AffineParameterRule`).
    :param float sigma_denoiser: noise level :math:`\sigma` of the denoiser (kept fixed).
    :param float stepsize: initial step :math:`\tau_0` (default :math:`1/\lambda`, the PnP form
        :math:`\operatorname{prox}_{\tau f}\circ D_\sigma`).
    :param int max_iter: maximum number of accepted iterations.
    :param float tol: stopping tolerance on the relative change.
    :param str crit: ``"objective"`` or ``"iterate"``.
    :param backtracking: a :class:`deepinv.optim.BacktrackingConfig` (:math:`\gamma \in [0, 1)`,
        :math:`\eta \in (0, 1)`, maximum number of consecutive reductions), ``True`` for its defaults, or ``False``
        (fixed step, no decrease guarantee).
    :param str output: ``"iterate"`` or ``"denoised"``.
    :param int prox_max_iter: CG iterations of the data prox for non-decomposable physics.
    :param float prox_tol: CG tolerance of the data prox.
    :param bool show_progress_bar: tqdm bar over the iterations.
    :param bool differentiable: end with the differentiable step above (training through the solver); ``False``
        (default): the output carries no graph.

    |sep|

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv.physics.functional.blur import gaussian_blur
    >>> from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet
    >>> from deepinv_ext.algorithms import GradientStepPnP
    >>> _ = torch.manual_seed(0)
    >>> physics = dinv.physics.BlurFFT((1, 16, 16), filter=gaussian_blur(sigma=(1.0, 1.0)))
    >>> model = GradientStepPnP(GradientStepDenoiser(SmallPotentialNet(1, 8, 3)), lambda_=0.1,
    ...                         sigma_denoiser=0.05, max_iter=20)
    >>> with torch.no_grad():
    ...     x_hat = model(physics(torch.rand(2, 1, 16, 16)), physics)
    >>> bool((model.history["objective"].diff(dim=0) <= 0).all())
    True
    """

    def __init__(self, denoiser: torch.nn.Module, lambda_: float, sigma_denoiser: float, *,
                 stepsize: float | None = None, max_iter: int = 500, tol: float = 1e-5,
                 crit: Literal["objective", "iterate"] = "objective",
                 backtracking: BacktrackingConfig | bool = True,
                 output: Literal["iterate", "denoised"] = "iterate", prox_max_iter: int = 100,
                 prox_tol: float = 1e-7, show_progress_bar: bool = False, differentiable: bool = False):
        super().__init__()
        if not (callable(getattr(denoiser, "potential", None))
                and callable(getattr(denoiser, "potential_and_grad", None))):
            raise TypeError("denoiser must be a gradient-step denoiser with potential(x, sigma) and "
                            f"potential_and_grad(x, sigma, create_graph), got {type(denoiser).__name__}")
        for name, value in (("lambda_", lambda_), ("sigma_denoiser", sigma_denoiser), ("tol", tol),
                            ("prox_tol", prox_tol)) + ((("stepsize", stepsize),) if stepsize is not None else ()):
            finite_number(value, name, strict=True)
        positive_int(max_iter, "max_iter")
        positive_int(prox_max_iter, "prox_max_iter")
        if crit not in ("objective", "iterate"):
            raise ValueError(f"crit must be 'objective' or 'iterate', got {crit!r}")
        if output not in ("iterate", "denoised"):
            raise ValueError(f"output must be 'iterate' or 'denoised', got {output!r}")
        if isinstance(backtracking, bool):
            backtracking = BacktrackingConfig() if backtracking else None
        elif not isinstance(backtracking, BacktrackingConfig):
            raise TypeError(f"backtracking must be a bool or a deepinv.optim.BacktrackingConfig, "
                            f"got {type(backtracking).__name__}")
        if backtracking is not None:
            gamma = finite_number(backtracking.gamma, "backtracking.gamma", maximum=1.0)
            eta = finite_number(backtracking.eta, "backtracking.eta", strict=True, maximum=1.0)
            if gamma == 1.0 or eta == 1.0:
                raise ValueError("backtracking needs gamma < 1 (no step shows a larger decrease) and eta < 1 (the "
                                 f"step must shrink), got gamma={gamma}, eta={eta}")
            positive_int(backtracking.max_iter, "backtracking.max_iter")
        self.denoiser = denoiser
        self.lambda_ = float(lambda_)
        self.sigma_denoiser = float(sigma_denoiser)
        self.stepsize = float(stepsize) if stepsize is not None else 1.0 / self.lambda_
        self.max_iter, self.tol, self.crit, self.output = int(max_iter), float(tol), crit, output
        self.backtracking = backtracking
        self.prox_max_iter, self.prox_tol = int(prox_max_iter), float(prox_tol)
        self.show_progress_bar = boolean(show_progress_bar, "show_progress_bar")
        self.differentiable = boolean(differentiable, "differentiable")
        #: Per-iteration record of the last call: ``objective`` :math:`F(x_k)`, shape ``(K+1, B)``; ``step``
        #: :math:`\|x_{k+1} - x_k\|`, ``stepsize`` :math:`\tau_k` and ``backtracks`` (rejected candidates),
        #: shape ``(K, B)``; ``converged`` and ``backtracking_failed``, shape ``(B,)``.
        self.history: dict[str, Tensor] = {}
        #: Whether each image of the last call met the stopping rule, shape ``(B,)`` (bool).
        self.converged: Tensor | None = None

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A tiny instance for :func:`deepinv_ext.testing.check_reconstructor` (side-effect free: draws only from
        ``generator``).

        :param torch.Generator generator: the CPU generator of every random draw (``None``: one seeded with 0).
        :return: ``{"model", "physics", "dataset"}``.
        """

        from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet
        from deepinv_ext.testing.examples import example_blur, example_generator, example_images, seeded_init

        g = example_generator(generator)
        physics = example_blur(16, 0.01)
        with seeded_init(g):
            denoiser = GradientStepDenoiser(SmallPotentialNet(1, 8, 3))
        model = cls(denoiser, lambda_=0.1, sigma_denoiser=0.05, max_iter=5, differentiable=True)
        return {"model": model, "physics": physics, "dataset": example_images(2, 16, generator=g)}

    # -- the pieces of F ------------------------------------------------------------------------------------
    def data_fidelity(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`f(x) = \frac12\|Ax - y\|^2`, one value per batch element, shape ``(B,)``.

        :param torch.Tensor x: the image :math:`x`, ``(B, ...)``.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        """
        return 0.5 * batch_sqnorm(physics.A(x) - y)

    def objective(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`F(x) = \frac12\|Ax - y\|^2 + \lambda g_\sigma(x)`, one value per batch element, shape ``(B,)``.

        :param torch.Tensor x: the image :math:`x`, ``(B, ...)``.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        """
        return self.data_fidelity(x, y, physics) + self.lambda_ * self.denoiser.potential(x, self.sigma_denoiser)

    def grad_objective(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`\nabla F(x) = A^\top(Ax - y) + \lambda\nabla g_\sigma(x)` (zero at a stationary point).

        :param torch.Tensor x: the image :math:`x`, ``(B, ...)``.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        """
        _, grad_g = self.denoiser.potential_and_grad(x, self.sigma_denoiser, create_graph=False)
        return physics.A_adjoint(physics.A(x) - y) + self.lambda_ * grad_g

    def prox_data(self, z: Tensor, y: Tensor, physics: LinearPhysics, tau: Tensor | float) -> Tensor:
        r""":math:`\operatorname{prox}_{\tau f}(z)`; ``tau`` a float or one step per batch element (shape ``(B,)``).

        :func:`~deepinv_ext.algorithms.prox_data_fidelity` with ``prox_max_iter`` and ``prox_tol``.

        :param torch.Tensor z: the point, ``(B, ...)``.
        :param torch.Tensor y: the measurements.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param float, torch.Tensor tau: the step :math:`\tau`.
        """
        if isinstance(tau, Tensor):
            tau = per_sample(tau.to(dtype=z.dtype, device=z.device), z)
        return prox_data_fidelity(z, y, physics, tau, self.prox_max_iter, self.prox_tol)

    def _evaluate(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> tuple[Tensor, Tensor, Tensor]:
        """F(x) and the graph of g at a detached leaf copy of x (backward gives grad g later)."""
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            g = self.denoiser.potential(leaf, self.sigma_denoiser)
        F = self.data_fidelity(x, y, physics) + self.lambda_ * g.detach()
        return F, g, leaf

    @staticmethod
    def _grad_from(g: Tensor, leaf: Tensor) -> Tensor:
        with torch.enable_grad():
            return torch.autograd.grad(g.sum(), leaf)[0]

    def check_conv(self, x_prev: Tensor, x: Tensor, F_prev: Tensor, F: Tensor) -> Tensor:
        r"""The stopping test per image (shape ``(B,)``, bool): the relative change below ``tol``,

        .. math::

            \frac{|F(x_k) - F(x_{k+1})|}{|F(x_{k+1})|} < \texttt{tol} \ (\texttt{crit="objective"}), \qquad
            \frac{\|x_{k+1} - x_k\|}{\|x_k\|} < \texttt{tol} \ (\texttt{crit="iterate"}).

        :param torch.Tensor x_prev: :math:`x_k`.
        :param torch.Tensor x: :math:`x_{k+1}`.
        :param torch.Tensor F_prev: :math:`F(x_k)`, shape ``(B,)``.
        :param torch.Tensor F: :math:`F(x_{k+1})`.
        """
        tiny = torch.finfo(x.dtype).tiny
        if self.crit == "objective":
            change = (F_prev - F).abs() / F.abs().clamp_min(tiny)
        else:
            change = batch_sqnorm(x - x_prev).sqrt() / batch_sqnorm(x_prev).sqrt().clamp_min(tiny)
        return change < self.tol

    def step_size(self, x: Tensor) -> ArmijoStepSize:
        r"""The step rule of a solve: :math:`\tau_0` = ``stepsize`` for every image of ``x`` (:math:`L = 1/\tau`),
        shrunk by :math:`\eta` on a rejected candidate and never relaxed, with the Armijo constant :math:`\gamma` and
        no round-off slack (``backtracking``'s constants; without backtracking the step stays fixed).

        :param torch.Tensor x: the starting point ``(B, ...)`` (its batch size, dtype and device).
        """
        bt = self.backtracking if self.backtracking is not None else BacktrackingConfig(max_iter=0)
        lipschitz = torch.full((x.shape[0],), 1 / self.stepsize, dtype=x.dtype, device=x.device)
        return ArmijoStepSize(lipschitz, Backtracking(increase=1 / bt.eta, decrease=1.0, max_backtracking=bt.max_iter,
                                                      sufficient_decrease=bt.gamma, slack=0.0))

    # -- the iteration --------------------------------------------------------------------------------------
    def _iterate(self, x: Tensor, F: Tensor, grad: Tensor, y: Tensor, physics: LinearPhysics, rule: ArmijoStepSize,
                 active: Tensor) -> _Iteration:
        r"""One iteration from ``x`` (:math:`F` and :math:`\nabla g_\sigma` there) for the ``active`` images: candidates
        at the steps of ``rule``, shrunk per image until one passes its Armijo test (class docstring)."""
        pending, x_new, F_new, grad_new = active.clone(), x, F, grad
        n_back = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        stationary, failed = torch.zeros_like(active), torch.zeros_like(active)
        for trial in range(1 + rule.backtracking.max_backtracking):
            tau = rule.step
            cand = self.prox_data(x - per_sample(tau * self.lambda_, x) * grad, y, physics, tau)
            F_c, g_c, leaf_c = self._evaluate(cand, y, physics)
            gsq = batch_sqnorm(per_sample(rule.lipschitz, x) * (x - cand))  # the gradient mapping (x - cand) / tau
            if trial == 0:  # the decrease predicted at tau_k within PRECISION_MARGIN round-offs
                flat_k = ~rule.visible(gsq, F, PRECISION_MARGIN)
            ok = rule.accepts(F, F_c, gsq, flat_k) if self.backtracking is not None else torch.ones_like(pending)
            take = pending & ok
            if take.any():
                grad_c = self._grad_from(g_c, leaf_c)
                x_new = torch.where(per_sample(take, x), cand, x_new)
                F_new = torch.where(take, F_c, F_new)
                grad_new = torch.where(per_sample(take, x), grad_c, grad_new)
            refused = pending & ~ok
            if trial == 0 and self.crit == "iterate":  # the first candidate is within tol of x_k
                stationary = stationary | (refused & self.check_conv(x, cand, F, F_c))
            # a rejected candidate the objective cannot tell from x_k: converged if x_k was stationary to working
            # precision, otherwise a stall (the decrease predicted at tau_k never showed)
            unseen = refused & ~rule.visible(gsq, F) & rule.no_increase(F, F_c)
            stationary = stationary | (unseen & flat_k)
            failed = failed | (unseen & ~flat_k)
            pending = refused & ~stationary & ~unseen
            if not pending.any():
                break
            rule.backtrack(pending)
            n_back = n_back + pending.long()
        return _Iteration(x_new, F_new, grad_new, n_back, stationary, failed | pending)

    def solve(self, y: Tensor, physics: LinearPhysics, init: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Run the iteration without a graph; return the last iterate :math:`x_K` and :math:`\nabla g_\sigma(x_K)`.

        Fills :attr:`history` and :attr:`converged`.

        :param torch.Tensor y: measurements, of the shape ``physics.A`` gives, finite.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor init: the starting point :math:`x_0` (default :math:`A^\top y`).

        :raises TypeError: a physics that is not linear, a ``y`` or ``init`` that is not a real floating tensor of the
            denoiser's dtype.
        :raises ValueError: an empty batch, NaN or inf in ``y``, a ``y`` that does not fit ``physics``, or an
            ``init`` of another shape than :math:`A^\top y`.
        """
        x0 = check_measurement(y, physics, init, model=self, x_name="init")
        with torch.no_grad():
            x = x0.detach() if init is None else init.detach().clone()
            F, g, leaf = self._evaluate(x, y, physics)
            grad = self._grad_from(g, leaf)
            rule = self.step_size(x)
            active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            failed = torch.zeros_like(active)
            record: dict[str, list[Tensor]] = {"objective": [F], "step": [], "stepsize": [], "backtracks": []}
            for _ in tqdm(range(self.max_iter), disable=not self.show_progress_bar, desc="GS-PnP"):
                it = self._iterate(x, F, grad, y, physics, rule, active)
                done = it.stationary | self.check_conv(x, it.x, F, it.F)
                for key, value in (("objective", it.F), ("step", batch_sqnorm(it.x - x).sqrt()),
                                   ("stepsize", rule.step), ("backtracks", it.backtracks)):
                    record[key].append(value)
                x, F, grad = it.x, it.F, it.grad
                failed = failed | it.failed
                active = active & ~failed & ~done
                if not active.any():
                    break
        self.converged = ~active & ~failed
        self.history = {key: torch.stack(values).cpu() for key, values in record.items()}
        self.history |= {"converged": self.converged.cpu(), "backtracking_failed": failed.cpu()}
        warn_not_converged(type(self).__name__, self.converged, {
            "found no step that lowers the objective (backtracking failed or stalled)": failed,
            f"reached max_iter={self.max_iter}": active})
        return x, grad

    def forward(self, y: Tensor, physics: LinearPhysics, init: Tensor | None = None, **kwargs) -> Tensor:
        r"""Reconstruct from measurements ``y``: :meth:`solve`, then the output (and the differentiable step).

        :param torch.Tensor y: measurements, of the shape ``physics.A`` gives, finite.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor init: the starting point :math:`x_0` (default :math:`A^\top y`).
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: :math:`x_K` or :math:`D_\sigma(x_K)` (``output``).
        """
        x, grad = self.solve(y, physics, init=init)
        trainable = any(p.requires_grad for p in self.parameters())
        if self.differentiable and torch.is_grad_enabled() and trainable:
            # Jacobian-free back-propagation: one differentiable step from the (detached) fixed point.
            grad = self.denoiser.potential_and_grad(x, self.sigma_denoiser, create_graph=True)[1]
            if self.output == "denoised":
                return x - grad
            tau = self.history["stepsize"][-1].to(device=x.device, dtype=x.dtype)
            return self.prox_data(x - per_sample(tau * self.lambda_, x) * grad, y, physics, tau)
        return x - grad if self.output == "denoised" else x

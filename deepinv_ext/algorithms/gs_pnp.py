r"""Gradient-step plug-and-play: proximal gradient descent on :math:`f + \lambda g_\sigma` with a GS denoiser.

With a gradient-step denoiser :math:`D_\sigma = \operatorname{Id} - \nabla g_\sigma`
(:class:`deepinv_ext.denoisers.GradientStepDenoiser`), the PnP iteration of Hurault et al.

.. math::

    x_{k+1} = \operatorname{prox}_{\tau f}\big(x_k - \tau\lambda\nabla g_\sigma(x_k)\big)
            = \operatorname{prox}_{\tau f}\circ\big(\tau\lambda D_\sigma + (1 - \tau\lambda)\operatorname{Id}\big)(x_k),
    \qquad f(x) = \tfrac12\|Ax - y\|_2^2,

is exactly proximal gradient descent on the (non-convex) objective :math:`F = f + \lambda g_\sigma`. For
:math:`\tau < 1/(\lambda L)` (:math:`L` the Lipschitz constant of :math:`\nabla g_\sigma`), :math:`F(x_k)` is
non-increasing, :math:`\|x_{k+1} - x_k\| \to 0` and every limit point is a stationary point of :math:`F`
(Theorem 3 of Hauptmann et al.). :math:`L` is unknown for a trained network, so :math:`\tau` is found by Armijo
backtracking, which enforces the decrease at every iteration.

Reference: S. Hurault, A. Leclaire, N. Papadakis, "Gradient step denoiser for convergent plug-and-play",
ICLR 2022; A. Hauptmann, S. Mukherjee, C.-B. Schönlieb, F. Sherry, "Convergent regularization in inverse problems
and linear plug-and-play denoisers", Found. Comput. Math. (2024), Theorem 3 and Fig. 2.
"""

from __future__ import annotations

from typing import Literal

import torch
from deepinv.models import Reconstructor
from deepinv.optim import BacktrackingConfig
from deepinv.optim.linear import least_squares
from deepinv.physics import DecomposablePhysics, LinearPhysics
from torch import Tensor
from tqdm import tqdm

from deepinv_ext._batch import batch_sqnorm, per_sample
from deepinv_ext._convergence import PRECISION_MARGIN, roundoff, warn_not_converged
from deepinv_ext._validation import boolean, check_measurement, finite_number, positive_int

__all__ = ["GradientStepPnP"]




class GradientStepPnP(Reconstructor):
    r"""Gradient-step PnP (proximal gradient descent on :math:`F = \frac12\|Ax-y\|^2 + \lambda g_\sigma`).

    Runs, from :math:`x_0` (default :math:`A^\top y`),

    .. math::

        x_{k+1} = \operatorname{prox}_{\tau_k f}\big(x_k - \tau_k\lambda\nabla g_\sigma(x_k)\big),

    with Armijo backtracking on the step: a candidate is accepted if
    :math:`F(x_k) - F(x_{k+1}) \ge \frac{\gamma}{\tau_k}\|x_{k+1} - x_k\|^2`, otherwise
    :math:`\tau_k \leftarrow \eta\tau_k` and the prox is recomputed (:math:`\nabla g_\sigma(x_k)` is reused). The
    step size, the acceptance and the stopping are per batch element (a batch gives the same results as one image
    at a time, unlike deepinv's batch-global backtracking). :math:`F(x_k)` is computed at every iteration (it costs
    no extra network pass: the forward pass that gives :math:`g_\sigma(x_{k+1})` is kept and its backward pass gives
    :math:`\nabla g_\sigma(x_{k+1})` for the next step) and recorded in :attr:`history`.

    The data prox :math:`\operatorname{prox}_{\tau f}(z) = (\operatorname{Id} + \tau A^\top A)^{-1}(z + \tau A^\top y)`
    is in closed form for :class:`deepinv.physics.DecomposablePhysics` (``physics.prox_l2``, e.g. ``BlurFFT``,
    ``Inpainting``); for any other linear physics it is solved by conjugate gradients with this object's own
    ``prox_max_iter``/``prox_tol`` through :func:`deepinv.optim.linear.least_squares` (not ``physics.prox_l2``,
    which overwrites the physics' solver settings; and without the ``1e-8`` that deepinv's CG adds to its
    denominators by default, which stalls it near :math:`10^{-5}`). An inexact prox cannot break the decrease of :math:`F`: the
    Armijo test rejects such a step.

    The iteration stops per element, converged (``converged``, shape ``(B,)``), when the relative change of the
    objective, :math:`|F(x_{k+1}) - F(x_k)| / |F(x_{k+1})|` (``crit="objective"``, deepinv's ``crit_conv="cost"``), or
    of the iterate, :math:`\|x_{k+1} - x_k\| / \|x_k\|` (``crit="iterate"``), falls below ``tol`` (with
    ``crit="iterate"``, also when the first candidate of an iteration, at the step :math:`\tau_k` the previous
    iterations validated, is rejected but within ``tol`` of :math:`x_k`), or when :math:`x_k` is stationary to
    working precision: a rejected candidate whose :math:`F` is within the round-off
    :math:`R = 8\,\epsilon_{\text{dtype}}|F(x_k)|` of :math:`F(x_k)` while the decrease predicted at
    :math:`\tau_k`, :math:`\|x_{k+1} - x_k\|^2/(2\tau_k)` (first candidate), was already within :math:`16R`
    (:math:`x_k` is kept; a candidate is accepted there by the Armijo test alone, elsewhere only if its predicted
    decrease is above :math:`R`, so that a tiny step cannot pass on round-off). It stops unconverged when backtracking fails: ``backtracking.max_iter`` reductions in a row
    without an accepted candidate, or a stall (a decrease was predicted at :math:`\tau_k` but the candidates shrank
    until the objective could no longer show one: a potential whose gradient is not that of
    ``denoiser.potential``), both in ``history["backtracking_failed"]``; or at ``max_iter``. A
    :class:`~deepinv_ext.algorithms.NotConvergedWarning` names the images that did not converge. The output is the last iterate :math:`x_K` (``output="iterate"``)
    or its denoised version :math:`D_\sigma(x_K) = x_K - \nabla g_\sigma(x_K)` (``output="denoised"``, as the
    authors report).

    Training: when autograd is enabled and a parameter requires a gradient (e.g. in :class:`deepinv.Trainer`), the
    iterations run without a graph and one last differentiable step is taken from the fixed point (Jacobian-free
    back-propagation, as deepinv's ``DEQConfig(jacobian_free=True)``).

    :param deepinv_ext.denoisers.GradientStepDenoiser denoiser: a gradient-step denoiser, or any module with
        ``potential(x, sigma)`` (shape ``(B,)``) and ``potential_and_grad(x, sigma, create_graph)``.
    :param float lambda_: regularisation weight :math:`\lambda > 0` (e.g. from
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
                 prox_tol: float = 1e-7, show_progress_bar: bool = False):
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
        #: Per-iteration record of the last call: ``objective`` :math:`F(x_k)`, shape ``(K+1, B)``; ``step``
        #: :math:`\|x_{k+1} - x_k\|`, ``stepsize`` :math:`\tau_k` and ``backtracks`` (rejected candidates),
        #: shape ``(K, B)``; ``converged`` and ``backtracking_failed``, shape ``(B,)``.
        self.history: dict[str, Tensor] = {}
        #: Whether each image of the last call met the stopping rule, shape ``(B,)`` (bool).
        self.converged: Tensor | None = None

    @classmethod
    def contract_example(cls) -> dict:
        """A tiny instance for :func:`deepinv_ext.testing.check_reconstructor`."""
        import deepinv as dinv
        from deepinv.physics.functional.blur import gaussian_blur

        from deepinv_ext.datasets import RandomEllipsesDataset
        from deepinv_ext.denoisers import GradientStepDenoiser, SmallPotentialNet

        torch.manual_seed(0)
        physics = dinv.physics.BlurFFT((1, 16, 16), filter=gaussian_blur(sigma=(1.0, 1.0)),
                                       noise_model=dinv.physics.GaussianNoise(0.01))
        model = cls(GradientStepDenoiser(SmallPotentialNet(1, 8, 3)), lambda_=0.1, sigma_denoiser=0.05,
                    max_iter=5)
        return {"model": model, "physics": physics, "dataset": RandomEllipsesDataset(length=2, size=16, seed=0)}

    # -- the pieces of F ------------------------------------------------------------------------------------
    def data_fidelity(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`f(x) = \frac12\|Ax - y\|^2`, one value per batch element."""
        return 0.5 * batch_sqnorm(physics.A(x) - y)

    def objective(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`F(x) = \frac12\|Ax - y\|^2 + \lambda g_\sigma(x)`, one value per batch element."""
        return self.data_fidelity(x, y, physics) + self.lambda_ * self.denoiser.potential(x, self.sigma_denoiser)

    def grad_objective(self, x: Tensor, y: Tensor, physics: LinearPhysics) -> Tensor:
        r""":math:`\nabla F(x) = A^\top(Ax - y) + \lambda\nabla g_\sigma(x)` (zero at a stationary point)."""
        _, grad_g = self.denoiser.potential_and_grad(x, self.sigma_denoiser, create_graph=False)
        return physics.A_adjoint(physics.A(x) - y) + self.lambda_ * grad_g

    def prox_data(self, z: Tensor, y: Tensor, physics: LinearPhysics, tau: Tensor | float) -> Tensor:
        r""":math:`\operatorname{prox}_{\tau f}(z)`; ``tau`` a float or one step per batch element (shape ``(B,)``)."""
        if isinstance(tau, Tensor):
            tau = per_sample(tau.to(dtype=z.dtype, device=z.device), z)
        if isinstance(physics, DecomposablePhysics):
            return physics.prox_l2(z, y, tau)
        return least_squares(physics.A, physics.A_adjoint, y, z=z, init=z, gamma=tau, solver="CG",
                             max_iter=self.prox_max_iter, tol=self.prox_tol, parallel_dim=[0],
                             ATA=physics.A_adjoint_A, AAT=physics.A_A_adjoint, eps=torch.finfo(z.dtype).tiny)

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

    def _change(self, F: Tensor, F_new: Tensor, x: Tensor, x_new: Tensor) -> Tensor:
        """The relative change that the stopping test compares with ``tol``, per batch element."""
        tiny = torch.finfo(x.dtype).tiny
        if self.crit == "objective":
            return (F - F_new).abs() / F_new.abs().clamp_min(tiny)
        return batch_sqnorm(x_new - x).sqrt() / batch_sqnorm(x).sqrt().clamp_min(tiny)

    # -- the iteration --------------------------------------------------------------------------------------
    def solve(self, y: Tensor, physics: LinearPhysics, init: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Run the iteration without a graph; return the last iterate :math:`x_K` and :math:`\nabla g_\sigma(x_K)`.

        Fills :attr:`history` and :attr:`converged`. ``init`` defaults to :math:`A^\top y`.

        :raises TypeError: a physics that is not linear, a ``y`` or ``init`` that is not a real floating tensor of the
            denoiser's dtype.
        :raises ValueError: an empty batch, NaN or inf in ``y``, a ``y`` that does not fit ``physics``, or an
            ``init`` of another shape than :math:`A^\top y`.
        """
        x0 = check_measurement(y, physics, init, model=self, x_name="init")
        with torch.no_grad():
            x = x0.detach() if init is None else init.detach().clone()
            batch = x.shape[0]
            F, g, leaf = self._evaluate(x, y, physics)
            grad = self._grad_from(g, leaf)
            tau = torch.full((batch,), self.stepsize, dtype=x.dtype, device=x.device)
            active = torch.ones(batch, dtype=torch.bool, device=x.device)
            failed = torch.zeros_like(active)
            objective, steps, stepsizes, backtracks = [F], [], [], []
            bt = self.backtracking
            for _ in tqdm(range(self.max_iter), disable=not self.show_progress_bar, desc="GS-PnP"):
                z = x - per_sample(tau * self.lambda_, x) * grad
                pending = active.clone()
                x_new, F_new, grad_new = x, F, grad
                n_back = torch.zeros(batch, dtype=torch.long, device=x.device)
                stationary = torch.zeros_like(active)  # converged without a step
                noise = roundoff(F)
                for trial in range(1 + (bt.max_iter if bt is not None else 0)):
                    cand = self.prox_data(z, y, physics, tau)
                    F_c, g_c, leaf_c = self._evaluate(cand, y, physics)
                    # the decrease a step predicts, |x_{k+1} - x_k|^2 / (2 tau), below the round-off of F: the
                    # objective cannot show it; at tau_k (the first candidate) within PRECISION_MARGIN round-offs:
                    # x_k is stationary to working precision
                    predicted = batch_sqnorm(cand - x) / (2 * tau)
                    flat = predicted <= noise
                    if trial == 0:
                        flat_k = predicted <= PRECISION_MARGIN * noise
                    if bt is None:
                        ok = torch.ones_like(pending)
                    else:  # Armijo, where the objective can show the decrease
                        ok = (F_c <= F - bt.gamma / tau * batch_sqnorm(cand - x)) & (flat_k | ~flat)
                    take = pending & ok
                    if take.any():
                        grad_c = self._grad_from(g_c, leaf_c)
                        x_new = torch.where(per_sample(take, x), cand, x_new)
                        F_new = torch.where(take, F_c, F_new)
                        grad_new = torch.where(per_sample(take, x), grad_c, grad_new)
                    if trial == 0 and self.crit == "iterate":  # the first candidate is within tol of x_k
                        stationary = stationary | (pending & ~ok & (self._change(F, F_c, x, cand) < self.tol))
                    # a rejected candidate the objective cannot tell from x_k: converged if x_k was stationary to
                    # working precision, otherwise a stall (the decrease predicted at tau_k never showed)
                    unseen = pending & ~ok & flat & (F_c <= F + noise)
                    stationary = stationary | (unseen & flat_k)
                    failed = failed | (unseen & ~flat_k)
                    pending = pending & ~ok & ~stationary & ~unseen
                    if not pending.any():
                        break
                    tau = torch.where(pending, bt.eta * tau, tau)
                    n_back = n_back + pending.long()
                    z = torch.where(per_sample(pending, x), x - per_sample(tau * self.lambda_, x) * grad, z)
                failed = failed | pending
                step = batch_sqnorm(x_new - x).sqrt()
                change = self._change(F, F_new, x, x_new)
                objective.append(F_new)
                steps.append(step)
                stepsizes.append(tau.clone())
                backtracks.append(n_back)
                x, F, grad = x_new, F_new, grad_new
                active = active & ~failed & ~stationary & ~(change < self.tol)
                if not active.any():
                    break
        self.converged = ~active & ~failed
        self.history = {
            "objective": torch.stack(objective).cpu(), "step": torch.stack(steps).cpu(),
            "stepsize": torch.stack(stepsizes).cpu(), "backtracks": torch.stack(backtracks).cpu(),
            "converged": self.converged.cpu(), "backtracking_failed": failed.cpu(),
        }
        warn_not_converged(type(self).__name__, self.converged, {
            "found no step that lowers the objective (backtracking failed or stalled)": failed,
            f"reached max_iter={self.max_iter}": active})
        return x, grad

    def forward(self, y: Tensor, physics: LinearPhysics, init: Tensor | None = None, **kwargs) -> Tensor:
        r"""Reconstruct from measurements ``y`` (``init``: starting point, default :math:`A^\top y`)."""
        x, grad = self.solve(y, physics, init=init)
        trainable = any(p.requires_grad for p in self.parameters())
        if torch.is_grad_enabled() and trainable:
            # Jacobian-free back-propagation: one differentiable step from the (detached) fixed point.
            grad = self.denoiser.potential_and_grad(x, self.sigma_denoiser, create_graph=True)[1]
            if self.output == "denoised":
                return x - grad
            tau = self.history["stepsize"][-1].to(device=x.device, dtype=x.dtype)
            return self.prox_data(x - per_sample(tau * self.lambda_, x) * grad, y, physics, tau)
        return x - grad if self.output == "denoised" else x

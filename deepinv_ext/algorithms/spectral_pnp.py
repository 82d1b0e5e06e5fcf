r"""Plug-and-play forward-backward splitting with a spectrally filtered linear denoiser (:class:`SpectralPnP`), the
convergent regularisation of :footcite:t:`hauptmann2024convergent` (Sect. 4, Theorem 5)."""

from __future__ import annotations

import math
import warnings

import deepinv as dinv
import torch
from torch import Tensor
from tqdm.auto import tqdm

from deepinv_ext._batch import batch_norm
from deepinv_ext._convergence import warn_not_converged
from deepinv_ext._validation import boolean, check_measurement, finite_number, positive_int
from deepinv_ext.physics.functional import power_method
from deepinv_ext.spectral import (
    OperatorEig,
    ScalingFilter,
    SpectralFilter,
    cg_solve,
    lanczos_extreme,
    symmetry_gap,
)

__all__ = ["SpectralPnP"]

_METHODS = ("auto", "eig", "lanczos", "chebyshev", "cg", "polynomial")


def _rel(a: Tensor, b: Tensor) -> Tensor:
    return batch_norm(a - b) / batch_norm(b).clamp_min(torch.finfo(b.dtype).tiny)


class SpectralPnP(dinv.models.Reconstructor):
    r"""PnP forward-backward splitting with a spectrally filtered linear denoiser, a convergent regularisation.

    A symmetric linear denoiser :math:`D = U\,\mathrm{diag}(\mu_i)\,U^\top` with :math:`\mathrm{spec}\,D\subset(0,1)`
    is :math:`\mathrm{prox}_J`, :math:`J(x) = \tfrac12\langle x, (D^{-1} - \mathrm{Id})x\rangle`; a spectral filter
    :math:`h_\tau` (:mod:`deepinv_ext.spectral`) sets its strength,
    :math:`h_\tau(D) = U\,\mathrm{diag}\big(h_\tau(\mu_i)\big)\,U^\top` (e.g. the scaling filter
    :math:`h_\tau(\mu) = \mu / (\tau - (\tau - 1)\mu)`, the prox of :math:`\tau J`; :math:`h_1(D) = D`), applied
    matrix-free. The iteration of :footcite:t:`hauptmann2024convergent` (Sect. 4, Theorem 5), for any deepinv
    linear physics :math:`A`,

    .. math::

        x_{k+1} = h_\tau(D)\bigl(x_k - \eta A^\top(Ax_k - y)\bigr), \qquad \eta \le 2/\|A\|^2,

    converges to the unique solution of :math:`[A^\top A + (\tau/\eta)\, r_\tau(D)]\,x = A^\top y`,
    :math:`r_\tau = (1 - h_\tau)/(\tau h_\tau)`. With :math:`\tau \propto \delta` it is a convergent
    regularisation: :math:`\hat x \to x^\dagger`, the :math:`J^*`-minimising least-squares solution, as the noise
    level :math:`\delta\to 0`.

    The step :math:`\eta` is ``step_factor`` :math:`/ \|A\|^2` with :math:`\|A\|^2` computed by
    the power method on :math:`A^\top A` (:func:`deepinv_ext.physics.functional.power_method`, the iteration of
    ``physics.compute_sqnorm`` from a seeded start; enlarged by 1 % for safety) unless ``stepsize`` is given; it must
    satisfy :math:`\eta \le 2/\|A\|^2` (:math:`\le 1/\|A\|^2` with ``acceleration="fista"``). The iteration stops
    when the relative change :math:`\|x_{k+1} - x_k\|/\|x_k\|` of every image is below ``tol``; ``converged``
    (shape ``(B,)``) says which images got there with the last filter application within ``filter_tol``.
    ``acceleration="fista"`` adds Nesterov momentum with gradient restart :footcite:p:`odonoghue2015adaptive`: same
    fixed point
    (the minimiser of :math:`\tfrac12\|Ax - y\|^2 + \eta^{-1}J_\tau(x)`), far fewer iterations for small
    :math:`\tau`.

    Before the first reconstruction of a given image shape (and with ``check=True``) the denoiser is checked:
    symmetric (:math:`|\langle x, Dy\rangle - \langle Dx, y\rangle| \le` ``sym_tol`` :math:`\|x\|\|Dy\|`) and with
    Lanczos-measured spectrum inside :math:`(0, 1)`; otherwise a ``ValueError`` says which property fails. The
    measured bounds are kept (``spectrum``) and passed to the filter (CG error bound, Chebyshev interval).

    :param deepinv.models.Denoiser denoiser: a linear symmetric denoiser, called as ``denoiser(x, sigma)``.
    :param deepinv_ext.spectral.SpectralFilter filter: the filter family (default
        :class:`~deepinv_ext.spectral.ScalingFilter`).
    :param float tau: the filter parameter :math:`\tau > 0` (``tau=1`` with the scaling filter is plain PnP).
    :param str method: how :math:`h_\tau(D)` is applied: ``"auto"`` (the filter's own matrix-free method: CG for
        the scaling filter, Horner for the Neumann filter), ``"eig"`` (exact eigendecomposition, small images),
        ``"lanczos"``, ``"chebyshev"``, ``"cg"``, ``"polynomial"``.
    :param float filter_tol: relative tolerance of each filtered application.
    :param float tol: stopping tolerance on the relative change of the iterates.
    :param int max_iter: maximum number of iterations (>= 1).
    :param float stepsize: the step :math:`\eta` (default: ``step_factor`` :math:`/\|A\|^2`).
    :param float step_factor: :math:`\eta\|A\|^2`, in :math:`(0, 2]` (:math:`(0, 1]` with FISTA).
    :param str acceleration: ``"none"`` or ``"fista"``.
    :param float sigma: the noise level passed to the denoiser (``None``: the denoiser's own).
    :param bool check: check symmetry and spectrum of the denoiser before the first reconstruction of a shape.
    :param float sym_tol: the tolerance of the symmetry check.
    :param tuple spectrum: known bounds ``(lowest, highest)`` of the denoiser's spectrum (skips the Lanczos
        measurement).
    :param int max_eig_dim: largest number of unknowns for ``method="eig"``.
    :param bool progress: show a tqdm progress bar.
    :param bool cache_norm: compute :math:`\|A\|^2` once per physics object and image shape (only for a
        physics that does not change between calls).
    :param deepinv_ext.spectral.OperatorEig eig: a precomputed eigendecomposition of the denoiser for
        ``method="eig"`` (otherwise computed and cached per image shape on first use).
    :param bool differentiable: record the iterations for autograd (training through the solver); ``False``
        (default): iterate without a graph, in memory independent of ``max_iter``.

    Changing ``tau`` between calls is allowed (the checks, the eigendecomposition and the spectrum are kept).

    **Memory and training.** By default (``differentiable=False``) the solver is for inference: it iterates under
    :func:`torch.no_grad`, whatever the denoiser's ``requires_grad`` flags, so no iteration (nor inner filter
    solve) keeps an autograd graph and the output carries no gradient. With ``differentiable=True`` autograd records
    every iteration and every inner solve whenever it is enabled (derivatives by unrolling, memory growing with the
    iterations).

    |sep|

    :Examples:

    >>> import deepinv as dinv, torch
    >>> from deepinv.physics.functional import gaussian_blur
    >>> from deepinv_ext.algorithms import SpectralPnP
    >>> from deepinv_ext.denoisers import LinearSymmetricUNet
    >>> from deepinv_ext.spectral import ScalingFilter
    >>> _ = torch.manual_seed(0)
    >>> den = LinearSymmetricUNet(channels=(4, 8), convs_per_scale=1)         # untrained, requires_grad=True
    >>> _ = den.calibrate_spectrum((0.05, 0.95), shape=(1, 16, 16), n_iter=30)
    >>> physics = dinv.physics.BlurFFT((1, 16, 16), filter=gaussian_blur(sigma=(1.0, 1.0)))
    >>> model = SpectralPnP(den, ScalingFilter(), tau=0.5, acceleration="fista", tol=1e-4, filter_tol=1e-4)
    >>> x_hat = model(physics(torch.rand(1, 1, 16, 16)), physics)
    >>> x_hat.requires_grad, model.last_info["converged"]
    (False, True)
    """

    def __init__(self, denoiser: torch.nn.Module, filter: SpectralFilter | None = None, tau: float = 0.1, *,
                 stepsize: float | None = None, step_factor: float = 1.0, method: str = "auto",
                 filter_tol: float = 1e-6, tol: float = 1e-6, max_iter: int = 1000, acceleration: str = "none",
                 sigma: float | None = None, check: bool = True, sym_tol: float = 1e-4,
                 spectrum: tuple[float, float] | None = None, max_eig_dim: int = 4096,
                 eig: OperatorEig | None = None, cache_norm: bool = False, progress: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser must be a linear denoiser called as denoiser(x, sigma), got "
                            f"{type(denoiser).__name__}")
        self.filter = ScalingFilter() if filter is None else filter
        if not isinstance(self.filter, SpectralFilter):
            raise TypeError(f"filter must be a deepinv_ext.spectral.SpectralFilter, got {type(filter)}")
        tau = finite_number(tau, "tau", strict=True)
        if acceleration not in ("none", "fista"):
            raise ValueError(f"acceleration must be 'none' or 'fista', got {acceleration!r}")
        if stepsize is not None:
            stepsize = finite_number(stepsize, "stepsize", strict=True)
        step_factor = finite_number(step_factor, f"step_factor (acceleration={acceleration!r})", strict=True,
                                    maximum=1.0 if acceleration == "fista" else 2.0)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        filter_tol, tol = finite_number(filter_tol, "filter_tol", strict=True), finite_number(tol, "tol", strict=True)
        max_iter, max_eig_dim = positive_int(max_iter, "max_iter"), positive_int(max_eig_dim, "max_eig_dim")
        sym_tol = finite_number(sym_tol, "sym_tol", strict=True)
        if sigma is not None:
            finite_number(sigma, "sigma")
        check, cache_norm, progress = boolean(check, "check"), boolean(cache_norm, "cache_norm"), boolean(progress,
                                                                                                        "progress")
        if spectrum is not None:
            if not isinstance(spectrum, (tuple, list)) or len(spectrum) != 2:
                raise ValueError(f"spectrum must be a pair (lowest, highest eigenvalue), got {spectrum!r}")
            spectrum = (finite_number(spectrum[0], "spectrum[0]", minimum=None),
                        finite_number(spectrum[1], "spectrum[1]", minimum=None))
            if not spectrum[0] < spectrum[1]:
                raise ValueError(f"spectrum must be an interval (lowest, highest) with lowest < highest, got {spectrum}")
        if eig is not None and not isinstance(eig, OperatorEig):
            raise TypeError(f"eig must be a deepinv_ext.spectral.OperatorEig or None, got {type(eig).__name__}")
        self.denoiser, self.tau, self.stepsize, self.step_factor = denoiser, tau, stepsize, step_factor
        self.method, self.filter_tol, self.tol, self.max_iter = method, filter_tol, tol, max_iter
        self.acceleration, self.sigma, self.check, self.sym_tol = acceleration, sigma, check, sym_tol
        self.max_eig_dim, self.progress, self.cache_norm = max_eig_dim, progress, cache_norm
        self.differentiable = boolean(differentiable, "differentiable")
        self._sqnorm: dict[tuple, float] = {}
        self.spectrum = spectrum
        self._checked: set[tuple] = set()
        self._eig: dict[tuple, OperatorEig] = {}
        if eig is not None:
            self._eig[(eig.shape, "any")] = eig
        self.last_info: dict = {}
        #: Whether each image of the last reconstruction met the stopping rule, shape ``(B,)`` (bool).
        self.converged: Tensor | None = None

    @classmethod
    def contract_example(cls, generator: torch.Generator | None = None) -> dict:
        """A small instance for :func:`deepinv_ext.testing.check_reconstructor` (side-effect free: draws only from
        ``generator``).

        :param torch.Generator generator: the CPU generator of every random draw (``None``: one seeded with 0).
        :return: ``{"model", "physics", "dataset"}``.
        """
        from deepinv_ext.denoisers.linear_unet import LinearSymmetricUNet
        from deepinv_ext.testing.examples import example_blur, example_generator, example_images, seeded_init

        g = example_generator(generator)
        with seeded_init(g):
            den = LinearSymmetricUNet(channels=(4, 8), convs_per_scale=1)
        den.calibrate_spectrum((0.05, 0.95), shape=(1, 16, 16), n_iter=30)
        physics = example_blur(16, 0.01)
        model = cls(den, ScalingFilter(), tau=0.5, max_iter=5, tol=1e-3, filter_tol=1e-3, differentiable=True)
        return {"model": model,
                "physics": physics, "dataset": example_images(4, 16, generator=g)}

    def matvec(self, v: Tensor) -> Tensor:
        """The denoiser as an operator, :math:`v \\mapsto D v` (at the noise level ``sigma``).

        :param torch.Tensor v: the images ``(B, ...)``.
        """
        return self.denoiser(v, self.sigma)

    def check_denoiser(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple[float, float]:
        r"""Check symmetry and :math:`\mathrm{spec}\,D\subset(0,1)` on images of ``shape``; return the spectrum
        bounds (measured by Lanczos and widened by the Ritz residuals, or the given ``spectrum``).

        :param tuple shape: the image shape ``(C, H, W)``.
        :param torch.dtype dtype: the dtype of the test vectors.
        :param torch.device device: their device.
        :return: ``(lowest, highest)`` eigenvalue bounds, also kept in ``spectrum``.
        :raises ValueError: a denoiser that is not symmetric (within ``sym_tol``), or whose spectrum leaves
            :math:`(0, 1)`.
        """
        gap = symmetry_gap(self.matvec, shape, dtype=dtype, device=device)
        if not gap <= self.sym_tol:
            raise ValueError(f"denoiser is not symmetric: |<x, Dy> - <Dx, y>| / (|x| |Dy|) = {gap:.2e} > sym_tol="
                             f"{self.sym_tol:.0e}; spectral filtering needs a symmetric linear denoiser "
                             f"(e.g. deepinv_ext.denoisers.LinearSymmetricUNet)")
        if self.spectrum is not None:
            lo, hi = self.spectrum
        else:
            g = torch.Generator().manual_seed(0)
            v0 = torch.randn(1, *shape, generator=g, dtype=dtype).to(device)
            n = min(40, math.prod(shape))
            with torch.no_grad():
                b = lanczos_extreme(self.matvec, v0, n_iter=n)
            lo, hi = b["lambda_min"] - b["residual_min"], b["lambda_max"] + b["residual_max"]
        if not hi < 1:
            raise ValueError(f"denoiser is not contractive: its largest eigenvalue is about {hi:.4g} >= 1 (Theorem 5 "
                             f"needs spec(D) in (0, 1); rescale it, e.g. LinearSymmetricUNet.calibrate_spectrum)")
        if not lo > 0:
            raise ValueError(f"denoiser is not positive definite / bounded below: its smallest eigenvalue is about "
                             f"{lo:.4g} <= 0 (Theorem 5 needs spec(D) in (0, 1); shift it, e.g. "
                             f"LinearSymmetricUNet.calibrate_spectrum)")
        self.spectrum = (float(lo), float(hi))
        return self.spectrum

    def _prepare(self, x: Tensor) -> tuple[str, OperatorEig | None]:
        shape = tuple(x.shape[1:])
        key = (shape, x.dtype, x.device)
        if self.check and key not in self._checked:
            self.check_denoiser(shape, x.dtype, x.device)
            self._checked.add(key)
        method = self.method
        if method == "auto":
            method = {"scaling": "cg", "neumann": "polynomial"}.get(self.filter.name, "lanczos")
        eig = None
        if method == "eig":
            if (shape, "any") in self._eig:
                return method, self._eig[(shape, "any")]
            if key not in self._eig:
                # the denoiser's matrix, assembled in its own precision, diagonalised in float64
                self._eig[key] = OperatorEig(lambda v: self.matvec(v.to(x.dtype)), shape, dtype=torch.float64,
                                             device=x.device, max_dim=self.max_eig_dim)
            eig = self._eig[key]
        return method, eig

    def compute_stepsize(self, physics: dinv.physics.LinearPhysics, x: Tensor) -> float:
        r""":math:`\eta` = ``step_factor`` / :math:`\|A\|^2` (power method, +1 %), or the given ``stepsize`` after
        checking it against :math:`2/\|A\|^2` (:math:`1/\|A\|^2` with FISTA).

        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x: an image batch of the physics' input shape (shape, dtype, device of the power method).
        :raises ValueError: a given ``stepsize`` above the admissible bound.
        """
        key = (id(physics), tuple(x.shape[1:]), x.dtype)
        if key not in self._sqnorm:
            # deterministic: the power method (what physics.compute_sqnorm runs) from starts drawn from a generator
            # of its own (the global random state is not touched); its tol is absolute: a rough pass sets the scale
            # for a relative 1e-5
            g = torch.Generator(device=x.device).manual_seed(0)
            starts = [torch.randn(x[:1].shape, generator=g, dtype=x.dtype, device=x.device) for _ in range(2)]
            with torch.no_grad():
                with warnings.catch_warnings():  # the rough pass never "converges" (tol=0), by design
                    warnings.simplefilter("ignore", UserWarning)
                    rough = float(power_method(physics.A_adjoint_A, starts[0], max_iter=10, tol=0.0))
                sq = 1.01 * float(power_method(physics.A_adjoint_A, starts[1], max_iter=300, tol=1e-5 * rough))
            if not self.cache_norm:
                return self._step(sq)
            self._sqnorm[key] = sq
        return self._step(self._sqnorm[key])

    def _step(self, sq: float) -> float:
        limit = (1.0 if self.acceleration == "fista" else 2.0) / sq
        if self.stepsize is None:
            return self.step_factor / sq
        if self.stepsize > limit:
            raise ValueError(f"stepsize={self.stepsize:.4g} exceeds the admissible {limit:.4g} "
                             f"(= {'1' if self.acceleration == 'fista' else '2'}/||A||^2, ||A||^2 = {sq:.4g})")
        return float(self.stepsize)

    def forward(self, y: Tensor, physics: dinv.physics.LinearPhysics, x_init: Tensor | None = None,
                **kwargs) -> Tensor:
        r"""Reconstruct from measurements ``y``; ``self.converged`` says which images met the stopping rule (the
        relative change below ``tol``, with the last filter application within ``filter_tol``; a
        :class:`~deepinv_ext.algorithms.NotConvergedWarning` names the others), ``self.last_info`` holds iterations,
        convergence of the whole batch and the number of denoiser applications.

        :param torch.Tensor y: measurements, of the shape ``physics.A`` gives, finite, in the denoiser's dtype.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param torch.Tensor x_init: :math:`x_0` (default :math:`A^\top y`), of the shape of :math:`A^\top y`.
        :param kwargs: ignored (the signature of :class:`deepinv.models.Reconstructor`).
        :return: the reconstruction, of the shape of :math:`A^\top y`.
        :raises TypeError: a physics that is not linear, a ``y`` or ``x_init`` that is not a real floating tensor of
            the denoiser's dtype.
        :raises ValueError: an empty batch, NaN or inf in ``y``, or a ``y`` that does not fit ``physics``.
        """
        x0 = check_measurement(y, physics, x_init, model=self)
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            return self._iterate(y, physics, x0 if x_init is None else x_init)

    def _iterate(self, y: Tensor, physics: dinv.physics.LinearPhysics, x: Tensor) -> Tensor:
        method, eig = self._prepare(x)
        eta = self.compute_stepsize(physics, x)
        kw = {"method": method, "tol": self.filter_tol, "bounds": self.spectrum, "eig": eig}
        z, t, state, n_den, k = x, 1.0, None, 0, 0
        bar = tqdm(range(self.max_iter), disable=not self.progress, desc=f"SpectralPnP tau={self.tau:.2g}")
        for _ in bar:
            k += 1
            v = z - eta * physics.A_adjoint(physics.A(z) - y)
            x_new, info = self.filter.apply(self.matvec, v, self.tau, x0=state, **kw)
            state, n_den = info.state, n_den + info.n_matvecs
            change = _rel(x_new, x).detach()
            worst = float(change.max())
            if self.acceleration == "fista":
                if float(((z - x_new) * (x_new - x)).flatten(1).sum(1).max().detach()) > 0:  # gradient restart
                    t = 1.0
                t_new = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
                z, t = x_new + ((t - 1) / t_new) * (x_new - x), t_new
            else:
                z = x_new
            x = x_new
            bar.set_postfix(change=f"{worst:.1e}", denoiser_calls=n_den)
            if worst < self.tol:
                break
        small, exact = change < self.tol, torch.full_like(change, info.converged, dtype=torch.bool)
        self.converged = small & exact
        self.last_info = {"iterations": k, "converged": bool(self.converged.all()), "denoiser_calls": n_den,
                          "stepsize": eta, "last_change": worst, "method": method}
        warn_not_converged(type(self).__name__, self.converged, {
            f"reached max_iter={self.max_iter}": ~small,
            f"the last filter application missed filter_tol={self.filter_tol:g}": small & ~exact})
        return x

    def solve_linear_system(self, y: Tensor, physics: dinv.physics.LinearPhysics, *, tol: float = 1e-10,
                            max_iter: int = 20000, w_init: Tensor | None = None) -> Tensor:
        r"""Solve the fixed-point equation directly (scaling filter only), as a reference for the iteration.

        The fixed point solves :math:`[\eta A^\top A + \tau(D^{-1} - \mathrm{Id})]x = \eta A^\top y`. With
        :math:`x = Dw` this is the symmetric positive definite system
        :math:`[\eta D A^\top A D + \tau(D - D^2)]\,w = \eta D A^\top y`, solved by CG (two denoiser applications
        and one :math:`A^\top A` per iteration, no inner solves) to relative residual ``tol``.
        ``self.last_info`` receives the CG iterations, the residual and :math:`w`, ``self.converged`` which images
        reached ``tol``.

        :param torch.Tensor y: measurements, as in :meth:`forward`.
        :param deepinv.physics.LinearPhysics physics: the operator :math:`A`.
        :param float tol: relative residual of CG.
        :param int max_iter: maximum CG iterations.
        :param torch.Tensor w_init: warm start of :math:`w` (e.g. ``last_info["w"]`` of a previous solve).
        :return: the fixed point :math:`x = Dw`.

        :raises TypeError: another filter than the scaling filter, and as :meth:`forward`.
        :raises ValueError: as :meth:`forward`, and for a ``tol`` or ``max_iter`` that is not positive.
        """
        if not isinstance(self.filter, ScalingFilter):
            raise TypeError(f"solve_linear_system needs the ScalingFilter, got {type(self.filter).__name__}")
        tol, max_iter = finite_number(tol, "tol", strict=True), positive_int(max_iter, "max_iter")
        atb = check_measurement(y, physics, w_init, model=self, x_name="w_init")
        self._prepare(atb)
        eta, tau = self.compute_stepsize(physics, atb), self.tau

        def op(w: Tensor) -> Tensor:
            u = self.matvec(w)
            return self.matvec(eta * physics.A_adjoint(physics.A(u)) + tau * (w - u))

        with torch.no_grad():
            b = eta * self.matvec(atb)
            w, info = cg_solve(op, b, tol=tol, max_iter=max_iter, x0=w_init)
            x = self.matvec(w)
        self.converged = info.state.flatten(1).norm(dim=1) <= tol * b.flatten(1).norm(dim=1)
        self.last_info = {"iterations": info.n_matvecs, "converged": bool(self.converged.all()),
                          "residual": info.error_estimate, "stepsize": eta, "w": w}
        warn_not_converged(f"{type(self).__name__}.solve_linear_system", self.converged,
                           {f"CG reached max_iter={max_iter} above the relative residual tol={tol:g}": ~self.converged})
        return x

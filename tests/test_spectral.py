"""Tests of deepinv_ext.spectral: exact vs matrix-free matrix functions, filter identities, A.1-A.3."""

from __future__ import annotations

import pytest
import torch

from deepinv_ext.spectral import (
    NeumannFilter,
    OperatorEig,
    ScalingFilter,
    SpectralFilter,
    cg_solve,
    chebyshev_apply,
    lanczos_apply,
    lanczos_extreme,
    symmetry_gap,
)

SHAPE = (1, 8, 8)
N = 64


def _operator(lo: float = 0.01, hi: float = 0.99, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([lo, hi], dtype=torch.float64),
                     lo + (hi - lo) * torch.rand(N - 2, generator=g, dtype=torch.float64)])
    M = (Q * lam) @ Q.T

    def matvec(v):
        return (v.reshape(v.shape[0], -1) @ M).reshape(v.shape)

    return matvec, M, lam


def _rel(a, b):
    return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())


@pytest.fixture
def op():
    return _operator()


def test_operator_eig_matches_dense_and_refuses_large(op):
    matvec, M, lam = op
    eig = OperatorEig(matvec, SHAPE)
    assert torch.allclose(eig.eigenvalues, torch.sort(lam).values, atol=1e-10)
    v = torch.randn(3, *SHAPE, dtype=torch.float64)
    sq = eig.apply(lambda l: l ** 2, v)
    assert _rel(sq, matvec(matvec(v))) < 1e-10
    with pytest.raises(ValueError, match="max_dim"):
        OperatorEig(matvec, SHAPE, max_dim=N - 1)


@pytest.mark.parametrize("tau", [1e-3, 0.05, 0.5, 0.9, 1.0, 3.0])
@pytest.mark.parametrize("method", ["cg", "lanczos", "chebyshev"])
def test_scaling_filter_matrix_free_matches_eig(op, tau, method):
    matvec, M, lam = op
    eig = OperatorEig(matvec, SHAPE)
    f = ScalingFilter()
    v = torch.randn(2, *SHAPE, dtype=torch.float64)
    ref, _ = f.apply(matvec, v, tau, method="eig", eig=eig)
    out, info = f.apply(matvec, v, tau, method=method, tol=1e-6, bounds=(0.0099, 0.9901))
    assert info.converged
    assert _rel(out, ref) < 1e-5
    assert info.n_matvecs <= 70


def test_error_estimates_bound_the_true_error(op):
    matvec, M, lam = op
    eig = OperatorEig(matvec, SHAPE)
    f = ScalingFilter()
    v = torch.randn(2, *SHAPE, dtype=torch.float64)
    for tau in (0.01, 0.3, 5.0):
        ref, _ = f.apply(matvec, v, tau, method="eig", eig=eig)
        for method in ("cg", "chebyshev"):
            out, info = f.apply(matvec, v, tau, method=method, tol=1e-3, bounds=(0.01, 0.99))
            assert _rel(out, ref) <= info.error_estimate * 1.0001 + 1e-14, (tau, method)
            assert info.error_estimate <= 1e-3


def test_scaling_filter_identities(op):
    matvec, M, lam = op
    f = ScalingFilter()
    # h_1 is the identity on the spectrum: h_1(D) = D
    assert torch.allclose(f.h(lam, 1.0), lam)
    v = torch.randn(2, *SHAPE, dtype=torch.float64)
    out, _ = f.apply(matvec, v, 1.0)
    assert _rel(out, matvec(v)) < 1e-12
    # prox identity: u = h_tau(D) v minimises 1/2|u - v|^2 + tau/2 <u, (D^-1 - Id) u>, i.e. D(u - v) + tau(u - Du) = 0
    for tau in (0.02, 0.7, 4.0):
        u, _ = f.apply(matvec, v, tau, tol=1e-10)
        grad = matvec(u - v) + tau * (u - matvec(u))
        assert float(grad.norm() / matvec(v).norm()) < 1e-8
        Minv = torch.linalg.inv(M)
        Wt = tau * (Minv - torch.eye(N, dtype=torch.float64))
        energy = lambda x, W=Wt: 0.5 * ((x - v) ** 2).flatten(1).sum(1) + 0.5 * (  # noqa: E731
            x.flatten(1) * (x.flatten(1) @ W)).sum(1)
        e0 = energy(u)
        for _ in range(3):
            assert (energy(u + 1e-3 * torch.randn_like(u)) > e0).all()


@pytest.mark.parametrize("filt,taus", [(ScalingFilter(), [1.0, 0.1, 0.01, 1e-3]),
                                       (NeumannFilter(2), [0.8, 0.1, 0.01, 1e-3]),
                                       (NeumannFilter(4), [0.8, 0.1, 0.01, 1e-3])])
def test_filters_satisfy_A1_A3_on_the_spectrum(op, filt, taus):
    matvec, M, lam = op
    eig = OperatorEig(matvec, SHAPE)  # the operator's own (computed) spectrum
    report = filt.check_conditions(eig.eigenvalues, taus)
    assert report.a1 and report.a2 and report.a3, report
    assert 0 < report.h_range[0] and report.h_range[1] < 1


class _PowerFilter(SpectralFilter):
    """h_tau = lambda**tau: r_tau -> -log(lambda) at rate O(tau) only (violates A.2)."""

    def h(self, lam, tau):
        return lam ** tau

    def r_star(self, lam):
        return -torch.log(lam)


def test_condition_checker_detects_violations(op):
    matvec, M, lam = op
    assert not _PowerFilter().check_conditions(lam, [0.1, 0.01, 1e-3]).a2
    # the Neumann filter beyond its tau_max leaves (0, 1): A.1 fails
    nf = NeumannFilter(2)
    assert not nf.check_conditions(lam, [1.5, 0.1]).a1
    with pytest.raises(ValueError, match="tau"):
        nf.apply(matvec, torch.randn(1, *SHAPE, dtype=torch.float64), 1.5, bounds=(0.01, 0.99))


def test_neumann_polynomial_is_exact(op):
    matvec, M, lam = op
    eig = OperatorEig(matvec, SHAPE)
    v = torch.randn(2, *SHAPE, dtype=torch.float64)
    for order in (2, 4):
        f = NeumannFilter(order)
        out, info = f.apply(matvec, v, 0.5)
        ref, _ = f.apply(matvec, v, 0.5, method="eig", eig=eig)
        assert info.n_matvecs == order and _rel(out, ref) < 1e-12


def test_generic_functions_and_extreme_eigenvalues(op):
    matvec, M, lam = op
    eig = OperatorEig(matvec, SHAPE)
    v = torch.randn(2, *SHAPE, dtype=torch.float64)
    ref = eig.apply(torch.exp, v)
    out, info = lanczos_apply(matvec, v, torch.exp, tol=1e-10)
    assert _rel(out, ref) < 1e-8
    out, info = chebyshev_apply(matvec, v, torch.exp, (0.0, 1.0), tol=1e-10)
    assert _rel(out, ref) < 1e-8
    x, info = cg_solve(lambda u: u + matvec(u), v, tol=1e-10)
    assert _rel(x + matvec(x), v) < 1e-9
    b = lanczos_extreme(matvec, v[:1], n_iter=40)
    assert abs(b["lambda_min"] - 0.01) < 1e-6 and abs(b["lambda_max"] - 0.99) < 1e-6
    with pytest.raises(ValueError, match="bounds"):
        chebyshev_apply(matvec, v, torch.exp, (1.0, 0.0))


def test_bad_budgets_are_named(op):
    """A negative tolerance used to run every application to its cap (1000 denoiser calls in 5 PnP iterations)."""
    matvec, _, _ = op
    v = torch.randn(2, *SHAPE, dtype=torch.float64)
    fn = lambda lam: lam  # noqa: E731
    for call, name in ((lambda: lanczos_apply(matvec, v, fn, tol=-1.0), "tol"),
                       (lambda: lanczos_apply(matvec, v, fn, max_iter=0), "max_iter"),
                       (lambda: lanczos_apply(matvec, v, fn, check_every=1.5), "check_every"),
                       (lambda: chebyshev_apply(matvec, v, fn, (0.0, 1.0), tol=float("nan")), "tol"),
                       (lambda: chebyshev_apply(matvec, v, fn, (0.0, float("inf"))), "bounds"),
                       (lambda: cg_solve(matvec, v, tol=-1.0), "tol"),
                       (lambda: cg_solve(matvec, v, max_iter=2.0), "max_iter"),
                       (lambda: ScalingFilter().apply(matvec, v, 0.5, tol=-1.0), "tol"),
                       (lambda: ScalingFilter().apply(matvec, v, 0.5, method="lanczos", max_iter=0), "max_iter"),
                       (lambda: ScalingFilter().check_tau(float("nan")), "tau"),
                       (lambda: NeumannFilter(order=2.0), "order"), (lambda: NeumannFilter(order=3), "order"),
                       (lambda: NeumannFilter(rho=float("nan")), "rho"), (lambda: NeumannFilter(rho=1.0), "rho"),
                       (lambda: lanczos_extreme(matvec, v[:1], n_iter=0), "n_iter"),
                       (lambda: OperatorEig(matvec, SHAPE, chunk=0), "chunk")):
        with pytest.raises(ValueError, match=name):
            call()


def test_filters_apply_by_their_own_method_by_default(op):
    """The default of ``apply`` is the filter's ``own_method`` (the generic Lanczos for a filter without one); an
    unknown method names the filter's own one among the choices."""
    matvec, _, _ = op
    v = torch.randn(2, *SHAPE, dtype=torch.float64)
    assert ScalingFilter().apply(matvec, v, 0.5)[1].method == "cg"
    assert NeumannFilter().apply(matvec, v, 0.5)[1].method == "polynomial"
    assert _PowerFilter().apply(matvec, v, 0.5)[1].method == "lanczos"
    assert ScalingFilter().apply(matvec, v, 0.5, method="lanczos")[1].method == "lanczos"
    with pytest.raises(ValueError, match=r"'chebyshev', 'cg', got 'polynomial'"):
        ScalingFilter().apply(matvec, v, 0.5, method="polynomial")
    with pytest.raises(ValueError, match=r"'chebyshev', got 'cg'"):
        _PowerFilter().apply(matvec, v, 0.5, method="cg")


def test_symmetry_gap_tells_symmetric_from_non_symmetric(op):
    """Zero to rounding for a symmetric operator, of order one for a generic one; the global random state is left
    as it was, and the old import path (the linear U-Net's module) gives the same function."""
    from deepinv_ext.denoisers.linear_unet import symmetry_gap as old_path

    matvec, M, _ = op
    skew = torch.randn(N, N, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    before = torch.random.get_rng_state()
    assert symmetry_gap(matvec, SHAPE) < 1e-13
    assert symmetry_gap(lambda v: (v.reshape(v.shape[0], -1) @ (M + skew)).reshape(v.shape), SHAPE) > 0.1
    assert torch.equal(torch.random.get_rng_state(), before)
    assert old_path is symmetry_gap

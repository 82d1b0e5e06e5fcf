"""LinearMap under torch.func (vmap, jvp, vjp) and the per-sample gathered maps, on a dense matrix."""

import torch

from deepinv_ext.physics._stack_maps import LinearMap, gathered_maps


def _dense(matrix):
    return (lambda x: x @ matrix.T), (lambda y: y @ matrix)


def test_linear_map_vmap_jvp_and_vjp_agree_with_the_matrix():
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(5, 4, dtype=torch.float64, generator=g)
    op, op_t = _dense(matrix)
    x = torch.randn(3, 2, 4, dtype=torch.float64, generator=g)  # vmapped dim 3, stack of 2
    out = torch.func.vmap(lambda t: LinearMap.apply(t, op, op_t, None))(x)
    assert torch.allclose(out, x @ matrix.T)
    t = torch.randn(2, 4, dtype=torch.float64, generator=g)
    _, tangent = torch.func.jvp(lambda z: LinearMap.apply(z, op, op_t, None), (x[0],), (t,))
    assert torch.allclose(tangent, t @ matrix.T)
    y = torch.randn(2, 5, dtype=torch.float64, generator=g)
    _, vjp = torch.func.vjp(lambda z: LinearMap.apply(z, op, op_t, None), x[0])
    assert torch.allclose(vjp(y)[0], y @ matrix)


def test_gathered_maps_take_each_samples_rows_and_are_adjoint():
    g = torch.Generator().manual_seed(1)
    n_full, n_det, n_pix = 6, 3, 4
    matrix = torch.randn(n_full * n_det, n_pix, dtype=torch.float64, generator=g)

    def full_forward(x):
        return (x.reshape(x.shape[0], -1) @ matrix.T).reshape(x.shape[0], n_full, n_det)

    def full_adjoint(y):
        return (y.reshape(y.shape[0], -1) @ matrix).reshape(y.shape[0], 2, 2)

    index = torch.tensor([[0, 2], [5, 1]])
    forward, adjoint = gathered_maps((full_forward, full_adjoint), index, n_full, channels=1)
    x = torch.randn(2, 2, 2, dtype=torch.float64, generator=g)
    y = forward(x)
    full = full_forward(x)
    assert torch.equal(y[0], full[0, [0, 2]]) and torch.equal(y[1], full[1, [5, 1]])
    z = torch.randn_like(y)
    assert torch.allclose((y * z).sum(), (x * adjoint(z)).sum())

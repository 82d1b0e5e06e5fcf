"""Per-sample broadcasting over a leading batch dimension."""

import torch

from deepinv_ext._batch import batch_dot, batch_norm, batch_sqnorm, per_sample


def test_per_sample_scales_each_batch_element_by_its_own_value():
    v = torch.tensor([1.0, 2.0, 3.0])
    for like in (torch.ones(3, 2), torch.ones(3, 2, 4, 5), torch.ones(3, 2, 4, 4, 4)):
        out = per_sample(v, like) * like
        assert out.shape == like.shape
        for b in range(3):
            assert torch.all(out[b] == v[b])


def test_per_sample_reductions_equal_a_loop_over_the_batch():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64), torch.randn(3, 2, 4, 5, generator=g,
                                                                              dtype=torch.float64)
    dot = torch.stack([torch.dot(a[i].flatten(), b[i].flatten()) for i in range(3)])
    sq = torch.stack([a[i].pow(2).sum() for i in range(3)])
    assert torch.allclose(batch_dot(a, b), dot) and torch.allclose(batch_sqnorm(a), sq)
    assert torch.allclose(batch_norm(a), sq.sqrt()) and batch_norm(a[:0]).shape == (0,)

"""Per-sample broadcasting over a leading batch dimension."""

import torch

from deepinv_ext._batch import per_sample


def test_per_sample_scales_each_batch_element_by_its_own_value():
    v = torch.tensor([1.0, 2.0, 3.0])
    for like in (torch.ones(3, 2), torch.ones(3, 2, 4, 5), torch.ones(3, 2, 4, 4, 4)):
        out = per_sample(v, like) * like
        assert out.shape == like.shape
        for b in range(3):
            assert torch.all(out[b] == v[b])

"""``deepinv-ext run``: a config asking for a device this machine lacks is refused before anything is written."""

import pytest
import torch

from deepinv_ext.runner import run_config


def test_cuda_without_cuda_is_refused_naming_the_device(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = {"device": "cuda", "physics": {"target": "deepinv.physics:Denoising"},
              "model": {"target": "deepinv.models:DnCNN", "in_channels": 1, "out_channels": 1, "depth": 2,
                        "pretrained": None},
              "data": {"test": {"kind": "dataset", "name": "ellipses", "length": 2, "size": 16}}}
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA device"):
        run_config(config, output_dir=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()

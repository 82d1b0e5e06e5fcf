"""Data-parallel training (deepinv_ext.data_parallel): the sharding rule, and `deepinv-ext run` under torchrun with 2
gloo processes against 1, with checkpoints resumed across process counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from recipe_helpers import max_difference, needs_gloo, torchrun
from torch.utils.data import DataLoader

from deepinv_ext.checkpoint import latest_checkpoint
from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer, ReshuffledDistributedSampler
from deepinv_ext.runner import run_config


def test_shards_of_a_step_are_the_single_process_batch():
    """Step k of W processes with batch B/W each sees the B samples of step k of one process, every epoch."""
    data, batch = range(24), 6
    single = ReshuffledDistributedSampler(data, num_replicas=1, rank=0, seed=3)
    shards = [ReshuffledDistributedSampler(data, num_replicas=3, rank=r, seed=3) for r in range(3)]
    for _ in range(2):  # two epochs: a new permutation each
        whole = list(single)
        parts = [list(s) for s in shards]
        for k in range(len(data) // batch):
            step = sorted(i for part in parts for i in part[k * batch // 3:(k + 1) * batch // 3])
            assert step == sorted(whole[k * batch:(k + 1) * batch])
    assert whole != list(range(24)), "the sampler did not shuffle"


def test_outside_torchrun_everything_is_single_process():
    loader = DataLoader(list(range(8)), batch_size=4, shuffle=True)
    with DataParallel("cpu") as parallel:
        assert parallel.shard(loader) is loader and not parallel.enabled
        assert parallel.mean([1.0, 3.0]) == [1.0, 3.0] and parallel.device == torch.device("cpu")
        assert parallel.on_main(lambda a: a + 1, 1) == 2
        with pytest.raises(KeyError):
            parallel.on_main(dict().__getitem__, "missing")
    with pytest.raises(ValueError, match="device"):
        DataParallel("gpu")
    assert DataParallel("mps").device == torch.device("mps")  # outside torchrun: any device, one process


def _config(epochs: int) -> dict:
    """A deterministic training (inpainting with a fixed mask, no noise): 2 steps an epoch, global batch 4."""
    return {"seed": 0, "device": "cpu", "threads": 1,
            "physics": {"target": "deepinv.physics:Inpainting", "img_size": [1, 16, 16], "mask": 0.7},
            "model": {"target": "deepinv.models:DnCNN", "in_channels": 1, "out_channels": 1, "depth": 2, "nf": 4,
                      "pretrained": None},
            "data": {"train": {"kind": "dataset", "name": "ellipses", "length": 8, "size": 16, "seed": 0},
                     "test": {"kind": "dataset", "name": "ellipses", "length": 2, "size": 16, "seed": 1},
                     "batch_size": 4},
            "training": {"epochs": epochs, "optimizer": "Adam", "lr": 1e-2}}


def _run(processes: int, config: dict, output: Path) -> None:
    path = output.with_suffix(f".{config['training']['epochs']}.yaml")
    path.write_text(yaml.safe_dump(config))
    torchrun("-m", "deepinv_ext.cli", "run", str(path), "--output", str(output), "--quiet", processes=processes)


def _parameters(output: Path) -> dict[str, torch.Tensor]:
    return torch.load(latest_checkpoint(output), weights_only=False)["state_dict"]


@needs_gloo
@pytest.mark.slow
def test_two_processes_train_as_one_and_checkpoints_resume_across(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(2, _config(1), two)
    _run(1, _config(1), one)
    first_one, first_two = _parameters(one), _parameters(two)
    assert max_difference(first_one, first_two) < 1e-5  # the same two Adam steps (float32 sums in another order)

    _run(1, _config(2), two)  # the 2-process checkpoint resumed by 1 process ...
    _run(2, _config(2), one)  # ... and the reverse: both train epoch 1 only
    assert latest_checkpoint(one).name == latest_checkpoint(two).name == "ckp_1.pth.tar"
    assert len(list(one.glob("**/ckp_0.pth.tar"))) == 1
    straight = tmp_path / "straight"
    _run(1, _config(2), straight)  # resumed runs must follow it: epoch 1's permutation, Adam's state
    assert max_difference(_parameters(one), _parameters(straight)) < 1e-5
    assert max_difference(_parameters(two), _parameters(straight)) < 1e-5
    assert max_difference(_parameters(one), first_one) > 1e-3

    run_config(_config(3), output_dir=two, verbose=False)  # and a plain process (no torchrun) resumes it too
    assert latest_checkpoint(two).name == "ckp_2.pth.tar"


def test_trainer_refuses_float16_gradient_scaling():
    class Parallel(DataParallel):
        enabled = True

    model = torch.nn.Linear(1, 1)
    trainer = DataParallelTrainer(model, physics=None, train_dataloader=DataLoader([0]), optimizer=None,
                                  mixed_precision=torch.float16, device="cpu", parallel=Parallel("cpu"))
    with pytest.raises(ValueError, match="float16"):
        trainer.setup_train()

"""The README's quickstart runs end to end (smoke size), its table is sane, it picks its torch thread count, and
under ``torchrun`` (2 gloo processes) it trains data-parallel and writes once."""

import json

import pytest
import torch
from recipe_helpers import load_recipe, needs_gloo, torchrun

from deepinv_ext.data_parallel import DataParallel


def test_quickstart_smoke(tmp_path):
    quickstart = load_recipe("quickstart")
    table = quickstart.main(["--smoke", "--output", str(tmp_path)])
    assert (tmp_path / "quickstart.png").exists() and (tmp_path / "run.json").exists()
    assert list((tmp_path / "checkpoints").glob("**/ckp_0.pth.tar"))
    psnr = {name.split(" ")[0]: row["PSNR"] for name, row in table.items()}
    assert psnr["TV"] > psnr["FBP"] + 1, psnr  # regularisation pays off even at smoke size
    assert json.loads((tmp_path / "run.json").read_text())["config"]["threads"] == torch.get_num_threads()


def test_learned_column_is_a_unet_on_the_fbp(tmp_path):
    """The table's "U-Net on FBP" is fed the FBP, not ``A_dagger``'s least squares (``ArtifactRemoval(mode="pinv")``)."""
    quickstart, experiment = load_recipe("quickstart"), load_recipe("quickstart_run")
    args = quickstart.parse_args(["--smoke", "--output", str(tmp_path)])
    physics = experiment.ct_physics(args.size, args.views)
    with DataParallel("cpu") as parallel:  # one process
        model = experiment.train_post_processing(physics, args, tmp_path, parallel).eval()
    calls, original = [], physics.A_dagger

    def spy(y, *args, **kwargs):
        calls.append(kwargs.get("fbp", False))
        return original(y, *args, **kwargs)

    physics.A_dagger = spy
    with torch.no_grad():
        model(physics(torch.rand(2, 1, args.size, args.size)), physics)
    assert calls == [True]


def test_small_images_run_on_one_thread_unless_told_otherwise(monkeypatch):
    """One torch thread for images up to 128x128; ``--threads``, then ``OMP_NUM_THREADS``, win; larger images keep
    torch's default."""
    choose = load_recipe("quickstart").torch_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose(None, 64)[0] == 1 and choose(None, 128)[0] == 1
    assert choose(None, 256)[0] is None
    assert choose(3, 64) == (3, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose(None, 64) == (None, "OMP_NUM_THREADS")
    with pytest.raises(SystemExit):
        load_recipe("quickstart").parse_args(["--threads", "0"])


def test_main_runs_on_the_threads_chosen_and_restores_the_callers(tmp_path, monkeypatch):
    quickstart, experiment = load_recipe("quickstart"), load_recipe("quickstart_run")
    seen = []
    monkeypatch.setattr(experiment, "run",
                        lambda args, parallel: seen.append((args.threads, torch.get_num_threads())))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the caller's own count
    try:
        quickstart.main(["--smoke", "--threads", "2", "--output", str(tmp_path)])
        assert torch.get_num_threads() == 3
        quickstart.main(["--smoke", "--output", str(tmp_path)])
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert seen == [(2, 2), (1, 1)]


@needs_gloo
@pytest.mark.slow
def test_quickstart_under_torchrun_writes_once(tmp_path):
    """The U-Net trained by 2 processes (batches of 8: 4 a process), the table printed and the figure written by rank
    0 alone (the resume in one process: tdv_denoising's test, the same trainer)."""
    done = torchrun("quickstart", "--smoke", "--output", str(tmp_path))
    log = done.stdout + done.stderr
    for line in ("torch threads:", "The model has", "method ", "figure: "):
        assert log.count(line) == 1, (line, log)
    assert len(list((tmp_path / "checkpoints").glob("attempt*/*/ckp_0.pth.tar"))) == 1
    assert "previous" not in json.loads((tmp_path / "run.json").read_text())
    assert (tmp_path / "quickstart.png").exists()

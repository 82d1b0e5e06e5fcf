"""recipes/ct_learned_regularizers.py (with its jobs ct_learned_regularizers_train.py and
ct_learned_regularizers_evaluate.py) runs end to end on tiny sizes, writes its outputs and resumes; under
``torchrun`` (2 gloo processes) it trains data-parallel, writes once, and a plain process resumes its checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
from recipe_helpers import load_recipe, max_difference, needs_gloo, torchrun

from deepinv_ext.checkpoint import OptionsChangedError

# these tests run solvers on small budgets on purpose and check iterates, gradients or outputs; the tests that are
# about convergence assert the solvers' per-image `converged` flags (or expect the warning) themselves
pytestmark = pytest.mark.filterwarnings("ignore::deepinv_ext.algorithms.NotConvergedWarning")

pytest.importorskip("deepinv_ext.algorithms.variational")


@pytest.mark.slow
def test_recipe_smoke_and_resume(tmp_path):
    threads = torch.get_num_threads()
    recipe = load_recipe("ct_learned_regularizers")
    args = ["--smoke", "--problems", "sparse_view", "--size", "16", "--n-test", "1", "--grid", "0", "--iters", "8",
            "--val-iters", "4", "--budgets", "2", "4", "--output", str(tmp_path)]
    try:
        results = recipe.main(args + ["--n-train", "8"])
        for name in ("results.md", "results.json", "run.json", "ct_learned_regularizers.png"):
            assert (tmp_path / name).exists(), name
        res = results["sparse_view"]
        assert set(recipe.METHODS) <= set(res)
        assert all(torch.isfinite(torch.tensor(res[m]["psnr"])) for m in recipe.METHODS)
        assert res["_checks"]["acr_convexity"]["pair_failures"] == 0
        for method in recipe.LEARNED:  # the profile along clean -> FBP runs from 0 to 1
            profile = res["_checks"][f"{method}_segment_profile"]
            assert profile["0.0"] == pytest.approx(0, abs=1e-5) and profile["1.0"] == pytest.approx(1, abs=1e-5)
        for method in ("TV", *recipe.LEARNED):  # (lambda, K) chosen jointly on validation, the test solve runs K
            choice = res[method]["lambda"]
            if method != "TV":  # the choice made when the kept epoch was scored is the one used
                selection = res["_checks"][f"{method}_selection"]
                assert choice == selection["choice"] and choice["score"] == selection["scores"]["1"]
            scores = next(iter(choice["validation_psnr"].values()))
            assert {int(k) for k in scores} == {2, 4} and choice["budget"] in (2, 4)
            assert res[method]["max_iter"] == choice["budget"] and res[method]["iterations"] <= choice["budget"]
        stored = json.loads((tmp_path / "results.json").read_text())
        assert stored["sparse_view"]["FBP"]["psnr"] == pytest.approx(res["FBP"]["psnr"])
        # resume: the per-epoch checkpoints are found and training is skipped; solves rerun identically
        ckpt = torch.load(tmp_path / "sparse_view" / "AR.pt", weights_only=True)
        assert ckpt["epoch"] == 1
        (tmp_path / "sparse_view" / "results.json").unlink()
        again = recipe.main(args + ["--n-train", "8"])
        assert again["sparse_view"]["AR"]["psnr"] == pytest.approx(res["AR"]["psnr"], rel=1e-5)
    finally:
        torch.set_num_threads(threads)


def test_epoch_selection_keeps_the_best_scored_epoch(tmp_path):
    """``train`` with ``--select-every 1`` returns the regulariser of the best-scored epoch, not the last one, and
    a rerun resumes the selection from the checkpoint."""
    recipe, job = load_recipe("ct_learned_regularizers"), load_recipe("ct_learned_regularizers_train")
    args = recipe.parse_args(["--smoke", "--size", "16", "--n-train", "4", "--batch", "2", "--epochs", "1", "1", "3",
                              "--select-every", "1"])
    physics = job.make_physics("sparse_view", args)
    train_set = job.RandomEllipsesDataset(args.n_train, args.size, seed=0)
    scores = iter([1.0, 3.0, 2.0])  # epoch 2 is the best
    seen = []

    def score(prior):
        assert not prior.training and not any(p.requires_grad for p in prior.parameters())
        seen.append({k: v.clone() for k, v in prior.state_dict().items()})
        value = next(scores)
        return {"lambda": 10 * value, "score": value}

    ckpt = tmp_path / "NETT.pt"
    prior, selection = job.train("NETT", physics, train_set, args, ckpt, score)
    assert selection == {"epoch": 2, "scores": {"1": 1.0, "2": 3.0, "3": 2.0},
                         "choice": {"lambda": 30.0, "score": 3.0}}
    chosen, last = prior.state_dict(), torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(chosen[k], seen[1][k]) for k in chosen)
    assert any(not torch.equal(chosen[k], last[f"regularizer.{k}"]) for k in chosen)
    # resumed after the last epoch: no scoring, same choice
    prior_again, again = job.train("NETT", physics, train_set, args, ckpt, lambda prior: pytest.fail("scored"))
    assert again == selection
    assert all(torch.equal(prior_again.state_dict()[k], chosen[k]) for k in chosen)


def test_method_subset(tmp_path):
    """``--methods NETT`` trains and reports only NETT beside FBP and TV; the epochs are scored with the heuristic
    lambda rule too; a later run of more methods into the same folder does not take the subset's results."""
    threads = torch.get_num_threads()
    recipe = load_recipe("ct_learned_regularizers")
    try:
        results = recipe.main(["--smoke", "--problems", "low_dose", "--size", "16", "--n-train", "4", "--n-test", "1",
                               "--val-iters", "2", "--iters", "2", "--methods", "NETT", "--epochs", "1", "1", "2",
                               "--lambda-rule", "heuristic", "--output", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert {m for m in results["low_dose"] if not m.startswith("_")} == {"FBP", "TV", "NETT"}
    assert not (tmp_path / "low_dose" / "AR.pt").exists() and "acr_convexity" not in results["low_dose"]["_checks"]
    assert "| FBP | TV | NETT |" in (tmp_path / "results.md").read_text()
    scores = results["low_dose"]["_checks"]["NETT_selection"]["scores"]
    assert set(scores) == {"1", "2"} and all(math.isfinite(v) for v in scores.values())
    # a later run of more methods in the same folder evaluates again (the NETT checkpoint is reused)
    try:
        more = recipe.main(["--smoke", "--problems", "low_dose", "--size", "16", "--n-train", "4", "--n-test", "1",
                            "--val-iters", "2", "--iters", "2", "--methods", "NETT", "ACR", "--epochs", "1", "1", "2",
                            "--lambda-rule", "heuristic", "--output", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert {"ACR", "NETT"} <= set(more["low_dose"]) and "acr_convexity" in more["low_dose"]["_checks"]
    assert more["low_dose"]["_checks"]["NETT_selection"]["scores"] == scores
    # nor does it skip a regulariser whose checkpoint is gone (it is trained again)
    for path in (tmp_path / "low_dose").glob("ACR*.pt"):
        path.unlink()
    try:
        recipe.main(["--smoke", "--problems", "low_dose", "--size", "16", "--n-train", "4", "--n-test", "1",
                     "--val-iters", "2", "--iters", "2", "--methods", "NETT", "ACR", "--epochs", "1", "1", "2",
                     "--lambda-rule", "heuristic", "--output", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "low_dose" / "ACR.pt").exists()
    # a checkpoint is not resumed under other training options
    job = load_recipe("ct_learned_regularizers_train")
    with pytest.raises(OptionsChangedError, match="other options.*nett_width"):
        job.train("NETT", job.make_physics("low_dose", recipe.parse_args(["--smoke", "--size", "16"])),
                  job.RandomEllipsesDataset(4, 16), recipe.parse_args(
                      ["--smoke", "--size", "16", "--n-train", "4", "--val-iters", "2", "--iters", "2",
                       "--methods", "NETT", "--epochs", "1", "1", "2", "--lambda-rule", "heuristic",
                       "--nett-width", "4"]), tmp_path / "low_dose" / "NETT.pt")


def test_segment_profile():
    """t^2 for a quadratic regulariser centred at the clean images, t for a linear one."""
    recipe = load_recipe("ct_learned_regularizers_evaluate")
    clean, artefact = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64)

    class Quadratic:
        def fn(self, x):
            return (x - clean).pow(2).sum(dim=(1, 2, 3)) + 5.0

    class Linear:
        def fn(self, x):
            return ((x - clean) * (artefact - clean)).sum(dim=(1, 2, 3)) - 2.0

    ts = torch.tensor(recipe.SEGMENT, dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(recipe.segment_profile(Quadratic(), clean, artefact), dtype=ts.dtype), ts ** 2)
    torch.testing.assert_close(torch.tensor(recipe.segment_profile(Linear(), clean, artefact), dtype=ts.dtype), ts)


def test_options_added_later_leave_the_config_of_older_checkpoints_unchanged():
    """An option added after checkpoints were made enters the training config only when it changes the training,
    so that those checkpoints keep loading when it is off."""
    recipe, job = load_recipe("ct_learned_regularizers"), load_recipe("ct_learned_regularizers_train")
    for option, off in job.OPTIONS_ADDED_LATER.items():
        args = recipe.parse_args([f"--{option.replace('_', '-')}", str(off)])
        assert all(option not in job.training_config(args, m) for m in recipe.LEARNED)
    for method, option in (("NETT", "nett_descent"), ("AR", "ar_descent"), ("ACR", "acr_descent"),
                           ("AR", "texture"), ("ACR", "texture"), ("NETT", "texture")):
        on = job.training_config(recipe.parse_args([f"--{option.replace('_', '-')}", "3"]), method)
        off = recipe.parse_args([f"--{option.replace('_', '-')}", "0"])
        assert on[option] == 3 and on != job.training_config(off, method)


@pytest.mark.slow
@needs_gloo
def test_two_processes_train_as_one_write_once_and_resume_in_one(tmp_path, capsys):
    """NETT trained by 2 torchrun processes on halves of a batch of the whole (all but noise-free) training set takes
    the single-process step; rank 0 alone scores, prints and writes; a plain process resumes its checkpoint."""
    args = ["--smoke", "--problems", "sparse_view", "--methods", "NETT", "--size", "16", "--n-train", "4",
            "--batch", "4", "--sigma", "1e-9", "--nett-noise", "0", "--n-test", "1", "--grid", "0", "--iters", "2",
            "--val-iters", "2", "--budgets", "2", "--output", str(tmp_path)]
    done = torchrun("ct_learned_regularizers", *args)
    for line in ("[sparse_view] training NETT", "NETT epoch 1/1", "[sparse_view] NETT  PSNR", "PSNR (dB) / SSIM"):
        assert done.stdout.count(line) == 1, done.stdout  # rank 0 alone prints, scores and evaluates
    assert "previous" not in json.loads((tmp_path / "run.json").read_text())  # written once
    assert (tmp_path / "ct_learned_regularizers.png").exists() and (tmp_path / "results.md").exists()
    two = torch.load(tmp_path / "sparse_view" / "NETT.pt", weights_only=True)

    recipe, job = load_recipe("ct_learned_regularizers"), load_recipe("ct_learned_regularizers_train")
    options = recipe.parse_args(args)
    job.train("NETT", job.make_physics("sparse_view", options), job.datasets(options)["train"], options,
              tmp_path / "one.pt")  # one process, the same global batch
    one = torch.load(tmp_path / "one.pt", weights_only=True)["model"]
    capsys.readouterr()
    with capsys.disabled():
        print("\nmax |1 process - 2 processes| after 1 step:", max_difference(one, two["model"]))
    assert all(torch.allclose(one[k], two["model"][k], atol=1e-6) for k in one)

    first = json.loads((tmp_path / "sparse_view" / "results.json").read_text())
    (tmp_path / "sparse_view" / "results.json").unlink()  # no torchrun: the checkpoint is resumed, not retrained
    results = recipe.main(args)["sparse_view"]
    assert "NETT epoch" not in capsys.readouterr().out
    assert results["_checks"]["NETT_selection"] == first["_checks"]["NETT_selection"]  # the stored choice
    assert results["_checks"]["NETT_selection"]["scores"] == two["selection"]["scores"]
    assert results["NETT"]["psnr"] == pytest.approx(first["NETT"]["psnr"], rel=1e-3)

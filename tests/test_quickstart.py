"""The README's quickstart runs end to end (smoke size) and its table is sane."""

from recipe_helpers import load_recipe


def test_quickstart_smoke(tmp_path):
    quickstart = load_recipe("quickstart")
    table = quickstart.main(["--smoke", "--output", str(tmp_path)])
    assert (tmp_path / "quickstart.png").exists() and (tmp_path / "run.json").exists()
    assert list((tmp_path / "checkpoints").glob("**/ckp_0.pth.tar"))
    psnr = {name.split(" ")[0]: row["PSNR"] for name, row in table.items()}
    assert psnr["TV"] > psnr["FBP"] + 1, psnr  # regularisation pays off even at smoke size


def test_learned_column_is_a_unet_on_the_fbp(tmp_path):
    """The table's "U-Net on FBP" is fed the FBP, not ``A_dagger``'s least squares (``ArtifactRemoval(mode="pinv")``)."""
    import torch

    quickstart = load_recipe("quickstart")
    args = quickstart.parse_args(["--smoke", "--output", str(tmp_path)])
    physics = quickstart.ct_physics(args.size, args.views)
    model = quickstart.train_post_processing(physics, args, tmp_path).eval()
    calls, original = [], physics.A_dagger

    def spy(y, *args, **kwargs):
        calls.append(kwargs.get("fbp", False))
        return original(y, *args, **kwargs)

    physics.A_dagger = spy
    with torch.no_grad():
        model(physics(torch.rand(2, 1, args.size, args.size)), physics)
    assert calls == [True]

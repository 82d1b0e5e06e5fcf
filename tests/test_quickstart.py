"""The README's quickstart runs end to end (smoke size) and its table is sane."""

from recipe_helpers import load_recipe


def test_quickstart_smoke(tmp_path):
    quickstart = load_recipe("quickstart")
    table = quickstart.main(["--smoke", "--output", str(tmp_path)])
    assert (tmp_path / "quickstart.png").exists() and (tmp_path / "run.json").exists()
    assert list((tmp_path / "checkpoints").glob("**/ckp_0.pth.tar"))
    psnr = {name.split(" ")[0]: row["PSNR"] for name, row in table.items()}
    assert psnr["TV"] > psnr["FBP"] + 1, psnr  # regularisation pays off even at smoke size

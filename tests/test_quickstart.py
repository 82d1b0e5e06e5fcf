"""The README's quickstart runs end to end (smoke size) and its table is sane."""

import importlib.util
from pathlib import Path

RECIPE = Path(__file__).parents[1] / "recipes" / "quickstart.py"


def test_quickstart_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("quickstart", RECIPE)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    table = quickstart.main(["--smoke", "--output", str(tmp_path)])
    assert (tmp_path / "quickstart.png").exists() and (tmp_path / "run.json").exists()
    assert list((tmp_path / "checkpoints").glob("**/ckp_0.pth.tar"))
    psnr = {name.split(" ")[0]: row["PSNR"] for name, row in table.items()}
    assert psnr["TV"] > psnr["FBP"] + 1, psnr  # regularisation pays off even at smoke size

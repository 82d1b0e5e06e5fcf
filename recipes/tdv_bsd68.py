r"""Reproduce the TDV column of Table 1 of the TDV paper: mean PSNR of Gaussian denoising on BSDS68.

Problem (Kobler et al., CVPR 2020, section 4.2, Table 1): denoise :math:`y = x + \frac{\sigma}{255} n`,
:math:`n \sim \mathcal{N}(0, I)`, for each image :math:`x` of a folder (default: the 68 images of CBSD68 converted
to the gray BSD68 with ITU-R BT.601 luma rounded to 8 bits), with the published TDV network trained at
:math:`\sigma_0 = 25` (:class:`deepinv_ext.algorithms.TDVNetwork`, 10 semi-implicit steps) and applied at
:math:`\sigma = 15, 25, 50` by rescaling: :math:`\hat x = \mathrm{VN}(s y)/s`, :math:`s = \sigma_0/\sigma`. The paper
reports 31.76 / 29.37 / 26.40 dB at :math:`\sigma` = 15 / 25 / 50.

Noise: for image ``i`` (0-based, in natural file-name order) at level ``sigma``, :math:`n` is ``torch.randn`` of
the image's shape, float32 on the CPU, from a ``torch.Generator`` seeded with
``(SEED * 100000 + round(100 * sigma)) * 100000 + i`` (seed 0, sigma 25, image 3: 250000003): the same noise
whatever the order, the ``--limit`` or the device. :math:`y` is not clipped. PSNR (peak 1) per image, three ways:
``raw`` (the network's float output, as the authors' demo script), ``clip`` (clipped to [0, 1]) and ``8bit``
(clipped and rounded to 8 bits); the table holds their means over the images.

Usage::

    python recipes/tdv_bsd68.py --output runs/tdv_bsd68_gray            # gray BSD68, sigma 25, 15, 50
    python recipes/tdv_bsd68.py --color --output runs/tdv_bsd68_color   # the colour weights on CBSD68
    python recipes/tdv_bsd68.py --data DIR --sigmas 25 --output runs/mine  # any folder of images
    python recipes/tdv_bsd68.py --smoke --output /tmp/tdv_bsd68_smoke   # two 64x64 crops (seconds)

Each image's result is appended to ``OUTPUT/per_image.jsonl`` as soon as it is computed; a rerun with the same
options skips those already there (it resumes), one with other options (data, weights, gray conversion, seed,
crop) is refused. Outputs: ``results.json`` (the table, ours beside the paper's), ``tdv_bsd68.png`` (an image noisy /
denoised / clean, and the PSNR per image), ``run.json`` (provenance). The experiment itself is in
``tdv_bsd68_run.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recipe_help import CBSD68, SHIPPED_IMAGES, HelpFormatter, published_tdv, setup_torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--data", help=f"folder of test images (default: {CBSD68})")
    p.add_argument("--checkpoint", help="published TDV weights (default: tests/data/tdv/tdv3-3-25-f32-gray.pth, "
                                        "or -color.pth with --color)")
    p.add_argument("--color", action="store_true", help="the colour weights on the colour images (no gray conversion)")
    p.add_argument("--gray", choices=("bt601", "matlab", "mean"),
                   help="gray conversion: bt601 (BT.601 luma rounded to 8 bits, the textbook BSD68; default), matlab "
                        "(MATLAB's rgb2gray: the circulating BSD68, pixel for pixel) or mean (channel mean, as the TDV "
                        "authors' demo)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[25.0, 15.0, 50.0],
                   help="noise levels on the 0..255 scale, in this order")
    p.add_argument("--sigma-train", type=float, default=25.0, help="noise level the weights were trained at")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the noise: image i at level sigma draws from torch.Generator().manual_seed("
                        "(SEED * 100000 + round(100 * sigma)) * 100000 + i)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--crop", type=int, help="only the centre CROP x CROP pixels of each image")
    p.add_argument("--output", default="runs/tdv_bsd68", help="output folder (results, figure, per-image records)")
    p.add_argument("--smoke", action="store_true", help="two 64x64 crops (tests/data/camera_96.png where ../shared "
                                                        "is absent): seconds")
    p.add_argument("--device", help="torch device (default: cuda where available, else cpu)")
    args = p.parse_args(argv)
    if args.color and args.gray:
        p.error("--gray converts to gray: it does not go with --color (the colour model keeps the colour)")
    if args.smoke:
        args.limit, args.crop = min(args.limit or 2, 2), min(args.crop or 64, 64)
        if args.data is None and not CBSD68.is_dir():
            args.data = str(SHIPPED_IMAGES)
    args.gray = None if args.color else (args.gray or "bt601")
    args.data = str(Path(args.data or CBSD68).resolve())
    args.checkpoint = str(Path(args.checkpoint or published_tdv(args.color)).resolve())
    if not Path(args.data).is_dir():
        p.error(f"--data {args.data}: no such folder of images (the default is ../shared/data/natural/CBSD68 beside "
                "the repository; pass --data DIR)")
    if not Path(args.checkpoint).is_file():
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    if any(not 0 < s < 1000 for s in args.sigmas) or not 0 < args.sigma_train < 1000:
        p.error(f"--sigmas and --sigma-train must lie in (0, 1000), got {args.sigmas} and {args.sigma_train}")
    for name in ("limit", "crop"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if not 0 <= args.seed < 10**6:
        p.error(f"--seed must lie in 0..999999, got {args.seed}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)  # --help and option errors answer here, before torch and deepinv load
    setup_torch(args)
    from tdv_bsd68_run import run

    return run(args)


if __name__ == "__main__":
    main()

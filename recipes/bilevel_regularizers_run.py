r"""The experiment of ``bilevel_regularizers.py`` (which states it and parses the options): for every problem, the
adversarial AR/ACR (with FBP and TV) by the functions of ``ct_learned_regularizers_evaluate.py``, the bilevel FoE
and ACR (``bilevel_regularizers_train.py``), then one table and one figure. Under ``torchrun`` every process trains;
rank 0 alone evaluates, prints and writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib
import torch
from bilevel_regularizers_train import ct_options, setting, split, test_bilevel, train_bilevel
from ct_learned_regularizers import METHODS
from ct_learned_regularizers_evaluate import evaluate_problem, finished, train_all
from recipe_help import data_parallel

from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ADVERSARIAL = ("AR", "ACR")
BASELINES = ("FBP", "TV")


def adversarial(problem: str, physics, data: dict, sets: dict, ct_args, out: Path, parallel) -> None:
    """FBP, TV and the adversarially trained AR and ACR of the CT recipe on ``problem``'s data and physics (the
    CT recipe's ``run_problem`` with this recipe's physics and images), unless done before in ``out``."""
    methods = [m for m in METHODS if m in BASELINES or m in ADVERSARIAL]
    parallel.on_main(out.mkdir, parents=True, exist_ok=True)
    if parallel.on_main(finished, out, methods, ct_args):
        if parallel.is_main:
            print(f"[{problem}] adversarial results found in {out}, skipped", flush=True)
        return
    priors, extra = train_all(problem, methods, physics, data, out, sets["val"], sets["train_x"], ct_args, parallel)
    parallel.on_main(evaluate_problem, problem, methods, priors, physics, sets["test"], sets["val"], sets["train_x"],
                     extra, ct_args, out)


def run_problem(problem: str, args, parallel) -> None:
    """Adversarial and bilevel training, tests and images of ``problem`` into ``OUTPUT/<problem>``."""
    ct_args = ct_options(args, problem)
    found = setting(problem, args, ct_args)
    if found is None:
        if parallel.is_main:
            print(f"[{problem}] skipped: no BSD68 test images in ../shared/data/natural/CBSD68", flush=True)
        return
    physics, data = found
    folder = args.output / problem
    sets = split(physics, data, args)
    adversarial(problem, physics, data, sets, ct_args, folder / "adversarial", parallel)
    results, images = {}, {}
    for name in args.methods:
        if parallel.is_main:
            print(f"[{problem}] bilevel learning of {name}", flush=True)
        model, record = train_bilevel(name, physics, data, sets["pairs"], args, ct_args, folder, parallel)
        if parallel.is_main:
            results[name], x_hat = test_bilevel(problem, name, model, record, physics, sets["test"])
            images[name] = x_hat[:1].cpu()
    if parallel.is_main:
        (folder / "bilevel.json").write_text(json.dumps(results, indent=1))
        torch.save(images, folder / "bilevel_images.pt")


def collect(args) -> tuple[dict, dict]:
    """The rows (method -> result) and the first test image of each method of every problem finished in
    ``--output``."""
    rows, images = {}, {}
    for problem in ("ct", "denoising"):
        folder = args.output / problem
        if not (folder / "bilevel.json").exists() or not (folder / "adversarial" / "results.json").exists():
            continue
        adv = json.loads((folder / "adversarial" / "results.json").read_text())
        imgs = torch.load(folder / "adversarial" / "images.pt", weights_only=True)
        rows[problem], images[problem] = {}, {"GT": imgs["GT"]}
        for m in (m for m in METHODS if m in adv):
            label = ("noisy" if problem == "denoising" and m == "FBP" else m) + (
                " (adversarial)" if m in ADVERSARIAL else "")
            rows[problem][label] = {**adv[m], "training": "adversarial" if m in ADVERSARIAL else "none",
                                    "train_s": adv["_checks"].get(f"{m}_train_s")}
            images[problem][label] = imgs[m]
        bilevel_images = torch.load(folder / "bilevel_images.pt", weights_only=True)
        for name, result in json.loads((folder / "bilevel.json").read_text()).items():
            rows[problem][f"{name} (bilevel)"], images[problem][f"{name} (bilevel)"] = result, bilevel_images[name]
    return rows, images


def table(rows: dict) -> str:
    """The markdown table of every problem's methods."""
    lines = ["| problem | method | PSNR (dB) | SSIM | training time (s) | lower-level iterations per training step "
             "| solver iterations at test |", "|---" * 7 + "|"]
    for problem, methods in rows.items():
        for label, r in methods.items():
            train_s = "-" if r.get("train_s") is None else f"{r['train_s']:.0f}"
            per_step = f"{r['iterations_per_step']:.1f}" if "iterations_per_step" in r else "-"
            lines.append(f"| {problem} | {label} | {r['psnr']:.2f} | {r['ssim']:.3f} | {train_s} | {per_step} "
                         f"| {r.get('iterations', '-')} |")
    return "Test PSNR / SSIM (means over the test images)\n\n" + "\n".join(lines)


def figure(rows: dict, images: dict, path: Path) -> None:
    """One row per problem: the ground truth and every method's reconstruction of the first test image."""
    cols = max(len(imgs) for imgs in images.values())
    fig, axes = plt.subplots(len(images), cols, figsize=(2.2 * cols, 2.8 * len(images)), squeeze=False)
    for row, (problem, imgs) in enumerate(images.items()):
        for ax in axes[row]:
            ax.axis("off")
        for ax, (label, img) in zip(axes[row], imgs.items()):
            ax.imshow(img[0, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            psnr = "" if label == "GT" else f"\n{rows[problem][label]['psnr_per_image'][0]:.2f} dB"
            ax.set_title(label.replace(" (", "\n(") + psnr, fontsize=8)
        axes[row, 0].text(-0.1, 0.5, problem, rotation=90, va="center", ha="right", transform=axes[row, 0].transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_outputs(args, t0: float) -> dict:
    """``results.md``, ``results.json`` and ``bilevel_regularizers.png`` of every finished problem."""
    rows, images = collect(args)
    text = table(rows)
    print(text)
    (args.output / "results.md").write_text(text + "\n")
    (args.output / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    if images:
        figure(rows, images, args.output / "bilevel_regularizers.png")
    print(f"total {time.time() - t0:.0f} s; outputs in {args.output}", flush=True)
    return rows


def run(args) -> dict:
    """The whole experiment for parsed options (every problem of ``--problems``, then the table and figure)."""
    torch.set_num_threads(args.threads)
    with data_parallel(args) as parallel:  # one process, or each of torchrun's (on its device)
        if args.smoke and parallel.is_main:
            print("smoke run: tiny sizes, one epoch, solves of a few iterations (the table is no result; the "
                  "solvers' NotConvergedWarning is expected)")
        seed_everything(args.seed)
        parallel.on_main(save_run_record, args.output, {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(args).items()}, args.seed)
        t0 = time.time()
        for problem in args.problems:
            run_problem(problem, args, parallel)
        return parallel.on_main(save_outputs, args, t0)

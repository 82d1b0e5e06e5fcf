r"""The evaluation job of ``ct_learned_regularizers.py``: the choice of lambda and budget, the test solves, the
checks of the trained regularisers, the table and the figure.

Every method reconstructs from the Hann-filtered FBP and stops by its relative change or after its budget
:math:`K`: AR, ACR and NETT by :class:`deepinv_ext.algorithms.VariationalSolver` on
:math:`\tfrac12\|Ax - y\|^2 + \lambda R(x)`, TV by :class:`~deepinv_ext.algorithms.fista.FISTASolver` with deepinv's
``TVPrior``. The weight :math:`\lambda_0` of the heuristic balances the gradients at the training ground truths,
:math:`\mathbb{E}\|A^\top(Ax - y)\| / \mathbb{E}\|\nabla R(x)\|` (TV: through a smoothed TV); for AR and ACR Lunz et
al.'s :math:`\mathbb{E}\|A^\top(Ax - y)\|` is recorded too (``lambda_lunz``). Under ``torchrun`` rank 0 alone evaluates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from ct_learned_regularizers import LEARNED, METHODS
from ct_learned_regularizers_train import datasets, fbp, make_physics, measure, stack, train, training_config
from recipe_help import data_parallel

from deepinv_ext.algorithms import (
    FISTASolver,
    VariationalSolver,
    discrepancy_lambda,
    gradient_balance_lambda,
    noise_norm_gaussian,
    noise_norm_log_poisson,
    select_lambda_and_budget,
)
from deepinv_ext.priors import ConvexAdversarialRegularizer, ScaledPrior
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEGMENT = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


# ------------------------------------------------------------------------------------------------ reconstruction
def operator_sqnorm(physics, device, iters: int) -> float:
    r""":math:`\|A\|^2` by ``iters`` power iterations from a random image."""
    start = torch.rand(1, 1, *physics.img_size, device=device)
    return float(physics.compute_sqnorm(start, max_iter=iters, verbose=False))


def reconstruct(method: str, prior, lam: float, y, physics, max_iter: int, tol: float, info: dict | None = None,
                record: tuple[int, ...] = ()):
    """The reconstruction of ``method`` from the FBP and its iterates at ``record`` (none for FBP)."""
    if method == "FBP":
        return fbp(y, physics), {}
    if method == "TV":
        solver = FISTASolver(dinv.optim.TVPrior(def_crit=1e-6, n_it_max=100), lam, max_iter=max_iter, tol=tol,
                             lipschitz=operator_sqnorm(physics, y.device, iters=50) * 1.01, record=record)
    else:
        solver = VariationalSolver(ScaledPrior(prior, lam), weight=1.0, max_iter=max_iter, tol=tol, record=record,
                                   lipschitz_init=operator_sqnorm(physics, y.device, iters=20))
    x = solver(y, physics, x_init=fbp(y, physics))
    if info is not None:
        info["iterations"] = solver.iterations
        if method != "TV":
            info["monotone"] = solver.monotone()
        info["max_iter"] = max_iter
    return x, solver.snapshots


def psnr_ssim(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return dinv.metric.PSNR(max_pixel=1.0)(x_hat, x), dinv.metric.SSIM(max_pixel=1.0)(x_hat, x)


class SmoothTV:
    r"""The gradient of a smoothed TV, :math:`\sum\sqrt{|\nabla x|^2 + 10^{-4}}`, for the heuristic of TV's
    :math:`\lambda_0` (deepinv's ``TVPrior`` has a prox but no gradient)."""

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            dx, dy = z[..., 1:, :-1] - z[..., :-1, :-1], z[..., :-1, 1:] - z[..., :-1, :-1]
            return torch.autograd.grad(torch.sqrt(dx ** 2 + dy ** 2 + 1e-4).sum(), z)[0]


def noise_norm(problem: str, y: torch.Tensor, args) -> torch.Tensor:
    if problem == "sparse_view":
        return noise_norm_gaussian(args.sigma, y)
    return noise_norm_log_poisson(y, args.photons, args.mu)


def choose_lambda(method, prior, problem, physics, train_x, val_x, val_y, args) -> dict:
    """lambda (and, by the validation rule, the budget K) of ``method`` by ``--lambda-rule``."""
    with torch.no_grad():
        pairs = [(train_x[i:i + 8], measure(physics, train_x[i:i + 8], args.seed + 7 + i))
                 for i in range(0, min(len(train_x), 32), 8)]
    lam0 = gradient_balance_lambda(pairs, physics, SmoothTV() if method == "TV" else prior)
    record = {"lambda0": lam0, "rule": args.lambda_rule}
    if method in ("AR", "ACR"):
        record["lambda_lunz"] = gradient_balance_lambda(pairs, physics)
    if args.lambda_rule == "heuristic":
        record["lambda"] = lam0
    elif args.lambda_rule == "validation":
        budgets = tuple(k for k in args.budgets if k <= args.val_iters) or (args.val_iters,)
        record["lambda"], record["budget"], record["validation_psnr"] = select_lambda_and_budget(
            lambda lam, ks: reconstruct(method, prior, lam, val_y, physics, max(ks), args.tol, record=ks)[1],
            lambda x: psnr_ssim(x, val_x)[0].mean(), [lam0 * 2.0 ** k for k in args.grid], budgets)
    else:
        lam, trace = discrepancy_lambda(
            lambda lam: reconstruct(method, prior, lam, val_y, physics, args.val_iters, args.tol)[0], val_y,
            physics, noise_norm(problem, val_y, args), lam_range=(lam0 / 64, lam0 * 64), steps=len(args.grid) + 2)
        record.update(**{"lambda": lam, "discrepancy_trace": trace})
    return record


# ------------------------------------------------------------------------------------------------ checks
@torch.no_grad()
def segment_profile(prior, clean: torch.Tensor, artefact: torch.Tensor) -> list[float]:
    r"""The regulariser along the segment from clean images :math:`x` to their artefact images :math:`z`,
    :math:`(R(x + t(z - x)) - R(x)) / (R(z) - R(x))` at :math:`t` in ``SEGMENT``, averaged over the images:
    :math:`t` for a linear rise (a Wasserstein critic), :math:`t^2` for a quadratic one; values near 0 for
    :math:`t \le 1/2` mean that the regulariser does not see half the artefact."""
    r0, r1 = prior.fn(clean), prior.fn(artefact)
    return [float(((prior.fn(clean + t * (artefact - clean)) - r0) / (r1 - r0)).mean()) for t in SEGMENT]


@torch.no_grad()
def acr_convexity(prior: ConvexAdversarialRegularizer, images: torch.Tensor, pairs: int, seed: int) -> dict:
    """Midpoint convexity on random pairs (phantom + noise and random images) and along random lines."""
    g = torch.Generator().manual_seed(seed)
    images, device = images.cpu(), images.device
    idx = torch.randint(len(images), (pairs,), generator=g)
    a = (images[idx] + 0.2 * torch.randn(images[idx].shape, generator=g)).to(device)
    b = (torch.rand(a.shape, generator=g) * 1.5 - 0.25).to(device)
    gaps = torch.cat([prior.midpoint_convexity_gap(a[i:i + 64], b[i:i + 64]) for i in range(0, pairs, 64)])
    scale = torch.cat([prior.fn(a[i:i + 64]).abs() for i in range(0, pairs, 64)])
    tol = 1e-5 * scale.clamp(min=1.0)
    lines, points = 16, 41
    t = torch.linspace(-1, 1, points, device=device).reshape(1, points, 1, 1, 1)
    base = images[torch.randint(len(images), (lines,), generator=g)].to(device)
    direction = torch.randn(base.shape, generator=g).to(device)
    values = torch.cat([prior.fn((base[i:i + 1, None] + t * direction[i:i + 1, None]).flatten(0, 1))
                        for i in range(lines)]).reshape(lines, points)
    second = values[:, 2:] - 2 * values[:, 1:-1] + values[:, :-2]
    line_tol = 1e-5 * values.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
    return {"pairs": pairs, "pair_failures": int((gaps > tol).sum()), "max_gap": float(gaps.max()),
            "lines": lines, "points_per_line": points, "line_failures": int((second < -line_tol).sum()),
            "min_second_difference": float(second.min())}


# ------------------------------------------------------------------------------------------------ one problem
def finished(out, methods: list[str], args) -> bool:
    """Whether the results of an earlier run in ``out`` cover ``methods``, each learned one from its current
    checkpoint and options (else it is evaluated again: a run of more methods, or of a regulariser trained anew)."""
    if not ((out / "results.json").exists() and (out / "images.pt").exists()):
        return False
    done = json.loads((out / "results.json").read_text())
    return all(m in done and (m not in LEARNED or ((out / f"{m}.pt").exists() and done["_checks"].get(
        f"{m}_config") == training_config(args, m))) for m in methods)


def train_all(problem, methods, physics, data, out, val, train_x, args, parallel) -> tuple[dict, dict]:
    """Train (or resume) each learned regulariser, the epochs scored by the validation lambda choice."""
    priors, extra = {}, {}
    for method in (m for m in methods if m in LEARNED):
        t0 = time.time()
        if parallel.is_main:
            print(f"[{problem}] training {method}", flush=True)

        def score(prior, method=method):
            choice = choose_lambda(method, prior, problem, physics, train_x, *val, args)
            if "validation_psnr" in choice:
                choice["score"] = choice["validation_psnr"][choice["lambda"]][choice["budget"]]  # the best pair
            else:
                x_hat, _ = reconstruct(method, prior, choice["lambda"], val[1], physics, args.val_iters, args.tol)
                choice["score"] = float(psnr_ssim(x_hat, val[0])[0].mean())
            return choice

        priors[method], extra[f"{method}_selection"] = train(method, physics, data["train"], args,
                                                            out / f"{method}.pt", score, parallel)
        extra[f"{method}_config"] = training_config(args, method)
        extra[f"{method}_train_s"] = time.time() - t0
    return priors, extra


def evaluate(problem, method, prior, physics, test, val, train_x, extra, args) -> tuple[dict, torch.Tensor]:
    """The test solve of ``method`` with its lambda (and budget) choice; prints its line of the log."""
    t0, info = time.time(), {}
    lam, iters = 0.0, args.iters
    if method != "FBP":
        chosen = extra.get(f"{method}_selection", {}).get("choice")  # made when the kept epoch was scored
        info["lambda"] = chosen or choose_lambda(method, prior, problem, physics, train_x, *val, args)
        lam, iters = info["lambda"]["lambda"], info["lambda"].get("budget", args.iters)
    x_hat, _ = reconstruct(method, prior, lam, test[1], physics, iters, args.tol, info)
    psnr, ssim = psnr_ssim(x_hat, test[0])
    result = {"psnr": float(psnr.mean()), "ssim": float(ssim.mean()), "psnr_per_image": psnr.tolist(),
              "seconds": time.time() - t0, **info}
    print(f"[{problem}] {method:5s} PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}"
          f"  lambda {lam:.4g}  {info.get('iterations', '')} it  ({time.time() - t0:.0f} s)", flush=True)
    return result, x_hat


def check_regularizers(problem, priors, physics, val, test_x, extra, args) -> None:
    """Each regulariser along clean -> training FBP, and the convexity of the trained ACR, into ``extra``."""
    val_artefact = fbp(val[1], physics, args.train_filter)
    for method, prior in priors.items():
        extra[f"{method}_segment_profile"] = dict(zip(map(str, SEGMENT), segment_profile(prior, val[0], val_artefact)))
        print(f"[{problem}] {method} along clean -> FBP ({args.train_filter}), (R(x_t) - R(x)) / (R(z) - R(x)) at t = "
              + ", ".join(f"{t}: {v:.3f}" for t, v in extra[f"{method}_segment_profile"].items()), flush=True)
    if "ACR" in priors:
        extra["acr_convexity"] = acr_convexity(priors["ACR"], test_x, args.convexity_pairs, args.seed + 3)
        print(f"[{problem}] ACR convexity: {extra['acr_convexity']}", flush=True)


def run_problem(problem: str, args, data: dict, parallel) -> None:
    """Train (every process), evaluate and check (rank 0) every method on one problem, unless done before."""
    out = args.output / problem
    parallel.on_main(out.mkdir, parents=True, exist_ok=True)
    methods = [m for m in METHODS if m not in LEARNED or m in args.methods]
    if parallel.on_main(finished, out, methods, args):
        if parallel.is_main:
            print(f"[{problem}] results found in {out}, skipped", flush=True)
        return
    physics = make_physics(problem, args)
    train_x = stack(data["train"], args.device, n=32)  # the lambda heuristics use 32 training images
    val_x, test_x = stack(data["val"], args.device), stack(data["test"], args.device)
    val = (val_x, measure(physics, val_x, args.seed + 1))
    test = (test_x, measure(physics, test_x, args.seed + 2))
    priors, extra = train_all(problem, methods, physics, data, out, val, train_x, args, parallel)
    parallel.on_main(evaluate_problem, problem, methods, priors, physics, test, val, train_x, extra, args, out)


def evaluate_problem(problem, methods, priors, physics, test, val, train_x, extra, args, out) -> None:
    """Evaluate and check every method, then write ``results.json`` and ``images.pt`` of the problem."""
    results, images = {}, {"GT": test[0]}
    for method in methods:
        results[method], images[method] = evaluate(problem, method, priors.get(method), physics, test, val, train_x,
                                                   extra, args)
    check_regularizers(problem, priors, physics, val, test[0], extra, args)
    results["_checks"] = extra
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    torch.save({k: v[:1].cpu() for k, v in images.items()}, out / "images.pt")


# ------------------------------------------------------------------------------------------------ table and figure
def save_outputs(args, t0: float) -> dict:
    """The table and the figure of every problem finished in ``--output``; returns their results."""
    all_results, all_images = {}, {}
    for problem in ("sparse_view", "low_dose"):
        folder = args.output / problem
        if (folder / "results.json").exists():
            all_results[problem] = json.loads((folder / "results.json").read_text())
            all_images[problem] = torch.load(folder / "images.pt", weights_only=True)
    methods = [m for m in METHODS if any(m in res for res in all_results.values())]
    lines = ["| problem | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for problem, res in all_results.items():
        lines.append(f"| {problem} | " + " | ".join(f"{res[m]['psnr']:.2f} / {res[m]['ssim']:.3f}" if m in res
                                                    else "-" for m in methods) + " |")
    table = "PSNR (dB) / SSIM, mean over the test phantoms\n\n" + "\n".join(lines)
    print(table)
    (args.output / "results.md").write_text(table + "\n")
    (args.output / "results.json").write_text(json.dumps(all_results, indent=1, default=str))
    cols = ["GT", *methods]
    fig, axes = plt.subplots(len(all_images), len(cols), figsize=(2.2 * len(cols), 2.8 * len(all_images)),
                             squeeze=False)
    for row, (problem, imgs) in enumerate(all_images.items()):
        for col, name in enumerate(cols):
            ax = axes[row, col]
            if name not in imgs:
                ax.axis("off")
                continue
            ax.imshow(imgs[name][0, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            title = name if name == "GT" else f"{name}\n{all_results[problem][name]['psnr_per_image'][0]:.2f} dB"
            ax.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(problem.replace("_", " "))
    fig.tight_layout()
    fig.savefig(args.output / "ct_learned_regularizers.png", dpi=120)
    plt.close(fig)
    print(f"total {time.time() - t0:.0f} s; outputs in {args.output}")
    return all_results


def run(args) -> dict:
    """The whole experiment for parsed options: every problem of ``--problems``, then the table and the figure of
    every problem finished in ``--output`` (problems may run in separate processes; under ``torchrun``, rank 0)."""
    torch.set_num_threads(args.threads)
    with data_parallel(args) as parallel:  # one process, or each of torchrun's (on its device)
        if args.smoke and parallel.is_main:
            print("smoke run: checks skipped (one epoch on tiny phantoms, solves of a few iterations: the table is "
                  "no result, and the solvers' NotConvergedWarning is expected)")
        seed_everything(args.seed)
        parallel.on_main(save_run_record, args.output, {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(args).items()}, args.seed)
        data = datasets(args)
        t0 = time.time()
        for problem in args.problems:
            run_problem(problem, args, data, parallel)
        return parallel.on_main(save_outputs, args, t0)

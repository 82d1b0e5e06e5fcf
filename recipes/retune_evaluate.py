r"""The experiments and the evaluation of ``retune.py``: each model trained, then evaluated at its depth and at its
fixed point; the depth/restart sweep; the table, the figure checks and the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from retune_train import (
    make_data,
    make_physics,
    physics_for,
    pnp_layer,
    pretrain_denoiser,
    train,
    wavelet_layer,
)

from deepinv_ext.algorithms import (
    ReTune,
    deq_baseline,
    full_unrolling,
    jacobian_free_error,
    layer_lipschitz,
    standard_unrolling,
    untrained,
)
from deepinv_ext.data_parallel import DataParallel
from deepinv_ext.losses import LipschitzPenalty
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# ----------------------------------------------------------------------------------------------- evaluation
def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    return float(dinv.metric.PSNR()(x_hat.clamp(0, 1), x).mean())


@torch.no_grad()
def evaluate(model: torch.nn.Module, test, physics, layer, a) -> dict:
    """PSNR as trained (depth) and at the fixed point, restarts, residual and Lipschitz constant there."""
    x = test
    y = physics(x)
    out: dict = {}
    model.eval()
    if isinstance(model, ReTune):
        inference = model.inference
        model.inference = "unrolled"
        out["psnr_depth"] = psnr(model(y, physics), x)
        model.inference = "fixed_point"
        model.tol, model.max_restarts = a.tol, a.max_restarts
        x_fp = model(y, physics)
        model.inference = inference
        out.update(restarts=model.last_restarts, residual=model.residual_history[-1])
        out["residual_history"] = model.residual_history
    else:  # deepinv DEQ (PGD): its own forward runs to the fixed point
        model.fixed_point.max_iter, model.thres_conv = a.max_restarts * a.depth, a.tol
        x_fp = model(y, physics)
        res = ReTune.relative_residual(_deq_step(model, x_fp, y, physics), x_fp)
        out.update(psnr_depth=float("nan"), restarts=float("nan"), residual=res)
    out["psnr_fixed_point"] = psnr(x_fp, x)
    with torch.enable_grad():
        out["lipschitz"] = float(layer_lipschitz(layer, x_fp, y, physics, n_iter=a.lip_iters).max())
    out["x_fp"] = x_fp
    return out


def _deq_step(deq, x, y, physics):
    gamma = deq.params_algo["stepsize"][0]
    v = x - gamma * physics.A_adjoint(physics.A(x) - y)
    return deq.prior[0].prox(v, gamma=gamma)


# ----------------------------------------------------------------------------------------------- experiments
class Experiment:
    """The shared setting of every model: data, physics, budget, processes; :meth:`run` trains one model (on every
    process) and evaluates it (on rank 0 alone: ``rows`` stays empty on the others)."""

    def __init__(self, a, parallel: DataParallel):
        self.a, self.ckpt_dir, self.rows, self.parallel = a, Path(a.output) / "ckpt", {}, parallel
        parallel.on_main(self.ckpt_dir.mkdir, parents=True, exist_ok=True)
        self.train_images, test = make_data(a)
        self.test = test.to(a.device)
        physics, self.beta = make_physics(a)
        self.train_physics = physics.to(a.device)
        self.test_physics = physics_for(a, self.test.shape[-1], a.device)

    def train(self, name, model, losses, steps) -> dict:
        return train(name, model, losses, self.a, self.train_images, self.train_physics, self.ckpt_dir, steps,
                     self.a.device, self.parallel)

    def evaluate(self, model, layer) -> dict:
        torch.manual_seed(self.a.seed + 123)  # the same test noise for every model
        return evaluate(model, self.test, self.test_physics, layer, self.a)

    def run(self, name, model, layer, losses, steps=None) -> None:
        steps = self.a.steps if steps is None else steps
        stats = self.train(name, model, losses, steps) if steps else {}
        self.parallel.on_main(self.record, name, stats, model, layer)

    def record(self, name, stats, model, layer) -> None:
        """Evaluate a trained model, keep and print its row."""
        r = self.rows[name] = {**stats, **self.evaluate(model, layer)}
        print(f"{name:>16s}: PSNR depth {cell(r['psnr_depth'], '.2f', 1)} | fixed point {r['psnr_fixed_point']:.2f} "
              f"dB ({cell(r['restarts'], '', 1)} restarts, residual {r['residual']:.1e}, "
              f"Lipschitz {r['lipschitz']:.3f})")  # "-": DEQ has no depth and no restarts


def wavelet_part(ex: Experiment, sup, monitor: dict) -> None:
    """Untrained, unrolled and ReTune wavelet (variational) layers."""
    a, L, R = ex.a, ex.a.depth, ex.a.restarts
    u = untrained(wavelet_layer(ex.beta, a.task).to(a.device), depth=L)
    ex.run("wavelet-untrained", u, u.iteration, [], steps=0)
    m = standard_unrolling(wavelet_layer(ex.beta, a.task).to(a.device), L)
    ex.run("wavelet-unroll", m, m.iteration, [sup])
    m = ReTune(wavelet_layer(ex.beta, a.task).to(a.device), depth=L, restarts=R, monitor_every=max(a.steps // 5, 2))
    ex.run("wavelet-retune", m, m.iteration, [sup])
    monitor["wavelet-retune"] = m.monitor_log


def pnp_part(ex: Experiment, sup, monitor: dict) -> None:
    """PnP layers with a pretrained DnCNN, fine-tuned under a Lipschitz penalty, against their baselines."""
    a, L, R, beta = ex.a, ex.a.depth, ex.a.restarts, ex.beta
    den = pretrain_denoiser(a, ex.train_images, ex.ckpt_dir, a.device, ex.parallel)

    def penalty(layer=None):
        return LipschitzPenalty(weight=a.penalty, eps=a.penalty_eps, max_iter=a.penalty_iters, reduced_batchsize=1,
                                layer=layer)

    u = untrained(pnp_layer(den, beta, a.task).to(a.device), depth=L)
    ex.run("pnp-untrained", u, u.iteration, [], steps=0)
    if a.anchor > 0:  # the anchored layer before training: what ReTune starts from
        u = untrained(pnp_layer(den, beta, a.task, a.anchor).to(a.device), depth=L)
        ex.run("pnp-anchored-untrained", u, u.iteration, [], steps=0)
    m = standard_unrolling(pnp_layer(den, beta, a.task, a.anchor).to(a.device), L)
    ex.run("pnp-unroll", m, m.iteration, [sup, penalty()])
    m = full_unrolling(pnp_layer(den, beta, a.task, a.anchor).to(a.device), L, R)
    ex.run("pnp-full-unroll", m, m.iteration, [sup, penalty()])
    deq = deq_baseline(pnp_layer(den, beta, a.task), max_iter=(R + 1) * L, tol=a.tol).to(a.device)
    ex.run("pnp-deq", deq, deq.prior[0].layer, [sup, penalty(deq.prior[0].layer)])
    m = ReTune(pnp_layer(den, beta, a.task, a.anchor).to(a.device), depth=L, restarts=R,
               monitor_every=max(a.steps // 5, 2))
    ex.run("pnp-retune", m, m.iteration, [sup, penalty()])
    monitor["pnp-retune"] = m.monitor_log


def sweep_part(ex: Experiment, sup) -> list[dict]:
    """The depth/restart interplay of the wavelet layer: PSNR at the fixed point and the Jacobian-free error."""
    sweep = []
    for d in ex.a.sweep_depths:
        for r in ex.a.sweep_restarts:
            mm = ReTune(wavelet_layer(ex.beta, ex.a.task).to(ex.a.device), depth=d, restarts=r)
            stats = ex.train(f"sweep-L{d}-R{r}", mm, [sup], ex.a.sweep_steps)
            ex.parallel.on_main(sweep_point, ex, mm, stats, sweep)
    return sweep


def sweep_point(ex: Experiment, model: ReTune, stats: dict, sweep: list[dict]) -> None:
    """Evaluate one trained (L, R) point of the sweep and append its row to ``sweep``."""
    d, r = model.depth, model.restarts
    ev = ex.evaluate(model, model.iteration)
    y = ex.test_physics.A(ex.test)  # JF error of the L-layer adjoint at the fixed point, for the MSE gradient
    jf = jacobian_free_error(model.iteration, ev["x_fp"], y, ex.test_physics, ev["x_fp"] - ex.test, d,
                             n_iter=ex.a.jf_iters)
    sweep.append({"L": d, "R": r, "psnr_fixed_point": ev["psnr_fixed_point"], "jf_error": jf,
                  "jf_bound": ev["lipschitz"] ** d, "lipschitz": ev["lipschitz"], **stats})
    print(f"sweep L={d:2d} R={r:2d}: PSNR {ev['psnr_fixed_point']:.2f} dB, JF error {jf:.2e} "
          f"(bound rho^L {ev['lipschitz'] ** d:.2e})")


def run(a, parallel: DataParallel) -> dict:
    """Every part of ``--parts`` for parsed options, trained by ``parallel``'s processes (one, or each of
    ``torchrun``'s), then the table, the checks and the figures (rank 0 alone evaluates and writes; the others
    return empty rows)."""
    seed_everything(a.seed)
    parallel.on_main(save_run_record, Path(a.output), vars(a), a.seed)
    ex, sup, monitor, sweep = Experiment(a, parallel), dinv.loss.SupLoss(), {}, []
    if "wavelet" in a.parts:
        wavelet_part(ex, sup, monitor)
    if "pnp" in a.parts:
        pnp_part(ex, sup, monitor)
    if "sweep" in a.parts:
        sweep = sweep_part(ex, sup)
    parallel.on_main(report, a, ex.rows, sweep, monitor, ex.test, Path(a.output))
    parallel.on_main(figures, a, ex.rows, sweep, ex.test, Path(a.output))
    return {"rows": ex.rows, "sweep": sweep}


# ----------------------------------------------------------------------------------------------- table and figures
def figure_checks(rows: dict, tol: float) -> list[str]:
    """The issue's figures for each trained layer kind: ReTune reaches its fixed point, is contractive there, beats
    the untrained layer and is at least as good as standard unrolling evaluated at its depth."""
    out = []
    for kind in ("wavelet", "pnp"):
        rt, un, ur = (rows.get(f"{kind}-{n}") for n in ("retune", "untrained", "unroll"))
        if rt is None or un is None or ur is None:
            continue
        checks = {"fixed point reached": rt["residual"] < tol, "contractive (Lipschitz < 1)": rt["lipschitz"] < 1,
                  "beats untrained": rt["psnr_fixed_point"] > un["psnr_fixed_point"],
                  "at least unrolling at depth L": rt["psnr_fixed_point"] >= ur["psnr_depth"]}
        out.append(f"{kind}-retune: " + "; ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items()))
    return out


def cell(value, fmt: str, width: int) -> str:
    """``value`` formatted, or "-" where a column does not apply (DEQ has no depth and no restarts)."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return f"{'-':>{width}s}" if missing else f"{value:{width}{fmt}}"


def report(a, rows: dict, sweep: list, monitor: dict, test, out_dir: Path) -> None:
    """Print and save the table and the figure checks; save ``results.json``."""
    header = (f"{'model':>18s} | {'PSNR@depth':>10s} | {'PSNR@fixed pt':>13s} | {'restarts':>8s} | {'residual':>8s}"
              f" | {'Lipschitz':>9s} | {'act. MB':>8s} | {'s/step':>7s}")
    lines = [f"task={a.task} L={a.depth} R={a.restarts} steps={a.steps} batch={a.batch} patch={a.patch} "
             f"test={tuple(test.shape)}", header, "-" * len(header)]
    for name, r in rows.items():
        lines.append(" | ".join([f"{name:>18s}", cell(r["psnr_depth"], ".2f", 10), cell(r["psnr_fixed_point"], ".2f", 13),
                                 cell(r["restarts"], "", 8), cell(r["residual"], ".1e", 8),
                                 cell(r["lipschitz"], ".3f", 9), cell(r.get("saved_MB"), ".2f", 8),
                                 cell(r.get("time_per_step_s"), ".3f", 7)]))
    lines += (["smoke run: figure checks skipped (a few training steps on tiny images mean nothing)"] if a.smoke
              else figure_checks(rows, a.tol))
    table = "\n".join(lines)
    print(table)
    (out_dir / "table.txt").write_text(table + "\n")
    clean = {k: {kk: vv for kk, vv in v.items() if kk not in ("x_fp", "residual_history")} for k, v in rows.items()}
    (out_dir / "results.json").write_text(json.dumps({"rows": clean, "sweep": sweep, "monitor": monitor},
                                                     indent=2, default=float))


def figures(a, rows: dict, sweep: list, test, out_dir: Path) -> None:
    """The depth/restart interplay and the inference residuals; the PnP reconstructions."""
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for d in a.sweep_depths:
        pts = [s for s in sweep if s["L"] == d]
        ax[0].plot([s["R"] for s in pts], [s["psnr_fixed_point"] for s in pts], "o-", label=f"L={d}")
    ax[0].set(xlabel="restarts R in training", ylabel="PSNR at the fixed point (dB)", title="wavelet layer")
    ax[0].legend()
    for r in a.sweep_restarts:
        pts = [s for s in sweep if s["R"] == r]
        ax[1].semilogy([s["L"] for s in pts], [max(s["jf_error"], 1e-16) for s in pts], "o-", label=f"R={r}")
        ax[1].semilogy([s["L"] for s in pts], [s["jf_bound"] for s in pts], "k:", alpha=0.4)
    ax[1].set(xlabel="depth L", ylabel="relative JF error (dotted: rho^L)", title="Jacobian-free error")
    ax[1].legend()
    for name in ("wavelet-retune", "pnp-retune", "pnp-untrained", "pnp-unroll"):
        if name in rows:
            ax[2].semilogy(rows[name]["residual_history"], label=name)
    ax[2].axhline(a.tol, color="k", ls="--", lw=0.8)
    ax[2].set(xlabel="layer applications at inference", ylabel="||x_{k+1}-x_k|| / ||x_k||", title="residual")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "retune_interplay.png", dpi=120)
    plt.close(fig)

    names = [n for n in ("pnp-untrained", "pnp-unroll", "pnp-deq", "pnp-retune") if n in rows]
    fig, ax = plt.subplots(1, len(names) + 1, figsize=(3 * (len(names) + 1), 3.8), squeeze=False)
    ax = ax[0]
    ax[0].imshow(test[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    ax[0].set_title("ground truth")
    for axi, n in zip(ax[1:], names):
        axi.imshow(rows[n]["x_fp"][0, 0].clamp(0, 1).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axi.set_title(f"{n}\n{rows[n]['psnr_fixed_point']:.2f} dB")
    for axi in ax:
        axi.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "retune_reconstructions.png", dpi=120)
    plt.close(fig)
    print(f"figures, table, results.json and run.json in {out_dir}")

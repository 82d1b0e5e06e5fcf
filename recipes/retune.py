r"""ReTune: learn a forward-backward / PnP layer at equilibrium with restarted truncated unrolling.

Problem: deblur (Gaussian kernel, circular boundary, Gaussian noise; ``--task denoise`` for denoising) grayscale
natural images shipped with scikit-image (:class:`deepinv_ext.datasets.SkimageImagesDataset`, or the images of
``--data-dir``). Every model iterates the same kind of layer
:math:`T_\theta(x) = P_\theta(x - \gamma A^\top(Ax - y))` and is trained on the same patches with the same budget
(steps, batch, Adam), deepinv's supervised loss and, for the PnP layers, a Jacobian spectral-norm penalty that
keeps the layer contractive:

- **wavelet** layers (:math:`P_\theta` = prox of a weighted :math:`\ell_1` norm in an orthonormal wavelet basis):
  untrained (initial parameters), standard unrolling of :math:`L` layers, ReTune (:math:`R` restarts + :math:`L`);
- **PnP** layers (:math:`P_\theta` = a relaxed DnCNN denoiser, first pretrained here on Gaussian denoising of the
  same patches): untrained PnP, standard unrolling, full unrolling of :math:`(R+1)L` layers, deepinv's
  Jacobian-free DEQ (``PGD(..., DEQ=DEQConfig(jacobian_free=True))``) and ReTune (denoiser fine-tuned). The
  layer's scalars (step, noise level, relaxation) learn at ``--lr``, the pretrained denoiser's weights at the
  smaller ``--denoiser-lr`` (with both at ``5e-3``, anchored ReTune fell below untrained PnP on one seed of three).

Reported: PSNR of each at depth (as trained) and at its fixed point (restarted until
:math:`\|x_{k+1}-x_k\|/\|x_k\| < 10^{-5}` or a cap), restarts needed, the layer's Lipschitz constant at the fixed
point (power iteration), peak training memory (bytes saved for backward; CUDA peak on a GPU) and time per step;
the issue's checks (fixed point reached, contractive there, better than the untrained layer, at least as good
as standard unrolling at depth :math:`L`); a figure of the depth/restart interplay (wavelet layer: PSNR at the
fixed point and measured Jacobian-free error as functions of :math:`L` and :math:`R`) and of the inference
residuals. Checkpoints in ``--output/ckpt`` resume exactly (they keep the RNG state; a checkpoint of other options
is refused); a provenance record is saved beside the results::

    python recipes/retune.py --output runs/retune            # about 15 min on one CPU thread
    python recipes/retune.py --smoke --output runs/retune_smoke
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib
from pathlib import Path

import deepinv as dinv
import matplotlib
import torch
from deepinv.physics.functional.blur import gaussian_blur
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepinv_ext.algorithms import (
    AnchoredLayer,
    ForwardBackwardLayer,
    LipschitzPenalty,
    PnPForwardBackwardLayer,
    ReTune,
    SavedTensorMeter,
    WaveletL1Prior,
    deq_baseline,
    full_unrolling,
    jacobian_free_error,
    layer_lipschitz,
    standard_unrolling,
    untrained,
)
from deepinv_ext.datasets import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.provenance import save_run_record, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TEST_NAMES = ("camera", "astronaut", "coins", "chelsea")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="runs/retune")
    p.add_argument("--task", choices=("deblur", "denoise"), default="deblur")
    p.add_argument("--data-dir", default=None, help="folder of images (default: scikit-image's bundled images)")
    p.add_argument("--size", type=int, default=64, help="side of the test images")
    p.add_argument("--patch", type=int, default=32, help="side of the training patches")
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--blur-sigma", type=float, default=1.5)
    p.add_argument("--depth", type=int, default=5, help="L")
    p.add_argument("--restarts", type=int, default=10, help="R")
    p.add_argument("--steps", type=int, default=150, help="training steps per model (same budget for all)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-3, help="learning rate of the layer's scalar parameters")
    p.add_argument("--denoiser-lr", type=float, default=5e-4,
                   help="learning rate of a trained denoiser's weights (fine-tuning a pretrained network)")
    p.add_argument("--parts", nargs="+", choices=("wavelet", "pnp", "sweep"), default=["wavelet", "pnp", "sweep"],
                   help="which experiments to run")
    p.add_argument("--pretrain-steps", type=int, default=300, help="Gaussian-denoising pretraining of the DnCNN")
    p.add_argument("--penalty", type=float, default=1.0, help="weight of the Lipschitz penalty (PnP layers)")
    p.add_argument("--penalty-eps", type=float, default=0.1, help="penalty active above Lipschitz 1 - eps")
    p.add_argument("--anchor", type=float, default=0.0,
                   help="anchor weight c of the trained PnP layers (AnchoredLayer: Lipschitz (1-c) Lip(T); 0: none)")
    p.add_argument("--penalty-iters", type=int, default=10, help="power iterations of the penalty")
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--max-restarts", type=int, default=400)
    p.add_argument("--sweep-depths", type=int, nargs="+", default=[1, 3, 10])
    p.add_argument("--sweep-restarts", type=int, nargs="+", default=[0, 3, 10])
    p.add_argument("--sweep-steps", type=int, default=80)
    p.add_argument("--lip-iters", type=int, default=30, help="power iterations of the Lipschitz estimate")
    p.add_argument("--jf-iters", type=int, default=300, help="iterations of the exact adjoint solve (JF error)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (well under two minutes on a CPU)")
    if p.parse_known_args(argv)[0].smoke:  # smoke defaults; explicit options still win
        p.set_defaults(size=32, patch=16, depth=2, restarts=2, steps=3, batch=2, pretrain_steps=4, max_restarts=10,
                       sweep_depths=[2], sweep_restarts=[0, 2], sweep_steps=2, penalty_iters=2, lip_iters=5,
                       jf_iters=30)
    a = p.parse_args(argv)
    return a


# ----------------------------------------------------------------------------------------------- data
class FolderImages(Dataset):
    """Grayscale images of a folder, centre-cropped and resized to ``size`` (``{"x": (1, size, size)}``)."""

    def __init__(self, folder: str | Path, size: int):
        exts = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
        self.files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in exts)
        if not self.files:
            raise ValueError(f"--data-dir {folder} holds no image ({sorted(exts)})")
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        import skimage.io
        from skimage.color import rgb2gray
        from skimage.util import img_as_float
        from torchvision.transforms.functional import center_crop, resize

        im = img_as_float(skimage.io.imread(self.files[i]))
        im = rgb2gray(im[..., :3]) if im.ndim == 3 else im
        x = torch.from_numpy(im).float()[None]
        s = min(x.shape[-2:])
        return {"x": resize(center_crop(x, [s, s]), [self.size, self.size], antialias=True).clamp(0, 1)}


class RandomPatches(Dataset):
    """``length`` random (seeded per index) patches with flips from a stack of images."""

    def __init__(self, images: torch.Tensor, patch: int, length: int, seed: int):
        self.images, self.patch, self.length, self.seed = images, patch, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        k = int(torch.randint(len(self.images), (1,), generator=g))
        h, w = self.images.shape[-2:]
        r, c = (int(torch.randint(n - self.patch + 1, (1,), generator=g)) for n in (h, w))
        x = self.images[k, :, r:r + self.patch, c:c + self.patch]
        if torch.rand(1, generator=g) < 0.5:
            x = x.flip(-1)
        return {"x": x.rot90(int(torch.randint(4, (1,), generator=g)), dims=(-2, -1)).contiguous()}


def make_data(a):
    if a.data_dir:
        full = FolderImages(a.data_dir, 2 * a.size)
        images = torch.stack([full[i]["x"] for i in range(len(full))])
        n_test = max(1, len(images) // 4)
        train_images, test = images[n_test:], images[:n_test, :, : a.size, : a.size]
    else:
        train_names = tuple(n for n in SKIMAGE_IMAGES if n not in TEST_NAMES)
        tr = SkimageImagesDataset(size=2 * a.size, names=train_names)
        te = SkimageImagesDataset(size=a.size, names=TEST_NAMES[: 2 if a.smoke else 4])
        train_images = torch.stack([tr[i]["x"] for i in range(len(tr))])
        test = torch.stack([te[i]["x"] for i in range(len(te))])
    return train_images, test


def make_physics(a) -> tuple[dinv.physics.LinearPhysics, float]:
    noise = dinv.physics.GaussianNoise(a.noise)
    if a.task == "denoise":
        return dinv.physics.Denoising(noise), 1.0
    s = a.blur_sigma
    kernel = gaussian_blur(sigma=(s, s))
    physics = dinv.physics.BlurFFT(img_size=(1, a.patch, a.patch), filter=kernel, noise_model=noise)
    return physics, 1.0  # ||A||^2 = max |FFT(k)|^2 = 1 for a normalised nonnegative kernel


def physics_for(a, size: int, device) -> dinv.physics.LinearPhysics:
    """The same operator on images of side ``size`` (BlurFFT is built for one image size)."""
    b = argparse.Namespace(**{**vars(a), "patch": size})
    return make_physics(b)[0].to(device)


# ----------------------------------------------------------------------------------------------- training
def pretrain_denoiser(a, train_images, ckpt_dir: Path, device) -> torch.nn.Module:
    """DnCNN trained on blind Gaussian denoising of the training patches (sigma uniform in [0.01, 0.1])."""
    torch.manual_seed(a.seed + 7)  # the same denoiser whichever --parts run before it
    den = dinv.models.DnCNN(1, 1, depth=5, nf=24, pretrained=None).to(device)
    path = ckpt_dir / "dncnn_pretrained.pt"
    if path.exists():
        den.load_state_dict(torch.load(path, weights_only=True, map_location=device))
        return den
    loader = DataLoader(RandomPatches(train_images, a.patch, 10**6, a.seed + 7), batch_size=8)
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    it = iter(loader)
    for _ in tqdm(range(a.pretrain_steps), desc="pretrain DnCNN", leave=False):
        x = next(it)["x"].to(device)
        sigma = 0.01 + 0.09 * torch.rand(x.shape[0], 1, 1, 1, device=device)
        loss = (den(x + sigma * torch.randn_like(x), sigma) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(den.state_dict(), path)
    return den


def train(name: str, model: torch.nn.Module, losses: list, a, train_images, physics, ckpt_dir: Path, steps: int,
          device) -> dict:
    """Train ``model`` for ``steps`` Adam steps (resuming from ``ckpt_dir/name.pt``); returns time/memory stats."""
    path = ckpt_dir / f"{name}.pt"
    torch.manual_seed(a.seed * 1000 + zlib.crc32(name.encode()) % 1000)  # training noise: per model, order-free
    opt = torch.optim.Adam(param_groups(model, a))
    state = {"step": 0, "times": [], "saved_bytes": None, "cuda_peak": None}
    config = training_config(a)
    # patches are seeded per index; listing them (the DataLoader draws a seed) comes before the RNG is restored
    batches = list(DataLoader(RandomPatches(train_images, a.patch, steps * a.batch, a.seed + 1), batch_size=a.batch))
    if path.exists():
        ck = torch.load(path, weights_only=False, map_location=device)
        if ck.get("config") != config:
            changed = sorted(k for k in config if ck.get("config", {}).get(k) != config[k])
            raise RuntimeError(f"{path} was trained with other options ({', '.join(changed)}): "
                               "use another --output, or delete it to retrain")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"])  # the noise of the remaining steps as in an uninterrupted run
        if ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"])
    batches = batches[state["step"]:]
    model.train()
    for batch in tqdm(batches, desc=f"train {name}", leave=False, initial=state["step"], total=steps):
        x = batch["x"].to(device)
        y = physics(x)
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with SavedTensorMeter() as meter:  # the network's activation memory (the losses' graphs are not counted)
            x_net = model(y, physics)
        loss = sum(loss_fn(x_net=x_net, x=x, y=y, physics=physics, model=model).mean() for loss_fn in losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
            state["cuda_peak"] = max(state["cuda_peak"] or 0, torch.cuda.max_memory_allocated())
        state["times"].append(time.perf_counter() - t0)
        state["saved_bytes"] = max(state["saved_bytes"] or 0, meter.bytes)
        state["step"] += 1
        if state["step"] % 25 == 0 or state["step"] == steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state, "config": config,
                        "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state() if torch.device(device).type == "cuda" else None}, path)
    times = state["times"][1:] or state["times"]
    return {"time_per_step_s": sum(times) / max(len(times), 1), "saved_MB": (state["saved_bytes"] or 0) / 2**20,
            "cuda_peak_MB": None if state["cuda_peak"] is None else state["cuda_peak"] / 2**20}


def training_config(a) -> dict:
    """The options a training checkpoint depends on (a resumed run must not mix two configurations)."""
    skip = {"output", "parts", "device", "tol", "max_restarts", "lip_iters", "jf_iters", "smoke", "steps",
            "sweep_steps"}  # more steps extend the same seeded patch sequence
    return {k: v for k, v in sorted(vars(a).items()) if k not in skip}


def param_groups(model: torch.nn.Module, a) -> list[dict]:
    """Adam groups: the layer's scalars (step, weights, noise level) at ``--lr``, a denoiser's weights at
    ``--denoiser-lr`` (a pretrained network is fine-tuned, not retrained)."""
    den, scalars = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (den if ".denoiser." in f".{name}" else scalars).append(p)
    return [g for g in ({"params": scalars, "lr": a.lr}, {"params": den, "lr": a.denoiser_lr}) if g["params"]]


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
#: initial step in units of 1/beta; for denoising (A = Id) a step of 1 would make the layer constant in x
STEP = {"deblur": 1.0, "denoise": 0.5}


def wavelet_layer(beta: float, task: str = "deblur") -> ForwardBackwardLayer:
    return ForwardBackwardLayer(WaveletL1Prior(level=3, wavelet="haar", weight=1.0), step=STEP[task] / beta,
                                lam=0.02, data_lipschitz=beta)


def pnp_layer(denoiser, beta: float, task: str = "deblur", anchor: float = 0.0):
    """Relaxed PnP layer with a copy of ``denoiser``; anchored (:class:`AnchoredLayer`) when ``anchor > 0``."""
    import copy

    layer = PnPForwardBackwardLayer(copy.deepcopy(denoiser), step=STEP[task] / beta, sigma=0.05, data_lipschitz=beta,
                                    relaxation=0.5, train_denoiser=True)
    return AnchoredLayer(layer, contraction=anchor) if anchor > 0 else layer


def main(argv=None) -> dict:
    a = parse_args(argv)
    seed_everything(a.seed)
    out_dir = Path(a.output)
    ckpt_dir = out_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_run_record(out_dir, vars(a), a.seed)
    device = a.device
    train_images, test = make_data(a)
    test = test.to(device)
    train_physics, beta = make_physics(a)
    train_physics = train_physics.to(device)
    test_physics = physics_for(a, test.shape[-1], device)
    L, R = a.depth, a.restarts
    sup = dinv.loss.SupLoss()
    rows: dict[str, dict] = {}

    def run(name, model, layer, losses, steps=a.steps):
        stats = train(name, model, losses, a, train_images, train_physics, ckpt_dir, steps, device) if steps else {}
        torch.manual_seed(a.seed + 123)  # the same test noise for every model
        rows[name] = {**stats, **evaluate(model, test, test_physics, layer, a)}
        r = rows[name]
        print(f"{name:>16s}: PSNR depth {r['psnr_depth']:.2f} | fixed point {r['psnr_fixed_point']:.2f} dB "
              f"({r['restarts']} restarts, residual {r['residual']:.1e}, Lipschitz {r['lipschitz']:.3f})")

    monitor: dict[str, list] = {}
    sweep: list[dict] = []
    if "wavelet" in a.parts:  # --- wavelet (variational) layers
        u = untrained(wavelet_layer(beta, a.task).to(device), depth=L)
        run("wavelet-untrained", u, u.iteration, [], steps=0)
        m = standard_unrolling(wavelet_layer(beta, a.task).to(device), L)
        run("wavelet-unroll", m, m.iteration, [sup])
        m = ReTune(wavelet_layer(beta, a.task).to(device), depth=L, restarts=R, monitor_every=max(a.steps // 5, 2))
        run("wavelet-retune", m, m.iteration, [sup])
        monitor["wavelet-retune"] = m.monitor_log
    if "pnp" in a.parts:  # --- PnP layers with a pretrained DnCNN, fine-tuned under a Lipschitz penalty
        den = pretrain_denoiser(a, train_images, ckpt_dir, device)
        pen = [sup, LipschitzPenalty(weight=a.penalty, eps=a.penalty_eps, max_iter=a.penalty_iters,
                                     reduced_batchsize=1)]
        u = untrained(pnp_layer(den, beta, a.task).to(device), depth=L)
        run("pnp-untrained", u, u.iteration, [], steps=0)
        if a.anchor > 0:  # the anchored layer before training: what ReTune starts from
            u = untrained(pnp_layer(den, beta, a.task, a.anchor).to(device), depth=L)
            run("pnp-anchored-untrained", u, u.iteration, [], steps=0)
        m = standard_unrolling(pnp_layer(den, beta, a.task, a.anchor).to(device), L)
        run("pnp-unroll", m, m.iteration, pen)
        m = full_unrolling(pnp_layer(den, beta, a.task, a.anchor).to(device), L, R)
        run("pnp-full-unroll", m, m.iteration, pen)
        deq = deq_baseline(pnp_layer(den, beta, a.task), max_iter=(R + 1) * L, tol=a.tol).to(device)
        deq_layer = deq.prior[0].layer
        run("pnp-deq", deq, deq_layer, [sup, LipschitzPenalty(weight=a.penalty, eps=a.penalty_eps,
                                                              max_iter=a.penalty_iters, reduced_batchsize=1,
                                                              layer=deq_layer)])
        m = ReTune(pnp_layer(den, beta, a.task, a.anchor).to(device), depth=L, restarts=R,
                   monitor_every=max(a.steps // 5, 2))
        run("pnp-retune", m, m.iteration, pen)
        monitor["pnp-retune"] = m.monitor_log
    if "sweep" in a.parts:  # --- depth / restart interplay (wavelet layer)
        for d in a.sweep_depths:
            for r in a.sweep_restarts:
                mm = ReTune(wavelet_layer(beta, a.task).to(device), depth=d, restarts=r)
                stats = train(f"sweep-L{d}-R{r}", mm, [sup], a, train_images, train_physics, ckpt_dir,
                              a.sweep_steps, device)
                torch.manual_seed(a.seed + 123)
                ev = evaluate(mm, test, test_physics, mm.iteration, a)
                y = test_physics.A(test)  # JF error of the L-layer adjoint at the fixed point, for the MSE gradient
                jf = jacobian_free_error(mm.iteration, ev["x_fp"], y, test_physics, ev["x_fp"] - test, d,
                                         n_iter=a.jf_iters)
                sweep.append({"L": d, "R": r, "psnr_fixed_point": ev["psnr_fixed_point"], "jf_error": jf,
                              "jf_bound": ev["lipschitz"] ** d, "lipschitz": ev["lipschitz"], **stats})
                print(f"sweep L={d:2d} R={r:2d}: PSNR {ev['psnr_fixed_point']:.2f} dB, JF error {jf:.2e} "
                      f"(bound rho^L {ev['lipschitz'] ** d:.2e})")

    report(a, rows, sweep, monitor, test, out_dir)
    return {"rows": rows, "sweep": sweep}


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


def report(a, rows: dict, sweep: list, monitor: dict, test, out_dir: Path) -> None:
    L, R = a.depth, a.restarts
    header = (f"{'model':>18s} | {'PSNR@depth':>10s} | {'PSNR@fixed pt':>13s} | {'restarts':>8s} | {'residual':>8s}"
              f" | {'Lipschitz':>9s} | {'act. MB':>8s} | {'s/step':>7s}")
    lines = [f"task={a.task} L={L} R={R} steps={a.steps} batch={a.batch} patch={a.patch} test={tuple(test.shape)}",
             header, "-" * len(header)]
    def cell(value, fmt: str, width: int) -> str:  # "-" where a column does not apply (DEQ has no depth)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return f"{'-':>{width}s}" if missing else f"{value:{width}{fmt}}"

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
    ax[0].imshow(test[0, 0].cpu(), cmap="gray", vmin=0, vmax=1)
    ax[0].set_title("ground truth")
    for axi, n in zip(ax[1:], names):
        axi.imshow(rows[n]["x_fp"][0, 0].clamp(0, 1).cpu(), cmap="gray", vmin=0, vmax=1)
        axi.set_title(f"{n}\n{rows[n]['psnr_fixed_point']:.2f} dB")
    for axi in ax:
        axi.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "retune_reconstructions.png", dpi=120)
    plt.close(fig)
    print(f"figures, table, results.json and run.json in {out_dir}")


if __name__ == "__main__":
    main()

r"""Peak training memory and time of ReTune with R = 20 restarts against R = 1 and full unrolling of (R+1)L layers.

ReTune's restarts run without gradients, so a training step stores the activations of the last :math:`L` layers
only: its memory must not grow with :math:`R` (target: R=20 at most 1.05x R=1), whereas full unrolling of
:math:`(R+1)L` layers (the memory ceiling) stores :math:`R+1` times more. Memory is measured as the bytes autograd
saves for backward (:class:`deepinv_ext.algorithms.SavedTensorMeter`, any device) and, on CUDA, as
``torch.cuda.max_memory_allocated`` over the whole step (forward + backward). Layers: forward-backward with the
wavelet-:math:`\ell_1` prox, and PnP with a DnCNN. Deblurring, batch of 4 images::

    python benchmarks/retune.py            # CPU: a minute; --device cuda on a GPU
    python benchmarks/retune.py --size 128 --depth 10
"""

from __future__ import annotations

import argparse
import time

import deepinv as dinv
import torch
from _summary import emit
from deepinv.physics.functional.blur import gaussian_blur

from deepinv_ext.algorithms import (
    ForwardBackwardLayer,
    PnPForwardBackwardLayer,
    ReTune,
    SavedTensorMeter,
    full_unrolling,
)
from deepinv_ext.priors import WaveletL1Prior


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--restarts", type=int, nargs=2, default=[1, 20], help="the two R compared")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def measure(model: torch.nn.Module, x: torch.Tensor, physics, device: str, repeats: int) -> dict:
    """Saved-for-backward bytes, CUDA peak (if any) and mean time of a training step (forward + backward)."""
    model.train()
    times, saved, peak = [], 0, None
    for _ in range(repeats + 1):
        y = physics(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        with SavedTensorMeter() as meter:
            loss = (model(y, physics) - x).pow(2).mean()
        loss.backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = max(peak or 0, torch.cuda.max_memory_allocated() - base)
        times.append(time.perf_counter() - t0)
        saved = max(saved, meter.bytes)
        model.zero_grad(set_to_none=True)
    return {"saved_MB": saved / 2**20, "cuda_peak_MB": None if peak is None else peak / 2**20,
            "s_per_step": sum(times[1:]) / repeats}


def main(argv=None) -> dict:
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    device = a.device
    physics = dinv.physics.BlurFFT(img_size=(1, a.size, a.size), filter=gaussian_blur(sigma=(1.5, 1.5)),
                                   noise_model=dinv.physics.GaussianNoise(0.02)).to(device)
    x = torch.rand(a.batch, 1, a.size, a.size, device=device)
    layers = {
        "wavelet-FB": lambda: ForwardBackwardLayer(WaveletL1Prior(level=3), step=1.0, lam=0.02),
        "PnP-DnCNN": lambda: PnPForwardBackwardLayer(dinv.models.DnCNN(1, 1, depth=5, nf=24, pretrained=None),
                                                     step=1.0, relaxation=0.5, train_denoiser=True),
    }
    r1, r2 = a.restarts
    L = a.depth
    results, ratios = {}, {}
    print(f"device={device} size={a.size} batch={a.batch} L={L}; memory = bytes saved for backward"
          + (" | CUDA peak of the step" if device.startswith("cuda") else ""))
    for name, make in layers.items():
        rows = {f"ReTune R={r1}": ReTune(make().to(device), depth=L, restarts=r1),
                f"ReTune R={r2}": ReTune(make().to(device), depth=L, restarts=r2),
                f"full unroll {(r2 + 1) * L} layers": full_unrolling(make().to(device), L, r2)}
        res = {k: measure(m, x, physics, device, a.repeats) for k, m in rows.items()}
        results[name] = res
        ref = res[f"ReTune R={r1}"]
        for k, v in res.items():
            cuda = "" if v["cuda_peak_MB"] is None else (f" | CUDA peak {v['cuda_peak_MB']:8.2f} MB "
                                                         f"({v['cuda_peak_MB'] / ref['cuda_peak_MB']:5.2f}x)")
            print(f"{name:>11s} {k:>24s}: saved {v['saved_MB']:8.2f} MB ({v['saved_MB'] / ref['saved_MB']:5.2f}x)"
                  f"{cuda} | {v['s_per_step']:.3f} s/step ({v['s_per_step'] / ref['s_per_step']:5.2f}x)")
        ratio = res[f"ReTune R={r2}"]["saved_MB"] / ref["saved_MB"]
        print(f"{name:>11s} memory ratio R={r2} / R={r1}: {ratio:.3f} (target <= 1.05): "
              f"{'PASS' if ratio <= 1.05 else 'FAIL'}")
        ratios.update({f"{name} R={r2}": ratio,
                       f"{name} full unroll": res[f"full unroll {(r2 + 1) * L} layers"]["saved_MB"] / ref["saved_MB"]})
    emit("", f"training-step activation memory, deblurring {a.size}x{a.size}, batch {a.batch}, L = {L}: ReTune with "
             f"R = {r2} restarts and full unrolling of {(r2 + 1) * L} layers", f"ReTune R = {r1}", ratios,
         "bytes saved for backward / anchor's (target for R: <= 1.05)", device=device)
    return results


if __name__ == "__main__":
    main()

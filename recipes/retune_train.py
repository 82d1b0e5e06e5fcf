r"""The training job of ``retune.py``: data, physics, the layers and their training.

Every model is trained on the same random patches of the training images with the same budget (``--steps`` Adam
steps of batch ``--batch``), by a loop of its own rather than :class:`deepinv.Trainer`: the figures need the time
and activation memory of each step (:class:`~deepinv_ext.algorithms.SavedTensorMeter`), two learning rates
(:func:`param_groups`), and a resume that continues the interrupted run exactly (a checkpoint every 25 steps keeps
the RNG state; the patches are seeded per index).

Under ``torchrun`` the loops train data-parallel (:class:`deepinv_ext.data_parallel.DataParallel`): each process
takes its share of every global batch (:meth:`~deepinv_ext.data_parallel.DataParallel.shard`) and draws its own
noise, gradients are averaged before each step, rank 0 alone writes the checkpoints and every process resumes from
rank 0's (in any number of processes; a resumed multi-process run draws other noise than an uninterrupted one).
"""

from __future__ import annotations

import argparse
import copy
import time
import zlib
from pathlib import Path

import deepinv as dinv
import torch
from deepinv.physics.functional.blur import gaussian_blur
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepinv_ext.algorithms import (
    AnchoredLayer,
    ForwardBackwardLayer,
    PnPForwardBackwardLayer,
    SavedTensorMeter,
)
from deepinv_ext.checkpoint import resume_checkpoint, save_checkpoint
from deepinv_ext.data_parallel import DataParallel
from deepinv_ext.datasets import SKIMAGE_IMAGES, SkimageImagesDataset
from deepinv_ext.priors import WaveletL1Prior

TEST_NAMES = ("camera", "astronaut", "coins", "chelsea")
#: initial step in units of 1/beta; for denoising (A = Id) a step of 1 would make the layer constant in x
STEP = {"deblur": 1.0, "denoise": 0.5}


# ----------------------------------------------------------------------------------------------- data
def gray_image(path: str | Path) -> torch.Tensor:
    """An image file as a gray ``(1, H, W)`` float tensor in [0, 1] (luminance of an RGB image)."""
    import skimage.io
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    im = img_as_float(skimage.io.imread(path))
    return torch.from_numpy(rgb2gray(im[..., :3]) if im.ndim == 3 else im).float()[None]


class SquareResize:
    """Centre-crop an image ``(C, H, W)`` to a square and resize it to ``size`` (values clamped to [0, 1])."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.functional import center_crop, resize

        s = min(x.shape[-2:])
        return resize(center_crop(x, [s, s]), [self.size, self.size], antialias=True).clamp(0, 1)


class RandomPatches(Dataset):
    """``length`` random (seeded per index) patches with flips and quarter turns from a stack of images.

    deepinv's :class:`~deepinv.datasets.RandomPatchSampler` cannot stand in: it reads a folder of ``.npy``/NIfTI
    files, draws one patch per file and epoch from the global RNG (corners in ``[0, n - p)``, never the last one),
    without flips or turns, so the patches (and every number of the recipe) would change, and a resumed run
    would no longer see the patches of an uninterrupted one.
    """

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


def make_data(a) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images (side ``2 * size``) and test images (side ``size``): scikit-image's, or a quarter of the
    images of ``--data-dir`` for the test (deepinv's ``ImageFolder``, files in natural order)."""
    if a.data_dir:
        full = dinv.datasets.ImageFolder(a.data_dir, x_path="*", loader=gray_image, transform=SquareResize(2 * a.size),
                                         use_dict_output=True)
        if len(full) == 0:
            raise ValueError(f"--data-dir {a.data_dir} holds no image")
        images = torch.stack([full[i]["x"] for i in range(len(full))])
        n_test = max(1, len(images) // 4)
        return images[n_test:], images[:n_test, :, : a.size, : a.size]
    train_names = tuple(n for n in SKIMAGE_IMAGES if n not in TEST_NAMES)
    tr = SkimageImagesDataset(size=2 * a.size, names=train_names)
    te = SkimageImagesDataset(size=a.size, names=TEST_NAMES[: 2 if a.smoke else 4])
    return torch.stack([tr[i]["x"] for i in range(len(tr))]), torch.stack([te[i]["x"] for i in range(len(te))])


# ----------------------------------------------------------------------------------------------- physics and layers
def make_physics(a) -> tuple[dinv.physics.LinearPhysics, float]:
    """The operator on training patches and :math:`\\beta = \\|A\\|^2`."""
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


def wavelet_layer(beta: float, task: str = "deblur") -> ForwardBackwardLayer:
    return ForwardBackwardLayer(WaveletL1Prior(level=3, wavelet="haar", weight=1.0), step=STEP[task] / beta,
                                lam=0.02, data_lipschitz=beta)


def pnp_layer(denoiser, beta: float, task: str = "deblur", anchor: float = 0.0):
    """Relaxed PnP layer with a copy of ``denoiser``; anchored (:class:`AnchoredLayer`) when ``anchor > 0``."""
    layer = PnPForwardBackwardLayer(copy.deepcopy(denoiser), step=STEP[task] / beta, sigma=0.05, data_lipschitz=beta,
                                    relaxation=0.5, train_denoiser=True)
    return AnchoredLayer(layer, contraction=anchor) if anchor > 0 else layer


# ----------------------------------------------------------------------------------------------- training
def pretrain_denoiser(a, train_images, ckpt_dir: Path, device, parallel: DataParallel) -> torch.nn.Module:
    """DnCNN trained on blind Gaussian denoising of the training patches (sigma uniform in [0.01, 0.1]), global batch
    8 shared by ``parallel``'s processes."""
    torch.manual_seed(a.seed + 7)  # the same denoiser whichever --parts run before it
    den = dinv.models.DnCNN(1, 1, depth=5, nf=24, pretrained=None).to(device)
    path = ckpt_dir / "dncnn_pretrained.pt"
    saved = parallel.on_main(lambda: torch.load(path, weights_only=True, map_location="cpu") if path.exists() else None)
    if saved is not None:
        den.load_state_dict(saved)
        return den
    loader = parallel.shard(DataLoader(RandomPatches(train_images, a.patch, 10**6, a.seed + 7), batch_size=8))
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    if parallel.world_size > 1:  # one seed drawn alike everywhere, then one noise stream a process
        torch.manual_seed(int(torch.randint(2**62, ())) + parallel.rank)
    it = iter(loader)
    for _ in tqdm(range(a.pretrain_steps), desc="pretrain DnCNN", leave=False, disable=not parallel.is_main):
        x = next(it)["x"].to(device)
        sigma = 0.01 + 0.09 * torch.rand(x.shape[0], 1, 1, 1, device=device)
        loss = (den(x + sigma * torch.randn_like(x), sigma) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        parallel.average_gradients(den.parameters())
        opt.step()
    parallel.on_main(torch.save, den.state_dict(), path)
    return den


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


def train_step(model, losses, opt, x, physics, state: dict, device, parallel: DataParallel) -> None:
    """One Adam step on the patches ``x`` (this process's share of the batch; gradients averaged over ``parallel``'s
    processes), its time and activation memory added to ``state``."""
    y = physics(x)
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with SavedTensorMeter() as meter:  # the network's activation memory (the losses' graphs are not counted)
        x_net = model(y, physics)
    loss = sum(loss_fn(x_net=x_net, x=x, y=y, physics=physics, model=model).mean() for loss_fn in losses)
    opt.zero_grad()
    loss.backward()
    parallel.average_gradients(p for group in opt.param_groups for p in group["params"])
    opt.step()
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()
        state["cuda_peak"] = max(state["cuda_peak"] or 0, torch.cuda.max_memory_allocated())
    state["times"].append(time.perf_counter() - t0)
    state["saved_bytes"] = max(state["saved_bytes"] or 0, meter.bytes)
    state["step"] += 1


def train(name: str, model: torch.nn.Module, losses: list, a, train_images, physics, ckpt_dir: Path, steps: int,
          device, parallel: DataParallel) -> dict:
    """Train ``model`` for ``steps`` Adam steps of global batch ``a.batch`` shared by ``parallel``'s processes
    (resuming from rank 0's ``ckpt_dir/name.pt``); returns time/memory stats (rank 0's)."""
    path = ckpt_dir / f"{name}.pt"
    torch.manual_seed(a.seed * 1000 + zlib.crc32(name.encode()) % 1000)  # training noise: per model, order-free
    opt = torch.optim.Adam(param_groups(model, a))
    state = {"step": 0, "times": [], "saved_bytes": None, "cuda_peak": None}
    config = training_config(a)
    # patches are seeded per index; listing them (the DataLoader draws a seed) comes before the RNG is restored
    batches = list(parallel.shard(DataLoader(RandomPatches(train_images, a.patch, steps * a.batch, a.seed + 1),
                                             batch_size=a.batch)))
    ck = parallel.on_main(resume_checkpoint, path, config)  # on the CPU: the RNG states stay CPU tensors
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"])  # the noise of the remaining steps as in an uninterrupted run
        if ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"])
    if parallel.world_size > 1:  # one seed drawn alike everywhere, then one noise stream a process
        torch.manual_seed(int(torch.randint(2**62, ())) + parallel.rank)
    model.train()
    for batch in tqdm(batches[state["step"]:], desc=f"train {name}", leave=False, initial=state["step"], total=steps,
                      disable=not parallel.is_main):
        train_step(model, losses, opt, batch["x"].to(device), physics, state, device, parallel)
        if parallel.is_main and (state["step"] % 25 == 0 or state["step"] == steps):
            cuda_rng = torch.cuda.get_rng_state() if torch.device(device).type == "cuda" else None
            save_checkpoint(path, {"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                                   "rng": torch.get_rng_state(), "cuda_rng": cuda_rng}, config)
    times = state["times"][1:] or state["times"]
    return {"time_per_step_s": sum(times) / max(len(times), 1), "saved_MB": (state["saved_bytes"] or 0) / 2**20,
            "cuda_peak_MB": None if state["cuda_peak"] is None else state["cuda_peak"] / 2**20}

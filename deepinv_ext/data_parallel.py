r"""Data-parallel training under ``torchrun``: one process per device, each on its share of every batch.

A training script written for one process runs unchanged under
``torchrun --nproc_per_node N [--nnodes M ...] script.py ...`` once it builds its loader and trainer through this
module; started without ``torchrun`` it is exactly the single-process script it was (same loader, same numbers).

The scheme is PyTorch's data parallelism (what :class:`torch.nn.parallel.DistributedDataParallel` does), on
:mod:`torch.distributed` directly:

- the process group is deepinv's :class:`deepinv.distributed.DistributedContext` (NCCL with one GPU a process, gloo
  on CPUs; the device of a process from ``LOCAL_RANK``);
- the loader keeps its global batch :math:`B`: each of the :math:`W` processes draws :math:`B / W` samples through a
  :class:`torch.utils.data.DistributedSampler` over one permutation a step, reshuffled each epoch
  (:class:`ReshuffledDistributedSampler`), so that one step of :math:`W` processes sees the samples one process
  would see with batch :math:`B`;
- gradients are averaged over the processes before each optimiser step (and before gradient clipping):
  for a loss that is a mean over the batch, :math:`\nabla \frac1B \sum_{i} \ell_i = \frac1W \sum_{r}
  \nabla \frac{W}{B} \sum_{i \in r} \ell_i`, so every process takes the single-process step;
- every process starts from rank 0's parameters (broadcast), resumes from the same checkpoint, and only rank 0
  prints, shows progress bars and writes checkpoints.

Why not wrap the model in ``DistributedDataParallel``: the losses of learned regularisers (adversarial, NETT) call
the model's parts outside its ``forward`` and the Trainer saves ``model.state_dict()``; DDP's reducer requires every
gradient to come from one ``forward`` and prefixes the state dict. Averaging on the optimiser step works for any
model and loss and keeps checkpoints interchangeable between 1 and :math:`W` processes; it gives up DDP's overlap of
communication with the backward pass (one flat all-reduce a step instead), which costs little for the small
networks of this package.

:class:`DataParallelTrainer` is :class:`deepinv.Trainer` with these rules; loops of one's own use
:meth:`DataParallel.shard` and :meth:`DataParallel.average_gradients`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import deepinv as dinv
import torch
import torch.distributed as dist
from deepinv.distributed import DistributedContext
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from deepinv_ext._validation import finite_number, positive_int

__all__ = ["DataParallel", "DataParallelTrainer", "ReshuffledDistributedSampler", "launched_by_torchrun"]

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its ``RANK`` and ``WORLD_SIZE`` variables are set).

    |sep|

    :Examples:

        >>> import os
        >>> from unittest import mock
        >>> from deepinv_ext.data_parallel import launched_by_torchrun
        >>> with mock.patch.dict(os.environ, {"RANK": "0", "WORLD_SIZE": "2"}):
        ...     launched_by_torchrun()
        True
    """
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


class ReshuffledDistributedSampler(DistributedSampler):
    r""":class:`torch.utils.data.DistributedSampler` that moves to the next epoch's permutation each time it is
    iterated, so that a loop which only calls ``iter(loader)`` once an epoch (:class:`deepinv.Trainer`) reshuffles
    every epoch. ``set_epoch(e)`` sets the epoch of the next pass (to resume at epoch ``e``).

    The permutation of epoch :math:`e` depends only on ``seed + e``: all processes draw the same one and take every
    :math:`W`-th index of it from their rank on.

    :param torch.utils.data.Dataset dataset: the dataset to sample.
    :param int num_replicas: the number of processes (default: the process group's).
    :param int rank: this process's rank (default: the process group's).
    :param bool shuffle: draw a new permutation each epoch (``False``: the dataset's order).
    :param int seed: the seed of the permutations, the same on every process.
    :param bool drop_last: drop the tail that does not split evenly (``False``: repeat the first indices to fill it,
        as :class:`torch.utils.data.DistributedSampler` does).

    |sep|

    :Examples:

        >>> from deepinv_ext.data_parallel import ReshuffledDistributedSampler
        >>> ranks = [ReshuffledDistributedSampler(range(8), num_replicas=2, rank=r, seed=0) for r in (0, 1)]
        >>> [(list(sampler), list(sampler)) for sampler in ranks]  # epochs 0 and 1: each rank half of a permutation
        [([4, 7, 2, 1], [5, 2, 7, 1]), ([0, 3, 5, 6], [4, 6, 3, 0])]
        >>> ranks[0].set_epoch(1); list(ranks[0])  # resume at epoch 1
        [5, 2, 7, 1]
    """

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        self.set_epoch(self.epoch + 1)
        return iter(indices)


class DataParallel:
    r"""The processes of a data-parallel run, as a context manager: joins the process group ``torchrun`` set up
    (through :class:`deepinv.distributed.DistributedContext`) and leaves it at the end; outside ``torchrun`` it is one
    process of rank 0 and every method returns its input unchanged.

    :param str device: ``"cpu"`` (gloo), ``"cuda"`` (NCCL, the GPU of ``LOCAL_RANK``) or ``"auto"`` (CUDA where
        there is one GPU a process, else the CPU); a torch device counts as its type. Outside ``torchrun`` any
        device is accepted (one process); under it, CPUs or CUDA GPUs only.
    :param float timeout: seconds a process may wait for the others in a collective (rank 0 evaluating alone, a
        slow step) before the run fails; torch's default (30 min for gloo, 10 min for NCCL) is short for an
        evaluation on rank 0 alone.

    |sep|

    :Examples:

        Outside ``torchrun``, one process, and every method returns its input:

        >>> from torch.utils.data import DataLoader
        >>> from deepinv_ext.data_parallel import DataParallel
        >>> with DataParallel("cpu") as parallel:
        ...     loader = DataLoader(list(range(8)), batch_size=4, shuffle=True)
        ...     parallel.shard(loader) is loader, parallel.world_size, parallel.is_main, parallel.mean([1.0, 3.0])
        (True, 1, True, [1.0, 3.0])
    """

    def __init__(self, device: str | torch.device = "auto", timeout: float = 6 * 3600) -> None:
        try:
            self.kind = "auto" if device == "auto" else torch.device(device).type
        except RuntimeError as err:
            raise ValueError(f"device: expected 'cpu', 'cuda', 'auto' or a torch device, got {device!r}") from err
        self.timeout = finite_number(timeout, "timeout", strict=True)
        self.context = DistributedContext(device_mode={"cpu": "cpu", "cuda": "gpu"}.get(self.kind))
        self.owns_group = False

    def __enter__(self) -> DataParallel:
        if not launched_by_torchrun():  # nothing to join, and no device setting changed: the context is this process
            self.context.device = self.device  # alone, on the device named (deepinv.distributed builds on it)
            return self
        if not dist.is_initialized():  # deepinv's context would create it, without a timeout of our choosing
            dist.init_process_group(self._backend(), timeout=timedelta(seconds=self.timeout))
            self.owns_group = True
        self.context.__enter__()
        return self

    def _backend(self) -> str:
        """NCCL for CUDA with a GPU a process on this node, gloo for CPUs; as deepinv's context chooses."""
        if self.kind not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device: data-parallel training runs on CPUs (gloo) or CUDA GPUs (NCCL), "
                             f"got {self.kind!r}")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        gpus = torch.cuda.is_available() and dist.is_nccl_available() and local <= torch.cuda.device_count()
        if self.kind == "cuda" and not gpus:
            raise ValueError(f"device: 'cuda' needs NCCL and one GPU for each of the {local} processes of this node, "
                             f"found {torch.cuda.device_count()} GPU(s)")
        return "nccl" if self.kind == "cuda" or (self.kind == "auto" and gpus) else "gloo"

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.owns_group and dist.is_initialized():
            if exc_type is None:  # the others may still work (rank 0 evaluating): wait for them
                dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False

    @property
    def rank(self) -> int:
        """This process's rank, from 0 to ``world_size - 1`` (0 outside ``torchrun``)."""
        return self.context.rank

    @property
    def world_size(self) -> int:
        """The number of processes (1 outside ``torchrun``)."""
        return self.context.world_size

    @property
    def enabled(self) -> bool:
        """Whether this run has a process group (``torchrun``, even of one process)."""
        return self.context.use_dist

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes (rank 0)."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """This process's device under ``torchrun`` (from ``LOCAL_RANK``); outside it, the one ``device`` names
        (``"auto"``: CUDA where there is a GPU)."""
        if self.enabled or self.kind == "auto":
            return self.context.device
        return torch.device(self.kind)

    def shard(self, loader: DataLoader, seed: int | None = None) -> DataLoader:
        r"""The loader that gives this process its share of each of ``loader``'s batches: the same dataset, workers
        and collation, a :class:`ReshuffledDistributedSampler` (shuffled if ``loader`` shuffles) and a batch of
        ``loader.batch_size / world_size``. Outside a process group, ``loader`` itself.

        :param torch.utils.data.DataLoader loader: the single-process loader; its ``batch_size`` is the global batch.
        :param int seed: the seed of the permutations (default: that of ``loader.generator``, else 0).
        :raises ValueError: a global batch that the processes cannot share evenly, or a loader without a batch size.
        """
        if not self.enabled:
            return loader
        if type(loader.sampler) not in (RandomSampler, SequentialSampler):
            raise ValueError(f"loader: data-parallel training shards a shuffled or sequential loader, got a "
                             f"{type(loader.sampler).__name__}; pass the DataLoader without a sampler")
        if loader.batch_size is None:
            raise ValueError("loader: data-parallel training needs a loader with a batch_size, got batch_size=None")
        batch = positive_int(loader.batch_size, "loader.batch_size")
        if batch % self.world_size:
            raise ValueError(f"loader.batch_size: the global batch {batch} does not split evenly over "
                             f"{self.world_size} processes; use a multiple of {self.world_size}")
        if seed is None:
            seed = loader.generator.initial_seed() if loader.generator is not None else 0
        sampler = ReshuffledDistributedSampler(loader.dataset, self.world_size, self.rank,
                                               shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
        return DataLoader(loader.dataset, batch_size=batch // self.world_size, sampler=sampler,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                          drop_last=loader.drop_last, worker_init_fn=loader.worker_init_fn,
                          persistent_workers=loader.persistent_workers)

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        r"""Replace each parameter's gradient by its mean over the processes (one all-reduce of all of them).

        A parameter without a gradient on every process keeps ``None`` (an optimiser skips it, as in one process);
        one with a gradient on some processes only is averaged with zeros for the others.

        :param parameters: the parameters (the optimiser's or the model's), in the same order on every process.
        """
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        if not params:
            return
        grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
        present = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([*grads, present])
        dist.all_reduce(flat)
        flat /= self.world_size
        used = flat[-len(params):] > 0
        for param, grad, is_used in zip(params, flat[:-len(params)].split([p.numel() for p in params]), used):
            param.grad = grad.view_as(param).to(param.dtype) if is_used else None

    def mean(self, values: list[float]) -> list[float]:
        """The mean over the processes of each of ``values`` (the same number on every process).

        :param list[float] values: this process's values (a loss, a metric).
        """
        if not self.enabled or not values:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return (total / self.world_size).tolist()

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's parameters and buffers (a fresh model drawn from different seeds agrees).

        :param torch.nn.Module module: the model, the same architecture on every process.
        """
        if self.enabled:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` run on rank 0 alone (for work on shared files: checkpoint folders, records), its
        result given to every process; an exception it raises is raised on every process.

        :param Callable fn: the function.
        :param args: its positional arguments.
        :param kwargs: its keyword arguments.
        """
        result: list[Any] = [None, None]
        if self.is_main:
            try:
                result[0] = fn(*args, **kwargs)
            except Exception as err:  # re-raised on every rank below, so that none waits forever
                result[1] = err
        if self.enabled:
            self.context.broadcast_object_list(result, src=0)
        if result[1] is not None:
            raise result[1]
        return result[0]

    def barrier(self) -> None:
        """Wait for every process."""
        if self.enabled:
            dist.barrier()


@dataclass
class DataParallelTrainer(dinv.Trainer):
    r""":class:`deepinv.Trainer` that trains data-parallel under ``torchrun`` (see :mod:`deepinv_ext.data_parallel`);
    with ``parallel=None`` or outside ``torchrun`` it is the Trainer itself.

    It overrides four of the Trainer's hooks: ``setup_train`` (rank 0 alone prints, shows progress bars and creates
    the checkpoint folder; after deepinv has loaded the checkpoint on every process, rank 0's parameters are broadcast,
    each process draws its own noise (a stream a rank) and the samplers move to the resumed epoch), ``check_clip_grad``
    (gradients averaged before clipping and the step), ``save_model`` and ``save_best_model`` (the loss and metric
    histories averaged over the processes first, so that checkpoints, the best model and early stopping agree on
    every process). The progress bar shows rank 0's running mean.

    Give it the single-process loader and optimiser: the train loaders are sharded with :meth:`DataParallel.shard`
    (the evaluation loaders are not: every process evaluates all of it, so the averaged metrics are the
    single-process ones).

    :param DataParallel parallel: the run's processes (entered); other parameters: :class:`deepinv.Trainer`'s.

    |sep|

    :Examples:

        The same script runs in one process and under ``torchrun --nproc_per_node 2``:

        >>> import deepinv as dinv
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> from deepinv_ext.data_parallel import DataParallel, DataParallelTrainer
        >>> model = dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None), mode="direct")
        >>> data = DataLoader(dinv.datasets.TensorDataset(x=torch.rand(4, 1, 8, 8)), batch_size=2)
        >>> with DataParallel("cpu") as parallel:
        ...     trainer = DataParallelTrainer(model, physics=dinv.physics.Denoising(), train_dataloader=data, epochs=1,
        ...                                   optimizer=torch.optim.Adam(model.parameters()), online_measurements=True,
        ...                                   device="cpu", non_blocking_transfers=False, save_path=None, verbose=False,
        ...                                   parallel=parallel)
        ...     trained = trainer.train()
        >>> len(trainer.loss_history["SupLoss"])  # the mean training loss of its one epoch
        1
    """

    parallel: DataParallel | None = None

    def _distributed(self) -> bool:
        return self.parallel is not None and self.parallel.enabled

    def setup_train(self, train: bool = True, **kwargs: Any) -> None:
        """:meth:`deepinv.Trainer.setup_train`, then the data-parallel setup (shards, broadcast, noise streams).

        :param bool train: set up for training (deepinv's argument).
        :param kwargs: passed to :meth:`deepinv.Trainer.setup_train`.
        """
        if not self._distributed():
            return super().setup_train(train, **kwargs)
        if self.mixed_precision in (torch.float16, "float16", "fp16"):
            raise ValueError("mixed_precision: float16 (gradient scaling) cannot train data-parallel here, "
                             "processes could skip different steps; use bfloat16 or float32")
        self.train_dataloader = [loader if isinstance(loader.sampler, ReshuffledDistributedSampler)
                                 else self.parallel.shard(loader) for loader in
                                 (self.train_dataloader if isinstance(self.train_dataloader, (list, tuple))
                                  else [self.train_dataloader])]
        if not self.parallel.is_main:
            self.verbose, self.show_progress_bar, self.save_path = False, False, None
        self._reduced_lengths = None
        super().setup_train(train, **kwargs)
        self.parallel.broadcast_parameters(self.model)
        if self.parallel.world_size > 1:  # one seed drawn alike everywhere, then one noise stream a process
            torch.manual_seed(int(torch.randint(2**62, ())) + self.parallel.rank)
        for loader in self.train_dataloader:
            if isinstance(loader.sampler, ReshuffledDistributedSampler):
                loader.sampler.set_epoch(self.epoch_start)

    def check_clip_grad(self) -> float | None:
        if self._distributed():
            self.parallel.average_gradients(p for group in self.optimizer.param_groups for p in group["params"])
        return super().check_clip_grad()

    def _reduce_histories(self) -> None:
        """Average the history entries appended since the last call (each process appends the same number)."""
        histories = [*self.loss_history.values(), *self.eval_loss_history.values(),
                     *self.train_metrics_history.values(), *self.eval_metrics_history.values()]
        start = self._reduced_lengths or [0] * len(histories)
        fresh = [h[s:] for h, s in zip(histories, start)]
        means = iter(self.parallel.mean([float(v) for values in fresh for v in values]))
        for history, s in zip(histories, start):
            history[s:] = [next(means) for _ in history[s:]]
        self._reduced_lengths = [len(h) for h in histories]

    def save_model(self, filename: str, epoch: int, state: dict | None = None) -> None:
        if self._distributed():
            self._reduce_histories()
        return super().save_model(filename, epoch, state)

    def save_best_model(self, epoch: int, train_ite: int, **kwargs: Any) -> None:
        """:meth:`deepinv.Trainer.save_best_model` on the histories averaged over the processes.

        :param int epoch: the current epoch.
        :param int train_ite: the current training iteration.
        :param kwargs: passed to :meth:`deepinv.Trainer.save_best_model`.
        """
        if self._distributed():
            self._reduce_histories()
        return super().save_best_model(epoch, train_ite, **kwargs)

"""deepinv's Trainer as the tests run it: on the CPU, quiet, nothing written unless asked."""

import deepinv as dinv


def cpu_trainer(model, physics, optimizer, train_dataloader, **options) -> dinv.Trainer:
    """A :class:`deepinv.Trainer` on the CPU without progress bars, logs or saved checkpoints (``save_path=None``)
    and without ``non_blocking_transfers`` (which deepinv warns about off CUDA); ``options`` override or add any
    of deepinv's keywords (``epochs``, ``losses``, ``save_path``, ``metrics``, ...)."""
    settings = dict(save_path=None, verbose=False, show_progress_bar=False, compute_train_metrics=False,
                    device="cpu", non_blocking_transfers=False) | options
    return dinv.Trainer(model=model, physics=physics, optimizer=optimizer, train_dataloader=train_dataloader,
                        **settings)

r"""What the regulariser losses share: the regulariser a loss trains, and the entry checks of its inputs.

:class:`deepinv_ext.losses.WassersteinCriticLoss` and :class:`deepinv_ext.losses.NETTLoss` train a regulariser held
by the model :class:`deepinv.Trainer` trains, a :class:`deepinv_ext.algorithms.RegularizerTrainingModel` whose output
is the pseudo-inverse reconstruction (hence this module's name): :func:`regularizer_of` finds the regulariser,
:func:`check_regularizer` checks that it has the methods the loss calls, and :func:`check_pair` checks the clean
batch ``x`` and the pseudo-inverse batch ``x_net`` against it.

:class:`~deepinv_ext.algorithms.RegularizerTrainingModel` itself moved to
:mod:`deepinv_ext.algorithms.regularizer_training` (it is a reconstructor); importing it from here still works, with
a :class:`DeprecationWarning`.

|sep|

:Examples:

>>> import torch
>>> from deepinv_ext.algorithms import RegularizerTrainingModel
>>> from deepinv_ext.losses.pseudo_inverse import check_pair, regularizer_of
>>> from deepinv_ext.priors import NETT
>>> prior = NETT(width=4, depth=1)
>>> regularizer_of(RegularizerTrainingModel(prior), None, "MyLoss", ("fn",)) is prior
True
>>> check_pair(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8), prior)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from deepinv.optim import Prior

from deepinv_ext._deprecation import moved_module
from deepinv_ext._validation import check_dtype, check_tensor

__all__ = ["check_pair", "check_regularizer", "regularizer_of"]

_MOVED = {"RegularizerTrainingModel": moved_module(__name__, "deepinv_ext.algorithms.regularizer_training")}


def __getattr__(name: str) -> Any:
    """The names that moved out of this module, resolved at their new home with a :class:`DeprecationWarning`."""
    if name in _MOVED:
        return _MOVED[name](name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_regularizer(regularizer: Any, methods: Iterable[str], name: str = "regularizer") -> None:
    """Raise a TypeError naming ``name`` unless ``regularizer`` is a ``torch.nn.Module`` with the ``methods``."""
    methods = tuple(methods)
    if not isinstance(regularizer, torch.nn.Module) or not all(callable(getattr(regularizer, m, None))
                                                                for m in methods):
        raise TypeError(f"{name} must be a torch.nn.Module with the method(s) {', '.join(methods)}, got "
                        f"{type(regularizer).__name__}")


def regularizer_of(model: torch.nn.Module | None, explicit: torch.nn.Module | None, loss_name: str,
                   methods: Iterable[str] = ()) -> Prior:
    """The regulariser a loss trains: ``explicit`` if given, else ``model.regularizer``, which must have the
    ``methods`` (a TypeError otherwise)."""
    if explicit is not None:
        return explicit
    reg = getattr(model, "regularizer", None)
    if reg is None:
        raise ValueError(f"{loss_name}: pass regularizer=... or train a model with a .regularizer attribute "
                         f"(deepinv_ext.losses.RegularizerTrainingModel), got model={type(model).__name__}")
    check_regularizer(reg, methods, "model.regularizer")
    return reg


def check_pair(x: Any, x_net: Any, regularizer: torch.nn.Module) -> None:
    """Raise unless the clean batch ``x`` and the artefact batch ``x_net`` are real floating tensors of one shape,
    in the precision of ``regularizer``'s parameters (the entry check of the regulariser losses)."""
    check_tensor(x, "x")
    check_tensor(x_net, "x_net")
    if x.shape != x_net.shape:
        raise ValueError(f"x and x_net must have the same shape, got {tuple(x.shape)} and {tuple(x_net.shape)}")
    check_dtype(x, regularizer, "x")
    check_dtype(x_net, regularizer, "x_net")

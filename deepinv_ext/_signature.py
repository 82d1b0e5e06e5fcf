r"""Keyword checks for constructors that forward ``**kwargs`` (private module).

A class such as :class:`deepinv_ext.physics.AstraCT` takes ``**kwargs`` and hands them to
:class:`deepinv.physics.LinearPhysics`, which hands what it does not know to
:class:`deepinv.physics.Physics`, which only warns about the rest: a misspelt keyword (``angels=20``) is then
silently ignored. :func:`accepted_keywords` computes what such a chain accepts from the signatures alone, and
:func:`check_keywords` turns an unknown keyword into a :class:`TypeError` before anything is built.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["accepted_keywords", "check_keywords"]

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _split(function: Callable) -> tuple[set[str], bool] | None:
    """The named keyword parameters of ``function`` and whether it takes ``**kwargs`` (None: no signature)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return None
    names = {p.name for p in parameters if p.kind in _NAMED} - {"self", "cls"}
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def accepted_keywords(target: type | Callable) -> set[str] | None:
    r"""The keyword arguments that ``target`` accepts, following ``**kwargs`` along the constructor chain.

    For a class, the ``__init__`` methods are read in the method resolution order: a class whose ``__init__``
    takes ``**kwargs`` is taken to forward them to the next class of the MRO that defines ``__init__``
    (``super().__init__(..., **kwargs)``), and the chain ends at the first ``__init__`` without ``**kwargs``
    or at :class:`object` (which accepts no keyword). For any other callable, its own named parameters.

    :param type, Callable target: a class (its constructor) or a callable.
    :return: the set of accepted keyword names, or ``None`` when anything is accepted (a plain callable with
        ``**kwargs``, or a signature that cannot be read).

    :Examples:

        >>> from deepinv_ext._signature import accepted_keywords
        >>> class Base:
        ...     def __init__(self, a=1):
        ...         pass
        >>> class Child(Base):
        ...     def __init__(self, b=2, **kwargs):
        ...         super().__init__(**kwargs)
        >>> sorted(accepted_keywords(Child))
        ['a', 'b']
        >>> accepted_keywords(lambda x, **kwargs: x) is None
        True
    """
    if not inspect.isclass(target):
        split = _split(target)
        return None if split is None or split[1] else split[0]
    accepted: set[str] = set()
    for klass in target.__mro__:
        if klass is object:
            return accepted
        if "__init__" not in vars(klass):
            continue
        split = _split(vars(klass)["__init__"])
        if split is None:
            return None
        names, forwards = split
        accepted |= names
        if not forwards:
            return accepted
    return accepted  # pragma: no cover - every MRO ends with object


def check_keywords(target: type | Callable, kwargs: Mapping[str, Any], what: str) -> None:
    r"""Raise a :class:`TypeError` if ``kwargs`` holds a keyword that ``target`` does not accept.

    :param type, Callable target: the class (constructor chain) or callable that will receive ``kwargs``.
    :param Mapping kwargs: the keyword arguments about to be passed on.
    :param str what: how to name the receiver in the message, e.g. ``"AstraCT"``.
    :raises TypeError: naming each unknown keyword, the closest accepted ones, and every accepted keyword.

    :Examples:

        >>> from deepinv_ext._signature import check_keywords
        >>> def f(angles=1, noise_model=None):
        ...     pass
        >>> check_keywords(f, {"angels": 20}, "f")
        Traceback (most recent call last):
        ...
        TypeError: f got an unexpected keyword argument 'angels' (did you mean 'angles'?); accepted keywords: angles, noise_model
    """
    accepted = accepted_keywords(target)
    if accepted is None:
        return
    unknown = [key for key in kwargs if key not in accepted]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(accepted), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "argument" if len(unknown) == 1 else "arguments"
    raise TypeError(f"{what} got an unexpected keyword {noun} {', '.join(hints)}; accepted keywords: "
                    f"{', '.join(sorted(accepted))}")

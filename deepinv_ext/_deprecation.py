r"""Old module paths kept working after a module moved (issue 24's layout), with a :class:`DeprecationWarning`.

A moved module leaves a two-line shim at its old path:

.. code-block:: python

    from deepinv_ext._deprecation import moved_module

    __getattr__ = moved_module(__name__, "deepinv_ext.physics.functional.fbp")

Any name looked up on the old module is taken from the new one, with a warning that names the new path; the shim
imports nothing until a name is looked up. Package-level names (``deepinv_ext.physics.AstraCT``) never moved and do not
warn.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_module(old: str, *new: str) -> Callable[[str], Any]:
    r"""A module ``__getattr__`` that forwards every name of ``old`` to its new module with a
    :class:`DeprecationWarning`.

    :param str old: the old module's ``__name__``.
    :param str new: the module (or, for a module that was split, the modules, searched in order) the names now live
        in.
    :return: the function to bind to ``__getattr__`` in the old module.
    :raises AttributeError: (from the returned function) a name none of the new modules has.

    :Examples:

    >>> import types, warnings
    >>> old = types.ModuleType("old_math")
    >>> old.__getattr__ = moved_module("old_math", "math")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = old.pi
    >>> round(value, 2), caught[0].category.__name__
    (3.14, 'DeprecationWarning')
    """

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for module in new:
                if hasattr(found := importlib.import_module(module), name):
                    warnings.warn(f"{old}.{name} moved to {module}.{name}; import it from there (the old path will "
                                  "be removed)", DeprecationWarning, stacklevel=2)
                    return getattr(found, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__

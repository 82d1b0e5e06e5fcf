"""The public API of deepinv-ext, as the documentation must show it: every name in the ``__all__`` of each area and
top-level module, and the parameters each one's docstring documents (deepinv's ``:param type name:`` lines)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable, Iterator

#: The modules whose ``__all__`` is the public API: the areas and the top-level modules.
PUBLIC_MODULES = ("deepinv_ext.physics", "deepinv_ext.physics.generator", "deepinv_ext.physics.functional",
                  "deepinv_ext.priors", "deepinv_ext.denoisers", "deepinv_ext.algorithms",
                  "deepinv_ext.algorithms.retune", "deepinv_ext.losses", "deepinv_ext.datasets",
                  "deepinv_ext.spectral", "deepinv_ext.analysis", "deepinv_ext.plugins", "deepinv_ext.testing",
                  "deepinv_ext.data_parallel", "deepinv_ext.checkpoint", "deepinv_ext.runner",
                  "deepinv_ext.provenance")

PARAM = re.compile(r":param(?:\s+[^:]+?)?\s+\**([\w\\]+)\s*:")  # lambda\_: reST's escaped trailing _


def public_objects() -> Iterator[tuple[str, object]]:
    """``(qualified name, object)`` of every public class and function, once each (by its home module's name)."""
    seen = set()
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and id(obj) not in seen:
                seen.add(id(obj))
                yield f"{name}.{attr}", obj


def signature_parameters(obj: Callable) -> list[str]:
    """The parameters a caller passes: a class's constructor's, a function's (``self``, ``cls`` excluded; ``*args``
    and ``**kwargs`` count by their names)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and not getattr(target, "__module__", "").startswith("deepinv_ext"):
        return []  # a constructor inherited from torch, deepinv or Python (an exception's message) is theirs
    params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
    if dataclasses.is_dataclass(obj):  # a dataclass subclass documents its own fields; the parent's, the parent
        inherited = {f.name for base in obj.__mro__[1:] if dataclasses.is_dataclass(base)
                     for f in dataclasses.fields(base)}
        params = [p for p in params if p not in inherited]
    return params


def documented_parameters(obj: object) -> set[str]:
    """The names of the ``:param ...:`` lines of the docstring (a class's, and its ``__init__``'s if it has one)."""
    docs = [inspect.getdoc(obj) or ""]
    if inspect.isclass(obj) and "__init__" in vars(obj):
        docs.append(vars(obj)["__init__"].__doc__ or "")
    return {m.group(1).replace("\\", "") for doc in docs for m in PARAM.finditer(doc)}


def public_methods(cls: type) -> Iterator[tuple[str, Callable]]:
    """The public methods a class defines itself (what the API page of the class lists), properties excluded."""
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value):
            yield attr, value


def undocumented() -> dict[str, list[str]]:
    """The public objects (and their public methods) whose docstring misses some of their parameters, and which."""
    missing = {}
    for name, obj in public_objects():
        items = [(name, obj)]
        if inspect.isclass(obj):
            items += [(f"{name}.{attr}", method) for attr, method in public_methods(obj)]
        for item, target in items:
            lacking = [p for p in signature_parameters(target) if p not in documented_parameters(target)]
            if lacking:
                missing[item] = lacking
    return missing


def without_example() -> list[str]:
    """The public classes and functions whose docstring has no doctested example (``>>>``); warnings and exceptions
    (their message is their use) are exempt."""
    return [name for name, obj in public_objects()
            if ">>>" not in (inspect.getdoc(obj) or "")
            and not (inspect.isclass(obj) and issubclass(obj, BaseException))]


def plain_references() -> list[str]:
    """The modules and public objects whose docstring still gives references as plain text (a ``Reference:`` line)
    instead of ``:footcite:`` citations of ``docs/source/refs.bib``."""
    found = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for sub in [module, *(importlib.import_module(m) for m in _submodules(module))]:
            if re.search(r"^\s*References?:", sub.__doc__ or "", re.M):
                found.append(sub.__name__)
    for name, obj in public_objects():
        if re.search(r"^\s*References?:", inspect.getdoc(obj) or "", re.M):
            found.append(name)
    return sorted(set(found))


def _submodules(module) -> list[str]:
    import pkgutil

    if not hasattr(module, "__path__"):
        return []
    return [m.name for m in pkgutil.walk_packages(module.__path__, module.__name__ + ".")
            if not m.name.split(".")[-1].startswith("_")]


if __name__ == "__main__":  # python tests/docs_api.py [prefix]: what the docs tests still miss
    import sys

    prefix = sys.argv[1] if len(sys.argv) > 1 else "deepinv_ext"
    for item, params in undocumented().items():
        if item.startswith(prefix):
            print(f"parameters not documented: {item}: {', '.join(params)}")
    for item in without_example():
        if item.startswith(prefix):
            print(f"no doctested example: {item}")
    for item in plain_references():
        if item.startswith(prefix):
            print(f"plain-text references: {item}")

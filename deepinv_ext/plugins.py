r"""Plugin registry over the entry-point group ``deepinv_ext.plugins``.

Any installed distribution can add physics, priors, denoisers, algorithms, losses or datasets to deepinv-ext by
declaring entry points named ``"<kind>.<name>"`` in that group, for instance in its ``pyproject.toml``:

.. code-block:: toml

    [project.entry-points."deepinv_ext.plugins"]
    "physics.my_ct" = "my_package.physics:MyCT"

Discovery reads the installed metadata only: nothing is imported until :func:`load` or :func:`build` asks for it.
deepinv-ext registers its own objects the same way (it is its own first plugin package).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from deepinv_ext._signature import accepted_keywords

GROUP = "deepinv_ext.plugins"
KINDS = ("physics", "prior", "denoiser", "algorithm", "loss", "dataset")

__all__ = ["GROUP", "KINDS", "PluginInfo", "PluginConflictError", "available", "load", "build", "load_config", "import_target"]


class PluginConflictError(LookupError):
    """Two or more installed distributions register the same ``kind.name``: pass ``distribution=...`` to
    :func:`load` (or a ``"distribution"`` key to :func:`build`) to choose one."""


@dataclass(frozen=True, order=True)
class PluginInfo:
    """One registered plugin, as read from the installed metadata (nothing imported).

    :param str kind: one of :data:`KINDS`.
    :param str name: the plugin's name within its kind.
    :param str target: ``"module:attr"`` that :func:`load` imports.
    :param str distribution: the distribution (pip package) that registers it.

    |sep|

    :Examples:

        >>> from deepinv_ext import plugins
        >>> info = next(p for p in plugins.available("physics") if p.name == "astra_ct")
        >>> info.key, info.distribution, info.target.endswith(":AstraCT")
        ('physics.astra_ct', 'deepinv-ext', True)
    """

    kind: str
    name: str
    target: str
    distribution: str

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.name}"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _scan() -> list[PluginInfo]:
    found: set[PluginInfo] = set()
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        kind, sep, name = ep.name.partition(".")
        if not sep or not name or kind not in KINDS:
            warnings.warn(
                f"ignoring plugin entry {ep.name!r} of {dist!r}: its name must be '<kind>.<name>' "
                f"with kind in {KINDS}",
                stacklevel=3,
            )
            continue
        found.add(PluginInfo(kind, name, ep.value, dist))
    return sorted(found)


def available(kind: str | None = None) -> list[PluginInfo]:
    """List every installed plugin, optionally of one kind, without importing any of them.

    :param str kind: restrict to one of :data:`KINDS` (default: all kinds).
    :return: the plugins sorted by kind, name and distribution.
    :raises ValueError: ``kind`` is not one of :data:`KINDS`.

    |sep|

    :Examples:

        >>> from deepinv_ext import plugins
        >>> [p.name for p in plugins.available("dataset") if p.distribution == "deepinv-ext"]
        ['ellipses', 'image_folder', 'shepp_logan', 'skimage_images']
    """
    if kind is not None:
        _check_kind(kind)
    return [p for p in _scan() if kind is None or p.kind == kind]


def _resolve(kind: str, name: str, distribution: str | None) -> PluginInfo:
    _check_kind(kind)
    of_kind = available(kind)
    matches = [p for p in of_kind if p.name == name]
    if distribution is not None:
        matches = [p for p in matches if p.distribution == distribution]
    if not matches:
        names = sorted({p.name for p in of_kind})
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"; did you mean {close}?" if close else ""
        where = f" from distribution {distribution!r}" if distribution else ""
        raise KeyError(f"no {kind} plugin named {name!r}{where}{hint} (installed {kind} plugins: {names})")
    if len(matches) > 1:
        dists = ", ".join(f"{p.distribution} ({p.target})" for p in matches)
        raise PluginConflictError(
            f"{kind}.{name} is registered by several distributions: {dists}; pass distribution=... to choose one"
        )
    return matches[0]


def load(kind: str, name: str, distribution: str | None = None) -> Any:
    """Import and return the object registered as ``kind.name``.

    :param str kind: one of :data:`KINDS`.
    :param str name: the plugin name.
    :param str distribution: the distribution to take it from when several register the same name.
    :raises KeyError: no such plugin (the message lists close matches).
    :raises PluginConflictError: several distributions register it and ``distribution`` is not given.

    |sep|

    :Examples:

        >>> from deepinv_ext import plugins
        >>> plugins.load("physics", "astra_ct").__name__
        'AstraCT'
        >>> try:
        ...     plugins.load("physics", "astra")
        ... except KeyError as err:
        ...     print("did you mean ['astra_ct']" in str(err))
        True
    """
    return import_target(_resolve(kind, name, distribution).target)


def load_config(path: str | Path) -> dict:
    r"""Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) config file into a dict.

    :param str, pathlib.Path path: the file.
    :raises ValueError: another extension, or a file that does not hold a mapping.

    |sep|

    :Examples:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from deepinv_ext.plugins import load_config
        >>> path = Path(tempfile.mkdtemp()) / "physics.yaml"
        >>> _ = path.write_text("kind: physics\nname: astra_ct\nimg_size: 32\n")
        >>> load_config(path)
        {'kind': 'physics', 'name': 'astra_ct', 'img_size': 32}
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        config = json.loads(text)
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        config = yaml.safe_load(text)
    else:
        raise ValueError(f"config file must end in .json, .yaml or .yml, got {path.name!r}")
    if not isinstance(config, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(config).__name__}")
    return config


def _is_plugin_config(value: Any) -> bool:
    return isinstance(value, Mapping) and (("kind" in value and "name" in value) or "target" in value)


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"`` (or ``"package.module.attr"``) and return the object.

    :param str target: the object's import path; ``attr`` may be dotted (``"module:Class.method"``).
    :raises ValueError: ``target`` names no module and attribute.

    |sep|

    :Examples:

        >>> from deepinv_ext.plugins import import_target
        >>> import_target("deepinv.physics:Blur").__name__, import_target("deepinv.physics.Blur").__name__
        ('Blur', 'Blur')
    """
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:attr', got {target!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _build_nested(value: Any) -> Any:
    if _is_plugin_config(value):
        return build(value)
    if isinstance(value, Mapping):
        return {k: _build_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_build_nested(v) for v in value]
    return value


def _check_signature(target: Any, kwargs: dict, key: str) -> None:
    accepted = accepted_keywords(target)  # follows **kwargs along the constructor chain (deepinv's bases)
    if accepted is None:  # a callable that takes anything, or no readable signature: let the call decide
        return
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise TypeError(f"config for {key}: unknown key(s) {bad}; accepted keys: {sorted(accepted)}")
    params = inspect.signature(target).parameters
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise TypeError(f"config for {key}: missing required key(s) {missing}; accepted keys: {sorted(accepted)}")


def build(config: Mapping | str | Path) -> Any:
    """Build an instance from a config ``{"kind": ..., "name": ..., **kwargs}``.

    Nested configs (any value, also inside lists and dicts, that is itself a mapping with ``kind`` and ``name``)
    are built first, so an algorithm's prior can be a config too. An optional ``"distribution"`` key picks one
    of several distributions that register the same name. Objects that are not plugins (deepinv's own physics,
    losses, metrics) are built from ``{"target": "deepinv.physics:Blur", **kwargs}`` in the same way.

    :param dict, str, pathlib.Path config: the config mapping, or the path of a JSON/YAML file holding it.
    :raises TypeError: a key does not fit the target's signature (the message names it and the accepted keys).
        A target whose constructor passes ``**kwargs`` on (to deepinv's base classes, say) is checked against the
        whole chain of constructors the keywords can reach, so a misspelt key is refused there too.

    |sep|

    :Examples:

        A CT physics with a noise model that is a deepinv object, built from one nested config:

        >>> from deepinv_ext.plugins import build
        >>> physics = build({"kind": "physics", "name": "astra_ct", "img_size": 16, "angles": 10,
        ...                  "backend": "sparse", "cache_dir": None,
        ...                  "noise_model": {"target": "deepinv.physics:GaussianNoise", "sigma": 0.1}})
        >>> type(physics).__name__, round(physics.noise_model.sigma.item(), 6)
        ('AstraCT', 0.1)
        >>> try:
        ...     build({"kind": "physics", "name": "astra_ct", "img_size": 16, "angels": 10})
        ... except TypeError as err:
        ...     print(str(err).split(';')[0])
        config for physics.astra_ct: unknown key(s) ['angels']
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or the path of a JSON/YAML file, got {type(config).__name__}")
    if not _is_plugin_config(config):
        raise ValueError(f"a config needs 'kind' and 'name' keys (or 'target'), got keys {sorted(config)}")
    kwargs = dict(config)
    if "target" in kwargs:
        key = kwargs.pop("target")
        target = import_target(key)
    else:
        kind, name = kwargs.pop("kind"), kwargs.pop("name")
        key = f"{kind}.{name}"
        target = load(kind, name, kwargs.pop("distribution", None))
    kwargs = {k: _build_nested(v) for k, v in kwargs.items()}
    _check_signature(target, kwargs, key)
    return target(**kwargs)

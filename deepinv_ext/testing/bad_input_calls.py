r"""The calls the bad-input harness makes: what one case is (:class:`BadInputCase`), a plugin's declared example
with the constructor arguments it was built with, and for one case the call that passes its bad value where the
example passes a valid one. The cases themselves are listed by :mod:`deepinv_ext.testing.bad_input`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from deepinv_ext._validation import module_dtype
from deepinv_ext.testing.examples import declared_example, example_generator, seeded_init


@dataclass(frozen=True)
class BadInputCase:
    """One bad input to one plugin.

    :param str plugin: the plugin's key (``"kind.name"``) or its class name.
    :param str entry: ``"__init__"`` or the method called (``"A"``, ``"prox"``, ``"forward"``, ...).
    :param str argument: the argument given the bad value.
    :param str label: what the bad value is, e.g. ``"2.5"`` or ``"int64 tensor"``.
    :param str expect: ``"refuse"`` or ``"refuse_or_work"`` (see :mod:`deepinv_ext.testing.bad_input`).
    :param Callable value: ``value(valid)``: the bad value, from the valid one the example passes (a tensor
        mistake) or regardless of it (a constructor mistake).
    :param object target: the plugin class (or callable) whose example is built.
    :param str kind: the plugin's kind (one of :data:`deepinv_ext.plugins.KINDS`).

    |sep|

    :Examples:

        >>> from deepinv_ext.physics import AstraCT
        >>> from deepinv_ext.testing import bad_input_cases
        >>> case = next(c for c in bad_input_cases(AstraCT, kind="physics") if c.label == "int64 tensor")
        >>> str(case), case.expect
        ('AstraCT.A(x=int64 tensor)', 'refuse')
    """

    plugin: str
    entry: str
    argument: str
    label: str
    expect: str
    value: Callable[[Any], Any] = field(repr=False, compare=False, default=None)
    target: Any = field(repr=False, compare=False, default=None)
    kind: str = field(repr=False, compare=False, default="")

    def __str__(self) -> str:
        return f"{self.plugin}.{self.entry}({self.argument}={self.label})"


@dataclass
class DeclaredExample:
    """A plugin's declared example, with the constructor arguments it was built with."""

    contract: dict
    arguments: dict


def record_example(cls: type, example: Callable[[], dict]) -> DeclaredExample:
    """Run ``example()`` and record the arguments of its first construction of ``cls`` itself."""
    seen: list[dict] = []
    had_own = "__init__" in cls.__dict__
    original = cls.__init__
    signature = inspect.signature(original)

    def recording(self, *args, **kwargs):
        if type(self) is cls and not seen:
            bound = signature.bind(self, *args, **kwargs).arguments
            named = dict(list(bound.items())[1:])
            for pname, p in signature.parameters.items():
                if p.kind == p.VAR_KEYWORD:
                    named.update(named.pop(pname, {}))
            seen.append(named)
        original(self, *args, **kwargs)

    cls.__init__ = recording
    try:
        contract = example()
    finally:
        if had_own:
            cls.__init__ = original
        else:
            del cls.__init__
    return DeclaredExample(contract, seen[0] if seen else {})


@functools.cache
def declared_example_of(obj: Any) -> DeclaredExample:
    """The example ``obj`` declares (built once per object, from a generator seeded with 0), with the arguments of
    its construction when ``obj`` is a class."""

    def declared() -> dict:
        return declared_example(obj)

    return record_example(obj, declared) if inspect.isclass(obj) else DeclaredExample(declared(), {})


def first_image(dataset: Any) -> torch.Tensor:
    """Item 0 of ``dataset`` (a dict item's ``"x"``, a tuple item's first entry) as a batch of one."""
    item = dataset[0]
    return (item["x"] if isinstance(item, dict) else item[0] if isinstance(item, (tuple, list)) else item)[None]


def bad_call(case: BadInputCase, example: DeclaredExample) -> tuple[Callable[[], Any], Any]:
    """The call that gives the case's bad value, and the valid value it replaces (``None`` for non-tensors)."""
    c, obj = example.contract, case.target
    if case.entry == "__init__":
        kwargs = {**example.arguments, case.argument: case.value(None)}
        return lambda: obj(**kwargs), None
    if case.kind == "physics" and case.entry == "step":
        generator = obj(**example.arguments)
        return lambda: generator.step(batch_size=case.value(None)), None
    if case.kind == "physics":
        physics, x = c["physics"], c["x"]
        valid = x if case.argument == "x" else physics.A(x)
        return (lambda: getattr(physics, case.entry)(case.value(valid))), valid
    if case.kind == "prior":
        prior, x = c["prior"], c["x"]
        if case.argument == "gamma":
            return lambda: prior.prox(x, gamma=case.value(None)), None
        method = getattr(prior, case.entry)
        return (lambda: method(case.value(x), gamma=0.1) if case.entry == "prox" else method(case.value(x))), x
    if case.kind == "denoiser":
        denoiser = c["denoiser"]
        x = first_image(c["dataset"]).to(dtype_of(denoiser))
        sigma = c.get("sigma", 0.1)
        if case.argument == "sigma":
            return lambda: denoiser(x, case.value(None)), None
        return (lambda: denoiser(case.value(x), sigma)), x
    if case.kind == "algorithm":
        model, physics = c["model"], c["physics"]
        x = first_image(c["dataset"]).to(dtype_of(model, physics))
        with seeded_init(example_generator()):
            y = physics(x)
        if case.argument == "physics":
            return lambda: model(y, case.value(None)), None
        return (lambda: model(case.value(y), physics)), y
    if case.kind == "loss":
        loss, model, physics = c["loss"], c["model"], c["physics"]
        x = first_image(c["dataset"]).to(dtype_of(model, physics))
        x_net = x + 0.1 * torch.randn(x.shape, generator=example_generator(), dtype=x.dtype).to(x.device)
        with seeded_init(example_generator()):
            y = physics(x)
        return (lambda: loss(x=x, x_net=case.value(x_net), y=y, physics=physics, model=model)), x_net
    raise ValueError(f"no entry point {case.entry!r} for kind {case.kind!r}")


def dtype_of(*modules: Any) -> torch.dtype:
    """The dtype of the first of ``modules`` that holds a floating tensor (:func:`module_dtype`), else torch's
    default."""
    found = (module_dtype(m) for m in modules if isinstance(m, torch.nn.Module))
    return next((d for d in found if d is not None), torch.get_default_dtype())

r"""A careless user, automated: bad inputs for every constructor argument and entry point of a plugin.

:func:`bad_input_cases` reads a plugin's constructor signature and kind, without building anything, and lists
the mistakes a user makes with it: a float or a bool where a count is due, a string where a flag is due, NaN or
infinity where a number is due, a misspelt option, a device that is not there, the wrong kind of object; and, at the
plugin's entry points, tensors of an integer, complex or other floating dtype, of the wrong shape (also one that
merely broadcasts), with a NaN, an empty batch, a numpy array, a negative or NaN step size or noise level.
:func:`check_bad_input` runs one case on the example the plugin declares with ``contract_example()`` and raises
:class:`AssertionError` unless the outcome is one the input policy allows:

- ``"refuse"``: a ``TypeError`` or ``ValueError`` raised by the plugin's own package (not by torch, numpy or a
  backend underneath) whose message names the argument;
- ``"refuse_or_work"``: that, or a result that is right for the input: an empty result for an empty batch, a
  result in the input's dtype for another precision, a result showing the NaN for a NaN (never a finite one).

The deepinv-ext test suite runs every case over the whole plugin registry, so a newly registered plugin is fuzzed at
once; a third party runs the same on theirs:

.. code-block:: python

    import pytest
    from deepinv_ext import plugins, testing

    CASES = [c for p in plugins.available() if p.distribution == "my-package" for c in testing.bad_input_cases(p)]

    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_bad_input(case):
        testing.check_bad_input(case)

Which arguments get which mistakes is read from the signature: an argument whose default (or annotation) is an
integer gets the count mistakes (and ``-1`` when its name says it counts or sizes something), a float gets NaN and
infinity (and ``-1`` when its name says it is a tolerance, scale or noise level), a bool gets the string ``"no"``, a
string gets an unknown option (unless it names a path), ``dtype`` gets an integer and a complex dtype, ``device`` gets
a CUDA device that is not there, and an argument annotated with a model or physics class gets a string. A plugin
whose argument legitimately takes such a value (an offset that may be negative, a bound that may be infinite) lists
it in ``exempt``.
"""

from __future__ import annotations

import inspect
import os
import re
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import deepinv as dinv
import torch

from deepinv_ext._convergence import NotConvergedWarning
from deepinv_ext.plugins import PluginInfo, load
from deepinv_ext.testing.bad_input_calls import BadInputCase, bad_call, declared_example_of

__all__ = ["BadInputCase", "bad_input_cases", "check_bad_input"]

_COUNT_NAME = re.compile(r"(^n_|^num_|^max_|iter|size|length|channels|depth|features|scales|blocks|views|spokes|"
                         r"readout|coils|samples|interleaves|turns|width|steps|batch|levels|calib|kernel_size)")
_POSITIVE_NAME = re.compile(r"(tol|sigma|noise|lipschitz|spacing|radius|lr$|step_size|weight|scale|eps$|mu$|"
                            r"increase|^gamma|^lambda|^lam$)")
_PATH_NAME = re.compile(r"(dir|path|file|name|root|cache|key|mode|title|label)")
_MODEL_ANNOTATION = re.compile(r"\b(Prior|Denoiser|Physics|LinearPhysics|Module|Reconstructor)\b")


# ------------------------------------------------------------------ constructor arguments from the signature
def _literal(value: Any) -> Callable[[Any], Any]:
    return lambda _example: value


def _constructor_mistakes(name: str, param: inspect.Parameter) -> list[tuple[str, Any]]:
    """The bad values for one constructor argument, from its default and annotation."""
    default, ann = param.default, str(param.annotation)
    has_default = default is not inspect.Parameter.empty
    is_int = (isinstance(default, int) and not isinstance(default, bool)) or (
        not has_default or default is None) and re.search(r"\bint\b", ann) and "float" not in ann
    is_float = isinstance(default, float) or ((not has_default or default is None) and re.search(r"\bfloat\b", ann)
                                              and not re.search(r"Tensor|Callable|tuple|list", ann))
    if isinstance(default, bool) or "bool" in ann.split("|")[0]:
        return [("'no'", "no")]  # a flag read by its truth value would take "no" for True
    if name == "device":
        return [("'cuda:99'", "cuda:99"), ("'gpu'", "gpu")]
    if name == "dtype" or isinstance(default, torch.dtype):
        return [("torch.int64", torch.int64), ("torch.complex64", torch.complex64)]
    if is_int and not re.search(r"Tensor|Callable|Sequence", ann):
        bad = [("2.5", 2.5), ("8.0", 8.0), ("True", True), ("'3'", "3")]
        return bad + ([("-1", -1)] if _COUNT_NAME.search(name) else [])
    if is_float:
        bad = [("nan", float("nan")), ("inf", float("inf")), ("'0.1'", "0.1")]
        return bad + ([("-1.0", -1.0)] if _POSITIVE_NAME.search(name) else [])
    if isinstance(default, str) and not _PATH_NAME.search(name):
        return [("'no-such-option'", "no-such-option")]
    if _MODEL_ANNOTATION.search(ann):
        return [("a string", "not a model")]
    return []


def _constructor(obj: Any) -> Callable:
    return obj.__init__ if inspect.isclass(obj) else obj


# ------------------------------------------------------------------ entry points per kind
def _tensor_mistakes(name: str) -> list[tuple[str, str, Callable[[torch.Tensor], Any]]]:
    """``(label, expect, make)``: the tensor mistakes, each a function of a valid tensor."""

    def nan(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone(memory_format=torch.contiguous_format)
        t.view(-1)[0] = float("nan")
        return t

    other = {torch.float64: torch.float32, torch.float32: torch.float64}
    return [
        ("int64 tensor", "refuse", lambda t: t.round().to(torch.int64)),
        ("complex tensor", "refuse", lambda t: t.to(torch.complex128 if t.dtype == torch.float64 else torch.complex64)),
        ("numpy array", "refuse", lambda t: t.detach().cpu().numpy()),
        ("one dimension fewer", "refuse", lambda t: t[0]),
        ("last dimension one short", "refuse", lambda t: t[..., :-1]),
        ("last dimension 1 (broadcasts)", "refuse", lambda t: t[..., :1]),
        ("empty batch", "refuse_or_work", lambda t: t[:0]),
        ("a NaN", "refuse_or_work", nan),
        ("other precision", "refuse_or_work", lambda t: t.to(other.get(t.dtype, torch.float64))),
    ]


_RESIZED = ("last dimension one short", "last dimension 1 (broadcasts)")


def _entry_points(kind: str, obj: Any) -> list[tuple[str, str]]:
    """``(method, tensor argument)`` pairs fuzzed with the tensor mistakes."""
    if kind == "physics":
        if inspect.isclass(obj) and issubclass(obj, dinv.physics.generator.PhysicsGenerator):
            return []
        return [("A", "x"), ("A_adjoint", "y")]
    return {"prior": [("fn", "x"), ("grad", "x"), ("prox", "x")], "denoiser": [("forward", "x")],
            "algorithm": [("forward", "y")], "loss": [("forward", "x_net")]}.get(kind, [])


def _number_mistakes(kind: str, obj: Any) -> list[tuple[str, str, str, Any]]:
    """``(method, argument, label, value)``: the bad numbers at the entry points."""
    if kind == "physics" and inspect.isclass(obj) and issubclass(obj, dinv.physics.generator.PhysicsGenerator):
        return [("step", "batch_size", label, v) for label, v in
                (("2.5", 2.5), ("True", True), ("-1", -1), ("'2'", "2"))]
    if kind == "prior":
        return [("prox", "gamma", label, v) for label, v in (("-1.0", -1.0), ("nan", float("nan")))]
    if kind == "denoiser":
        return [("forward", "sigma", label, v) for label, v in (("-0.1", -0.1), ("nan", float("nan")))]
    if kind == "algorithm":
        return [("forward", "physics", "a string", "not a physics")]
    return []


def bad_input_cases(plugin: PluginInfo | Any, kind: str | None = None,
                    exempt: Iterable[str] = ()) -> list[BadInputCase]:
    """The bad-input cases of a plugin, read from its signature and kind (nothing is built).

    :param deepinv_ext.plugins.PluginInfo, type plugin: a registered plugin, or the plugin class itself together
        with ``kind``.
    :param str kind: the plugin's kind, when ``plugin`` is the class.
    :param Iterable[str] exempt: substrings of case strings (``str(case)``, e.g. ``"__init__(offset=-1"``) to leave
        out, for arguments that legitimately take a value the generic rules call bad; say why where you pass them.
    :return: the cases, in a stable order.

    |sep|

    :Examples:

        >>> from deepinv_ext.datasets import RandomEllipsesDataset
        >>> from deepinv_ext.testing import bad_input_cases
        >>> cases = bad_input_cases(RandomEllipsesDataset, kind="dataset")
        >>> str(cases[0]), cases[0].expect  # a float where a count is due
        ('RandomEllipsesDataset.__init__(length=2.5)', 'refuse')
    """
    if isinstance(plugin, PluginInfo):
        kind, obj, key = plugin.kind, load(plugin.kind, plugin.name, plugin.distribution), plugin.key
    else:
        obj, key = plugin, getattr(plugin, "__name__", type(plugin).__name__)
    exempt = tuple(exempt)
    cases = []
    params = inspect.signature(_constructor(obj)).parameters
    for name, param in params.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        for label, value in _constructor_mistakes(name, param):
            cases.append(BadInputCase(key, "__init__", name, label, "refuse", _literal(value), obj, kind))
    for method, argument in _entry_points(kind, obj):
        for label, expect, make in _tensor_mistakes(argument):
            if kind == "algorithm" and label == "a NaN":  # a solve refuses non-finite data at its entry
                expect = "refuse"
            if kind in ("prior", "denoiser", "algorithm") and label in _RESIZED:  # any image size may be valid
                expect = "refuse_or_work"
            cases.append(BadInputCase(key, method, argument, label, expect, make, obj, kind))
    for method, argument, label, value in _number_mistakes(kind, obj):
        cases.append(BadInputCase(key, method, argument, label, "refuse", _literal(value), obj, kind))
    return [c for c in cases if not any(e in str(c) for e in exempt)]


# ------------------------------------------------------------------ running a case
def _package_dir(obj: Any) -> str:
    module = inspect.getmodule(obj)
    top = module.__name__.split(".")[0]
    spec = __import__(top)
    return os.path.dirname(os.path.abspath(spec.__file__))


_SHARED_CHECKS = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "_validation.py"))


def _raised_by(err: BaseException, package_dir: str) -> bool:
    """Whether ``err`` was raised by the plugin's package, directly or through deepinv-ext's shared checks."""
    frames = [os.path.abspath(f.filename) for f in traceback.extract_tb(err.__traceback__)]
    while frames and frames[-1] == _SHARED_CHECKS:
        frames.pop()
    return bool(frames) and frames[-1].startswith(package_dir + os.sep)


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _check_result(case: BadInputCase, out: Any, valid: torch.Tensor | None) -> None:
    """The policy for a call that did not refuse a ``refuse_or_work`` input."""
    tensors = _tensors(out)
    assert tensors, f"{case}: accepted, returned {type(out).__name__} instead of a tensor"
    if case.label == "empty batch":
        bad = [tuple(t.shape) for t in tensors if t.ndim and t.shape[0] != 0]
        assert not bad, f"{case}: accepted an empty batch but returned shape(s) {bad}"
    elif case.label == "a NaN":
        assert not all(bool(torch.isfinite(t).all()) for t in tensors), \
            f"{case}: a NaN in the input gave a finite result (swallowed)"
    elif case.label in _RESIZED:
        bad = case.value(valid)
        if case.kind == "algorithm":  # the image must fit the measurements it came from
            physics = declared_example_of(case.target).contract["physics"]
            fits = [tuple(physics.A(t).shape) == tuple(bad.shape) for t in tensors if t.ndim == bad.ndim]
            assert fits and all(fits), f"{case}: accepted y of shape {tuple(bad.shape)} and returned an image " \
                                       f"whose measurements have shape {tuple(physics.A(tensors[0]).shape)}"
        else:  # a map of images: same shape out as in (or one value per image)
            wrong = [tuple(t.shape) for t in tensors if (t.shape != bad.shape if t.ndim == bad.ndim
                                                           else t.shape[:1] != bad.shape[:1])]
            assert not wrong, f"{case}: accepted shape {tuple(bad.shape)} but returned shape(s) {wrong}"
    elif case.label == "other precision":
        wanted = case.value(valid).dtype
        bad = [t.dtype for t in tensors if t.is_floating_point() and t.dtype != wanted]
        assert not bad, f"{case}: accepted {wanted} input but returned {bad}: cast silently"
        assert all(bool(torch.isfinite(t).all()) for t in tensors), f"{case}: not finite"


def check_bad_input(case: BadInputCase) -> str:
    """Run one :class:`BadInputCase` and check that the outcome is one the input policy allows.

    :param BadInputCase case: the case, from :func:`bad_input_cases`.
    :return: ``"refused"`` (a clear error) or ``"worked"`` (a right result for a ``refuse_or_work`` input).
    :raises AssertionError: the call crashed inside another package, raised an error that does not name the
        argument, or accepted a value it should have refused (a silent wrong result).

    |sep|

    :Examples:

        :class:`~deepinv_ext.physics.AstraCT` refuses a float count of detector cells, and an empty batch of
        images gives an empty batch of sinograms:

        >>> from deepinv_ext.physics import AstraCT
        >>> from deepinv_ext.testing import bad_input_cases, check_bad_input
        >>> cases = {str(case): case for case in bad_input_cases(AstraCT, kind="physics")}
        >>> check_bad_input(cases["AstraCT.__init__(n_detectors=2.5)"])
        'refused'
        >>> check_bad_input(cases["AstraCT.A(x=empty batch)"])
        'worked'
    """
    example = declared_example_of(case.target)
    package = _package_dir(case.target)
    try:
        call, valid = bad_call(case, example)
    except Exception as err:  # the valid example itself failed: a harness error, not the case's
        raise AssertionError(f"{case}: building the valid call failed: {type(err).__name__}: {err}") from err
    try:
        with warnings.catch_warnings():  # the examples run a few iterations: convergence is not the question here
            warnings.filterwarnings("ignore", category=NotConvergedWarning)
            out = call()
    except (TypeError, ValueError) as err:
        where = traceback.extract_tb(err.__traceback__)[-1]
        assert _raised_by(err, package), (
            f"{case}: {type(err).__name__} raised inside {where.filename}:{where.lineno}, not by the plugin's "
            f"own check: {str(err)[:200]}")
        assert re.search(rf"(?<![A-Za-z0-9_]){re.escape(case.argument)}(?![A-Za-z0-9_])", str(err)), (
            f"{case}: the message does not name {case.argument!r}: {str(err)[:200]}")
        return "refused"
    except Exception as err:
        where = traceback.extract_tb(err.__traceback__)[-1]
        raise AssertionError(f"{case}: crashed with {type(err).__name__} at {where.filename}:{where.lineno}: "
                             f"{str(err)[:200]}") from err
    assert case.expect == "refuse_or_work", f"{case}: accepted silently (returned {type(out).__name__})"
    _check_result(case, out, valid)
    return "worked"


def _outcome(case: BadInputCase) -> str:
    try:
        return check_bad_input(case)
    except AssertionError as err:
        text = str(err).split(": ", 1)[-1]
        return ("crash" if text.startswith(("crashed", "building")) else
                "unclear" if "not by the plugin" in text or "does not name" in text else "silent")


def main() -> None:
    """Print, per plugin kind, how the registry's plugins answer their bad-input cases (``python -m
    deepinv_ext.testing.bad_input [-v]``; ``-v`` lists the failing cases)."""
    import collections
    import sys
    import warnings

    from deepinv_ext.plugins import KINDS, available

    warnings.simplefilter("ignore")
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for info in available():
        for case in bad_input_cases(info):
            outcome = _outcome(case)
            table[info.kind][outcome] += 1
            if "-v" in sys.argv and outcome not in ("refused", "worked"):
                print(f"{outcome:8s} {case}")
    columns = ("refused", "worked", "crash", "unclear", "silent")
    print(f"{'kind':10s} {'cases':>6s} " + " ".join(f"{c:>8s}" for c in columns))
    for kind in KINDS:
        print(f"{kind:10s} {sum(table[kind].values()):6d} " + " ".join(f"{table[kind][c]:8d}" for c in columns))


if __name__ == "__main__":
    main()

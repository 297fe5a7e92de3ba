"""Parameter declarations: a component's parameters, their types and their ranges, declared once, next to it.

A component declares its parameters either as a dataclass named ``Params`` (attacks, whose parameters are
inherited and extended by subclasses), or as the keyword parameters of its ``__init__`` (probes, victims) or of
the function itself (data loaders). Ranges and choices ride on the type with ``typing.Annotated``::

    class JPEG(ImageProbe):
        def __init__(self, quality: Annotated[int, between(1, 100)] = 75): ...

    @dataclasses.dataclass
    class Params:
        tau: Annotated[float, between(0, 1, lo_open=True)] = 0.5

``bind(component, values, key)`` checks a recipe section against the declaration (unknown keys, types, ranges,
then the component's cross-field rule) and returns the values with every default filled in. Numbers may be
written as fractions (``8/255``). Nothing is built to validate, and every failure is a ``UserError`` naming the
recipe key.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from fractions import Fraction
from pathlib import PurePath
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from mmguard.core.errors import UserError

REQUIRED = inspect.Parameter.empty


# ---------------------------------------------------------------------------------------------------- checks
@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric interval; ``None`` ends are unbounded."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def problem(self, value: Any) -> Optional[str]:
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return f"{value!r} is outside {self}"
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return f"{value!r} is outside {self}"
        return None

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


@dataclasses.dataclass(frozen=True)
class OneOf:
    choices: Tuple[Any, ...]

    def problem(self, value: Any) -> Optional[str]:
        return None if value in self.choices else f"{value!r} is not one of {', '.join(map(str, self.choices))}"

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Range:
    return Range(lo, hi, lo_open, hi_open)


def at_least(lo: float) -> Range:
    return Range(lo=lo)


def above(lo: float) -> Range:
    return Range(lo=lo, lo_open=True)


def one_of(*choices: Any) -> OneOf:
    return OneOf(tuple(choices))


def _num(x: Optional[float]) -> str:
    if isinstance(x, float) and 0 < x < 1 and abs(x * 255 - round(x * 255)) < 1e-9:
        return f"{round(x * 255)}/255"  # pixel budgets read as levels
    return f"{x:g}" if isinstance(x, float) else str(x)


# The types most components need.
PositiveInt = typing.Annotated[int, at_least(1)]
NonNegativeInt = typing.Annotated[int, at_least(0)]
PositiveFloat = typing.Annotated[float, above(0)]
NonNegativeFloat = typing.Annotated[float, at_least(0)]
UnitInterval = typing.Annotated[float, between(0, 1)]


# ----------------------------------------------------------------------------------------------- declaration
@dataclasses.dataclass(frozen=True)
class Declared:
    """One declared parameter: its name, base type, checks and default (``REQUIRED`` when it has none)."""

    name: str
    type: Any
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def params_class(target: Any) -> Optional[type]:
    """The ``Params`` dataclass a component declares its parameters with, or None."""
    cls = getattr(target, "Params", None)
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


@functools.lru_cache(maxsize=None)
def declared(target: Any) -> Dict[str, Declared]:
    """The parameters ``target`` (a component class, a dataclass or a function) declares, in order. A component
    whose parameters are another's (a fixed combination passing them on) names it with ``declaration()``."""
    if hasattr(target, "declaration"):
        target = target.declaration()
    dc = params_class(target) or (target if isinstance(target, type) and dataclasses.is_dataclass(target) else None)
    if dc is not None:
        hints = typing.get_type_hints(dc, include_extras=True)
        out = {}
        for f in dataclasses.fields(dc):
            if not f.init:
                continue
            default = (f.default if f.default is not dataclasses.MISSING else
                       f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED)
            out[f.name] = Declared(f.name, hints.get(f.name, Any), default, f.metadata.get("doc", ""))
        return out
    if isinstance(target, type) and target.__init__ is object.__init__:
        return {}  # a component without parameters
    fn = target.__init__ if isinstance(target, type) else target
    hints = typing.get_type_hints(fn, include_extras=True)
    out = {}
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if isinstance(target, type) and i == 0:  # self
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{target!r} must declare its parameters by name (no *args/**kwargs)")
        out[p.name] = Declared(p.name, hints.get(p.name, Any), p.default)
    return out


# -------------------------------------------------------------------------------------------------- coercion
def _unwrap(tp: Any) -> Tuple[Any, List[Any]]:
    """Annotated[T, checks...] -> (T, checks)."""
    checks: List[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp, checks = args[0], [*checks, *(a for a in args[1:] if hasattr(a, "problem"))]
    return tp, checks


def describe_type(tp: Any) -> str:
    tp, checks = _unwrap(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(inner) + (" or null" if type(None) in args else "")
    elif origin is typing.Literal:
        text = "one of " + ", ".join(map(str, args))
    elif origin in (list, tuple, Sequence, typing.Sequence, List):
        text = f"a list of {describe_type(args[0]) if args else 'values'}"
    elif origin in (dict, Mapping, typing.Mapping, Dict):
        text = "a mapping"
    else:
        text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, "a value")
    return text + "".join(f" {c}" for c in checks)


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (a typing annotation); raises ValueError with the problem in words."""
    tp, checks = _unwrap(tp)
    value = _coerce_base(value, tp)
    for check in checks:
        if value is not None:
            problem = check.problem(value)
            if problem:
                raise ValueError(problem)
    return value


def _coerce_base(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        problems = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg)
            except ValueError as err:
                problems.append(str(err))
        raise ValueError(problems[0] if len(problems) == 1 else f"expected {describe_type(tp)}, got {value!r}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, args))}")
    if origin in (list, tuple, Sequence, typing.Sequence, List) or tp in (list, tuple):
        inner = args[0] if args else Any
        if isinstance(value, (str, int, float, bool)) and inner in (str, Any):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(coerce(v, inner))
            except ValueError as err:
                raise ValueError(f"item {i}: {err}") from None
        return out
    if origin in (dict, Mapping, typing.Mapping, Dict) or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        return parse_number(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return str(value)
        raise ValueError(f"expected a path, got {value!r}")
    return value


def parse_number(value: Any) -> float:
    """A finite number, also written as a fraction or in exponent notation ("8/255", "1e-3")."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not a number or a fraction like 8/255") from None
    else:
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(out):
        raise ValueError(f"expected a finite number, got {value!r}")
    return out


# ----------------------------------------------------------------------------------------------------- binding
def bind(target: Any, values: Mapping[str, Any], key: str, *, what: str = "", skip: Sequence[str] = (),
         exclude: Sequence[str] = ()) -> Dict[str, Any]:
    """Check ``values`` (a recipe section) against what ``target`` declares and return every declared parameter:
    the given values coerced and range-checked, the defaults for the rest. ``key`` is the section's recipe key
    (``attacks.2``) and ``what`` its description (``attack 'em_image'``), for the messages. Keys in ``skip`` are the
    caller's (``name``, ``label``) and are left out; declared parameters in ``exclude`` are supplied by the code,
    not by a recipe."""
    decl = {k: d for k, d in declared(target).items() if k not in exclude}
    what = what or f"'{getattr(target, '__name__', target)}'"
    if not isinstance(values, Mapping):
        raise UserError(f"key '{key}': expected a mapping of parameters of {what}, got {values!r}")
    unknown = [k for k in values if k not in decl and k not in skip]
    if unknown:
        allowed = ", ".join(decl) or "(none)"
        raise UserError(f"key '{key}.{unknown[0]}': not a parameter of {what}; allowed: {allowed}")
    out: Dict[str, Any] = {}
    for name, d in decl.items():
        if name in values:
            try:
                out[name] = coerce(values[name], d.type)
            except ValueError as err:
                raise UserError(f"key '{key}.{name}': {err}") from None
        elif d.required:
            raise UserError(f"key '{key}.{name}' is missing: {what} needs it ({describe_type(d.type)})")
        else:
            out[name] = list(d.default) if isinstance(d.default, tuple) else d.default  # as a recipe writes it
    if not exclude:
        check_together(target, out, key, what)
    return out


def check_together(target: Any, values: Dict[str, Any], key: str, what: str) -> None:
    """The component's rule across parameters: ``Params.__post_init__`` or a ``check_params(values)`` hook; a
    ``ParamError(name, problem)`` from either names the key."""
    if hasattr(target, "declaration"):
        target = target.declaration()
    try:
        dc = params_class(target) or (target if isinstance(target, type) and dataclasses.is_dataclass(target)
                                      else None)
        if dc is not None:
            dc(**values)
        hook: Optional[Callable] = getattr(target, "check_params", None)
        if hook is not None:
            hook(values)
    except ParamError as err:
        raise UserError(f"key '{key}.{err.name}': {err.problem}") from None


class ParamError(ValueError):
    """Raised by a component's cross-field rule: which parameter, and what is wrong with it."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem


def explain(target: Any) -> List[str]:
    """One line per declared parameter: ``name: type (default ...)``, for ``mmguard list --params``."""
    lines = []
    for d in declared(target).values():
        default = "required" if d.required else f"default {d.default!r}"
        lines.append(f"{d.name}: {describe_type(d.type)} ({default})" + (f"  {d.doc}" if d.doc else ""))
    return lines

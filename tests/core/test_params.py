"""Parameter declarations: types, ranges, fractions, unknown keys and cross-field rules, all as UserErrors."""
import dataclasses
from typing import Annotated, List, Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmguard.core.errors import UserError
from mmguard.core.params import (ParamError, PositiveInt, between, bind, declared, explain, one_of, parse_number)


def loader(path: str, limit: Optional[PositiveInt] = None, frac: Annotated[float, between(0, 1, hi_open=True)] = 0.5,
           mode: Literal["a", "b"] = "a", tags: List[str] = ()):
    return path


@dataclasses.dataclass
class Params:
    eps: Annotated[float, between(1 / 255, 1)] = 8 / 255
    steps: PositiveInt = 5
    verify: Optional[PositiveInt] = None

    def __post_init__(self):
        if self.verify is not None and self.verify > self.steps:
            raise ParamError("verify", f"{self.verify} exceeds steps ({self.steps})")


class Component:
    Params = Params


def test_signature_declaration_fills_defaults_and_coerces():
    out = bind(loader, {"path": "x.json", "limit": 3.0, "tags": "one"}, "data")
    assert out == {"path": "x.json", "limit": 3, "frac": 0.5, "mode": "a", "tags": ["one"]}
    assert list(declared(loader)) == ["path", "limit", "frac", "mode", "tags"]


def test_fractions_are_numbers():
    assert bind(Component, {"eps": "4/255"}, "attacks.0")["eps"] == pytest.approx(4 / 255)
    assert parse_number("1e-3") == pytest.approx(1e-3)


@pytest.mark.parametrize("values, needle", [
    ({"eps": -0.1}, r"attacks\.0\.eps': -0\.1 is outside \[1/255, 1\]"),
    ({"eps": 2}, r"attacks\.0\.eps': 2\.0 is outside"),
    ({"eps": "8/0"}, r"eps': '8/0' is not a number"),
    ({"eps": float("nan")}, r"eps': expected a finite number"),
    ({"steps": 0}, r"steps': 0 is outside >= 1"),
    ({"steps": 2.5}, r"steps': expected an integer"),
    ({"steps": True}, r"steps': expected an integer"),
    ({"verify": 9}, r"attacks\.0\.verify': 9 exceeds steps"),
    ({"epz": 1}, r"attacks\.0\.epz': not a parameter of .*allowed: eps, steps, verify"),
])
def test_bad_values_name_the_key(values, needle):
    with pytest.raises(UserError, match=needle):
        bind(Component, values, "attacks.0")


@pytest.mark.parametrize("values, needle", [
    ({}, r"data\.path' is missing"),
    ({"path": 3}, r"data\.path': expected a string"),
    ({"path": "p", "frac": 1.0}, r"data\.frac': 1\.0 is outside \[0, 1\)"),
    ({"path": "p", "mode": "c"}, r"data\.mode': 'c' is not one of a, b"),
    ({"path": "p", "tags": [1]}, r"data\.tags': item 0: expected a string"),
])
def test_signature_errors(values, needle):
    with pytest.raises(UserError, match=needle):
        bind(loader, values, "data")


def test_explain_lists_types_and_ranges():
    lines = explain(Component)
    assert lines[0].startswith("eps: a number [1/255, 1] (default")
    assert "steps: an integer >= 1" in lines[1]
    assert one_of("x", "y").problem("z") == "'z' is not one of x, y"


values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                      lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                      max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["eps", "steps", "verify", "other"]), values, max_size=4))
def test_no_input_raises_anything_but_a_user_error(section):
    try:
        bind(Component, section, "attacks.0")
    except UserError:
        pass

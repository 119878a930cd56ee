"""htsec.submit on hostile text: any description is either derived or refused with a
SubmitError, in bounded time; never a hang inside HTCondor's expander, a crash or another
exception.

The descriptions are built from the constructs that make HTCondor's expander loop, recurse or
blow up (references between a few names, function macros, defaults, ``$$``, conditions,
foreach items that refer to macros) plus arbitrary text. A hang cannot be interrupted inside
HTCondor's C code, so the timeout here ends the whole run (``method="thread"``) rather than
waiting forever.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htsec.errors import SubmitError
from htsec.submit.load import load_submit
from htsec.submit.needs import derive

NAMES = ["a", "b", "c", "use_oauth_services", "box_oauth_permissions", "box_oauth_resource_h", "x"]

_name = st.sampled_from(NAMES)
_fragment = st.one_of(
    st.sampled_from(["box", "gdrive", " ", ",", "read:/", "R", "1", "(", ")", "$", "$$"]),
    _name.map(lambda n: f"$({n})"),
    _name.map(lambda n: f"$({n}:dflt)"),
    st.tuples(_name, _name).map(lambda t: f"$({t[0]}:$({t[1]}))"),
    _name.map(lambda n: f"$INT({n})"),
    _name.map(lambda n: f"$CHOICE(0,{n})"),
    _name.map(lambda n: f"$SUBSTR({n},1)"),
    _name.map(lambda n: f"$Fn({n})"),
    _name.map(lambda n: f"$$({n})"),
    _name.map(lambda n: f"$($({n}))"),
    st.just("$ENV(HOME)"),
    st.just("$(Process)"),
)
_value = st.lists(_fragment, max_size=6).map("".join)
_assign = st.tuples(_name, _value).map(lambda t: f"{t[0]} = {t[1]}")
_queue = st.one_of(
    st.just("queue"),
    st.integers(0, 3).map(lambda n: f"queue {n}"),
    _value.map(lambda v: f"queue {v}"),
    st.lists(_value, min_size=1, max_size=3).map(lambda v: f"queue x in ({', '.join(v)})"),
    st.lists(_value, min_size=1, max_size=3).map(
        lambda v: "queue x, c from (\n" + "\n".join(f"{i} {i}" for i in v) + "\n)"
    ),
)
_condition = _value.map(lambda v: f"if {v}\nelse\nendif")
_line = st.one_of(_assign, _assign, _assign, _queue, _condition, st.text(max_size=30))
descriptions = st.lists(_line, max_size=12).map(lambda lines: "\n".join(lines) + "\n")


def _config(name: str) -> str | None:
    return {"BOX_USER_DEFINE_SCOPES": "R"}.get(name.upper())


@pytest.mark.timeout(240, method="thread")
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descriptions)
def test_hostile_description_derived_or_refused(text: str) -> None:
    try:
        derive(load_submit(text), _config)
    except SubmitError as exc:
        assert str(exc)
        assert "Traceback" not in str(exc)


@pytest.mark.timeout(120, method="thread")
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_derived_or_refused(data: bytes) -> None:
    with contextlib.suppress(SubmitError):
        derive(load_submit(data), _config)

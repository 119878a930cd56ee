"""htsec.errors: the tree its docstring draws is the tree of its classes; each class says its own
code, status and exit code; no two share a code; no class is dead."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import htsec
from htsec import errors

CLASSES = [getattr(errors, name) for name in errors.__all__]
SRC = Path(htsec.__file__).parent


def _drawn_tree() -> dict[str, str | None]:
    """Each class the docstring draws, mapped to the class it is drawn under."""
    doc = errors.__doc__ or ""
    lines = doc[doc.index("    HtsecError\n") :].split("\n\n")[0].splitlines()
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (depth, name)
    for line in lines:
        m = re.match(r"^    ((?:[| ]   )*)(?:\+-- )?(\w+)", line)
        assert m, line
        depth = len(m.group(1)) // 4 + (1 if "+--" in line else 0)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[m.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, m.group(2)))
    return parents


def test_docstring_draws_the_class_tree_as_it_is() -> None:
    actual = {
        c.__name__: (c.__base__.__name__ if c is not errors.HtsecError else None) for c in CLASSES
    }
    assert _drawn_tree() == actual


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_each_class_sets_its_own_code_status_and_exit_code(cls: type) -> None:
    for attr in ("code", "status", "exit_code"):
        assert attr in vars(cls), f"{cls.__name__} inherits {attr}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_status_belongs_to_the_class_not_the_instance(cls: type) -> None:
    init = vars(cls).get("__init__")
    assert init is None or "status" not in inspect.signature(init).parameters


def test_no_two_classes_share_a_code() -> None:
    codes = [c.code for c in CLASSES]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_every_leaf_is_used() -> None:
    """Nothing dead: each class without subclasses is named by htsec's code outside errors.py
    (a base such as TokenError groups its leaves and need not be raised itself)."""
    text = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p != SRC / "errors.py")
    leaves = [c for c in CLASSES if not c.__subclasses__()]
    unused = [c.__name__ for c in leaves if not re.search(rf"\b{c.__name__}\b", text)]
    assert unused == []

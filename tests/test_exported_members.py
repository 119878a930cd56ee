"""Each part's public API is what its ``__all__`` says (httpx tests/test_exported_members.py)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import htsec

PACKAGES = [
    *sorted(m.name for m in pkgutil.walk_packages(htsec.__path__, "htsec.") if m.ispkg),
    "htsec",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_public(name: str) -> None:
    mod = importlib.import_module(name)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert sorted(exported) == sorted(set(exported)), "duplicates in __all__"
    for attr in exported:
        assert hasattr(mod, attr), f"{name}.__all__ names missing {attr}"
    public = {
        n
        for n, v in vars(mod).items()
        if not n.startswith("_")
        and getattr(v, "__module__", name).startswith(name)
        and not isinstance(v, type(importlib))
    }
    assert public <= set(exported) | {"annotations"}, public - set(exported)

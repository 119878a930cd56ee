"""Credential names as HTCondor accepts them (htsec.creds.names; FORMATS.md 3)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from htsec.creds.creddir import CredDir
from htsec.creds.files import (
    TopFile,
)
from htsec.creds.names import TokenName, local_user, split_scopes
from htsec.errors import (
    BadCredentialName,
    CredentialError,
)

# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "stem"),
    [
        ("box", "box"),
        ("box*read", "box_read"),
        ("box*a_b", "box_a_b"),  # handles may hold "_": the stem splits at the first one
        ("my-svc*x+y=z.w", "my-svc_x+y=z.w"),
        ("Box9*9", "Box9_9"),
        ("box*..", "box_.."),  # harmless inside a stem, and HTCondor allows it
    ],
)
def test_token_name_forms(wire: str, stem: str) -> None:
    name = TokenName.parse_wire(wire)
    assert name.wire == wire == str(name)
    assert name.stem == stem
    assert TokenName.parse_stem(stem) == name


@pytest.mark.parametrize(
    ("service", "handle"),
    [
        ("", ""),
        ("svc_with_underscore", ""),  # the credmon would read it as service "svc"
        ("../x", ""),
        ("a/b", ""),
        ("a\x00b", ""),
        ("box\n", ""),
        (" box", ""),
        ("b\u00f8x", ""),  # C isalpha() is ASCII only
        ("box.com", ""),  # "." is credd-legal but not a credmon provider name (25.13.2)
        ("box+x", ""),
        ("box", "../x"),
        ("box", "a/b"),
        ("box", "x\x00"),
        ("box", "a*b"),
        ("box", "read\n"),
        ("box", "h" * 300),
        ("b" * 201, ""),
    ],
)
def test_token_name_rejects_hostile(service: str, handle: str) -> None:
    with pytest.raises(BadCredentialName) as info:
        TokenName(service, handle)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text", ["", "*x", "box*", "box**x", "a/b*c", "svc_x*y", "box*r d"])
def test_parse_wire_rejects(text: str) -> None:
    with pytest.raises(BadCredentialName):
        TokenName.parse_wire(text)


@pytest.mark.parametrize("text", ["", "_x", "box_", "box.top", "a/b", "..", "box_r/d"])
def test_parse_stem_rejects(text: str) -> None:
    with pytest.raises(BadCredentialName):
        TokenName.parse_stem(text)


def test_names_are_strings() -> None:
    with pytest.raises(TypeError):
        TokenName(b"box")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        local_user(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("user", "local"),
    [("alice", "alice"), ("alice@example.org", "alice"), ("a.b-c+d=e_f@x@y", "a.b-c+d=e_f")],
)
def test_local_user(user: str, local: str) -> None:
    assert local_user(user) == local


@pytest.mark.parametrize(
    "user",
    ["", "@example.org", ".", "..", "..@x", "../etc", "a/b", "a b", "a\x00", "\u00e9", "x\n"],
)
def test_local_user_rejects(user: str) -> None:
    with pytest.raises(BadCredentialName):
        local_user(user)


def test_hostile_user_never_leaves_root(creds: CredDir) -> None:
    for user in ("../x", "..", "a/../../b", "/etc"):
        with pytest.raises(BadCredentialName):
            creds.write_use(user, TokenName("box"), {"access_token": "t"})
    assert list(creds.root.parent.iterdir()) == [creds.root]


_SAFE = re.compile(r"[A-Za-z0-9\-+=_.]+")


@given(st.text(max_size=40))
def test_any_wire_text_gives_a_safe_name_or_bad_name(text: str) -> None:
    try:
        name = TokenName.parse_wire(text)
    except BadCredentialName:
        return
    assert _SAFE.fullmatch(name.stem) and "/" not in name.stem and name.stem not in (".", "..")
    assert TokenName.parse_stem(name.stem) == name
    assert "_" not in name.service


@given(st.text(max_size=40))
def test_any_user_text_gives_a_safe_dir_or_bad_name(text: str) -> None:
    try:
        local = local_user(text)
    except BadCredentialName:
        return
    assert _SAFE.fullmatch(local) and local not in (".", "..")
    assert text.startswith(local)


def test_split_scopes() -> None:
    assert split_scopes("read:/a, write:/b,,compute.read ") == (
        "read:/a",
        "write:/b",
        "compute.read",
    )
    with pytest.raises(CredentialError):
        split_scopes(['read:"x'])
    with pytest.raises(CredentialError):
        TopFile("rt", ("a,b",))

"""Pending web logins: the credd's ClassAd files (htsec.creds.pending; FORMATS.md 3)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htsec.creds.creddir import CredDir
from htsec.creds.pending import PendingLogin, dump_pending, parse_pending, pending_url
from htsec.errors import (
    BadCredentialName,
    CredentialError,
    CredentialFileError,
)
from tests.creds import strategies as gen
from tests.creds.example_dir import KEY


@settings(deadline=None)
@given(st.lists(gen.pendings(), min_size=1, max_size=3))
def test_pending_round_trip(logins: list[PendingLogin]) -> None:
    assert parse_pending(dump_pending(logins)) == logins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no ClassAd"),
        ('LocalUser = "a"\n', "no Provider"),
        ('Provider = "box"\n', "no LocalUser"),
        ('Provider = "box"\nLocalUser = "a"\nScopes = 1 + 2\n', "not a string literal"),
        ('Provider = "box"\nLocalUser = "a"\nHandle = undefined\n', "not a string literal"),
        ('Provider = "b_x"\nLocalUser = "a"\n', "service name"),
        ('Provider = "box"\nLocalUser = "../a"\n', "LocalUser"),
        ('Provider = "box"\nLocalUser = "a@b"\n', "LocalUser"),
        ("[[[[", "not a list of ClassAds"),
    ],
)
def test_pending_errors(text: str, message: str) -> None:
    with pytest.raises(CredentialFileError, match=message):
        parse_pending(text.encode(), "key")


def test_pending_as_the_credd_writes_it() -> None:
    """Any attribute order; the web server defaults a missing Handle to ""."""
    text = (
        'TokenUrl = "https://t"\nClientSecret = "s"\nProvider = "box"\nLocalUser = "alice"\n'
        '\nProvider = "gdrive"\nHandle = "w"\nLocalUser = "alice"\n'
    )
    got = parse_pending(text.encode())
    assert got == [
        PendingLogin("box", "alice", token_url="https://t", client_secret="s"),
        PendingLogin("gdrive", "alice", handle="w"),
    ]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "a\tb", "a\x7fb"])
def test_pending_refuses_control_characters(bad: str) -> None:
    # printOld writes a newline raw and the parser then silently drops the attribute.
    with pytest.raises(CredentialError, match="control character"):
        PendingLogin("box", "alice", client_secret=bad)


def test_pending_url_and_keys(creds: CredDir) -> None:
    assert pending_url("https://ap.example", KEY) == f"https://ap.example/key/{KEY}"
    for bad in ("0F" * 32, "0" * 63, "../" + "0" * 61, "g" * 64):
        with pytest.raises(BadCredentialName):
            creds.pending_path(bad)
    key = creds.write_pending([PendingLogin("box", "alice")])
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert creds.read_pending(key) == [PendingLogin("box", "alice")]
    assert creds.read_pending("1" * 64) is None
    (creds.root / ("A" * 64)).write_bytes(b"")  # not ours: uppercase
    assert creds.pending_keys() == [key]
    assert creds.remove_pending(key) and not creds.remove_pending(key)


def test_stale_pending_uses_ctime_and_12_hours(creds: CredDir) -> None:
    key = creds.write_pending([PendingLogin("box", "alice")])
    ctime = os.stat(creds.pending_path(key)).st_ctime
    assert creds.stale_pending(now=ctime + 12 * 3600) == []  # OAuthCredmon: "> 12*3600"
    assert creds.stale_pending(now=ctime + 12 * 3600 + 1) == [key]

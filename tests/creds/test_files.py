"""The .top, .use and .meta formats (htsec.creds.files; FORMATS.md 3)."""

from __future__ import annotations

import json
from pathlib import Path

import classad2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htsec.creds.files import (
    MetaFile,
    TopFile,
    UseFile,
    dump_meta,
    dump_top,
    dump_use,
    parse_meta,
    parse_top,
    parse_use,
)
from htsec.creds.pending import parse_pending
from htsec.creds.scan import import_dir
from htsec.errors import (
    CredentialFileError,
    HtsecError,
)
from tests.creds import strategies as gen
from tests.creds.example_dir import KEY, build_example

# -- round trips -----------------------------------------------------------------------------


@given(gen.tops())
def test_top_round_trip(top: TopFile) -> None:
    data = dump_top(top)
    assert b"\n" not in data and data.isascii()
    assert parse_top(data) == top


@given(gen.uses())
def test_use_round_trip_and_one_line(use: UseFile) -> None:
    data = dump_use(use)
    # ASCII and free of line breaks even for values with "\n", "\r", U+2028 ...: JSON escapes.
    assert data.isascii() and b"\n" not in data and b"\r" not in data
    assert parse_use(data) == use


@given(st.text(min_size=1, max_size=50))
def test_use_values_with_newlines_stay_on_one_line(value: str) -> None:
    data = dump_use({"access_token": value + "\n" + value, "note": "\r\n\u2028\u0085"})
    assert len(data.splitlines()) == 1
    assert parse_use(data).access_token == value + "\n" + value


@given(gen.metas())
def test_meta_round_trip(meta: MetaFile) -> None:
    assert parse_meta(dump_meta(meta)) == meta


def test_placeholder_round_trip() -> None:
    assert parse_top(dump_top(TopFile.local("bob@x"))) == TopFile(placeholder="bob")
    assert parse_top(b"") == TopFile(placeholder="")


# -- parsers on hostile input ----------------------------------------------------------------

_mutations = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    gen.json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(
            [
                "refresh_token",
                "scopes",
                "audience",
                "access_token",
                "client_id",
                "client_secret",
                "token_url",
                "use_refresh_token",
                "expires_in",
                "x",
            ]
        ),
        gen.json_values,
    ).map(lambda d: json.dumps(d).encode()),
    st.lists(
        st.tuples(
            st.sampled_from(["Provider", "LocalUser", "Handle", "Scopes", "ClientSecret", "X"]),
            st.one_of(
                gen.short_text.map(json.dumps),
                st.integers().map(str),
                st.just("undefined"),
                st.just("1 + 2"),
                st.just('"a" + "b"'),
                st.text(max_size=10),
            ),
        ),
        max_size=6,
    ).map(lambda kv: "\n".join(f"{k} = {v}" for k, v in kv).encode()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations)
def test_parsers_raise_only_htsec_errors(data: bytes) -> None:
    for parse in (parse_top, parse_use, parse_meta, parse_pending):
        try:
            parse(data)
        except CredentialFileError as exc:
            assert isinstance(exc, HtsecError)
            assert exc.path  # names the file


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"refresh_token": 5}', "not a string"),
        (b'{"refresh_token": "a", "refresh_token": "b"}', "same key twice"),
        (b'{"refresh_token": NaN}', "NaN is not valid JSON"),
        (b'{"refresh_token": "a"', "not valid JSON"),
        (b'{"x": ' + b"[" * 100_000, "nested too deeply"),
        (b'{"scopes": "read:\\"x"}', "scope-token"),
        (b"\xff\xfe", "not UTF-8"),
        (b"alice\x00", "NUL"),
    ],
)
def test_top_errors(data: bytes, message: str) -> None:
    with pytest.raises(CredentialFileError, match=message):
        parse_top(data, "x.top")


def test_top_as_the_credd_writes_it_with_scopes() -> None:
    """store_cred.cpp adds scopes/audience with sPrintAdAsJson: several lines, blanks kept."""
    ad = classad2.ClassAd({"refresh_token": "rt", "scopes": "read:/a, write:/b", "audience": "x"})
    top = parse_top((ad.printJson() + "\n").encode())
    assert top == TopFile("rt", ("read:/a", "write:/b"), "x")


def test_top_from_vault_credmon_keeps_unknown_keys() -> None:
    data = b'{"vault_token": "hvs.x", "vault_url": "https://v", "scopes": "a", "audience": "b"}'
    top = parse_top(data)
    assert top.refresh_token is None and top.scopes == ("a",)
    assert dict(top.extra) == {"vault_token": "hvs.x", "vault_url": "https://v"}
    assert parse_top(dump_top(top)) == top


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"access_token": "a", "refresh_token": "r"}', "refresh_token"),
        (b'{"token_type": "bearer"}', "access_token"),
        (b'{"access_token": 5}', "access_token"),
        (b'{\n  "access_token": "a"\n}\n', "several lines"),
        (b'["a"]', "not an object"),
        (b"two words", "neither"),
        (b"tok1\ntok2\n", "neither"),
    ],
)
def test_use_errors(data: bytes, message: str) -> None:
    with pytest.raises(CredentialFileError, match=message):
        parse_use(data, "x.use")


@pytest.mark.parametrize(
    ("data", "token", "bare"),
    [
        (b"eyJ.a.b\n", "eyJ.a.b", True),
        (b"# comment\n\n  eyJ.a.b  \n", "eyJ.a.b", True),
        (b"\n", "", True),  # LocalCredmon denies a user by writing an empty token
        (b'{"access_token": "t", "expires_in": "3600"}\n', "t", False),
        (b'# c\n{"access_token": "t"}', "t", False),
    ],
)
def test_use_forms_the_curl_plugin_accepts(data: bytes, token: str, bare: bool) -> None:
    use = parse_use(data)
    assert (use.access_token, use.bare) == (token, bare)


def test_use_numbers() -> None:
    assert parse_use(b'{"access_token": "t", "expires_in": "3600"}').expires_in == 3600.0
    assert parse_use(b'{"access_token": "t", "expires_in": true}').expires_in is None
    assert parse_use(b'{"access_token": "t", "expires_in": "soon"}').expires_in is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"use_refresh_token": "yes"}', "true or false"),
        (b'{"client_secret": ["x"]}', "not a string"),
        (b"client_id=x", "not valid JSON"),
    ],
)
def test_meta_errors(data: bytes, message: str) -> None:
    with pytest.raises(CredentialFileError, match=message):
        parse_meta(data, "x.meta")


def test_meta_defaults_as_the_credmon_reads_it() -> None:
    # OAuthCredmon.should_renew: only an explicit false stops refreshing.
    assert parse_meta(b"{}").use_refresh_token is True
    assert parse_meta(b'{"use_refresh_token": false}').use_refresh_token is False


# -- secrets stay out of reprs ---------------------------------------------------------------


def test_reprs_mask_secrets(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    texts = [repr(item) for item in import_dir(c.root)]
    texts += [repr(c.read_pending(KEY)), repr(UseFile({"access_token": "at", "id_token": "it"}))]
    joined = "\n".join(texts)
    for secret in ("rt-box-1", "at-box-1", "cs-box", "line1", "rt\\n2", "abc.def.ghi", "'it'"):
        assert secret not in joined
    assert "[secure]" in joined

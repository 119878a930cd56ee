"""HTCondor's OAuth credential directory (htsec.creds.layout; shared/FORMATS.md section 3).

Expected bytes below are derived from HTCondor's own writers, cited per file:
``credmon/CredentialMonitors/OAuthCredmonWebserver/OAuthCredmonWebserver.py`` and
``OAuthCredmon.py`` (``json.dump`` with Python's defaults, renamed into place 0400 by
``credmon/utils/utils.py`` ``atomic_rename``), ``src/condor_credd/credd.cpp``
(``check_creds_continue``: pending-login ClassAds, 0640), ``src/condor_utils/credmon_interface.cpp``
(``.mark`` 0600, ``pid``, ``CREDMON_COMPLETE``) and ``src/condor_utils/store_cred.cpp``
(names; the local-issuer ``.top`` placeholder holding the user name).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import classad2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htsec import _fs
from htsec.creds import layout
from htsec.creds.layout import (
    MAX_CRED_FILE,
    CredDir,
    FoundCredential,
    ImportProblem,
    MetaFile,
    PendingLogin,
    TokenName,
    TopFile,
    UseFile,
    deliver,
    dump_meta,
    dump_pending,
    dump_top,
    dump_use,
    import_dir,
    local_user,
    parse_meta,
    parse_pending,
    parse_top,
    parse_use,
    pending_url,
    split_scopes,
)
from htsec.errors import (
    BadCredentialName,
    CredentialError,
    CredentialFileError,
    FileSecurityError,
    HtsecError,
)

KEY = "0f" * 32  # a pending-login key: 64 lowercase hex, as credd's randomHexKey(32) prints


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """Every mode below must come from htsec, not from a friendly umask."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def creds(tmp_path: Path) -> CredDir:
    c = CredDir(tmp_path / "oauth_credentials")
    c.ensure_root()
    return c


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under root: relative path -> (permission bits, content or None for dirs)."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st_ = os.lstat(path)
        rel = str(path.relative_to(root))
        if stat.S_ISDIR(st_.st_mode):
            out[rel] = (stat.S_IMODE(st_.st_mode), None)
        else:
            out[rel] = (stat.S_IMODE(st_.st_mode), path.read_bytes())
    return out


# -- the fixed example directory -------------------------------------------------------------


def build_example(root: Path) -> CredDir:
    c = CredDir(root)
    c.ensure_root()
    # alice: an OAuth2 token as the credmon web server stores it, with client secret in .meta.
    c.store(
        "alice@example.org",  # "@domain" is dropped (credmon_interface.cpp credmon_user_filename)
        TokenName("box"),
        meta=MetaFile("cid-box", "cs-box", "https://api.box.com/oauth2/token"),
        top=TopFile("rt-box-1", ("read:/public", "write:/home/alice"), "https://box.example"),
        use=UseFile.from_response(
            {
                "access_token": "at-box-1",
                "token_type": "bearer",
                "expires_in": 3600,
                "refresh_token": "rt-box-1",  # stripped: .use never holds it
                "expires_at": 1767229200.5,
                "scope": "read:/public write:/home/alice",
            }
        ),
    )
    # alice, handle "read": htsec style, no client secret; hostile characters in the values.
    c.store(
        "alice",
        TokenName("box", "read"),
        meta=MetaFile("cid-box", None, "https://api.box.com/oauth2/token"),
        top=TopFile("rt\n2\u00e9", ("read:/public",), extra={"issued_by": "htsec"}),
        use={"access_token": "line1\nline2", "token_type": "bearer", "expires_in": 600},
    )
    # alice: a local-issuer token; the credd writes the user name as a placeholder .top.
    c.write_top("alice", TokenName("scitokens"), TopFile.local("alice@example.org"))
    # bob: a user-stored bare token (LOCAL_CREDMON_TOKEN_USE_JSON = False style) and a mark.
    c.write_use("bob", TokenName("mytoken"), UseFile.bare_token("abc.def.ghi"))
    assert c.touch_mark("bob")
    # carol: a pending web login for two tokens.
    c.write_pending(
        [
            PendingLogin(
                provider="box",
                local_user="carol",
                handle="read",
                scopes="read:/public",
                audience="https://box.example",
                client_id="cid-box",
                client_secret="cs-box",
                return_url="https://ap.example/return/box",
                authorization_url="https://account.box.com/api/oauth2/authorize",
                token_url="https://api.box.com/oauth2/token",
            ),
            PendingLogin(provider="gdrive", local_user="carol"),
        ],
        key=KEY,
    )
    c.write_pid(4242)
    c.touch_complete()
    return c


EXPECTED: dict[str, tuple[int, bytes | None]] = {
    # Root-level files. credd.cpp writes the pending login with write_secure_file(...,
    # group_readable=true): 0640, one old-syntax ClassAd per token in the credd's attribute
    # order, ads separated by a blank line; Handle etc. are always present, "" when unset.
    KEY: (
        0o640,
        b'Provider = "box"\n'
        b'LocalUser = "carol"\n'
        b'Handle = "read"\n'
        b'Scopes = "read:/public"\n'
        b'Audience = "https://box.example"\n'
        b'ClientId = "cid-box"\n'
        b'ClientSecret = "cs-box"\n'
        b'ReturnUrl = "https://ap.example/return/box"\n'
        b'AuthorizationUrl = "https://account.box.com/api/oauth2/authorize"\n'
        b'TokenUrl = "https://api.box.com/oauth2/token"\n'
        b"\n"
        b'Provider = "gdrive"\n'
        b'LocalUser = "carol"\n'
        b'Handle = ""\n'
        b'Scopes = ""\n'
        b'Audience = ""\n'
        b'ClientId = ""\n'
        b'ClientSecret = ""\n'
        b'ReturnUrl = ""\n'
        b'AuthorizationUrl = ""\n'
        b'TokenUrl = ""\n',
    ),
    # utils.py credmon_complete: an empty file; Python's open() under umask 022 gives 0644.
    "CREDMON_COMPLETE": (0o644, b""),
    # User directories: store_cred.cpp mkdir(user_cred_path, 0700).
    "alice": (0o700, None),
    # The web server's metadata dict, in its key order, json.dump defaults: ", " and ": ".
    "alice/box.meta": (
        0o400,
        b'{"client_id": "cid-box", "client_secret": "cs-box", '
        b'"token_url": "https://api.box.com/oauth2/token", "use_refresh_token": true}',
    ),
    # The web server's refresh_token dict: scopes joined by "," without blanks.
    "alice/box.top": (
        0o400,
        b'{"refresh_token": "rt-box-1", "scopes": "read:/public,write:/home/alice", '
        b'"audience": "https://box.example"}',
    ),
    # The token response minus refresh_token, keys in the provider's order, no newline.
    "alice/box.use": (
        0o400,
        b'{"access_token": "at-box-1", "token_type": "bearer", "expires_in": 3600, '
        b'"expires_at": 1767229200.5, "scope": "read:/public write:/home/alice"}',
    ),
    # htsec keeps the client secret in its store: the key is left out.
    "alice/box_read.meta": (
        0o400,
        b'{"client_id": "cid-box", "token_url": "https://api.box.com/oauth2/token", '
        b'"use_refresh_token": true}',
    ),
    # A newline and a non-ASCII letter are escaped (ensure_ascii): still one ASCII line. No
    # audience key when there is none (the web server adds it only when non-empty); the
    # unknown key follows the known ones.
    "alice/box_read.top": (
        0o400,
        b'{"refresh_token": "rt\\n2\\u00e9", "scopes": "read:/public", "issued_by": "htsec"}',
    ),
    "alice/box_read.use": (
        0o400,
        b'{"access_token": "line1\\nline2", "token_type": "bearer", "expires_in": 600}',
    ),
    # store_cred.cpp LOCAL_STORE_CRED: the credential is the user name itself, no newline.
    "alice/scitokens.top": (0o400, b"alice"),
    "bob": (0o700, None),
    # credmon_interface.cpp credmon_mark_creds_for_sweeping: empty, 0600.
    "bob.mark": (0o600, b""),
    # LocalCredmon.write_access_token with TOKEN_USE_JSON false: the token and a newline.
    "bob/mytoken.use": (0o400, b"abc.def.ghi\n"),
    # utils.py drop_pid: the pid in decimal, no newline; 0644 so the credd can read it.
    "pid": (0o644, b"4242"),
}


def test_fixed_example_directory_byte_for_byte(tmp_path: Path, strict_umask: None) -> None:
    root = tmp_path / "oauth_credentials"
    build_example(root)
    # store_cred.cpp: "oauth cred dir should be chmod 2770, chown root:condor"
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o2770
    assert snapshot(root) == EXPECTED


def test_fixed_example_reads_back(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    assert c.users() == ["alice", "bob"]
    assert c.names("alice") == [TokenName("box"), TokenName("box", "read"), TokenName("scitokens")]
    top = c.read_top("alice", TokenName("box", "read"))
    assert top is not None
    assert top.refresh_token == "rt\n2\u00e9" and top.scopes == ("read:/public",)
    assert dict(top.extra) == {"issued_by": "htsec"}
    use = c.read_use("alice", TokenName("box"))
    assert use is not None and use.access_token == "at-box-1"
    assert (use.token_type, use.expires_in, use.expires_at) == ("bearer", 3600.0, 1767229200.5)
    assert use.scope == "read:/public write:/home/alice"
    meta = c.read_meta("alice", TokenName("box", "read"))
    assert meta == MetaFile("cid-box", None, "https://api.box.com/oauth2/token")
    local = c.read_top("alice", TokenName("scitokens"))
    assert local == TopFile.local("alice")
    bare = c.read_use("bob", TokenName("mytoken"))
    assert bare == UseFile.bare_token("abc.def.ghi")
    assert c.read_top("bob", TokenName("mytoken")) is None
    pending = c.read_pending(KEY)
    assert pending is not None and [p.name.wire for p in pending] == ["box*read", "gdrive"]
    assert pending[0].client_secret == "cs-box"
    assert c.read_pid() == 4242 and c.is_complete()
    assert c.pending_keys() == [KEY]


def test_json_files_read_by_pythons_json_like_the_credmon(tmp_path: Path) -> None:
    """OAuthCredmon reads .top/.use/.meta with json.load; the curl plugin reads .use by line."""
    c = build_example(tmp_path / "oauth_credentials")
    user_dir = c.user_dir("alice")
    for name in ("box.top", "box.use", "box.meta", "box_read.top", "box_read.use"):
        data = (user_dir / name).read_bytes()
        assert isinstance(json.loads(data), dict)
        assert b"\n" not in data  # one line for multifile_curl_plugin.cpp GetToken
    assert json.loads((user_dir / "box_read.use").read_bytes())["access_token"] == "line1\nline2"
    # The web server parses the pending login with classad.parseAds and indexes these.
    ads = list(classad2.parseAds((c.root / KEY).read_text()))
    assert [(a["Provider"], a.get("Handle", ""), a["LocalUser"]) for a in ads] == [
        ("box", "read", "carol"),
        ("gdrive", "", "carol"),
    ]
    # OAuthCredmon.cleanup_key_files matches key files with this pattern.
    assert re.match(r"^[a-f0-9]{64}$", KEY)


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


# -- strategies ------------------------------------------------------------------------------

_services = st.from_regex(r"[A-Za-z0-9\-]{1,12}", fullmatch=True)
_handles = st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9\-+=_.]{1,12}", fullmatch=True))
_names = st.builds(TokenName, _services, _handles)
_scopes = st.lists(st.from_regex(r"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]{1,10}", fullmatch=True))
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_text = st.text(max_size=30)


@st.composite
def _tops(draw: st.DrawFn) -> TopFile:
    extra = draw(st.dictionaries(st.text(max_size=10), _json, max_size=4))
    for key in ("refresh_token", "scopes", "audience"):
        extra.pop(key, None)
    return TopFile(draw(st.one_of(st.none(), _text)), tuple(draw(_scopes)), draw(_text), extra)


@st.composite
def _uses(draw: st.DrawFn) -> UseFile:
    fields = draw(st.dictionaries(st.text(max_size=10), _json, max_size=5))
    fields.pop("refresh_token", None)
    fields["access_token"] = draw(_text)
    return UseFile(fields)


@st.composite
def _metas(draw: st.DrawFn) -> MetaFile:
    extra = draw(st.dictionaries(st.text(max_size=10), _json, max_size=3))
    for key in ("client_id", "client_secret", "token_url", "use_refresh_token"):
        extra.pop(key, None)
    opt = st.one_of(st.none(), _text)
    return MetaFile(draw(opt), draw(opt), draw(opt), draw(st.booleans()), extra)


_no_controls = st.text(
    st.characters(codec="utf-8", min_codepoint=0x20).filter(lambda c: c != "\x7f"),
    max_size=30,
)


@st.composite
def _pendings(draw: st.DrawFn) -> PendingLogin:
    name = draw(_names)
    return PendingLogin(
        provider=name.service,
        handle=name.handle,
        local_user=draw(st.from_regex(r"[A-Za-z0-9\-+=_]{1,10}", fullmatch=True)),
        scopes=draw(_no_controls),
        audience=draw(_no_controls),
        client_id=draw(_no_controls),
        client_secret=draw(_no_controls),
        return_url=draw(_no_controls),
        authorization_url=draw(_no_controls),
        token_url=draw(_no_controls),
    )


# -- round trips -----------------------------------------------------------------------------


@given(_tops())
def test_top_round_trip(top: TopFile) -> None:
    data = dump_top(top)
    assert b"\n" not in data and data.isascii()
    assert parse_top(data) == top


@given(_uses())
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


@given(_metas())
def test_meta_round_trip(meta: MetaFile) -> None:
    assert parse_meta(dump_meta(meta)) == meta


@settings(deadline=None)
@given(st.lists(_pendings(), min_size=1, max_size=3))
def test_pending_round_trip(logins: list[PendingLogin]) -> None:
    assert parse_pending(dump_pending(logins)) == logins


def test_placeholder_round_trip() -> None:
    assert parse_top(dump_top(TopFile.local("bob@x"))) == TopFile(placeholder="bob")
    assert parse_top(b"") == TopFile(placeholder="")


# -- parsers on hostile input ----------------------------------------------------------------

_mutations = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    _json.map(lambda v: json.dumps(v).encode()),
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
        _json,
    ).map(lambda d: json.dumps(d).encode()),
    st.lists(
        st.tuples(
            st.sampled_from(["Provider", "LocalUser", "Handle", "Scopes", "ClientSecret", "X"]),
            st.one_of(
                _text.map(json.dumps),
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


# -- secrets stay out of reprs ---------------------------------------------------------------


def test_reprs_mask_secrets(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    texts = [repr(item) for item in import_dir(c.root)]
    texts += [repr(c.read_pending(KEY)), repr(UseFile({"access_token": "at", "id_token": "it"}))]
    joined = "\n".join(texts)
    for secret in ("rt-box-1", "at-box-1", "cs-box", "line1", "rt\\n2", "abc.def.ghi", "'it'"):
        assert secret not in joined
    assert "[secure]" in joined


# -- the directory: modes, owners, root, user dirs -------------------------------------------


def test_check_root_refuses_others(tmp_path: Path) -> None:
    root = tmp_path / "oauth"
    c = CredDir(root)
    with pytest.raises(FileSecurityError, match="mkdir -m 2770"):
        c.check_root()
    root.mkdir()
    for mode in (0o2771, 0o755, 0o704, 0o702):
        os.chmod(root, mode)
        with pytest.raises(FileSecurityError, match="chmod 2770") as info:
            c.check_root()
        assert f"{mode:04o}" in str(info.value)
    os.chmod(root, 0o2770)
    c.check_root()
    os.chmod(root, 0o700)
    c.check_root()  # HTCondor only insists that "other" has nothing
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileSecurityError, match="not a directory"):
        CredDir(tmp_path / "file").check_root()
    with pytest.raises(CredentialError, match="not a directory"):
        CredDir(tmp_path / "missing" / "oauth").ensure_root()


def test_user_dir_checks(creds: CredDir, tmp_path: Path) -> None:
    d = creds.user_dir("alice")
    d.mkdir(mode=0o775)
    os.chmod(d, 0o775)  # group-writable (tests/creds/test_layout_user_dir.py has the rest)
    with pytest.raises(FileSecurityError, match="chmod go-w"):
        creds.write_use("alice", TokenName("box"), {"access_token": "t"})
    os.chmod(d, 0o2700)  # mkdir(0700) under a setgid root: fine
    creds.write_use("alice", TokenName("box"), {"access_token": "t"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (creds.root / "mallory").symlink_to(elsewhere)
    with pytest.raises(FileSecurityError, match="not a directory"):
        creds.write_use("mallory", TokenName("box"), {"access_token": "t"})
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_uid_gid_own_everything_created(tmp_path: Path) -> None:
    c = CredDir(tmp_path / "oauth", uid=4321, gid=8765)
    c.ensure_root()
    c.store("alice", TokenName("box"), top=TopFile("rt"), use={"access_token": "a"})
    c.touch_mark("alice")
    c.write_pending([PendingLogin("box", "alice")], key=KEY)
    c.write_pid(7)
    c.touch_complete()
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [c.root, *c.root.rglob("*")]}
    assert owners == {(4321, 8765)}
    path = deliver(tmp_path / ".condor_creds", "box", {"access_token": "a"}, uid=4321, gid=8765)
    assert (path.stat().st_uid, path.parent.stat().st_uid) == (4321, 4321)


def test_chown_is_requested_before_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = os.fchown

    def spy(fd: int, uid: int, gid: int) -> None:
        calls.append((uid, gid))
        real(fd, os.geteuid(), os.getegid())

    monkeypatch.setattr(os, "fchown", spy)
    c = CredDir(tmp_path / "oauth", gid=os.getegid())
    c.ensure_root()
    c.write_use("alice", TokenName("box"), {"access_token": "a"})
    assert calls == [(-1, os.getegid())] * 3  # root dir, user dir, file


# -- atomicity -------------------------------------------------------------------------------


def _hidden(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_no_temporary_files_left(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    c.rotate_refresh_token("alice", TokenName("box"), "rt-box-2")
    assert _hidden(c.root) == []


def test_failed_replace_keeps_old_file(creds: CredDir, monkeypatch: pytest.MonkeyPatch) -> None:
    name = TokenName("box")
    creds.write_use("alice", name, {"access_token": "old"})
    before = snapshot(creds.root)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        creds.write_use("alice", name, {"access_token": "new"})
    with pytest.raises(OSError, match="No space"):
        creds.write_pending([PendingLogin("box", "alice")], key=KEY)
    monkeypatch.undo()
    assert snapshot(creds.root) == before
    use = creds.read_use("alice", name)
    assert use is not None and use.access_token == "old"


def test_refresh_token_in_use_writes_nothing(creds: CredDir) -> None:
    with pytest.raises(CredentialError, match="refresh_token"):
        creds.store(
            "alice",
            TokenName("box"),
            top=TopFile("rt"),
            use={"access_token": "a", "refresh_token": "rt"},
        )
    assert list(creds.root.iterdir()) == []


def test_store_writes_use_last(creds: CredDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """The credd polls for <tok>.use to appear: it must come after .meta and .top."""
    order: list[str] = []
    real = _fs.write_atomic

    def spy(path: Path, data: bytes, mode: int = 0o600, **kw: Any) -> None:
        order.append(Path(path).suffix)
        real(path, data, mode, **kw)

    monkeypatch.setattr(_fs, "write_atomic", spy)
    creds.store(
        "alice", TokenName("box"), use={"access_token": "a"}, top=TopFile("r"), meta=MetaFile()
    )
    assert order == [".meta", ".top", ".use"]


def test_write_top_keeps_unknown_keys(creds: CredDir) -> None:
    name = TokenName("vault", "x")
    path = creds.path("alice", name, "top")
    creds.ensure_user_dir("alice")
    _fs.write_atomic(path, b'{"refresh_token": "r1", "vault_url": "https://v", "n": 1}', 0o400)
    creds.write_top("alice", name, TopFile("r2", ("a",), extra={"n": 2}))
    assert json.loads(path.read_bytes()) == {
        "refresh_token": "r2",
        "scopes": "a",
        "vault_url": "https://v",
        "n": 2,
    }
    new = creds.rotate_refresh_token("alice", name, "r3")
    assert (new.refresh_token, new.scopes, dict(new.extra)) == (
        "r3",
        ("a",),
        {"vault_url": "https://v", "n": 2},
    )
    creds.write_top("alice", name, TopFile("r4"), keep_unknown=False)
    assert json.loads(path.read_bytes()) == {"refresh_token": "r4"}
    _fs.write_atomic(path, b"{corrupt", 0o400)
    creds.write_top("alice", name, TopFile("r5"))  # a corrupt old file is just replaced
    assert json.loads(path.read_bytes()) == {"refresh_token": "r5"}
    creds.write_top("alice", TokenName("scitokens"), TopFile.local("alice"))
    with pytest.raises(CredentialError, match="no refresh token"):
        creds.rotate_refresh_token("alice", TokenName("scitokens"), "x")
    with pytest.raises(CredentialError, match="no refresh token"):
        creds.rotate_refresh_token("alice", TokenName("none"), "x")


def test_delete(creds: CredDir) -> None:
    name = TokenName("box")
    creds.store("alice", name, top=TopFile("r"), use={"access_token": "a"}, meta=MetaFile())
    assert creds.delete("alice", name)
    assert not creds.delete("alice", name)
    assert list(creds.user_dir("alice").iterdir()) == []


# -- reading files safely --------------------------------------------------------------------


def test_readers_refuse_links_fifos_and_large_files(creds: CredDir, tmp_path: Path) -> None:
    d = creds.ensure_user_dir("alice")
    outside = tmp_path / "outside.json"
    outside.write_bytes(b'{"refresh_token": "stolen"}')
    (d / "box.top").symlink_to(outside)
    with pytest.raises(CredentialFileError, match="symbolic link"):
        creds.read_top("alice", TokenName("box"))
    os.mkfifo(d / "box.use")
    with pytest.raises(CredentialFileError, match="not a regular file"):
        creds.read_use("alice", TokenName("box"))
    (d / "box.meta").write_bytes(b" " * (MAX_CRED_FILE + 1))
    with pytest.raises(CredentialFileError, match="larger than"):
        creds.read_meta("alice", TokenName("box"))
    assert creds.read_top("alice", TokenName("other")) is None
    assert creds.read_top("nobody", TokenName("box")) is None


# -- mark and sweep --------------------------------------------------------------------------


def test_mark_and_sweep(creds: CredDir) -> None:
    assert not creds.touch_mark("alice")  # no user directory: nothing to sweep
    assert not creds.mark_path("alice").exists()
    creds.write_use("alice@example.org", TokenName("box"), {"access_token": "a"})
    assert creds.touch_mark("alice@example.org")
    mark = creds.mark_path("alice")
    assert mark.name == "alice.mark" and stat.S_IMODE(mark.stat().st_mode) == 0o600
    os.utime(mark, (1000, 1000))
    assert not creds.touch_mark("alice")  # keep if exists: the mtime stays
    assert creds.mark_time("alice") == 1000
    # process_cred_mark_dir: swept once now - mtime >= SEC_CREDENTIAL_SWEEP_DELAY
    assert creds.sweepable(now=1000 + 3599) == []
    assert creds.sweepable(now=1000 + 3600) == ["alice"]
    assert creds.sweepable(now=1010, delay=10) == ["alice"]
    # "marky.mark" may be a user's directory, never a mark
    creds.write_use("marky.mark", TokenName("box"), {"access_token": "a"})
    assert creds.mark_time("marky") is None
    assert creds.sweepable(now=time.time() + 10**6) == ["alice"]
    assert creds.clear_mark("alice") and not creds.clear_mark("alice")
    assert creds.mark_time("alice") is None


# -- pid and CREDMON_COMPLETE ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pid"), [(b"123", 123), (b"  77\n", 77), (b"+5", 5), (b"42abc", 42)]
)
def test_read_pid_like_credmon_kick(creds: CredDir, data: bytes, pid: int) -> None:
    (creds.root / "pid").write_bytes(data)
    assert creds.read_pid() == pid


@pytest.mark.parametrize("data", [b"", b"abc", b"0", b"-3", b"1" * 256])
def test_read_pid_errors(creds: CredDir, data: bytes) -> None:
    (creds.root / "pid").write_bytes(data)
    with pytest.raises(CredentialFileError):
        creds.read_pid()


def test_pid_and_complete(creds: CredDir) -> None:
    assert creds.read_pid() is None
    creds.write_pid()
    assert creds.read_pid() == os.getpid()
    with pytest.raises(TypeError):
        creds.write_pid(0)
    assert not creds.clear_complete() and not creds.is_complete()
    creds.touch_complete()
    done = creds.root / "CREDMON_COMPLETE"
    os.utime(done, (1, 1))
    creds.touch_complete()  # a second pass bumps the mtime
    assert done.stat().st_mtime > 1 and creds.is_complete()
    assert creds.clear_complete() and not creds.is_complete()


# -- import ----------------------------------------------------------------------------------


def test_import_with_corrupt_files(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    root = c.root
    alice = root / "alice"
    (alice / "gdrive.top").write_bytes(b'{"refresh_token": ')  # truncated
    (alice / "gdrive.use").write_bytes(b'{"access_token": "ok"}')
    (alice / "drop.meta").write_bytes(b'{"use_refresh_token": "no"}')
    (alice / "drop.top").write_bytes(b'{"refresh_token": "r"}')
    (alice / "big.use").write_bytes(b"x" * (MAX_CRED_FILE + 1))
    (alice / "link.top").symlink_to("/etc/passwd")
    os.mkfifo(alice / "pipe.use")
    (alice / "dir.use").mkdir()
    (alice / "box_.top").write_bytes(b"{}")  # the credmon skips a trailing "_"
    (alice / "b@d.top").write_bytes(b"{}")
    (alice / "box.top.tmp").write_bytes(b"half")  # credd's replace_secure_file temp
    (alice / ".box.use.0123456789ab.tmp").write_bytes(b"half")  # ours
    (alice / "tmpk2j3h4").write_bytes(b"half")  # credmon's mkstemp
    (root / "bad user").mkdir(mode=0o700)
    (root / "linked").symlink_to(alice)
    (root / "wsgi_session_key").write_bytes(b"k" * 24)

    items = list(import_dir(root))
    found = {(i.user, i.name.stem): i for i in items if isinstance(i, FoundCredential)}
    problems = {i.path.name: i.message for i in items if isinstance(i, ImportProblem)}

    # The good credentials are all there, complete.
    for key in [
        ("alice", "box"),
        ("alice", "box_read"),
        ("alice", "scitokens"),
        ("bob", "mytoken"),
    ]:
        assert found[key].ok, found[key].problems
    box = found[("alice", "box")]
    assert box.top is not None and box.top.refresh_token == "rt-box-1"
    assert box.meta is not None and box.meta.client_secret == "cs-box"
    assert box.use is not None and box.use.access_token == "at-box-1"
    assert found[("alice", "scitokens")].top == TopFile(placeholder="alice")
    assert found[("bob", "mytoken")].top is None

    # Broken files ride along with their credential; the good halves still come through.
    gdrive = found[("alice", "gdrive")]
    assert not gdrive.ok and gdrive.top is None and gdrive.use is not None
    assert "not valid JSON" in gdrive.problems[0].message
    drop = found[("alice", "drop")]
    assert drop.top is not None and drop.meta is None and "true or false" in str(drop.problems)
    assert "larger than" in found[("alice", "big")].problems[0].message
    assert "symbolic link" in found[("alice", "link")].problems[0].message
    assert "not a regular file" in found[("alice", "pipe")].problems[0].message
    assert "not a regular file" in found[("alice", "dir")].problems[0].message

    # What cannot be a credential is reported on its own.
    assert "empty handle" in problems["box_.top"]
    assert "service name" in problems["b@d.top"]
    assert "user name" in problems["bad user"]
    assert "symbolic link" in problems["linked"]
    assert set(problems) == {"box_.top", "b@d.top", "bad user", "linked"}
    assert set(found) == {
        ("alice", s)
        for s in ("box", "box_read", "scitokens", "gdrive", "drop", "big", "link", "pipe", "dir")
    } | {("bob", "mytoken")}


def test_import_reports_open_root_and_missing_root(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    os.chmod(c.root, 0o755)
    items = list(import_dir(c.root))
    assert isinstance(items[0], ImportProblem) and "chmod 2770" in items[0].message
    assert sum(isinstance(i, FoundCredential) for i in items) == 4
    gone = list(import_dir(tmp_path / "nope"))
    assert len(gone) == 1 and isinstance(gone[0], ImportProblem)


def test_import_unreadable_user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    real = layout._fs.open_dir

    def flaky(path: Path) -> int:
        if path.name == "alice":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(layout._fs, "open_dir", flaky)
    items = list(import_dir(c.root))
    assert [i.path.name for i in items if isinstance(i, ImportProblem)] == ["alice"]
    assert [i.user for i in items if isinstance(i, FoundCredential)] == ["bob"]


def test_import_reads_relative_to_the_opened_user_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice's directory is swapped for a symlink after the scan, before the first read: what
    is imported is still the original directory's, not the link target's."""
    c = build_example(tmp_path / "oauth_credentials")
    alice = c.root / "alice"
    tops = [p.name for p in alice.iterdir() if p.name.endswith(".top")]
    assert tops
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in tops:
        (elsewhere / name).write_text('{"refresh_token": "planted"}')
    real = layout._read_limited
    swapped = []

    def swap_then_read(path: Path, limit: int, **kw: Any) -> bytes:
        if path.parent.name == "alice" and not swapped:
            os.rename(alice, tmp_path / "alice-moved")
            os.symlink(elsewhere, alice)
            swapped.append(path)
        return real(path, limit, **kw)

    monkeypatch.setattr(layout, "_read_limited", swap_then_read)
    found = [i for i in import_dir(c.root) if isinstance(i, FoundCredential) and i.user == "alice"]
    assert swapped and found
    assert all(i.top is None or i.top.refresh_token != "planted" for i in found), found


# -- delivery to the job sandbox -------------------------------------------------------------


def test_deliver(tmp_path: Path, strict_umask: None) -> None:
    sandbox = tmp_path / "execute" / "dir_1234"
    sandbox.mkdir(parents=True)
    creds_dir = sandbox / ".condor_creds"
    path = deliver(creds_dir, "box*read", {"access_token": "a\nb", "expires_in": 60})
    assert path == creds_dir / "box_read.use"
    assert path.read_bytes() == b'{"access_token": "a\\nb", "expires_in": 60}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # cred_dir.cpp, as the job user
    assert stat.S_IMODE(creds_dir.stat().st_mode) == 0o700
    deliver(creds_dir, TokenName("box", "read"), UseFile({"access_token": "c"}))
    assert json.loads(path.read_bytes()) == {"access_token": "c"}
    assert _hidden(sandbox) == [creds_dir]  # the directory itself is hidden; no temp files


def test_deliver_refuses_refresh_tokens_and_odd_places(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="access tokens only"):
        deliver(tmp_path / "c", "box", {"access_token": "a", "refresh_token": "r"})
    assert not (tmp_path / "c").exists()
    with pytest.raises(CredentialError, match="sandbox does not exist"):
        deliver(tmp_path / "no" / ".condor_creds", "box", {"access_token": "a"})
    with pytest.raises(BadCredentialName):
        deliver(tmp_path / "c", "../../etc/x", {"access_token": "a"})
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(FileSecurityError, match="not a directory"):
        deliver(tmp_path / "link", "box", {"access_token": "a"})
    assert list(target.iterdir()) == []


# -- _fs primitives added for this layout ----------------------------------------------------


def test_make_dir_sets_exact_mode(tmp_path: Path, strict_umask: None) -> None:
    assert _fs.make_dir(tmp_path / "d", 0o2770)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o2770
    assert not _fs.make_dir(tmp_path / "d", 0o700)  # existing: untouched
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o2770


def test_touch_keeps_or_bumps(tmp_path: Path, strict_umask: None) -> None:
    p = tmp_path / "m"
    assert _fs.touch(p, 0o644)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    os.utime(p, (5, 5))
    assert not _fs.touch(p, update_mtime=False)
    assert p.stat().st_mtime == 5
    assert not _fs.touch(p)
    assert p.stat().st_mtime > 5
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        _fs.touch(link)
    assert not (tmp_path / "elsewhere").exists()

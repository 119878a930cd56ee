"""Hypothesis strategies for credential names and files (htsec.creds.names, files, pending)."""

from __future__ import annotations

from hypothesis import strategies as st

from htsec.creds.files import (
    MetaFile,
    TopFile,
    UseFile,
)
from htsec.creds.names import TokenName
from htsec.creds.pending import PendingLogin

services = st.from_regex(r"[A-Za-z0-9\-]{1,12}", fullmatch=True)
handles = st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9\-+=_.]{1,12}", fullmatch=True))
names = st.builds(TokenName, services, handles)
scopes = st.lists(st.from_regex(r"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]{1,10}", fullmatch=True))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
short_text = st.text(max_size=30)


@st.composite
def tops(draw: st.DrawFn) -> TopFile:
    extra = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4))
    for key in ("refresh_token", "scopes", "audience"):
        extra.pop(key, None)
    return TopFile(
        draw(st.one_of(st.none(), short_text)), tuple(draw(scopes)), draw(short_text), extra
    )


@st.composite
def uses(draw: st.DrawFn) -> UseFile:
    fields = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
    fields.pop("refresh_token", None)
    fields["access_token"] = draw(short_text)
    return UseFile(fields)


@st.composite
def metas(draw: st.DrawFn) -> MetaFile:
    extra = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3))
    for key in ("client_id", "client_secret", "token_url", "use_refresh_token"):
        extra.pop(key, None)
    opt = st.one_of(st.none(), short_text)
    return MetaFile(draw(opt), draw(opt), draw(opt), draw(st.booleans()), extra)


no_controls = st.text(
    st.characters(codec="utf-8", min_codepoint=0x20).filter(lambda c: c != "\x7f"),
    max_size=30,
)


@st.composite
def pendings(draw: st.DrawFn) -> PendingLogin:
    name = draw(names)
    return PendingLogin(
        provider=name.service,
        handle=name.handle,
        local_user=draw(st.from_regex(r"[A-Za-z0-9\-+=_]{1,10}", fullmatch=True)),
        scopes=draw(no_controls),
        audience=draw(no_controls),
        client_id=draw(no_controls),
        client_secret=draw(no_controls),
        return_url=draw(no_controls),
        authorization_url=draw(no_controls),
        token_url=draw(no_controls),
    )

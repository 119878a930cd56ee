"""A fixed example credential directory, built by htsec, and what HTCondor's writers make of it.

Expected bytes below are derived from HTCondor's own writers, cited per file:
``credmon/CredentialMonitors/OAuthCredmonWebserver/OAuthCredmonWebserver.py`` and
``OAuthCredmon.py`` (``json.dump`` with Python's defaults, renamed into place 0400 by
``credmon/utils/utils.py`` ``atomic_rename``), ``src/condor_credd/credd.cpp``
(``check_creds_continue``: pending-login ClassAds, 0640), ``src/condor_utils/credmon_interface.cpp``
(``.mark`` 0600, ``pid``, ``CREDMON_COMPLETE``) and ``src/condor_utils/store_cred.cpp``
(names; the local-issuer ``.top`` placeholder holding the user name).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from htsec.creds.creddir import CredDir
from htsec.creds.files import (
    MetaFile,
    TopFile,
    UseFile,
)
from htsec.creds.names import TokenName
from htsec.creds.pending import PendingLogin

KEY = "0f" * 32  # a pending-login key: 64 lowercase hex, as credd's randomHexKey(32) prints


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


def hidden(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


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

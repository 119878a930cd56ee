"""The drop-in for HTCondor's credmon web server: condor_credd's pending-login files, and the
credential files HTCondor's web server writes after a login.

condor_credd (``credd.cpp``, ``check_creds_continue``) answers a submit that lacks OAuth
tokens by writing ``<SEC_CREDENTIAL_DIRECTORY_OAUTH>/<64 hex>`` (``write_secure_file``, group
readable: 0640, owned by the credd's user) holding one old-syntax ClassAd per missing token
(``Provider``, ``LocalUser``, ``Handle``, ``Scopes`` comma-separated as the submit file gave
them, ``Audience``, ``ClientId``, ``ClientSecret``, ``ReturnUrl``, ``AuthorizationUrl``,
``TokenUrl``), and shows ``<CREDMON_WEB_PREFIX>/key/<64 hex>``. The portal reads that file
(:mod:`htsec.creds.pending`) when the URL is first opened and makes it a link of the store
(:func:`htsec.creds.links.adopt_pending`), with htsec's rules: it expires
``HTSEC_PORTAL_LINK_LIFETIME`` after the file was written (HTCondor: 12 h), and works in the
one browser session that opened it first (HTCondor: anyone holding the URL, for 12 h).

After a login the portal writes ``<user>/<stem>.meta``, ``.top`` and ``.use`` as HTCondor's
web server does (through :class:`htsec.creds.creddir.CredDir`; ``.use`` last, the credd waits
for it), except that the client secret stays sealed in the store (``.meta`` has none) and
``.top`` keeps the request's ``Scopes`` as the credd will compare them. When every login of
the file is done the file is removed, as there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from htsec.config import Settings, param
from htsec.creds.creddir import CredDir
from htsec.creds.files import MetaFile, TopFile, UseFile
from htsec.creds.links import Link, Need, adopt_pending, link_lifetime
from htsec.creds.pending import PendingLogin, check_key
from htsec.creds.store import CredStore
from htsec.errors import CredentialFileError, NotFound
from htsec.portal.providers import PRESETS, OAuthProvider

__all__ = [
    "DropIn",
    "need_of",
    "provider_of",
    "split_scopes",
]


def split_scopes(text: str) -> frozenset[str]:
    """The set of scopes in a ClassAd ``Scopes`` value (comma-separated, blanks ignored, as
    the web server's ``split(',')`` + ``strip()``)."""
    return frozenset(s.strip() for s in text.split(",") if s.strip())


def need_of(login: PendingLogin) -> Need:
    return Need(
        login.provider, login.handle or None, split_scopes(login.scopes), login.audience or None
    )


def provider_of(login: PendingLogin) -> OAuthProvider:
    """The provider as the credd described it in the ad (what HTCondor's web server uses),
    with the preset's extra parameters (Google's ``access_type=offline`` ...)."""
    preset = PRESETS.get(login.provider.lower())
    return OAuthProvider(
        name=login.provider,
        title=preset.title if preset else login.provider,
        client_id=login.client_id,
        client_secret=login.client_secret or None,
        authorization_url=login.authorization_url,
        token_url=login.token_url,
        redirect_uri=login.return_url,
        user_url=param(f"{login.provider.upper()}_USER_URL")
        or (preset.user_url if preset else None),
        # HTCondor's web server (requests-oauthlib, include_client_id) sends the secret in the
        # body; so must we: the provider was registered for that.
        token_auth="client_secret_post",  # noqa: S106 - a method name
        params=preset.params if preset else {},
        scopes=preset.scopes if preset else (),
    )


@dataclass
class DropIn:
    """condor_credd's pending logins and the credential directory of ``settings``."""

    settings: Settings

    @property
    def enabled(self) -> bool:
        return self.settings.cred_dir is not None

    @property
    def creddir(self) -> CredDir:
        assert self.settings.cred_dir is not None
        return CredDir(self.settings.cred_dir)

    def logins(self, key: str) -> list[PendingLogin] | None:
        """The ads of ``<root>/<key>``, or None without such a file (or a credential dir).

        :raises CredentialFileError: an unreadable or malformed file.
        """
        if not self.enabled:
            return None
        return self.creddir.read_pending(check_key(key))

    def adopt(self, cs: CredStore, key: str) -> Link | None:
        """The link of condor_credd's file ``key`` (made on first sight), or None."""
        logins = self.logins(key)
        if logins is None:
            return None
        users = {login.local_user for login in logins}
        if len(users) != 1:
            raise CredentialFileError(
                self.creddir.pending_path(key), "its ads name more than one LocalUser"
            )
        ctime = os.lstat(self.creddir.pending_path(key)).st_ctime
        return adopt_pending(
            cs,
            key,
            user=users.pop(),
            needs=[need_of(login) for login in logins],
            created_at=ctime,
            ttl=link_lifetime(),
        )

    def login_at(self, key: str, position: int) -> PendingLogin:
        """The ad of need ``position`` of ``key``'s file, read again (as the web server does).

        :raises NotFound: the file is gone (the credmon cleaned it, or every login is done).
        """
        logins = self.logins(key)
        if logins is None or position >= len(logins):
            raise NotFound("condor_credd's pending login is gone; run condor_submit again")
        return logins[position]

    def write_files(
        self,
        user: str,
        need: Need,
        token: dict[str, object],
        provider: OAuthProvider,
        requested: PendingLogin | None = None,
    ) -> None:
        """``.meta``, ``.top`` and ``.use`` of the new credential, in that order, as HTCondor's
        web server writes them, but with no client secret in ``.meta`` (it is sealed in the
        store) and, for condor_credd's request ``requested``, its ``Scopes`` and ``Audience``
        kept exactly (the credd compares them with the next request's as strings; the web
        server's removing blanks makes ``read, write`` mismatch forever)."""
        cd = self.creddir
        cd.ensure_user_dir(user)
        refresh = token.get("refresh_token")
        rt = refresh if isinstance(refresh, str) else ""
        use = UseFile.from_response({k: v for k, v in token.items() if k != "refresh_token"})
        cd.write_meta(
            user,
            need.name,
            MetaFile(
                client_id=provider.client_id,
                client_secret=None,
                token_url=provider.token_url,
                use_refresh_token=bool(rt),
            ),
        )
        if requested is not None:
            cd.write_requested_top(user, need.name, rt, requested.scopes, requested.audience)
        else:
            top = TopFile(rt, tuple(sorted(need.scopes)), need.audience or "")
            cd.write_top(user, need.name, top)
        cd.write_use(user, need.name, use)

    def remove(self, key: str) -> None:
        if self.enabled:
            self.creddir.remove_pending(key)

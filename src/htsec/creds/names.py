"""Credential names: users, services, handles and scopes as HTCondor accepts them.

shared/FORMATS.md section 3. Confirmed against HTCondor's source (htcondor/htcondor):
``src/condor_utils/store_cred.cpp`` (``okay_for_oauth_filename``): user, service and handle
names use only ``A-Za-z0-9`` and ``- + = _ .``; the file stem is ``<service>`` or
``<service>_<handle>``. ``credmon/utils/utils.py`` (``VALID_PROVIDER_NAME_CHARS_RE``): since
HTCondor 25.13.2 provider (service) names are only ``A-Za-z0-9-`` unless
``CREDMON_ALLOW_SPECIAL_CHAR_NAMES`` (which disables handles), as the credmon splits a stem at
its first ``_``. ``src/condor_utils/credmon_interface.cpp``: a user name is cut at its first
``@``.

The store and the authorization rules import this module alone; what touches the directory
is :mod:`htsec.creds.creddir`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from htsec.errors import BadCredentialName, CredentialError

__all__ = [
    "MAX_NAME",
    "TokenName",
    "check_name_part",
    "is_local_user",
    "local_user",
    "split_scopes",
]

#: htsec's bound on a user name or token stem: leaves room for ``.meta`` and _fs's temp name
#: (``.<name>.<12 hex>.tmp``) under the usual 255-byte file-name limit.
MAX_NAME = 200

# store_cred.cpp okay_for_oauth_filename: isalpha/isdigit (C locale, so ASCII) and "-+=_.".
_FILENAME_RE = re.compile(r"[A-Za-z0-9\-+=_.]+")
# credmon/utils/utils.py VALID_PROVIDER_NAME_CHARS_RE (HTCondor >= 25.13.2 default).
_SERVICE_RE = re.compile(r"[A-Za-z0-9\-]+")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); HTCondor joins scopes
# with "," so a scope may not contain one either.
_SCOPE_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]+")


def _check_filename_part(what: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise BadCredentialName(f"{what} is empty")
    if len(value) > MAX_NAME:
        raise BadCredentialName(f"{what} is longer than {MAX_NAME} characters")
    if not pattern.fullmatch(value):
        raise BadCredentialName(f"{what} {value!r} is not accepted by HTCondor: {rule}")
    if value in (".", "..") and what != "handle":  # a handle is only ever part of a stem
        raise BadCredentialName(f"{what} {value!r} would name a directory, not a file")
    return value


def local_user(user: str) -> str:
    """The local user name for a directory: ``user`` cut at its first ``@``, validated.

    ``credmon_interface.cpp`` ``credmon_user_filename`` drops everything from the first ``@``;
    ``store_cred.cpp`` then refuses any character outside ``A-Za-z0-9-+=_.``. htsec also refuses
    ``.`` and ``..`` (which that check lets through) and names over :data:`MAX_NAME`.

    :raises BadCredentialName: for a name HTCondor would refuse or that leaves the directory.
    """
    if not isinstance(user, str):
        raise TypeError(f"user must be a str, not {type(user).__name__}")
    return check_name_part("user name", user.split("@", 1)[0])


def check_name_part(what: str, value: object) -> str:
    """``value`` (a user name, handle or ``LocalUser``; ``what`` says which in the error) if
    ``store_cred.cpp`` ``okay_for_oauth_filename`` accepts it and it fits :data:`MAX_NAME`.

    :raises BadCredentialName: otherwise.
    """
    return _check_filename_part(what, value, _FILENAME_RE, "only A-Za-z0-9 and - + = _ .")


def is_local_user(name: str) -> bool:
    """Is ``name`` a local user name as it stands (a directory or ``.mark`` htsec reads)?"""
    try:
        return local_user(name) == name
    except BadCredentialName:
        return False


@dataclass(frozen=True, order=True)
class TokenName:
    """One credential of a user: a service (provider) and an optional handle.

    Files use the stem ``<service>`` or ``<service>_<handle>``; the job ad
    (``OAuthServicesNeeded``) and the wire use ``<service>*<handle>``
    (``submit_utils.cpp``, ``NTreceivers.cpp`` ``CONDOR_getcreds``)::

        >>> TokenName("box", "read").stem, TokenName.parse_wire("box*read").stem
        ('box_read', 'box_read')

    The service is ``A-Za-z0-9-`` (HTCondor's credmon since 25.13.2 splits a stem at its first
    ``_``, so a service with ``_`` would never be refreshed); a handle is ``A-Za-z0-9-+=_.``
    (``store_cred.cpp`` ``okay_for_oauth_filename``); an empty handle means "none".

    :raises BadCredentialName: for names HTCondor would refuse.
    """

    service: str
    handle: str = ""

    def __post_init__(self) -> None:
        _check_filename_part(
            "service name",
            self.service,
            _SERVICE_RE,
            "only A-Za-z0-9 and - (the credmon splits file names at the first _; "
            "see CREDMON_ALLOW_SPECIAL_CHAR_NAMES)",
        )
        if not isinstance(self.handle, str):
            raise TypeError(f"handle must be a str, not {type(self.handle).__name__}")
        if self.handle:
            check_name_part("handle", self.handle)
        if len(self.stem) > MAX_NAME:
            raise BadCredentialName(f"token name is longer than {MAX_NAME} characters")

    @property
    def stem(self) -> str:
        """The file-name form, ``service`` or ``service_handle``."""
        return f"{self.service}_{self.handle}" if self.handle else self.service

    @property
    def wire(self) -> str:
        """The job-ad form, ``service`` or ``service*handle``."""
        return f"{self.service}*{self.handle}" if self.handle else self.service

    def __str__(self) -> str:
        return self.wire

    @classmethod
    def parse_wire(cls, text: str) -> TokenName:
        """Parse ``service`` or ``service*handle`` (split at the first ``*``)."""
        return cls._split(text, "*", "token name")

    @classmethod
    def parse_stem(cls, text: str) -> TokenName:
        """Parse a file stem ``service`` or ``service_handle`` (split at the first ``_``).

        A stem ending in ``_`` is refused, as the credmon skips it (``OAuthCredmon.py``).
        """
        return cls._split(text, "_", "token file stem")

    @classmethod
    def _split(cls, text: str, sep: str, what: str) -> TokenName:
        if not isinstance(text, str):
            raise TypeError(f"{what} must be a str, not {type(text).__name__}")
        service, found, handle = text.partition(sep)
        if found and not handle:
            raise BadCredentialName(f"{what} {text!r} has an empty handle after {sep!r}")
        return cls(service, handle)


def split_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes as a tuple: a string is split at commas and blanks, empty items dropped.

    HTCondor keeps scopes as one comma-separated string (the web server removes blanks, the
    credd stores what condor_submit sent); both read back to the same tuple here.

    :raises CredentialError: for a scope that is not an RFC 6749 scope-token or holds a comma.
    """
    items = re.split(r"[,\s]+", scopes) if isinstance(scopes, str) else list(scopes)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"scopes must be strings, not {type(item).__name__}")
        if not item:
            continue
        if not _SCOPE_RE.fullmatch(item):
            raise CredentialError(
                f"scope {item!r} is not an OAuth scope-token without commas (RFC 6749 3.3)"
            )
        out.append(item)
    return tuple(out)

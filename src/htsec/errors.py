"""The exceptions htsec raises, one tree.

Every error a person can cause or fix derives from :class:`HtsecError`; the CLI prints its
message on one line and exits with its ``exit_code``. Anything else is a bug: the CLI prints
"unexpected error" and the traceback goes to the log only.

::

    HtsecError
    +-- ConfigError            bad or missing configuration (names the knob or file)
    +-- UsageError             bad command-line input (exit 2)
    +-- FileSecurityError      a secret file with unsafe owner or mode
    +-- KeyError_              (KeyNotFound, BadKeyName) signing keys
    +-- TokenError
    |   +-- TokenRejected      a token failed verification (exit 1); ``reason`` is a short code
    +-- Forbidden              the caller's token does not grant what was asked (403)
    +-- StoreError             the database
    |   +-- CredStoreError     a credential cannot be stored or used (``status`` for the API)
    |   +-- NotFound           no such credential
    +-- RequestError           token requests (unknown id, wrong state, over limits)
    +-- RemoteError            the htsec server answered with an error
    +-- LockError              another daemon holds the state directory
    +-- CredentialError        HTCondor's OAuth credential directory (htsec.creds.layout)
        +-- BadCredentialName  a user, service or handle HTCondor would not accept (exit 2)
        +-- CredentialFileError  a credential file that cannot be read or parsed (``path``)

Messages name the thing (file, knob, key, jti) and say how to fix it; they never hold secret
bytes.
"""

from __future__ import annotations

import os

__all__ = [
    "BadCredentialName",
    "BadKeyName",
    "ConfigError",
    "CredStoreError",
    "CredentialError",
    "CredentialFileError",
    "FileSecurityError",
    "Forbidden",
    "HtsecError",
    "KeyNotFound",
    "LockError",
    "NotFound",
    "RemoteError",
    "RequestError",
    "SigningKeyError",
    "StoreError",
    "TokenError",
    "TokenRejected",
    "UsageError",
]


class HtsecError(Exception):
    """Base of every error htsec expects; ``str(err)`` is a message for a person."""

    exit_code: int = 1
    status: int = 500
    code: str = "htsec_error"


class ConfigError(HtsecError):
    """The configuration is missing, unreadable or holds a bad value."""

    exit_code = 2
    code = "config_error"


class UsageError(HtsecError):
    """The command line or request body is wrong."""

    exit_code = 2
    status = 400
    code = "usage_error"


class FileSecurityError(HtsecError):
    """A secret file or directory has an unsafe owner or mode."""

    exit_code = 2
    code = "unsafe_file"


class SigningKeyError(HtsecError):
    """A signing key cannot be used."""

    code = "key_error"


class KeyNotFound(SigningKeyError):
    """No key file of that name exists."""

    exit_code = 2
    status = 404
    code = "key_not_found"


class BadKeyName(SigningKeyError):
    """A key name that could escape the key directory or that HTCondor would not accept."""

    exit_code = 2
    status = 400
    code = "bad_key_name"


class TokenError(HtsecError):
    """Problems with tokens other than verification failures."""

    code = "token_error"


class TokenRejected(TokenError):
    """A token failed verification.

    ``reason`` is a stable short code (``expired``, ``bad_signature``, ``revoked`` ...) for
    scripts and the JSON output; the message explains it to a person.
    """

    status = 401
    code = "token_rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Forbidden(HtsecError):
    """The caller's token does not grant the permission the action needs
    (:func:`htsec.web.auth.require`)."""

    status = 403
    code = "forbidden"


class StoreError(HtsecError):
    """The database cannot be opened or migrated."""

    code = "store_error"


class CredStoreError(StoreError):
    """A credential cannot be stored or used (conflict, dead credential, contention)."""

    status = 400
    code = "credential_error"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class NotFound(StoreError):
    """The credential (or other named thing) does not exist."""

    exit_code = 1
    status = 404
    code = "not_found"


class RequestError(HtsecError):
    """A token request cannot be made, found or decided."""

    status = 400
    code = "request_error"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RemoteError(HtsecError):
    """The htsec server could not be reached or answered with an error."""

    code = "remote_error"


class LockError(HtsecError):
    """Another process holds the lock on a state directory."""

    code = "lock_error"


class CredentialError(HtsecError):
    """HTCondor's OAuth credential directory cannot be used as asked."""

    code = "credential_error"


class BadCredentialName(CredentialError):
    """A user, service or handle name HTCondor would refuse or that could leave the directory."""

    exit_code = 2
    status = 400
    code = "bad_credential_name"


class CredentialFileError(CredentialError):
    """A credential file is unreadable, too large or not in HTCondor's format.

    ``path`` names the file; the message never quotes the file's content.
    """

    code = "bad_credential_file"

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = path
        self.detail = message

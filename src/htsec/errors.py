"""The exceptions htsec raises, one tree.

Every error a person can cause or fix derives from :class:`HtsecError`; the CLI prints its
message on one line and exits with its ``exit_code``, the web layer answers with a problem
document of its ``status`` and ``code`` (:mod:`htsec.web.problems`). Each class sets all three;
no two classes share a ``code``. Anything else is a bug: the CLI prints "unexpected error" and
the traceback goes to the log only. tests/test_errors.py checks this drawing against the classes::

    HtsecError
    +-- ConfigError              bad or missing configuration (names the knob or file)
    +-- UsageError               bad command-line input or request body (400, exit 2)
    +-- FileSecurityError        a secret file or directory with unsafe owner or mode
    +-- SigningKeyError          a signing key cannot be used
    |   +-- KeyNotFound          no key file of that name (404)
    |   +-- BadKeyName           a key name HTCondor would not accept (400)
    +-- TokenError
    |   +-- TokenRejected        a token failed verification (401); ``reason`` is a short code
    +-- Forbidden                the caller may not do this (403)
    +-- NotFound                 no such credential, token request ... (404)
    +-- Conflict                 the thing is not in the state the action needs (409)
    |   +-- CredentialInactive   the credential needs re-authorisation (or is otherwise dead)
    |   +-- CredentialsUnavailable  a job's tokens cannot be delivered (HTCondor's hold reason)
    +-- LinkGone                 a one-time authorisation link expired or was used (410)
    +-- LoginFailed              a portal login at an OAuth provider did not complete (400)
    +-- UriTooLong               the request target is over its limit (414)
    +-- TooManyRequests          this client has too much pending; wait (429)
    +-- Busy                     the server is at a limit or contended; try again (503)
    +-- StoreError               the database cannot be opened, migrated or read
    |   +-- CredStoreError       a credential cannot be stored or used as asked (400)
    +-- RemoteError              the htsec server could not be reached or answered an error
    +-- SubmitError              a submit description htsec cannot use (parse, bounds, macros)
    +-- CredentialError          HTCondor's OAuth credential directory (htsec.creds)
    |   +-- BadCredentialName    a user, service or handle HTCondor would not accept (400)
    |   +-- CredentialFileError  a credential file that cannot be read or parsed (``path``)
    +-- AnnexError               an annex cannot be provisioned, bootstrapped or ended as asked
    |   +-- CloudError           an AWS call failed (AccessDenied, quota ...); names the call
    +-- CredmonError             the credmon
    |   +-- RefreshFailed        one credential's refresh failed (``reason``, ``dead`` ...)
    |   +-- TokenClientError     an exchange with an OAuth token endpoint failed
    |       +-- TokenTimeout     ... with no complete answer within the timeout
    +-- TransferFailed           a file-transfer plugin could not move one file (``kind`` ...)

Messages name the thing (file, knob, key, jti) and say how to fix it; they never hold secret
bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = [
    "AnnexError",
    "BadCredentialName",
    "BadKeyName",
    "Busy",
    "CloudError",
    "ConfigError",
    "Conflict",
    "CredStoreError",
    "CredentialError",
    "CredentialFileError",
    "CredentialInactive",
    "CredentialsUnavailable",
    "CredmonError",
    "FileSecurityError",
    "Forbidden",
    "HtsecError",
    "KeyNotFound",
    "LinkGone",
    "LoginFailed",
    "NotFound",
    "RefreshFailed",
    "RemoteError",
    "SigningKeyError",
    "StoreError",
    "SubmitError",
    "TokenClientError",
    "TokenError",
    "TokenRejected",
    "TokenTimeout",
    "TooManyRequests",
    "TransferFailed",
    "UriTooLong",
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
    status = 500
    code = "config_error"


class UsageError(HtsecError):
    """The command line or request body is wrong."""

    exit_code = 2
    status = 400
    code = "usage_error"


class FileSecurityError(HtsecError):
    """A secret file or directory has an unsafe owner or mode."""

    exit_code = 2
    status = 500
    code = "unsafe_file"


class SigningKeyError(HtsecError):
    """A signing key cannot be used."""

    exit_code = 1
    status = 500
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

    exit_code = 1
    status = 500
    code = "token_error"


class TokenRejected(TokenError):
    """A token failed verification.

    ``reason`` is a stable short code (``expired``, ``bad_signature``, ``revoked`` ...) for
    scripts and the JSON output; the message explains it to a person.
    """

    exit_code = 1
    status = 401
    code = "token_rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Forbidden(HtsecError):
    """The caller may not do what it asked: its token does not grant the permission the action
    needs (:func:`htsec.web.auth.require`), it owns no credentials, or it asked a token request
    for authorizations beyond ``SEC_TOKEN_REQUEST_LIMITS``."""

    exit_code = 1
    status = 403
    code = "forbidden"


class NotFound(HtsecError):
    """The credential, token request (or other named thing) does not exist."""

    exit_code = 1
    status = 404
    code = "not_found"


class Conflict(HtsecError):
    """The thing exists but is not in the state the action needs: a credential at another
    version than ``If-Match`` named, a token request already decided."""

    exit_code = 1
    status = 409
    code = "conflict"


class CredentialInactive(Conflict):
    """The credential is not active (``needs_reauth`` ...): its access token is not handed out
    until its owner logs in again. The message says the state and why."""

    exit_code = 1
    status = 409
    code = "credential_inactive"


class CredentialsUnavailable(Conflict):
    """A job's tokens cannot be delivered: a credential it needs is missing, has no access
    token yet, or needs re-authorisation. The job is held with :attr:`hold_reason`, the text
    HTCondor's shadow holds it with (``NTreceivers.cpp``, ``CONDOR_getcreds``), and its code
    (4, ``CorruptedCredential``); ``problems`` holds ``(name, why)`` per credential, and the
    message names each (never token bytes)."""

    exit_code = 1
    status = 409
    code = "job_credentials_unavailable"
    hold_reason = "Job credentials are not available"
    hold_code = 4
    hold_subcode = 0

    def __init__(self, user: str, problems: Sequence[tuple[object, str]]) -> None:
        self.user = user
        self.problems = [(str(name), why) for name, why in problems]
        details = "; ".join(f"{name}: {why}" for name, why in self.problems)
        super().__init__(f"{self.hold_reason} ({details})" if details else self.hold_reason)


class LinkGone(HtsecError):
    """A one-time authorisation link that expired, was used up, or was opened in another
    browser session (:mod:`htsec.creds.links`); the user asks for a new one."""

    exit_code = 1
    status = 410
    code = "link_gone"


class LoginFailed(HtsecError):
    """A portal login did not complete: a missing, replayed or foreign ``state``, an error
    the provider answered, a token endpoint that failed or did not answer. Nothing is stored;
    the message says what happened and that the user may start again."""

    exit_code = 1
    status = 400
    code = "login_failed"


class UriTooLong(HtsecError):
    """The request target (path and query) is longer than htsec reads."""

    exit_code = 1
    status = 414
    code = "uri_too_long"


class TooManyRequests(HtsecError):
    """This client already has as much pending as it may; it waits for some to be decided."""

    exit_code = 1
    status = 429
    code = "too_many_requests"


class Busy(HtsecError):
    """The server is at a limit or too contended to do it now; trying again later may work."""

    exit_code = 1
    status = 503
    code = "busy"


class StoreError(HtsecError):
    """The database cannot be opened, migrated or read (a damaged sealed value included)."""

    exit_code = 1
    status = 500
    code = "store_error"


class CredStoreError(StoreError):
    """A credential cannot be stored or used as asked (a bad name or version header, a row
    that could not be re-sealed)."""

    exit_code = 1
    status = 400
    code = "credential_error"


class RemoteError(HtsecError):
    """The htsec server could not be reached or answered with an error."""

    exit_code = 1
    status = 500
    code = "remote_error"


class SubmitError(HtsecError):
    """A submit description that cannot be used: it does not parse, is over a bound (size,
    jobs, services), has macros whose expansion would never end or grow without bound, or
    leaves out a value the configuration requires (HTCondor's "You must specify ...")."""

    exit_code = 1
    status = 400
    code = "submit_error"


class CredentialError(HtsecError):
    """HTCondor's OAuth credential directory cannot be used as asked."""

    exit_code = 1
    status = 500
    code = "credential_directory_error"


class BadCredentialName(CredentialError):
    """A user, service or handle name HTCondor would refuse or that could leave the directory."""

    exit_code = 2
    status = 400
    code = "bad_credential_name"


class CredentialFileError(CredentialError):
    """A credential file is unreadable, too large or not in HTCondor's format.

    ``path`` names the file; the message never quotes the file's content.
    """

    exit_code = 1
    status = 500
    code = "bad_credential_file"

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = path
        self.detail = message


class CredmonError(HtsecError):
    """The credmon cannot do its work."""

    exit_code = 1
    status = 500
    code = "credmon_error"


class RefreshFailed(CredmonError):
    """One credential's refresh failed; the credmon records it and goes on with the others.

    ``reason`` is a short code for metrics and the stored ``last_error`` (``invalid_grant``,
    ``unreachable``, ``http_500`` ...); ``dead``: the credential needs re-authorisation;
    ``retry_after``: seconds to wait instead of the back-off; ``sent``: the request may have
    reached the provider; ``answered``: the provider answered it.
    """

    exit_code = 1
    status = 500
    code = "refresh_failed"

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        dead: bool = False,
        retry_after: float | None = None,
        sent: bool = False,
        answered: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.dead = dead
        self.retry_after = retry_after
        self.sent = sent or answered
        self.answered = answered


class TokenClientError(CredmonError):
    """An exchange with an OAuth token endpoint failed (no answer, a cut or malformed one, TLS,
    a proxy); the message says why, quoting no more than a short excerpt of what the server
    sent. The refresh engine turns it into a :class:`RefreshFailed`."""

    exit_code = 1
    status = 502
    code = "token_endpoint_error"


class TokenTimeout(TokenClientError):
    """No complete answer from the token endpoint within the timeout."""

    exit_code = 1
    status = 504
    code = "token_endpoint_timeout"


class TransferFailed(HtsecError):
    """A file-transfer plugin (:mod:`htsec.plugins`) could not move one file.

    The message is for the job's owner (it becomes the result ad's ``TransferError`` and the
    hold reason); the keywords fill one ``TransferErrorData`` ad of HTCondor's plugin protocol
    (docs/apis/file-transfer-plugins/transfer_error_data.rst): ``kind`` is its ``ErrorType``
    (``Parameter``, ``Resolution``, ``Contact``, ``Authorization``, ``Specification``,
    ``Transfer``), ``server`` the server that failed, ``failure_type`` its ``FailureType``,
    ``retryable`` seconds to wait before a retry may work (``-1``: it will not; None: unknown),
    ``should_refresh`` a new token may help, ``error_code`` an integer for the ad's
    ``ErrorCode`` (an HTTP status, an errno ...). Never holds token bytes.
    """

    exit_code = 1
    status = 502
    code = "transfer_failed"

    def __init__(
        self,
        message: str,
        *,
        kind: str = "Transfer",
        server: str = "",
        failure_type: str = "",
        retryable: int | None = None,
        should_refresh: bool = False,
        error_code: int = 1,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.server = server
        self.failure_type = failure_type
        self.retryable = retryable
        self.should_refresh = should_refresh
        self.error_code = error_code


class AnnexError(HtsecError):
    """An annex cannot be provisioned, bootstrapped or ended as asked (bad tarball, metadata
    service down, instances that never came up ...)."""

    exit_code = 1
    status = 502
    code = "annex_error"


class CloudError(AnnexError):
    """An AWS call failed; the message names the call, AWS's error code and what to do
    (``AccessDenied``: the policy the caller lacks; quota errors: the limit to raise)."""

    exit_code = 1
    status = 502
    code = "cloud_error"

    def __init__(self, message: str, *, aws_code: str = "") -> None:
        super().__init__(message)
        self.aws_code = aws_code

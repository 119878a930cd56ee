"""htsec's settings, read from HTCondor's configuration.

HTCondor's own configuration language and sources are used through the ``htcondor`` wheel
(``htcondor2.param``): ``CONDOR_CONFIG``, ``_CONDOR_<KNOB>`` environment overrides, macro
expansion and ``LOCAL_CONFIG_DIR`` (``config.d``). Knob names are HTCondor's where one exists
(``TRUST_DOMAIN``, ``SEC_PASSWORD_DIRECTORY`` ...); htsec's own start with ``HTSEC_`` and may also
be set as ``HTSEC_<KNOB>`` in the environment (read, never written back); any other ``HTSEC_``
variable is refused, so a misspelt one is never silently ignored.

With no ``CONDOR_CONFIG`` in the environment, htsec writes and uses a built-in default
configuration rooted at ``HTSEC_HOME`` (default ``~/.htsec``, created 0700), so a newcomer needs
no HTCondor installation. On an HTCondor host, set ``CONDOR_CONFIG=/etc/condor/condor_config``.

Knobs are read once, when a process starts: :func:`load` reads every knob of the core into
:class:`Settings`; the credmon reads its providers' and local issuer's knobs into
:class:`~htsec.credmon.providers.ProviderSet` and :class:`~htsec.credmon.issuer.IssuerConfig`
with the helpers here. A bad value is a :class:`ConfigError` naming the knob and the form it
needs. The process environment is read, never written.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from htsec import _fs
from htsec.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "ENV_KNOBS",
    "KNOBS",
    "Settings",
    "bool_knob",
    "check_environment",
    "float_knob",
    "load",
    "param",
    "positive_int_knob",
]

DEFAULT_PORT = 9680

#: The knobs htsec reads, with what each one means (shown by ``htsec config show``). Every
#: ``HTSEC_`` knob must be here: only these may be set as ``HTSEC_<KNOB>`` in the environment
#: (tests/test_config_environment.py checks docs/configuration.md against this list).
KNOBS: dict[str, str] = {
    "TRUST_DOMAIN": "issuer ('iss') of minted tokens; tokens of other issuers are rejected",
    "UID_DOMAIN": "users' domain: credentials belong to user@$(UID_DOMAIN) (default: the full "
    "host name); default identity of token requests (condor@$(UID_DOMAIN))",
    "SEC_PASSWORD_DIRECTORY": "directory of signing keys (passwords.d)",
    "SEC_TOKEN_POOL_SIGNING_KEY_FILE": "file of the POOL signing key",
    "SEC_TOKEN_DIRECTORY": "directory of this user's tokens (default ~/.condor/tokens.d)",
    "SEC_TOKEN_SYSTEM_DIRECTORY": "directory of tokens used by root and daemons",
    "SEC_TOKEN_REVOCATION_EXPR": "ClassAd expression over token claims; true means revoked",
    "SEC_TOKEN_MAX_AGE": "reject tokens issued longer ago than this many seconds",
    "SEC_TOKEN_REQUEST_LIFETIME": "seconds a pending token request lives (3600)",
    "SEC_ISSUED_TOKEN_EXPIRATION": "cap on the lifetime of tokens issued through requests",
    "TOKEN_REQUEST_AUTO_APPROVE_MAX_LIFETIME": "cap on an auto-approval rule's lifetime (3600)",
    "SEC_TOKEN_REQUEST_LIMITS": "authorizations a token request may ask for (default: any)",
    "SEC_TOKEN_ISSUER_KEY": "key that signs tokens issued through requests (POOL)",
    "LOCAL_CONFIG_DIR_EXCLUDE_REGEXP": "token files whose names match are skipped",
    "HTSEC_HOME": "htsec's state directory (database, TLS files)",
    "HTSEC_DATABASE_URL": "SQLAlchemy URL of the store (default SQLite in HTSEC_HOME)",
    "HTSEC_SERVER_URL": "where 'htsec serve' listens and the CLI connects",
    "HTSEC_SERVE_CREDMON": "whether 'htsec serve' also runs the credmon (true)",
    "HTSEC_SERVE_API_DOCS": "whether 'htsec serve' serves /docs, /redoc, /openapi.json (false)",
    "HTSEC_TOKEN_REQUEST_MAX_PER_PEER": "pending token requests one address may have (50)",
    "HTSEC_SERVE_MAX_CONNECTIONS": "open connections 'htsec serve'/'credd' accept (1000)",
    "HTSEC_STORE_KEY_FILE": "0600 file of the data keys sealing secrets in the store",
    "SEC_CREDENTIAL_DIRECTORY_OAUTH": "HTCondor's OAuth credential directory (credmon output)",
    "HTSEC_CA_FILE": "CA certificate the CLI trusts for HTSEC_SERVER_URL",
    "HTSEC_GLIDEIN_KEY_NAME": "per-site key name; {site} is the site (site-{site}; "
    "GlideinWMS uses {site})",
    "HTSEC_GLIDEIN_LIFETIME": "default lifetime of glidein tokens in seconds (86400)",
    "HTSEC_CREDMON_RATE": "refreshes per second per OAuth provider (50)",
    "HTSEC_ISSUER_PREVIOUS_KEYS": "kid:/path.pem ... of retired local-issuer keys still published",
    "HTSEC_PORTAL_URL": "the portal's base URL in authorisation links (default: "
    "CREDMON_WEB_PREFIX, else HTSEC_SERVER_URL)",
    "HTSEC_PORTAL_LINK_LIFETIME": "seconds a one-time authorisation link lives (900)",
    "HTSEC_EXECUTE_SLOTS": "jobs 'htsec serve' runs at once on its execution point (CPUs)",
    "SLOT1_USER": "the account slot 1 (SLOT<N>_USER: slot N) of htsec serve's execution "
    "point runs jobs as (htsec-slot<N>)",
    "DEDICATED_EXECUTE_ACCOUNT_REGEXP": "SLOT<N>_USER accounts that are the slot's alone: "
    "every process of theirs is killed when a job ends",
    "EXECUTE": "job sandboxes (root: /var/lib/htsec/execute; else $(HTSEC_HOME)/execute)",
    "FILETRANSFER_PLUGINS": "file-transfer plugin executables (default: htsec's htsec-plugin-*)",
    "HTSEC_PORTAL_LOGIN_PROVIDER": "provider (OpenID Connect, with <NAME>_ISSUER) for signing in "
    "to the dashboard (unset: ID tokens only)",
    "HTSEC_PORTAL_LOGIN_CLAIM": "ID-token claim naming the dashboard user: user or "
    "user@$(UID_DOMAIN) (sub)",
}

#: htsec's own knobs, which ``HTSEC_<KNOB>`` in the environment also sets (like
#: ``_CONDOR_HTSEC_<KNOB>``, taken literally: no ``$(...)`` expansion).
ENV_KNOBS: frozenset[str] = frozenset(k for k in KNOBS if k.startswith("HTSEC_"))
#: ``HTSEC_`` variables of the test suite and the benchmarks, never read as knobs.
_RESERVED_ENV = ("HTSEC_TEST_", "HTSEC_BENCH_")

_BUILTIN = """\
# htsec built-in default configuration (HTCondor syntax), written on first run because
# CONDOR_CONFIG was not set. Edit it freely, or point CONDOR_CONFIG at a pool's configuration.
HTSEC_HOME = {home}
TRUST_DOMAIN = $(FULL_HOSTNAME)
SEC_PASSWORD_DIRECTORY = $(HTSEC_HOME)/passwords.d
SEC_TOKEN_POOL_SIGNING_KEY_FILE = $(SEC_PASSWORD_DIRECTORY)/POOL
SEC_TOKEN_DIRECTORY = $(HTSEC_HOME)/tokens.d
SEC_TOKEN_SYSTEM_DIRECTORY = $(HTSEC_HOME)/tokens.d
LOCAL_CONFIG_DIR = $(HTSEC_HOME)/config.d
# The local SciTokens issuer ('htsec issuer keygen' creates the key); served by 'htsec serve'.
LOCAL_CREDMON_PRIVATE_KEY = $(HTSEC_HOME)/issuer/scitokens-private.pem
LOCAL_CREDMON_ISSUER = https://localhost:9680
LOCAL_CREDMON_TOKEN_AUDIENCE = https://wlcg.cern.ch/jwt/v1/any
"""


def _htcondor() -> Any:
    import htcondor2

    return htcondor2


def param(knob: str) -> str | None:
    """The effective value of ``knob`` as HTCondor would see it, or None when undefined; for
    htsec's own knobs (:data:`ENV_KNOBS`) ``HTSEC_<KNOB>`` in the environment comes first."""
    if knob in ENV_KNOBS and (raw := os.environ.get(knob)) is not None:
        return raw
    value = _htcondor().param.get(knob)
    return None if value is None else str(value)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``HTSEC_*`` environment variables htsec would not read (a misspelt
    ``HTSEC_DATABSE_URL`` must not leave the daemon quietly on its default store), and an
    ``HTSEC_<KNOB>`` that contradicts ``_CONDOR_HTSEC_<KNOB>``.

    :raises ConfigError: naming the variable, and the knob it was probably meant to be.
    """
    for name in sorted(environ):
        if not name.startswith("HTSEC_") or name.startswith(_RESERVED_ENV):
            continue
        if name not in ENV_KNOBS:
            near = difflib.get_close_matches(name, sorted(ENV_KNOBS), n=1, cutoff=0.75)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(
                f"the environment variable {name} is not an htsec knob{hint}; htsec reads "
                f"{', '.join(sorted(ENV_KNOBS))} (or _CONDOR_<KNOB>); unset it"
            )
        condor = environ.get(f"_CONDOR_{name}")
        if condor is not None and condor != environ[name]:
            raise ConfigError(
                f"the environment sets {name} and _CONDOR_{name} to different values; "
                "unset one of them"
            )


def _reload(source: str) -> None:
    """Make htcondor2 read the configuration ``source``, leaving ``os.environ`` as it was.

    htcondor2 finds its configuration only through ``CONDOR_CONFIG`` in the environment
    (``reload_config(root_config_file)`` does not load the file in the 25.x wheel), and its
    import sets ``CONDOR_CONFIG=/dev/null`` when it finds none: both edits are undone here, so
    a child process still sees the environment htsec was started with.
    """
    saved = os.environ.get("CONDOR_CONFIG")
    os.environ["CONDOR_CONFIG"] = source
    try:
        _htcondor().reload_config()
    except Exception as exc:  # htcondor2 raises its own types for syntax errors
        raise ConfigError(f"cannot read the configuration {source}: {exc}") from None
    finally:
        if saved is None:
            del os.environ["CONDOR_CONFIG"]
        else:
            os.environ["CONDOR_CONFIG"] = saved


def _home(environ: dict[str, str] | os._Environ[str]) -> Path:
    raw = environ.get("HTSEC_HOME")
    if not raw:
        return Path.home() / ".htsec"
    # The built-in configuration holds it as "HTSEC_HOME = <value>": a line break would add
    # knobs, "$(" would be expanded to another directory than the one created here.
    if "$(" in raw or any(not c.isprintable() for c in raw):
        raise ConfigError(
            f"HTSEC_HOME = {raw!r} must be a directory path without control characters or '$('"
        )
    return Path(raw).expanduser()


def _prepare_builtin(home: Path) -> Path:
    _fs.ensure_private_dir(home)
    (home / "config.d").mkdir(mode=0o700, exist_ok=True)
    path = home / "condor_config"
    if not path.exists():
        _fs.write_atomic(path, _BUILTIN.format(home=home).encode(), 0o600)
    return path


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def bool_knob(knob: str, default: bool) -> bool:
    """A true/false knob (also yes/no, on/off, 1/0, any case); unset or empty is ``default``."""
    raw = (param(knob) or "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{knob} = {raw!r} is not true or false")


def positive_int_knob(knob: str, default: int | None) -> int | None:
    """A whole number of at least 1; unset or empty is ``default``."""
    raw = (param(knob) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{knob} = {raw!r} is not a positive whole number")
    return int(raw)


def float_knob(knob: str, default: float, *, what: str) -> float:
    """A number of zero or more (``what`` says its unit in the message); unset or empty is
    ``default``."""
    raw = (param(knob) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also refuses nan
        raise ConfigError(f"{knob} = {raw!r} is not a number of {what} (0 or more)")
    return value


def _int_knob(knob: str, default: int | None) -> int | None:
    raw = param(knob)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(f"{knob} = {raw!r} is not a whole number of seconds") from None


def _str_knob(knob: str, default: str) -> str:
    value = param(knob)
    return default if value is None else value.strip()


def _uid_domain() -> str:
    """UID_DOMAIN; HTCondor's default (param_info.in) is $(FULL_HOSTNAME), the full host name."""
    value = (param("UID_DOMAIN") or param("FULL_HOSTNAME") or socket.getfqdn()).strip()
    if not value or re.search(r"[\s,@]", value):
        raise ConfigError(
            f"UID_DOMAIN = {value!r} must be a domain name, without spaces, ',' or '@'"
        )
    return value


def _request_limits() -> tuple[str, ...] | None:
    """SEC_TOKEN_REQUEST_LIMITS: the authorizations a token request may ask for (None: any)."""
    raw = param("SEC_TOKEN_REQUEST_LIMITS")
    if not raw:
        return None
    return tuple(x.strip().upper() for x in raw.replace(",", " ").split())


def _glidein_key_name() -> str:
    template = _str_knob("HTSEC_GLIDEIN_KEY_NAME", "site-{site}")
    if template.count("{site}") != 1 or template.replace("{site}", "", 1).count("{") > 0:
        raise ConfigError(
            f"HTSEC_GLIDEIN_KEY_NAME = {template!r} must contain '{{site}}' once, "
            "e.g. site-{site}"
        )
    return template


@dataclass(frozen=True)
class Settings:
    """Every value htsec needs, read once from the configuration."""

    config_source: str
    builtin: bool
    home: Path
    trust_domain: str
    uid_domain: str
    password_dir: Path
    pool_key_file: Path
    token_dir: Path
    system_token_dir: Path
    revocation_expr: str | None
    max_age: int | None
    request_lifetime: int
    issued_token_expiration: int | None
    auto_approve_max_lifetime: int
    exclude_regexp: str | None
    database_url: str
    server_url: str
    ca_file: Path
    store_key_file: Path
    cred_dir: Path | None
    glidein_key_name: str
    glidein_lifetime: int
    #: ``htsec serve``: run the credmon in-process; serve /docs; open connections accepted
    #: (None: the web layer's default, :data:`htsec.web.bounds.MAX_CONNECTIONS`).
    serve_credmon: bool = True
    serve_api_docs: bool = False
    serve_max_connections: int | None = None
    #: Token requests: pending requests per peer (None: :mod:`htsec.tokens.requests`'
    #: default); the authorizations one may ask for (None: any); the key that signs them.
    token_request_max_per_peer: int | None = None
    token_request_limits: tuple[str, ...] | None = None
    token_issuer_key: str = "POOL"  # noqa: S105 - the name of a signing key

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    def token_dirs(self) -> list[Path]:
        """Directories searched for tokens, as HTCondor's client does (system one for root)."""
        dirs = [self.token_dir]
        if os.geteuid() == 0 and self.system_token_dir not in dirs:
            dirs.append(self.system_token_dir)
        return dirs


def load(environ: dict[str, str] | os._Environ[str] | None = None) -> Settings:
    """Read the configuration; raises :class:`ConfigError` naming the knob or file at fault."""
    env = os.environ if environ is None else environ
    check_environment(env)
    home = _home(env)
    source = env.get("CONDOR_CONFIG")
    builtin = not source
    if builtin:
        source = str(_prepare_builtin(home))
    else:
        assert source is not None
        if source != "ONLY_ENV" and not os.access(source, os.R_OK):
            raise ConfigError(
                f"CONDOR_CONFIG={source} cannot be read; fix the path or unset CONDOR_CONFIG "
                "to use htsec's built-in default"
            )
    _reload(source)

    home_knob = param("HTSEC_HOME")
    if home_knob and not env.get("HTSEC_HOME"):
        home = Path(home_knob)

    def path_knob(knob: str, default: Path | None = None) -> Path:
        value = param(knob)
        if not value:
            if default is None:
                raise ConfigError(f"{knob} is not set; set it in {source}")
            return default
        return Path(value).expanduser()

    trust_domain = (param("TRUST_DOMAIN") or "").strip()
    if not trust_domain or re.search(r"[\s,]", trust_domain):
        raise ConfigError(
            f"TRUST_DOMAIN = {trust_domain!r} must be set, without spaces or commas "
            f"(set it in {source})"
        )
    password_dir = path_knob("SEC_PASSWORD_DIRECTORY")
    system_dir = path_knob("SEC_TOKEN_SYSTEM_DIRECTORY", Path("/etc/condor/tokens.d"))
    user_dir_raw = param("SEC_TOKEN_DIRECTORY")
    if user_dir_raw:
        token_dir = Path(user_dir_raw).expanduser()
    elif os.geteuid() == 0:
        token_dir = system_dir
    else:
        token_dir = Path.home() / ".condor" / "tokens.d"
    revocation = param("SEC_TOKEN_REVOCATION_EXPR") or param("SEC_TOKEN_BLACKLIST_EXPR")
    port = DEFAULT_PORT
    return Settings(
        config_source=source,
        builtin=builtin,
        home=home,
        trust_domain=trust_domain,
        uid_domain=_uid_domain(),
        password_dir=password_dir,
        pool_key_file=path_knob("SEC_TOKEN_POOL_SIGNING_KEY_FILE", password_dir / "POOL"),
        token_dir=token_dir,
        system_token_dir=system_dir,
        revocation_expr=revocation.strip() if revocation and revocation.strip() else None,
        max_age=_int_knob("SEC_TOKEN_MAX_AGE", None),
        request_lifetime=_int_knob("SEC_TOKEN_REQUEST_LIFETIME", 3600) or 3600,
        issued_token_expiration=_int_knob("SEC_ISSUED_TOKEN_EXPIRATION", None),
        auto_approve_max_lifetime=_int_knob("TOKEN_REQUEST_AUTO_APPROVE_MAX_LIFETIME", 3600)
        or 3600,
        exclude_regexp=param("LOCAL_CONFIG_DIR_EXCLUDE_REGEXP"),
        database_url=param("HTSEC_DATABASE_URL") or f"sqlite:///{home / 'htsec.db'}",
        server_url=(param("HTSEC_SERVER_URL") or f"https://127.0.0.1:{port}").rstrip("/"),
        ca_file=path_knob("HTSEC_CA_FILE", home / "tls" / "ca.pem"),
        store_key_file=path_knob("HTSEC_STORE_KEY_FILE", home / "store.key"),
        cred_dir=Path(v) if (v := param("SEC_CREDENTIAL_DIRECTORY_OAUTH")) else None,
        glidein_key_name=_glidein_key_name(),
        glidein_lifetime=_int_knob("HTSEC_GLIDEIN_LIFETIME", 86400) or 86400,
        serve_credmon=bool_knob("HTSEC_SERVE_CREDMON", True),
        serve_api_docs=bool_knob("HTSEC_SERVE_API_DOCS", False),
        serve_max_connections=positive_int_knob("HTSEC_SERVE_MAX_CONNECTIONS", None),
        token_request_max_per_peer=positive_int_knob("HTSEC_TOKEN_REQUEST_MAX_PER_PEER", None),
        token_request_limits=_request_limits(),
        token_issuer_key=_str_knob("SEC_TOKEN_ISSUER_KEY", "POOL") or "POOL",
    )

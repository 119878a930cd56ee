"""The OAuth tokens a submit description needs, derived as condor_submit derives them.

From HTCondor's source (``src/condor_utils/submit_utils.cpp``):

- ``SubmitHash::NeedsOAuthServices``: the services are ``use_oauth_services`` (or
  ``UseOAuthServices``), split at commas and blanks. Every submit key (not ``+attr`` or
  ``MY.attr``) is searched, case-insensitively, for ``_oauth_(permissions|resource|options)``;
  the text before it is a service, and if that service is enabled the key names the token
  ``<service>`` or, when anything follows, ``<service>*<handle>`` (the handle is what follows
  after one separator character). A service named by any handle-suffixed key is not also
  requested bare. Names are a case-insensitive set in case-insensitive order (ClassAd
  ``References``); a name keeps the spelling of the key that first added it.
- ``SubmitHash::SetOAuth``: the job attribute ``OAuthServicesNeeded`` is those names joined
  with ``,``; local-issuer services are not in it.
- ``process_job_credentials`` (with ``SUBMIT_ADD_LOCAL_CREDMON_PROVIDERS``, default true) also
  checks the local-issuer and local-client services of the configuration:
  ``SUBMIT_ADD_LOCAL_CREDMON_PROVIDER_NAMES``, else ``LOCAL_CREDMON_PROVIDER_NAMES`` (or
  ``LOCAL_CREDMON_PROVIDER_NAME``) and ``CLIENT_CREDMON_PROVIDER_NAMES``.
- ``SubmitHash::build_oauth_service_ads``: for each token, the scopes are
  ``<service>_OAUTH_PERMISSIONS[_<handle>]`` from the description; when empty, a
  configuration value ``<SERVICE>_USER_DEFINE_SCOPES`` whose first character is ``R`` (upper
  case only) makes it an error, "You must specify <key> to use OAuth service <service>.", else
  ``<SERVICE>_DEFAULT_SCOPES``. The same with ``_OAUTH_RESOURCE`` /
  ``_USER_DEFINE_AUDIENCE`` / ``_DEFAULT_AUDIENCE`` for the audience and ``_OAUTH_OPTIONS`` /
  ``_USER_DEFINE_OPTIONS`` / ``_DEFAULT_OPTIONS`` for the options.

condor_submit evaluates all this once, at the first queue statement and before its foreach
variables are set; htsec evaluates it for every job (once per statement when none of the
values involved holds a macro) and checks the union, so a token named only through a foreach
variable is checked too. Two jobs asking for the same token with different scopes or audience
cannot both be served by one stored credential: that is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from htsec.creds.links import MAX_NEEDS as LINK_MAX_NEEDS
from htsec.creds.names import TokenName, split_scopes
from htsec.errors import BadCredentialName, CredentialError, SubmitError
from htsec.submit.load import Job, Statement, SubmitDescription, expand

__all__ = [
    "MAX_JOBS_EVALUATED",
    "MAX_NEEDS",
    "Derivation",
    "TokenNeed",
    "derive",
    "needed_names",
    "token_need",
]

#: The most tokens one description may need (htsec's bound, the credd's and the links'
#: (:data:`htsec.creds.links.MAX_NEEDS`); HTCondor has none).
MAX_NEEDS = LINK_MAX_NEEDS
#: The most jobs whose values are expanded one by one (only when they hold macros).
MAX_JOBS_EVALUATED = 10_000

Param = Callable[[str], str | None]

_OAUTH_KEY = re.compile(r"_oauth_(permissions|resource|options)", re.IGNORECASE)
_USE_KEYS = ("use_oauth_services", "UseOAuthServices")
_USE_FOLDED = frozenset(k.casefold() for k in _USE_KEYS)


def _tokens(text: str) -> list[str]:
    """HTCondor's ``StringTokenIterator`` with its default separators (``, \\t\\r\\n``)."""
    return [t for t in re.split(r"[, \t\r\n]+", text) if t]


class _NameSet:
    """ClassAd ``References``: a set of names compared case-insensitively, kept sorted so."""

    def __init__(self) -> None:
        self._by_fold: dict[str, str] = {}

    def add(self, name: str) -> None:
        self._by_fold.setdefault(name.casefold(), name)

    def __contains__(self, name: str) -> bool:
        return name.casefold() in self._by_fold

    def __len__(self) -> int:
        return len(self._by_fold)

    def sorted(self) -> list[str]:
        return [self._by_fold[k] for k in sorted(self._by_fold)]


@dataclass(frozen=True)
class TokenNeed:
    """One token a job needs: what ``build_oauth_service_ads`` puts in its request ad."""

    service: str
    handle: str | None
    scopes: tuple[str, ...]
    audience: str | None
    options: str | None = None

    @property
    def wire(self) -> str:
        return f"{self.service}*{self.handle}" if self.handle else self.service

    def as_json(self) -> dict[str, object]:
        """The credd check's and the authorization route's form of a need."""
        return {
            "service": self.service,
            "handle": self.handle,
            "scopes": list(self.scopes),
            "audience": self.audience,
        }


def needed_names(
    keys: Iterable[str], value: Callable[[str], str], local: Iterable[str] = ()
) -> list[str]:
    """``NeedsOAuthServices``: the token names (``service`` or ``service*handle``), in
    HTCondor's order, with the ``local`` service names added (pass none for the job
    attribute)."""
    wanted = next((v for k in _USE_KEYS if (v := value(k))), "")
    enabled = _NameSet()
    for name in _tokens(wanted):
        enabled.add(name)
        if len(enabled) > MAX_NEEDS:
            raise SubmitError(
                f"use_oauth_services names over {MAX_NEEDS} services; htsec refuses it"
            )
    names, with_handles = _NameSet(), _NameSet()
    for key in sorted(keys, key=str.casefold):
        if key.startswith("+") or key[:3].upper() == "MY.":
            continue
        m = _OAUTH_KEY.search(key)
        if m is None:
            continue
        service = key[: m.start()]
        if service not in enabled:
            continue
        if m.end() < len(key):
            with_handles.add(service)
            service += "*" + key[m.end() + 1 :]
        names.add(service)
        if len(names) > MAX_NEEDS:
            raise SubmitError(f"the submit description needs over {MAX_NEEDS} OAuth tokens")
    for name in enabled.sorted():
        if name not in with_handles:
            names.add(name)
    for name in local:
        names.add(name)
    if len(names) > MAX_NEEDS:
        raise SubmitError(f"the submit description needs over {MAX_NEEDS} OAuth tokens")
    return names.sorted()


def _setting(
    service: str, handle: str, kind: str, what: str, value: Callable[[str], str], param: Param
) -> str:
    """One of scopes / audience / options of a token (``kind``: PERMISSIONS, RESOURCE,
    OPTIONS; ``what``: SCOPES, AUDIENCE, OPTIONS), from the description or the configuration."""
    key = f"{service}_OAUTH_{kind}" + (f"_{handle}" if handle else "")
    got = value(key)
    if got:
        return got
    if (param(f"{service}_USER_DEFINE_{what}") or "").startswith("R"):
        raise SubmitError(f"You must specify {key} to use OAuth service {service}.")
    return param(f"{service}_DEFAULT_{what}") or ""


def token_need(name: str, value: Callable[[str], str], param: Param) -> TokenNeed:
    """``build_oauth_service_ads`` for one token name."""
    service, _, handle = name.partition("*")
    try:
        TokenName(service, handle)
    except BadCredentialName as exc:
        raise SubmitError(f"OAuth token {name!r}: {exc}") from None
    if "*" in name and not handle:
        raise SubmitError(f"OAuth token {name!r} has an empty handle")
    scopes_text = _setting(service, handle, "PERMISSIONS", "SCOPES", value, param)
    try:
        scopes = split_scopes(scopes_text)
    except CredentialError as exc:
        raise SubmitError(f"{service}_OAUTH_PERMISSIONS: {exc}") from None
    audience = _setting(service, handle, "RESOURCE", "AUDIENCE", value, param)
    options = _setting(service, handle, "OPTIONS", "OPTIONS", value, param)
    return TokenNeed(service, handle or None, scopes, audience or None, options or None)


def local_services(param: Param) -> list[str]:
    """The local-issuer and local-client services condor_submit adds to its check."""
    if (param("SUBMIT_ADD_LOCAL_CREDMON_PROVIDERS") or "true").strip().lower() in (
        "false",
        "no",
        "0",
        "off",
    ):
        return []
    explicit = param("SUBMIT_ADD_LOCAL_CREDMON_PROVIDER_NAMES")
    if explicit is not None:
        return _tokens(explicit)
    names = param("LOCAL_CREDMON_PROVIDER_NAMES")
    if names is None:
        names = param("LOCAL_CREDMON_PROVIDER_NAME")
    return _tokens(names or "") + _tokens(param("CLIENT_CREDMON_PROVIDER_NAMES") or "")


@dataclass(frozen=True)
class Derivation:
    """What a description needs: the tokens to check and the job attribute."""

    needs: tuple[TokenNeed, ...]
    #: ``OAuthServicesNeeded`` of the jobs (the union when jobs differ); None: not set.
    oauth_services_needed: str | None
    jobs: int


def _decides(key: str) -> bool:
    return bool(_OAUTH_KEY.search(key)) or key.casefold() in _USE_FOLDED


def _depends_on_job(st: Statement) -> bool:
    """Do the values deciding the tokens hold a macro (so they may differ between jobs)?"""
    for key in st.submit_keys():
        if _decides(key) and (key in st.variables or "$" in str(st.submit.get(key, ""))):
            return True
    return False


def derive(desc: SubmitDescription, param: Param) -> Derivation:
    """The tokens ``desc`` needs, checked for conflicts between jobs.

    :raises SubmitError: for a required value left out, a bad name, over :data:`MAX_NEEDS`
        tokens, jobs asking for one token differently, or over :data:`MAX_JOBS_EVALUATED` jobs
        whose values must be expanded one by one.
    """
    local = local_services(param)
    names = _NameSet()
    needs: dict[str, TokenNeed] = {}
    evaluated = 0

    def visit(job: Job) -> None:
        keys = job.statement.submit_keys()
        wanted = [k for k in keys if _OAUTH_KEY.search(k)] + list(_USE_KEYS)
        values = desc.expand(job, wanted)

        def value(key: str) -> str:
            if key in values:
                return values[key]
            return expand(job.statement.submit, key)

        for n in needed_names(keys, value):
            names.add(n)
        for n in needed_names(keys, value, local):
            need = token_need(n, value, param)
            seen = needs.setdefault(n.casefold(), need)
            if seen != need:
                raise SubmitError(
                    f"jobs of this description ask for {n} with different scopes or audience "
                    f"({','.join(seen.scopes) or 'none'} / {seen.audience or 'none'} and "
                    f"{','.join(need.scopes) or 'none'} / {need.audience or 'none'}); one "
                    "stored credential serves one; give each its own handle"
                )
        if len(needs) > MAX_NEEDS:
            raise SubmitError(f"the submit description needs over {MAX_NEEDS} OAuth tokens")

    first = 0
    for st in desc.statements:
        jobs = desc.jobs_of(st, first)
        first += st.jobs
        job = next(jobs, None)
        if job is None:
            continue
        visit(job)
        if not _depends_on_job(st):
            continue
        for job in jobs:
            evaluated += 1
            if evaluated > MAX_JOBS_EVALUATED:
                raise SubmitError(
                    f"the OAuth settings depend on per-job macros for over {MAX_JOBS_EVALUATED} "
                    "jobs; htsec evaluates at most that many"
                )
            visit(job)
    return Derivation(
        needs=tuple(needs[k] for k in sorted(needs)),
        oauth_services_needed=",".join(names.sorted()) or None,
        jobs=desc.job_count,
    )

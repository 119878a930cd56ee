"""The refresh engine: keeps every stored credential's access token fresh.

Shaped like certbot's renewal pass (STYLE.md 4.9): claim what is due, decide with a pure
:func:`should_refresh`, one try per credential feeding a :class:`RefreshReport`. Unlike
HTCondor's ``condor_credmon_oauth`` (FORMATS.md section 3, "the anchor"), it

* refreshes on the access token's real expiry, not on the ``.use`` file's age;
* keeps the old refresh token when the provider does not return a new one (RFC 6749
  section 6: the server *may* issue a new refresh token);
* isolates failures: one credential's error never stops the others;
* marks a credential whose refresh token is refused with ``invalid_grant`` (RFC 6749
  section 5.2) as needing re-authorisation instead of retrying it forever;
* commits the new refresh token durably, together with the access token, as soon as the answer
  arrives and before anything is published (``.use`` files are written after the commit);
* marks each claimed refresh as in flight in the store before it is sent, so that after a
  crash a refresh token the provider may have rotated is tried once and, if refused, the
  credential is marked as needing re-authorisation with the reason (never silently);
* and redeems a refresh token only
  when the result can be published (the ``precheck`` hook: HTCondor's directory would
  otherwise keep a refresh token the provider has already replaced);
* runs refreshes concurrently (a bounded pool), rate-limited per provider, with jittered
  exponential back-off, and holds each credential by a lease in the store so that several
  credmons (one store, any number of hosts) never refresh the same credential at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import math
import random
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from htsec import __version__
from htsec._b64 import b64url_decode
from htsec.credmon.issuer import LocalIssuer
from htsec.credmon.providers import Provider, ProviderSet
from htsec.creds.leases import Claim, Leases
from htsec.creds.store import CredStore
from htsec.errors import RefreshFailed, TokenClientError, TokenTimeout

if TYPE_CHECKING:  # aiohttp is imported by the process that refreshes, not its supervisor
    from htsec.credmon.token_client import TokenClient

__all__ = [
    "CredmonMetrics",
    "Policy",
    "RefreshEngine",
    "RefreshReport",
    "refresh_due",
    "should_refresh",
    "token_expiry",
]

log = logging.getLogger("htsec.credmon")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Policy:
    """When and how to refresh. No knob sets these (the daemon uses the defaults; tests pass
    their own); the credmon's one tuning knob, ``HTSEC_CREDMON_RATE``, is a provider's
    (:mod:`htsec.credmon.providers`)."""

    fraction: float = 0.5  # refresh once less than this share of the lifetime is left
    min_remaining: int = 60  # ... or less than this many seconds
    default_lifetime: int = 3600  # a token response without expires_in (and not a JWT)
    min_rest: int = 10  # wait after a token that is already due when it arrives
    lease: int = 60  # seconds a claim holds a credential (longer than any refresh)
    timeout: float = 10.0  # per HTTP request
    concurrency: int = 16  # refreshes in flight
    batch: int = 64  # credentials claimed at once
    backoff_base: float = 10.0
    backoff_max: float = 3600.0


def refresh_due(expires_at: int | None, issued_at: int | None, policy: Policy) -> int:
    """The time at which a token expiring at ``expires_at`` should be refreshed."""
    if expires_at is None:
        return 0
    lifetime = max(0, expires_at - issued_at if issued_at is not None else policy.default_lifetime)
    # Refresh once less than `fraction` of the lifetime is left, and at least `min_remaining`
    # seconds early -- but never earlier than half-way, or short tokens would never rest.
    margin = max(policy.fraction * lifetime, min(policy.min_remaining, 0.5 * lifetime))
    return expires_at - int(margin)


def should_refresh(
    expires_at: int | None, issued_at: int | None, now: float, policy: Policy
) -> bool:
    """Pure decision: is this access token due (or missing)?"""
    return now >= refresh_due(expires_at, issued_at, policy)


def backoff(failures: int, policy: Policy, rng: random.Random) -> float:
    """Jittered exponential back-off: base x 2^failures, at most backoff_max, times 0.5-1.5."""
    base = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(failures, 20))
    return float(base * rng.uniform(0.5, 1.5))


@dataclass
class RefreshReport:
    refreshed: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    not_due: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dead: dict[str, str] = field(default_factory=dict)
    lost_lease: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.refreshed)} refreshed, {len(self.issued)} issued locally, "
            f"{len(self.not_due)} not due, {len(self.failed)} failed, "
            f"{len(self.dead)} need re-authorisation"
        ) + (f", {len(self.deferred)} deferred to the next pass" if self.deferred else "")


class CredmonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.refreshes = Counter(
            "htsec_credmon_refreshes", "Successful refreshes", ["provider"], registry=self.registry
        )
        self.failures = Counter(
            "htsec_credmon_failures",
            "Failed refreshes by reason",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.time_to_expiry = Histogram(
            "htsec_credmon_time_to_expiry_seconds",
            "Remaining lifetime of access tokens when they were refreshed",
            registry=self.registry,
            buckets=(0, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200, float("inf")),
        )
        self.in_flight = Gauge(
            "htsec_credmon_queue_depth",
            "Claimed credentials being refreshed",
            registry=self.registry,
        )


class _RateLimiter:
    """A token bucket per provider (``rate`` requests per second, bursts of one second)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = asyncio.Lock()

    async def wait(self, name: str, rate: float) -> None:
        if rate <= 0:
            return
        while True:
            async with self._lock:
                now = time.monotonic()
                tokens, last = self._buckets.get(name, (rate, now))
                tokens = min(rate, tokens + (now - last) * rate)
                if tokens >= 1:
                    self._buckets[name] = (tokens - 1, now)
                    return
                self._buckets[name] = (tokens, now)
                delay = (1 - tokens) / rate
            await asyncio.sleep(delay)


class _Deferred(Exception):
    """Not tried now (its lease is nearly over); handed back untouched for the next pass."""


class _Batcher(Generic[_T]):
    """Group commit without a delay: an item that arrives while no write is running is written
    at once; items that arrive during a write go together in the next one (at most
    :attr:`MAX_BATCH`). Each caller gets its own result once its write is durable, so nothing
    is published earlier, and no answer waits for a timer before it is committed."""

    MAX_BATCH = 64

    def __init__(self, write: Callable[[list[_T]], list[bool]]) -> None:
        self._write = write
        self._pending: list[tuple[_T, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: _T) -> bool:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.MAX_BATCH]
                del self._pending[: self.MAX_BATCH]
                try:
                    results = await asyncio.to_thread(self._write, [i for i, _ in batch])
                except BaseException as exc:  # the transaction failed: every caller hears
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):  # cancelled: nobody may wait forever
                        for _, fut in self._pending:
                            fut.cancel()
                        self._pending.clear()
                        raise
                    continue
                for (_, fut), ok in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(ok)
        finally:
            self._writer = None


_USER_AGENT = f"htsec-credmon/{__version__}"
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")  # RFC 6749 section 5.2


def _error_code(value: object) -> str | None:
    """A provider's ``error`` as RFC 6749 allows it, else a placeholder: it goes into logs and
    the credential's status, so no line breaks or kilobytes of a hostile server's text."""
    if value is None:
        return None
    if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
        return value
    return "(malformed error code)"


def _retry_after(value: str, ceiling: float) -> float | None:
    """Retry-After in seconds (RFC 9110 section 10.2.3), finite and at most ``ceiling``; an
    HTTP-date or nonsense gives None (the ordinary back-off applies)."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, ceiling)


def _secure_url(url: str) -> bool:
    """https, or plain http to a loopback address (a provider on this host, or a test)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _basic_auth(client_id: str, secret: str) -> str:
    """HTTP Basic client authentication as RFC 6749 section 2.3.1 has it: the client id and
    secret are each form-encoded (application/x-www-form-urlencoded, Appendix B) before they
    are joined with ':' for RFC 7617, so a ':' or '%' in either survives the trip."""
    pair = (
        f"{urllib.parse.quote_plus(client_id, safe='')}:{urllib.parse.quote_plus(secret, safe='')}"
    )
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


def _jwt_times(token: str) -> tuple[int | None, int | None]:
    """``iat`` and ``exp`` of a JWT access token (unverified: only used for timing)."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 16384:
        return None, None
    try:
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(claims, dict):
        return None, None
    iat, exp = claims.get("iat"), claims.get("exp")
    return (
        iat if isinstance(iat, int) and not isinstance(iat, bool) else None,
        exp if isinstance(exp, int) and not isinstance(exp, bool) else None,
    )


_MAX_LIFETIME = 366 * 86400  # longer-lived "access tokens" are not believed


def token_expiry(body: dict[str, Any], now: int, policy: Policy) -> int:
    """When the access token in a token response expires, on this host's clock.

    ``expires_in`` (RFC 6749 section 5.1) is relative, so the provider's clock does not matter.
    Without it, a JWT's lifetime ``exp - iat`` is counted from now -- the provider's clock may
    be off by hours, its ``exp`` alone could already be past here; ``exp`` alone is used only
    without ``iat``. Else the policy's default lifetime."""
    expires_in = body.get("expires_in")
    if (
        isinstance(expires_in, int | float)
        and not isinstance(expires_in, bool)
        and 0 <= expires_in <= _MAX_LIFETIME  # also false for NaN; JSON's 1e999 is inf
    ):
        return now + int(expires_in)
    iat, exp = _jwt_times(body["access_token"])
    if iat is not None and exp is not None and 0 < exp - iat <= _MAX_LIFETIME:
        return now + (exp - iat)
    if exp is not None:
        return max(0, min(exp, now + _MAX_LIFETIME))  # it goes into a 64-bit column
    return now + policy.default_lifetime


Publish = Callable[[Claim, dict[str, Any]], None]
#: Asked before a credential is refreshed: why its result could not be published, or None.
Precheck = Callable[[Claim], str | None]


def _traceback() -> bool:
    """Tracebacks go to the log only with ``--debug``: one readable line per problem else."""
    return log.isEnabledFor(logging.DEBUG)


class RefreshEngine:
    """Refresh passes over one store; ``holder`` names this process in leases."""

    def __init__(
        self,
        creds: CredStore,
        providers: ProviderSet,
        *,
        holder: str,
        policy: Policy | None = None,
        issuers: Callable[[str], LocalIssuer | None] | None = None,
        publish: Publish | None = None,
        client: TokenClient | None = None,
        precheck: Precheck | None = None,
        clock: Callable[[], float] = time.time,
        metrics: CredmonMetrics | None = None,
        rng: random.Random | None = None,
        verify: Any = True,
    ) -> None:
        self.creds = creds
        self.providers = providers
        self.leases = Leases(creds, holder, providers.local_names)
        self.policy = policy or Policy()
        self.issuers = issuers or (lambda name: None)
        self.publish = publish
        self.client = client
        self.precheck = precheck
        self.clock = clock
        self.metrics = metrics or CredmonMetrics()
        self.rng = rng or random.Random()  # noqa: S311 - jitter for back-off, not a secret
        self.verify = verify
        self.wake = asyncio.Event()
        self._limiter = _RateLimiter()
        self._group: _Batcher[tuple[Claim, dict[str, Any]]] = _Batcher(self.leases.commit_many)
        # A request is sent only while its lease outlasts it with room to commit the result.
        self._lease_margin = min(2 * self.policy.timeout + 5, self.policy.lease / 2)

    # -- one pass --------------------------------------------------------------------------
    async def run_pass(
        self, *, max_claims: int | None = None, keep_going: Callable[[], bool] | None = None
    ) -> RefreshReport:
        """Claim and handle everything due now; returns what happened to each credential.

        ``keep_going`` is asked before each batch is claimed: a stopping credmon finishes
        (and commits) what it holds, and claims nothing more."""
        report = RefreshReport()
        claimed = 0
        start = int(self.clock())  # a pass handles what was due when it started
        reaped = await asyncio.to_thread(self.leases.reap_dead_holders)
        if reaped:
            log.warning("took over %d credential(s) leased by crashed credmons", reaped)
        sem = asyncio.Semaphore(self.policy.concurrency)
        from htsec.credmon.token_client import TokenClient

        client = self.client or TokenClient(
            verify=self.verify, max_connections=self.policy.concurrency
        )
        async with contextlib.AsyncExitStack() as stack:
            if self.client is None:
                stack.push_async_callback(client.aclose)

            async def guarded(c: Claim) -> None:
                self.metrics.in_flight.inc()
                try:
                    await self._one(client, c, report, sem)
                except Exception as exc:  # even the bookkeeping failed (the database is locked)
                    log.error(
                        "%s/%s: could not record the outcome (%s: %s); its lease runs out and "
                        "it is tried again",
                        c.user,
                        c.name.stem,
                        exc.__class__.__name__,
                        exc,
                        exc_info=_traceback(),
                    )
                    report.failed[f"{c.user}/{c.name.stem}"] = "internal: bookkeeping failed"
                finally:
                    self.metrics.in_flight.dec()

            # Claims are refilled while earlier ones are in flight (no barrier between batches,
            # so the provider always has `concurrency` requests), keeping at most `batch`
            # credentials claimed and unfinished: a claim is a lease that must not run out.
            pending: set[asyncio.Task[None]] = set()
            low_water = max(1, self.policy.batch // 2)
            try:
                while (max_claims is None or claimed < max_claims) and (
                    keep_going is None or keep_going()
                ):
                    limit = self.policy.batch - len(pending)
                    if max_claims is not None:
                        limit = min(limit, max_claims - claimed)
                    claims = await asyncio.to_thread(
                        self.leases.claim,
                        now=int(self.clock()),  # each lease runs from when it is taken
                        due_by=start,
                        lease_s=self.policy.lease,
                        limit=limit,
                    )
                    if not claims:
                        break
                    claimed += len(claims)
                    pending.update(asyncio.ensure_future(guarded(c)) for c in claims)
                    while len(pending) > low_water:
                        _, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED
                        )
            finally:
                # Whatever ends the loop (a failed claim, a cancellation), refreshes already
                # sent are seen through and committed: a rotated refresh token is never dropped.
                if pending:
                    await asyncio.wait(pending)
        if claimed:
            log.info("refresh pass: %s", report.summary())
        return report

    async def _one(
        self,
        client: TokenClient,
        claim: Claim,
        report: RefreshReport,
        sem: asyncio.Semaphore,
    ) -> None:
        """One credential. ``sem`` bounds the refreshes between being sent and being committed:
        a slot is held from before the request until its answer is durable, so a SIGKILL can
        cost at most ``concurrency`` rotated refresh tokens (docs/htsec-credmon.md)."""
        label = f"{claim.user}/{claim.name.stem}"
        now = int(self.clock())
        provider = self.providers.get(claim.provider) or self.providers.get(claim.service)
        try:
            if claim.unreadable is not None:
                raise RefreshFailed(
                    "unreadable",
                    f"cannot unseal the stored secrets ({claim.unreadable}); restore the "
                    "store key file or store the credential again",
                )
            issuer = self._issuer_for(provider) if provider is not None and provider.local else None
            if claim.sent_at is not None and issuer is None:
                log.warning(
                    "%s: a refresh of it was in flight when a credmon stopped %d s ago; "
                    "trying its refresh token once",
                    label,
                    max(0, now - claim.sent_at),
                )
            elif not should_refresh(
                claim.access_expires_at, claim.access_issued_at, now, self.policy
            ):
                due = refresh_due(claim.access_expires_at, claim.access_issued_at, self.policy)
                await asyncio.to_thread(self.leases.release, claim, next_attempt_at=due)
                report.not_due.append(label)
                return
            problem = self.precheck(claim) if self.precheck is not None else None
            if problem is not None:  # checked again at the next pass (1 s at the earliest)
                raise RefreshFailed("unpublishable", problem, retry_after=0.0)
            if issuer is not None:
                token, lifetime = issuer.mint(claim.user, now=now)
                body = {"access_token": token, "expires_in": lifetime}
                await self._commit(claim, body, now, report, label, provider, local=True)
                return
            async with sem:
                response = await self._call(client, claim, provider)
                await self._commit(claim, response, now, report, label, provider)
        except _Deferred:
            await asyncio.to_thread(self.leases.release, claim, next_attempt_at=None)
            report.deferred.append(label)
        except RefreshFailed as f:
            name = provider.name if provider else claim.provider
            self.metrics.failures.labels(name, f.reason).inc()
            delay = (
                f.retry_after
                if f.retry_after is not None
                else backoff(claim.failures, self.policy, self.rng)
            )
            ok = await asyncio.to_thread(
                self.leases.fail,
                claim,
                error=f"{f.reason}: {f}",
                dead=f.dead,
                next_attempt_at=None if f.dead else int(self.clock() + max(1.0, delay)),
                settled=f.answered or (not f.sent and claim.sent_at is None),
            )
            if f.dead:
                report.dead[label] = str(f)
                log.warning("%s needs re-authorisation: %s", label, f)
            else:
                report.failed[label] = f"{f.reason}: {f}"
                log.warning(
                    "%s %s (%s), retry in %.0f s: %s",
                    label,
                    "not refreshed" if f.reason == "unpublishable" else "refresh failed",
                    f.reason,
                    max(1.0, delay),
                    f,
                )
            if not ok:
                report.lost_lease.append(label)
        except Exception as exc:  # one credential's bug never stops the pass
            log.error(
                "%s: unexpected error during refresh: %s: %s",
                label,
                exc.__class__.__name__,
                exc,
                exc_info=_traceback(),
            )
            report.failed[label] = f"internal: {exc.__class__.__name__}"
            await asyncio.to_thread(
                self.leases.fail,
                claim,
                error=f"internal error: {exc.__class__.__name__}",
                dead=False,
                next_attempt_at=int(
                    self.clock() + max(1.0, backoff(claim.failures, self.policy, self.rng))
                ),
            )

    def _issuer_for(self, provider: Provider) -> LocalIssuer:
        issuer = self.issuers(provider.name)
        if issuer is None:
            raise RefreshFailed("no_issuer", f"no local issuer is configured for {provider.name}")
        return issuer

    async def _call(
        self, client: TokenClient, claim: Claim, provider: Provider | None
    ) -> dict[str, Any]:
        """One refresh-token grant (RFC 6749 section 6), sent once (never retried, never
        redirected; credmon/token_client.py)."""
        configured = provider.token_url if provider else None
        token_url = claim.token_url or configured
        if token_url == configured and provider is not None:
            client_id = claim.client_id or provider.client_id
            secret = claim.client_secret or provider.client_secret
        else:
            # A token URL from the credential's own .meta: only its own client credentials go
            # there, never the pool's <PROVIDER>_CLIENT_SECRET_FILE.
            client_id, secret = claim.client_id, claim.client_secret
        if not token_url or not client_id:
            up = claim.provider.upper()
            raise RefreshFailed(
                "not_configured",
                f"no token URL or client id for provider {claim.provider} "
                f"(set {up}_TOKEN_URL and {up}_CLIENT_ID)",
            )
        if not claim.refresh_token:
            raise RefreshFailed(
                "no_refresh_token", "the credential has no refresh token", dead=True
            )
        if not _secure_url(token_url):
            raise RefreshFailed(
                "insecure_token_url",
                f"refusing to send a refresh token to {token_url}: only https "
                "(or http to this host's loopback) is allowed",
            )
        rate = provider.rate if provider else self.providers.default_rate
        await self._limiter.wait(claim.provider, rate)
        if claim.lease_until - self.clock() < self._lease_margin:
            raise _Deferred  # the lease could run out in flight: another credmon may take it
        form = {"grant_type": "refresh_token", "refresh_token": claim.refresh_token}
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if provider is not None and provider.auth_method == "client_secret_post":
            form["client_id"] = client_id
            if secret:
                form["client_secret"] = secret
        elif secret:
            headers["Authorization"] = _basic_auth(client_id, secret)
        else:
            form["client_id"] = client_id
        try:
            resp = await client.post_form(
                token_url, form, headers=headers, timeout=self.policy.timeout
            )
        except TokenTimeout:
            raise RefreshFailed(
                "timeout",
                f"no answer from {token_url} within {self.policy.timeout:.0f} s",
                sent=True,
            ) from None
        except TokenClientError as exc:
            # Perhaps after the request went out: the provider may have processed it.
            raise RefreshFailed(
                "unreachable", f"cannot reach {token_url}: {exc}", sent=True
            ) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status == 200 and isinstance(body, dict):
            if not isinstance(body.get("access_token"), str) or not body["access_token"]:
                raise RefreshFailed(
                    "bad_response", "the token response has no access_token", answered=True
                )
            return body
        error = _error_code(body.get("error")) if isinstance(body, dict) else None
        if resp.status == 200:
            raise RefreshFailed(
                "bad_response", "the token response is not a JSON object", answered=True
            )
        if error == "invalid_grant" and claim.sent_at is not None:
            raise RefreshFailed(
                "rotation_lost",
                "rotation lost in a crash: a refresh was in flight when a credmon stopped, and "
                "the provider now refuses the refresh token held before it (invalid_grant); "
                "the user must authorise again",
                dead=True,
                answered=True,
            )
        if error == "invalid_grant":
            raise RefreshFailed(
                "invalid_grant",
                "the provider refused the refresh token (invalid_grant): "
                "the user must authorise again",
                dead=True,
                answered=True,
            )
        if error in ("invalid_client", "unauthorized_client"):
            raise RefreshFailed(
                error,
                f"the provider refused this client ({error}): check "
                f"{claim.provider.upper()}_CLIENT_ID and _CLIENT_SECRET_FILE",
                answered=True,
            )
        retry = None
        if resp.status in (429, 503):
            retry = _retry_after(resp.headers.get("retry-after", ""), self.policy.backoff_max)
        raise RefreshFailed(
            f"http_{resp.status}",
            f"{token_url} answered {resp.status}" + (f" ({error})" if error else ""),
            retry_after=retry,
            answered=True,
        )

    async def _commit(
        self,
        claim: Claim,
        body: dict[str, Any],
        now: int,
        report: RefreshReport,
        label: str,
        provider: Provider | None,
        *,
        local: bool = False,
    ) -> None:
        access = body["access_token"]
        expires_at = token_expiry(body, now, self.policy)
        if expires_at <= now:
            log.warning(
                "%s: the provider handed out an access token that is already expired here "
                "(clock skew?); trying again in %d s",
                label,
                self.policy.min_rest,
            )
        new_rt = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
        token_type = str(body.get("token_type") or "bearer")
        due = refresh_due(expires_at, now, self.policy)
        if due <= now:  # a zero, negative or skewed lifetime: not again at every pass
            due = now + self.policy.min_rest
        # The durable commit comes first: a rotated refresh token is safe before anything else.
        values = self.leases.success_values(
            claim,
            access_token=access,
            refresh_token=new_rt,
            expires_at=expires_at,
            token_type=token_type,
            now=now,
            next_attempt_at=due,
        )
        ok = await self._group.submit((claim, values))
        if not ok:
            report.lost_lease.append(label)
            log.error(
                "%s: refreshed, but the credential changed meanwhile; result discarded", label
            )
            return
        name = provider.name if provider else claim.provider
        self.metrics.refreshes.labels(name).inc()
        if claim.access_expires_at is not None:
            self.metrics.time_to_expiry.observe(max(0, claim.access_expires_at - now))
        done = "issued" if local else "refreshed"
        if self.publish is not None:
            use = {k: v for k, v in body.items() if k != "refresh_token"}
            use.setdefault("expires_in", expires_at - now)
            try:
                await asyncio.to_thread(self.publish, claim, use)
            except Exception as exc:
                # The new tokens are durable in the store; the daemon's next pass publishes
                # them without another token request.
                report.failed[label] = f"not published: {exc}"
                log.error(
                    "%s %s, but not published (kept in the store for the next pass): %s",
                    label,
                    done,
                    exc,
                    exc_info=_traceback(),
                )
                return
        (report.issued if local else report.refreshed).append(label)
        log.info("%s %s; access token expires in %d s", label, done, expires_at - now)

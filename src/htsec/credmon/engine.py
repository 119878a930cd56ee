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

When a token is due is :mod:`htsec.credmon.policy`'s to say, the pacing (rate limit, group
commit) is :mod:`htsec.credmon.pacing`'s, and the token endpoint is spoken to only by
:mod:`htsec.credmon.token_client`; here is what a pass does with each credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from htsec.credmon.issuer import LocalIssuer
from htsec.credmon.leases import Claim, Leases
from htsec.credmon.metrics import CredmonMetrics
from htsec.credmon.pacing import Batcher, RateLimiter
from htsec.credmon.policy import Policy, backoff, refresh_due, should_refresh, token_expiry
from htsec.credmon.providers import Provider, ProviderSet
from htsec.creds.names import TokenName
from htsec.creds.store import CredStore
from htsec.errors import RefreshFailed, TokenClientError, TokenTimeout

if TYPE_CHECKING:  # aiohttp is imported by the process that refreshes, not its supervisor
    from htsec.credmon.token_client import TokenClient

__all__ = ["Precheck", "Publish", "RefreshEngine", "RefreshReport"]

log = logging.getLogger("htsec.credmon")


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


class _Deferred(Exception):
    """Not tried now (its lease is nearly over); handed back untouched for the next pass."""


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
        #: Called with ``(user, name)`` once a new access token is committed (and published):
        #: e.g. the local execution point's delivery to sandboxes. Must return at once.
        self.listeners: list[Callable[[str, TokenName], object]] = []
        self._limiter = RateLimiter()
        self._group: Batcher[tuple[Claim, dict[str, Any]]] = Batcher(self.leases.commit_many)
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
        redirected; credmon/token_client.py), and what its answer means for the credential."""
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
        if not client.secure(token_url):
            raise RefreshFailed(
                "insecure_token_url",
                f"refusing to send a refresh token to {token_url}: only https "
                "(or http to this host's loopback) is allowed",
            )
        rate = provider.rate if provider else self.providers.default_rate
        await self._limiter.wait(claim.provider, rate)
        if claim.lease_until - self.clock() < self._lease_margin:
            raise _Deferred  # the lease could run out in flight: another credmon may take it
        try:
            grant = await client.refresh(
                token_url,
                claim.refresh_token,
                client_id=client_id,
                secret=secret,
                auth_method=provider.auth_method if provider is not None else None,
                timeout=self.policy.timeout,
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
        if grant.body is not None:
            return grant.body
        error = grant.error
        if grant.status == 200:
            raise RefreshFailed(
                "bad_response",
                "the token response has no access_token"
                if grant.no_access_token
                else "the token response is not a JSON object",
                answered=True,
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
        retry = grant.retry_after
        raise RefreshFailed(
            f"http_{grant.status}",
            f"{token_url} answered {grant.status}" + (f" ({error})" if error else ""),
            retry_after=None if retry is None else min(retry, self.policy.backoff_max),
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
        for listener in self.listeners:
            try:
                listener(claim.user, claim.name)
            except Exception:  # a listener's bug never costs a refresh
                log.exception("%s: a listener failed", label)

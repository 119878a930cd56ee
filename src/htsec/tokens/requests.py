"""Token requests: HTCondor's request / approve / auto-approve flow, kept in the store.

FORMATS.md section 7 (``src/condor_daemon_core.V6/daemon_core.cpp`` token request handlers,
``src/condor_tools/token_request*.cpp``):

* a request gets a 7-digit id; at most 1000 are pending; a pending request expires after
  ``SEC_TOKEN_REQUEST_LIFETIME`` (3600 s);
* htsec adds a cap per peer (``HTSEC_TOKEN_REQUEST_MAX_PER_PEER``, default 50; an IPv6 peer
  counts by its /64), so one anonymous caller cannot fill the global cap, and a request an
  auto-approval rule covers is never pending, so neither cap applies to it;
* requested authorizations are capped by ``SEC_TOKEN_REQUEST_LIMITS`` and lifetimes by
  ``SEC_ISSUED_TOKEN_EXPIRATION``;
* an auto-approval rule (ADMINISTRATOR; its own lifetime capped by
  ``TOKEN_REQUEST_AUTO_APPROVE_MAX_LIFETIME``) approves, while it lives, requests from its
  netblock for ``condor@...`` identities limited to ADVERTISE_SCHEDD/STARTD/MASTER.

Unlike HTCondor, requests survive a restart. The token is minted when the requester collects it
(proving it holds the request's secret), so no token is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from htsec.errors import Busy, Conflict, Forbidden, NotFound, TooManyRequests, UsageError
from htsec.store.models import AutoApproveRule, TokenRequest
from htsec.tokens.authority import Authority, validate_identity
from htsec.tokens.idtoken import normalize_authz

__all__ = ["AUTO_APPROVABLE", "MAX_PENDING", "MAX_PENDING_PER_PEER", "RequestView", "Requests"]

MAX_PENDING = 1000
MAX_PENDING_PER_PEER = 50
COLLECT_GRACE = 3600  # seconds an approved request may still be collected after it expired
AUTO_APPROVABLE = frozenset({"ADVERTISE_STARTD", "ADVERTISE_SCHEDD", "ADVERTISE_MASTER"})


@dataclass(frozen=True)
class RequestView:
    """What admins and requesters see of a request (never its secret)."""

    id: str
    client_id: str
    requester: str
    peer: str
    identity: str
    authz: list[str]
    lifetime: int | None
    state: str
    created_at: int
    expires_at: int
    decided_by: str | None


def _view(r: TokenRequest) -> RequestView:
    return RequestView(
        id=r.id,
        client_id=r.client_id,
        requester=r.requester,
        peer=r.peer,
        identity=r.identity,
        authz=r.authz.split(),
        lifetime=r.lifetime,
        state=r.state,
        created_at=r.created_at,
        expires_at=r.expires_at,
        decided_by=r.decided_by,
    )


def _peer_key(peer: str) -> str:
    """What the per-peer cap counts by: the address (IPv4-mapped as IPv4), an IPv6 address by
    its /64 (one host usually holds a whole /64), anything else as given."""
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Requests:
    """Request bookkeeping on top of an :class:`Authority`."""

    def __init__(
        self,
        authority: Authority,
        *,
        issuer_key: str = "POOL",
        limits: list[str] | None = None,
        max_pending: int = MAX_PENDING,
        max_per_peer: int = MAX_PENDING_PER_PEER,
    ) -> None:
        self.authority = authority
        self.settings = authority.settings
        self.store = authority.store
        self.issuer_key = issuer_key
        self.limits = set(limits) if limits else None
        self.max_pending = max_pending
        self.max_per_peer = max_per_peer

    def _check_caps(self, s: Session, peer: str) -> None:
        """Room for one more pending request: globally, and from this peer."""
        peers = list(s.scalars(select(TokenRequest.peer).where(TokenRequest.state == "pending")))
        if len(peers) >= self.max_pending:
            raise Busy(
                f"{self.max_pending} token requests are already pending; ask an administrator "
                "to approve or deny some"
            )
        key = _peer_key(peer)
        if sum(1 for p in peers if _peer_key(p) == key) >= self.max_per_peer:
            raise TooManyRequests(
                f"{self.max_per_peer} token requests from {key} are already pending; wait for "
                "an administrator to decide them or for them to expire"
            )

    def _expire(self, now: int) -> None:
        """Pending requests expire at ``expires_at``; approved ones not collected within
        :data:`COLLECT_GRACE` seconds after that (HTCondor drops them too)."""
        with self.store.session() as s:
            s.execute(
                update(TokenRequest)
                .where(
                    or_(
                        and_(TokenRequest.state == "pending", TokenRequest.expires_at < now),
                        and_(
                            TokenRequest.state == "approved",
                            TokenRequest.expires_at + COLLECT_GRACE < now,
                        ),
                    )
                )
                .values(state="expired")
            )

    def submit(
        self,
        *,
        identity: str,
        authz: list[str],
        lifetime: int | None,
        client_id: str,
        requester: str,
        peer: str,
        now: int | None = None,
    ) -> tuple[RequestView, str]:
        """Enqueue a request; returns it and the secret the requester collects it with."""
        t = int(time.time()) if now is None else now
        validate_identity(identity)
        if not all(c.isprintable() for c in client_id):
            raise UsageError("client_id must be printable text (no control characters)")
        authz = normalize_authz(authz)
        if self.limits is not None:
            beyond = [a for a in authz if a not in self.limits] if authz else ["(unrestricted)"]
            if beyond:
                raise Forbidden(
                    f"authorizations {', '.join(beyond)} exceed SEC_TOKEN_REQUEST_LIMITS"
                )
        if lifetime is not None and lifetime < 0:
            raise UsageError("lifetime must be zero or more seconds")
        cap = self.settings.issued_token_expiration
        if cap is not None and cap > 0 and (lifetime is None or lifetime > cap):
            lifetime = cap
        self._expire(t)
        secret = secrets.token_urlsafe(32)
        with self.store.session() as s:
            for _ in range(20):
                rid = f"{secrets.randbelow(10**7):07d}"
                if s.get(TokenRequest, rid) is None:
                    break
            else:  # pragma: no cover - 20 collisions among 10^7 ids
                raise Busy("could not allocate a request id; try again")
            row = TokenRequest(
                id=rid,
                client_secret_hash=_hash(secret),
                client_id=client_id[:256],
                requester=requester[:256],
                peer=peer,
                identity=identity,
                authz=" ".join(authz),
                lifetime=lifetime,
                state="pending",
                created_at=t,
                expires_at=t + self.settings.request_lifetime,
            )
            rule = self._auto_rule(s, row, t)
            if rule is not None:  # approved at once, never pending: no cap applies
                row.state = "approved"
                row.decided_by = f"auto-approval rule #{rule.id} ({rule.netblock})"
                row.decided_at = t
            else:
                self._check_caps(s, peer)
            s.add(row)
            return _view(row), secret

    def _auto_rule(self, s: Session, row: TokenRequest, now: int) -> AutoApproveRule | None:
        authz = set(row.authz.split())
        if not row.identity.startswith("condor@") or not authz or not authz <= AUTO_APPROVABLE:
            return None
        try:
            peer = ipaddress.ip_address(row.peer)
        except ValueError:
            return None
        for rule in s.scalars(select(AutoApproveRule).where(AutoApproveRule.expires_at >= now)):
            net = ipaddress.ip_network(rule.netblock, strict=False)
            if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
                peer = peer.ipv4_mapped  # an IPv4 client of a dual-stack (::) listener
            if peer.version == net.version and peer in net:
                return rule
        return None

    def pending(self, *, include_done: bool = False, now: int | None = None) -> list[RequestView]:
        t = int(time.time()) if now is None else now
        self._expire(t)
        q = select(TokenRequest).order_by(TokenRequest.created_at, TokenRequest.id)
        if not include_done:
            q = q.where(TokenRequest.state == "pending")
        with self.store.session() as s:
            return [_view(r) for r in s.scalars(q)]

    def decide(self, rid: str, *, approve: bool, by: str, now: int | None = None) -> RequestView:
        t = int(time.time()) if now is None else now
        self._expire(t)
        with self.store.session() as s:
            row = s.get(TokenRequest, rid, with_for_update=True)
            if row is None:
                raise NotFound(f"no token request {rid}")
            if row.state != "pending":
                raise Conflict(f"token request {rid} is {row.state}, not pending")
            row.state = "approved" if approve else "denied"
            row.decided_by = by
            row.decided_at = t
            return _view(row)

    def collect(
        self, rid: str, secret: str, *, now: int | None = None
    ) -> tuple[RequestView, str | None]:
        """The requester polls; once approved, the token is minted and handed over once."""
        t = int(time.time()) if now is None else now
        self._expire(t)
        with self.store.session() as s:
            row = s.get(TokenRequest, rid, with_for_update=True)
            if row is None or not hmac.compare_digest(row.client_secret_hash, _hash(secret)):
                raise NotFound(f"no token request {rid} for this client")
            if row.state != "approved":
                return _view(row), None
            token = self.authority.mint(
                identity=row.identity,
                key=self.issuer_key,
                lifetime=row.lifetime,
                authz=row.authz.split(),
                minted_by=row.decided_by or "token request",
                via=f"request {row.id}",
                now=t,
                session=s,
            )
            from htsec.tokens.idtoken import parse_unverified

            row.state = "collected"
            row.token_jti = parse_unverified(token)[1]["jti"]
            return _view(row), token

    def add_rule(
        self, netblock: str, lifetime: int, *, by: str, now: int | None = None
    ) -> AutoApproveRule:
        t = int(time.time()) if now is None else now
        try:
            net = ipaddress.ip_network(netblock, strict=False)
        except ValueError:
            raise UsageError(
                f"netblock {netblock!r} is not a CIDR block such as 10.0.0.0/24"
            ) from None
        cap = self.settings.auto_approve_max_lifetime
        if lifetime <= 0:
            raise UsageError("an auto-approval rule needs a lifetime of at least 1 second")
        if lifetime > cap:
            raise UsageError(
                f"lifetime {lifetime} s exceeds TOKEN_REQUEST_AUTO_APPROVE_MAX_LIFETIME = {cap} s"
            )
        rule = AutoApproveRule(
            netblock=str(net), created_at=t, expires_at=t + lifetime, created_by=by
        )
        with self.store.session() as s:
            s.add(rule)
        return rule

    def rules(self, now: int | None = None) -> list[AutoApproveRule]:
        t = int(time.time()) if now is None else now
        with self.store.session() as s:
            return list(s.scalars(select(AutoApproveRule).where(AutoApproveRule.expires_at >= t)))

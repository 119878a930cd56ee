"""The credential store's audit trail: who stored, fetched or deleted which credential, from
where, and how it went -- never a secret.

Rows go to the append-only ``audit_log`` table (:class:`htsec.store.models.AuditEntry`; the
database refuses updates and deletes). Access-token fetches are the hot path, so their rows
are batched (:meth:`AuditTrail.record_access`); everything else is written in the transaction
of the change it records (:func:`audit_entry`, :func:`audit_values`) or in its own.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, insert, select

from htsec.creds.names import TokenName
from htsec.store import Store
from htsec.store.models import AuditEntry

__all__ = ["AUDIT_BATCH", "AUDIT_DELAY", "AuditTrail", "audit_entry", "audit_values"]

#: Fetch audit rows are written in batches of this many, or after this many seconds.
AUDIT_BATCH = 256
AUDIT_DELAY = 1.0
_AUDIT = cast(Table, AuditEntry.__table__)
# C0 and C1 controls and DEL: PostgreSQL cannot store a NUL in text (and a batch holding one
# fails as a whole), and a control character in a row would reach whoever prints the trail.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _text(value: str | None) -> str | None:
    """``value`` with control characters written as ``\\xNN`` (a caller's raw query text)."""
    if value is None:
        return None
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def audit_values(
    *,
    actor: str,
    action: str,
    user: str | None,
    service: str | None,
    handle: str | None,
    peer: str | None,
    outcome: str,
    detail: str | None = None,
) -> dict[str, Any]:
    """One audit row's columns (never a secret), stamped now; control characters in the
    texts escaped."""
    return {
        "at": time.time(),
        "actor": _text(actor),
        "action": action,
        "user": _text(user),
        "service": _text(service),
        "handle": _text(handle),
        "peer": _text(peer),
        "outcome": outcome,
        "detail": _text(detail),
    }


def audit_entry(
    *,
    actor: str,
    action: str,
    user: str | None,
    name: TokenName | None,
    peer: str | None,
    outcome: str,
    detail: str | None = None,
) -> AuditEntry:
    """One audit row, to add to the session of the change it records."""
    return AuditEntry(
        **audit_values(
            actor=actor,
            action=action,
            user=user,
            service=name.service if name else None,
            handle=(name.handle or "") if name else None,
            peer=peer,
            outcome=outcome,
            detail=detail,
        )
    )


class AuditTrail:
    """The audit half of :class:`htsec.creds.store.CredStore` (one of its base classes: the
    store's public API keeps ``record_access``, ``flush_audit``, ``audit`` and ``audit_log``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        self._flush_lock = threading.Lock()

    def record_access(
        self,
        *,
        actor: str,
        user: str,
        service: str,
        handle: str | None,
        peer: str | None,
        outcome: str,
        action: str = "fetch",
    ) -> None:
        """Audit an access-token fetch (or, with ``action``, a refused store or delete).

        Fetches are the hot path, so their rows are written in batches (every
        :data:`AUDIT_BATCH` fetches or :data:`AUDIT_DELAY` seconds, and on :meth:`flush_audit`);
        a crash can lose at most that window of these records. Successful stores and deletes
        are audited in their own transaction."""
        self._pending.append(
            audit_values(
                actor=actor,
                action=action,
                user=user,
                service=service,
                handle=handle or "",
                peer=peer,
                outcome=outcome,
            )
        )
        if len(self._pending) >= AUDIT_BATCH or time.monotonic() - self._flushed > AUDIT_DELAY:
            self.flush_audit()

    def flush_audit(self) -> int:
        """Write the batched fetch records now; returns how many."""
        with self._flush_lock:
            rows, self._pending = self._pending, []
            self._flushed = time.monotonic()
            if rows:
                with self.store.session() as s:
                    s.execute(insert(_AUDIT), rows)
            return len(rows)

    def audit(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        user: str | None = None,
        name: TokenName | None = None,
        peer: str | None = None,
        detail: str | None = None,
    ) -> None:
        """One audit row, in its own transaction."""
        with self.store.session() as s:
            s.add(
                audit_entry(
                    actor=actor,
                    action=action,
                    user=user,
                    name=name,
                    peer=peer,
                    outcome=outcome,
                    detail=detail,
                )
            )

    def audit_log(self, user: str | None = None, limit: int = 100) -> list[Mapping[str, Any]]:
        """The newest ``limit`` audit rows (of ``user``), newest first, pending fetches flushed.

        Nothing in htsec shows the audit yet: the tests read it here, and the portal's token
        inventory will, to show users the history of their own credentials."""
        self.flush_audit()
        q = select(_AUDIT).order_by(AuditEntry.id.desc()).limit(limit)
        if user is not None:
            q = q.where(AuditEntry.user == user)
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

"""The credmon inside ``htsec serve``: a task that is watched, restarted and reported.

An ``asyncio`` task nobody awaits dies silently; this one is supervised the way
:mod:`htsec.credmon.supervisor` supervises the standalone worker process. A pass that fails
(the credential root is unusable, the store is unreachable) or an exception escaping the loop
marks the credmon ``failed`` in ``/v1/health`` and restarts it after a back-off (1, 2, 4 ...
at most 60 s, from the first failure after a good pass); the next good pass marks it
``running`` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from htsec.credmon.daemon import Credmon, PassResult
from htsec.errors import HtsecError

__all__ = ["MAX_BACKOFF", "CredmonService"]

log = logging.getLogger("htsec.credmon")

#: Longest wait before the in-process credmon is restarted, in seconds.
MAX_BACKOFF = 60.0


class CredmonService:
    """Runs :meth:`Credmon.loop` until stopped, restarting it with back-off when it fails."""

    def __init__(self, credmon: Credmon, *, interval: float = 10.0) -> None:
        self.credmon = credmon
        self.interval = interval
        self.state = "starting"
        self.error: str | None = None
        self.failures = 0  # since the last good pass
        self.restarts = 0
        self.problems = 0  # entries the last pass reported and skipped
        self.last_pass: float | None = None
        self.retry_at: float | None = None

    @property
    def healthy(self) -> bool:
        return self.state != "failed"

    def health(self) -> dict[str, Any]:
        """What anonymous callers of ``/v1/health`` see: states and counts, never paths or
        user names (those are in the server's log)."""
        out: dict[str, Any] = {
            "state": self.state,
            "restarts": self.restarts,
            "problems": self.problems,
            "last_pass": int(self.last_pass) if self.last_pass is not None else None,
        }
        if self.state == "failed":
            out["error"] = self.error
            if self.retry_at is not None:
                out["retry_in"] = max(0, round(self.retry_at - time.monotonic()))
        return out

    def _passed(self, result: PassResult) -> None:
        self.state, self.error, self.failures, self.retry_at = "running", None, 0, None
        self.problems = len(result.problems)
        self.last_pass = time.time()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.credmon.loop(
                    stop, interval=self.interval, on_pass=self._passed, raise_errors=True
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is reported and retried, none is final
                self.failures += 1
                delay = min(MAX_BACKOFF, 2.0 ** (self.failures - 1))
                self.state, self.error = "failed", exc.__class__.__name__
                self.retry_at = time.monotonic() + delay
                log.error(
                    "in-process credmon failed (%s: %s); restarting in %.0f s",
                    exc.__class__.__name__,
                    exc,
                    delay,
                    exc_info=not isinstance(exc, (HtsecError, OSError)),  # a bug: its traceback
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if not stop.is_set():
                    self.restarts += 1
                    self.credmon.engine.wake.set()  # the restarted loop passes at once
                continue
            break
        self.state = "stopped"

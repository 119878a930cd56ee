"""How the refresh engine paces itself: a rate limit per provider and the group commit of
refresh outcomes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Batcher", "RateLimiter"]

_T = TypeVar("_T")


class RateLimiter:
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


class Batcher(Generic[_T]):
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

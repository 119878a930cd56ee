"""Times shown to people: one format, UTC, everywhere (errors, logs, the CLI's tables)."""

from __future__ import annotations

import time

__all__ = ["utc_text"]


def utc_text(ts: float) -> str:
    """``ts`` (seconds since the epoch) as ``2026-01-02 03:04:05 UTC``.

    :raises ValueError: for a time that has no calendar date on this platform.
    """
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, OSError) as exc:
        raise ValueError(f"{ts} is not a date: {exc}") from None

"""Times shown to people (htsec._time): one UTC format for errors and the CLI's tables."""

from __future__ import annotations

import pytest

from htsec._time import utc_text
from htsec.cli.output import when


def test_utc_text() -> None:
    assert utc_text(0) == "1970-01-01 00:00:00 UTC"
    assert utc_text(1767229200.9) == "2026-01-01 01:00:00 UTC"
    with pytest.raises(ValueError, match="not a date"):
        utc_text(2**80)


def test_cli_shows_times_as_errors_do() -> None:
    """The CLI's tables and the verifier's "expired at ..." use the same text."""
    assert when(1767229200) == utc_text(1767229200)
    assert when(None) == "never"
    assert when(2**80) == f"{2**80} (not a date)"

"""Logging that cannot leak secrets: a filter at the sink that masks token- and key-shaped text.

Secrets should never be handed to a logger in the first place (DESIGN.md invariants); this
filter is the second line (STYLE.md 4.11, authlib ``check_sensitive_data``): JWTs, age secret
keys and PEM private keys in any log record are replaced by ``[secure]``.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

__all__ = ["REDACTED", "RedactSecrets", "redact", "uvicorn_log_config"]

REDACTED = "[secure]"
_PATTERNS = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # JWS compact (JSON header)
    r"|AGE-SECRET-KEY-1[0-9A-Z]+"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
    re.S,
)


def redact(text: str) -> str:
    return _PATTERNS.sub(REDACTED, text)


class RedactSecrets(logging.Filter):
    """Masks secrets in the formatted message of every record that passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with the redaction filter on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact"] = {"()": RedactSecrets}
    for handler in cfg.get("handlers", {}).values():
        handler.setdefault("filters", []).append("redact")
    return cfg

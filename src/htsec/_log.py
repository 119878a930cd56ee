"""Logging that cannot leak secrets: a filter at the sink that masks token- and key-shaped text.

Secrets should never be handed to a logger in the first place (DESIGN.md invariants); this
filter is the second line (STYLE.md 4.11, authlib ``check_sensitive_data``): JWTs, age secret
keys, PEM private keys and the id of an authorisation link (``/key/<64 hex>``) in any log
record are replaced by ``[secure]``, JWTs also when percent-encoded.
"""

from __future__ import annotations

import copy
import logging
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "RedactSecrets", "redact", "uvicorn_log_config"]

REDACTED = "[secure]"
_PATTERNS = re.compile(
    # A run that may be a JWS compact token (JSON header: "eyJ"), its characters possibly
    # percent-encoded: uvicorn's access log writes a query string as the client sent it, and
    # "%2E" between the parts is still the token once decoded. _secret() decides.
    r"(?:e|%65)(?:y|%79)(?:J|%4[Aa])[A-Za-z0-9_%.-]{8,}"
    r"|AGE-SECRET-KEY-1[0-9A-Z]+"
    # An authorisation link's id in a path (the portal's /key/<64 hex>): a one-time secret.
    r"|(?<=/key/)[0-9a-f]{64}(?![0-9a-f])"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
    re.S,
)


def _secret(match: re.Match[str]) -> str:
    text = match.group()
    if text[0] in "-A" or len(text) == 64:
        return REDACTED  # an age secret key, a PEM private key or a link's id
    # A JWS: header ("eyJ" and at least 4 more), payload (at least 4), a signature part.
    parts = urllib.parse.unquote(text).split(".")
    if len(parts) >= 3 and len(parts[0]) >= 7 and len(parts[1]) >= 4:
        return REDACTED
    return text


def redact(text: str) -> str:
    return _PATTERNS.sub(_secret, text)


def _redact_arg(value: object) -> object:
    """An argument with secrets masked; left as it is (type and all) when it holds none, so
    ``%d`` and formatters that unpack ``record.args`` (uvicorn's access log) still work."""
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactSecrets(logging.Filter):
    """Masks secrets in every record that passes: the message, each argument, and the text of
    an attached traceback or stack. The record keeps its shape (``args`` stays a tuple or a
    mapping of the same length), so no formatter breaks on it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        elif record.msg is not None and not isinstance(record.msg, (int, float)):
            record.msg = _redact_arg(record.msg)
        args = record.args
        if isinstance(args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in args.items()}
        elif isinstance(args, tuple):
            record.args = tuple(_redact_arg(a) for a in args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with the redaction filter on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact"] = {"()": RedactSecrets}
    for handler in cfg.get("handlers", {}).values():
        handler.setdefault("filters", []).append("redact")
    return cfg

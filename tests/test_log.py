"""The logging sink masks secrets even when code hands them to a logger by mistake."""

from __future__ import annotations

import logging

import pytest

from htsec._log import REDACTED, RedactSecrets, redact
from htsec.tokens.glidein import generate_identity
from htsec.tokens.idtoken import mint
from htsec.tokens.keys import SigningKey


def test_redacts_jwt_age_and_pem(tmp_path: object) -> None:
    token = mint(SigningKey("POOL", tmp_path, b"k" * 32), issuer="td", subject="a@b")  # type: ignore[arg-type]
    secret, public = generate_identity()
    pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----"
    text = f"token={token} age={secret} pub={public} key={pem} jti=abc"
    out = redact(text)
    assert token not in out and secret not in out and "MIGHAgEA" not in out
    assert public in out and "jti=abc" in out and out.count(REDACTED) == 3


def test_filter_on_records(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("htsec.test")
    log.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO):
        log.info("got %s", "eyJhbGciOi.eyJzdWIiOi.c2ln")
    assert "eyJhbGciOi" not in caplog.text and REDACTED in caplog.text

"""The logging sink masks secrets even when code hands them to a logger by mistake."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
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


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: t.replace(".", "%2E"),
        lambda t: t.replace(".", "%2e"),
        lambda t: "%65" + t[1:],
        lambda t: "".join(f"%{ord(c):02X}" for c in t),
    ],
    ids=["dots", "lower-case dots", "first letter", "every character"],
)
def test_redacts_percent_encoded_jwt(tmp_path: object, encode: object) -> None:
    """uvicorn's access log writes the query string as the client sent it: a token whose
    characters a client percent-encoded is still that token once decoded."""
    token = mint(SigningKey("POOL", tmp_path, b"k" * 32), issuer="td", subject="a@b")  # type: ignore[arg-type]
    encoded = encode(token)  # type: ignore[operator]
    out = redact(f'"GET /v1/health?t={encoded}&x=1 HTTP/1.1" 200')
    assert encoded not in out and REDACTED in out and "&x=1 HTTP/1.1" in out, out


def test_filter_on_records(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("htsec.test")
    log.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO):
        log.info("got %s", "eyJhbGciOi.eyJzdWIiOi.c2ln")
    assert "eyJhbGciOi" not in caplog.text and REDACTED in caplog.text


def test_served_requests_log_no_token(home: Path) -> None:
    """A real 'htsec serve' (uvicorn, its access log and the filter): a valid token in the path,
    the query and the Authorization header of several requests appears in no log line, the
    access log lines are still written (masked), and no formatter breaks."""
    from tests.conftest import run, serving

    assert run("key", "create", "POOL").code == 0
    token = run("token", "create", "-i", "alice@pool.example.org").out.strip()
    with serving(home) as env:
        url, ca = env["_CONDOR_HTSEC_SERVER_URL"], str(home / "tls" / "ca.pem")
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, verify=ca) as client:
            for path in (
                f"/v1/creds/{token}/access-token?user={token}&handle={token}",
                f"/v1/creds/box/access-token?user=bob&handle={token}",
                f"/v1/whoami?t={token}",
                f"/{token}?x={token}",
                f"/v1/token-requests/{token}",
            ):
                client.get(path, headers=auth)
    text = (home.parent / "serve.log").read_text()
    lines = text.splitlines()
    access = [line for line in lines if '"GET ' in line and "/v1/health" not in line]
    assert len(access) == 5, text
    assert all(REDACTED in line for line in access)
    parts = token.split(".")
    for n, line in enumerate(lines, 1):
        assert token not in line and parts[1] not in line and parts[2] not in line, (n, line)
    assert "Logging error" not in text and "Traceback" not in text, text


def test_filter_keeps_record_shape() -> None:
    """Arguments are masked one by one: a formatter that unpacks record.args (uvicorn's access
    formatter does) and %d placeholders keep working."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/x?t=eyJhbGciOi.eyJzdWIiOi.c2ln", "1.1", 200),
        None,
    )
    assert RedactSecrets().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    path, status = record.args[2], record.args[4]
    assert path == f"/x?t={REDACTED}" and status == 200
    assert record.getMessage() == f'127.0.0.1:5000 - "GET /x?t={REDACTED} HTTP/1.1" 200'


def test_filter_masks_tracebacks() -> None:
    try:
        raise ValueError("bad eyJhbGciOi.eyJzdWIiOi.c2ln here")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    RedactSecrets().filter(record)
    assert record.exc_text and "eyJhbGciOi" not in record.exc_text
    assert "ValueError" in logging.Formatter().format(record)


def test_an_authorisation_link_id_in_an_access_log_line_is_masked() -> None:
    # The portal's /key/<64 hex> is a one-time secret (the store keeps only its hash); uvicorn's
    # access log writes the path as requested, also when the link is refused and stays unbound.
    key = "5f" * 32
    line = f'127.0.0.1:5 - "GET /oauth/key/{key}?next=/x HTTP/1.1" 403'
    assert redact(line) == f'127.0.0.1:5 - "GET /oauth/key/{REDACTED}?next=/x HTTP/1.1" 403'
    assert redact(f"sha256 {key}") == f"sha256 {key}"  # a hash elsewhere is no link

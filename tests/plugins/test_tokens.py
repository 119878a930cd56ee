"""htsec.plugins.tokens: which .use file a URL needs (both of HTCondor's naming forms), read
from $_CONDOR_CREDS only, again before every request, bounded, never through a symlink."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from htsec.errors import TransferFailed
from htsec.plugins.tokens import MAX_TOKEN_FILE, bearer, read_token, token_name


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A credential directory as the starter makes it: 0700, files 0600."""
    d = tmp_path / ".condor_creds"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("_CONDOR_CREDS", str(d))
    return d


def put(creds: Path, name: str, body: str) -> None:
    path = creds / name
    tmp = creds / f".{name}.tmp"
    tmp.write_text(body)
    tmp.chmod(0o600)
    os.replace(tmp, path)  # the starter replaces the file atomically


def use(token: str) -> str:
    return json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 3600})


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("box://folder/file.txt", "box"),
        ("public+box://input.txt", "box_public"),
        ("private+gdrive://a/b", "gdrive_private"),
        ("work+onedrive://x", "onedrive_work"),
        ("BOX://x", "box"),
    ],
)
def test_service_form(url: str, name: str) -> None:
    assert token_name(url, "service") == name


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://host/file", None),
        ("davs://host/file", None),
        ("scitokens+https://host/file", "scitokens"),
        ("scitokens.read+https://host/file", "scitokens_read"),
        ("mycred.a.b+davs://host/file", "mycred_a_b"),
        ("osdf-tok+https://host/x", "osdf-tok"),
    ],
)
def test_cred_form(url: str, name: str | None) -> None:
    assert token_name(url, "cred") == name


@pytest.mark.parametrize(
    ("url", "form"),
    [
        ("a+b+box://x", "service"),
        ("no-scheme", "service"),
        ("1abc://x", "cred"),
        ("+https://x", "cred"),
        ("../x+https://y", "cred"),
        ("x" * 300 + "+https://y", "cred"),
    ],
)
def test_bad_schemes_are_parameter_errors(url: str, form: str) -> None:
    with pytest.raises(TransferFailed) as info:
        token_name(url, form)  # type: ignore[arg-type]
    assert info.value.kind == "Parameter"


def test_reads_json_and_bare_tokens(creds: Path) -> None:
    put(creds, "box.use", use("tok-A") + "\n")
    assert read_token("box") == "tok-A"
    put(creds, "scitokens.use", "# a comment\n\n  eyJhbGc.bare.token  \n")
    assert read_token("scitokens") == "eyJhbGc.bare.token"


def test_token_is_read_again_before_every_request(creds: Path) -> None:
    put(creds, "box_work.use", use("first"))
    assert bearer("work+box://x", "service") == "first"
    put(creds, "box_work.use", use("second"))  # the credmon refreshed it during the job
    assert bearer("work+box://x", "service") == "second"


def test_missing_directory_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("_CONDOR_CREDS", raising=False)
    with pytest.raises(TransferFailed) as info:
        read_token("box")
    assert "$_CONDOR_CREDS is not set" in str(info.value)
    assert info.value.kind == "Authorization"


def test_missing_file_names_it(creds: Path) -> None:
    with pytest.raises(TransferFailed) as info:
        bearer("other+box://x", "service")
    assert str(creds / "box_other.use") in str(info.value)
    assert "use_oauth_services" in str(info.value)


def test_symlink_is_not_followed(creds: Path, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.json"
    secret.write_text(use("not-for-the-job"))
    (creds / "box.use").symlink_to(secret)
    with pytest.raises(TransferFailed) as info:
        read_token("box")
    assert "cannot read" in str(info.value)


def test_fifo_is_refused_without_blocking(creds: Path) -> None:
    os.mkfifo(creds / "box.use")
    with pytest.raises(TransferFailed, match="not a regular file"):
        read_token("box")


def test_size_is_bounded(creds: Path) -> None:
    put(creds, "box.use", use("x" * MAX_TOKEN_FILE))
    with pytest.raises(TransferFailed, match="larger than"):
        read_token("box")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "# only a comment\n",
        "{not json",
        '{"token_type": "bearer"}',
        '{"access_token": 5}',
        '["access_token"]',
        '{"access_token": "a b"}',
        '{"access_token": "a\\r\\nX-Injected: 1"}',
    ],
)
def test_unusable_files_never_quote_their_content(creds: Path, body: str) -> None:
    put(creds, "box.use", body)
    with pytest.raises(TransferFailed) as info:
        read_token("box")
    assert info.value.kind == "Authorization"
    for secret in ("not json", "X-Injected", "bearer"):
        assert secret not in str(info.value)


def test_not_utf8(creds: Path) -> None:
    (creds / "box.use").write_bytes(b"\xff\xfe")
    with pytest.raises(TransferFailed, match="not UTF-8"):
        read_token("box")

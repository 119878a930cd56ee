"""htsec.annex.names: annex names, client tokens, and recovering a name from a token."""

from __future__ import annotations

import uuid

import pytest

from htsec.annex.names import annex_of_client_token, client_token, token_belongs_to, validate_name
from htsec.errors import UsageError


@pytest.mark.parametrize("name", ["a", "test", "burst-2026", "x" * 27])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name
    token = client_token(name)
    assert len(token) <= 64 and annex_of_client_token(token) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("x" * 28, "at most 27"),
        ("my_annex", "contains '_'"),
        ("-lead", "letters, digits"),
        ("sp ace", "letters, digits"),
        ("a/../b", "letters, digits"),
    ],
)
def test_bad_names_are_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        validate_name(name)


def test_name_is_recovered_by_a_right_split() -> None:
    # HTCondor allowed '_' in names and cut the token at the first '_' (sed 's/_[^_]*//'),
    # which turned 'my_annex_<uuid>' into 'my_<uuid>'. The last '_' is the right cut.
    u = str(uuid.uuid4())
    assert annex_of_client_token(f"my_annex_{u}") == "my_annex"
    assert annex_of_client_token(u) is None  # a spot fleet's own token: not an annex's
    assert annex_of_client_token(f"name_{u}x") is None
    assert annex_of_client_token("name_") is None


def test_token_matches_exactly_its_annex_not_a_prefix() -> None:
    u = str(uuid.uuid4())
    assert token_belongs_to(f"test_{u}", "test")
    assert not token_belongs_to(f"test2_{u}", "test")  # the original matched 'test*'
    assert not token_belongs_to(None, "test")

"""htsec.authz: which levels a token grants (HTCondor's permission hierarchy) and whose
credentials an identity owns (user@UID_DOMAIN)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from htsec.authz import UNLIMITED, Perm, credential_owner, granted, grants, in_order

# Written out by hand from HTCondor's source, not computed by the code under test.
#
# src/condor_utils/condor_perms.cpp, DCpermissionHierarchy::aImpliedNext, lists for each level the
# next level it implies (LAST_PERM ends a chain):
#
#   ALLOW -> LAST        READ -> LAST          WRITE -> READ           NEGOTIATOR -> READ
#   ADMINISTRATOR -> WRITE                     CONFIG -> READ          DAEMON -> WRITE
#   SOAP -> LAST         DEFAULT -> LAST       CLIENT -> LAST
#   ADVERTISE_STARTD -> READ   ADVERTISE_SCHEDD -> READ   ADVERTISE_MASTER -> READ
#
# src/condor_daemon_core.V6/daemon_command.cpp limits a token with scope "condor:/X" to X and
# every level reached by following nextImplied from X (ADMINISTRATOR -> WRITE -> READ), and lets
# a command at level ALLOW through whatever the limit. So the row of X below is: ALLOW, X, and
# the chain from X.
IMPLIES: dict[str, set[str]] = {
    "ALLOW": {"ALLOW"},
    "READ": {"ALLOW", "READ"},
    "WRITE": {"ALLOW", "WRITE", "READ"},
    "NEGOTIATOR": {"ALLOW", "NEGOTIATOR", "READ"},
    "ADMINISTRATOR": {"ALLOW", "ADMINISTRATOR", "WRITE", "READ"},
    "CONFIG": {"ALLOW", "CONFIG", "READ"},
    "DAEMON": {"ALLOW", "DAEMON", "WRITE", "READ"},
    "SOAP": {"ALLOW", "SOAP"},
    "DEFAULT": {"ALLOW", "DEFAULT"},
    "CLIENT": {"ALLOW", "CLIENT"},
    "ADVERTISE_STARTD": {"ALLOW", "ADVERTISE_STARTD", "READ"},
    "ADVERTISE_SCHEDD": {"ALLOW", "ADVERTISE_SCHEDD", "READ"},
    "ADVERTISE_MASTER": {"ALLOW", "ADVERTISE_MASTER", "READ"},
}
LEVELS = list(IMPLIES)


@dataclass(frozen=True)
class Tok:
    """A verified token's two fields the decision reads (htsec.authz.Token)."""

    subject: str
    authorizations: tuple[str, ...] | None


def test_levels_are_htcondors() -> None:
    """condor_perms.h DCpermission, FIRST_PERM to LAST_PERM, in order."""
    assert [p.value for p in Perm] == LEVELS


@pytest.mark.parametrize("scope", LEVELS)
@pytest.mark.parametrize("needed", LEVELS)
def test_token_scoped_to_one_level_grants_what_it_implies(scope: str, needed: str) -> None:
    """Every pair (scope level, needed level): granted exactly when condor_perms.cpp's
    aImpliedNext chain from the scope level reaches the needed one (or it is ALLOW), as
    daemon_command.cpp decides for a token's LimitAuthorization."""
    token = Tok("alice@pool.example.org", (scope,))
    assert grants(token, Perm(needed)) is (needed in IMPLIES[scope])


def test_several_levels_lower_case_and_unknown_names() -> None:
    """getPermissionFromString matches case-insensitively and drops unknown names (OWNER was
    removed in HTCondor 9.0): the grant is the union of the known levels' chains."""
    assert granted(("negotiator", "ADVERTISE_SCHEDD", "OWNER", "NOSUCH")) == {
        Perm.ALLOW,
        Perm.NEGOTIATOR,
        Perm.ADVERTISE_SCHEDD,
        Perm.READ,
    }
    only_unknown = Tok("alice@pool.example.org", ("OWNER",))
    assert [p for p in Perm if grants(only_unknown, p)] == [Perm.ALLOW]


@pytest.mark.parametrize("authorizations", [None, ()])
def test_token_without_condor_scope_is_not_limited(authorizations: tuple[str, ...] | None) -> None:
    """No condor:/ item (no scope, or only other scopes): condor_auth_passwd.cpp sets no
    LimitAuthorization; htsec then grants what recommended_v9_0 gives everyone (READ, WRITE),
    never ADMINISTRATOR or DAEMON."""
    token = Tok("alice@pool.example.org", authorizations)
    assert {p for p in Perm if grants(token, p)} == UNLIMITED == {Perm.ALLOW, Perm.READ, Perm.WRITE}


def test_grants_listed_in_htcondor_order() -> None:
    assert in_order(granted(("ADMINISTRATOR",))) == ["ALLOW", "READ", "WRITE", "ADMINISTRATOR"]


@pytest.mark.parametrize(
    ("subject", "owner"),
    [
        ("alice@pool.example.org", "alice"),
        ("alice@POOL.Example.org", "alice"),  # domains compare as DNS names do
        ("alice@other.domain", None),  # another domain owns nothing here
        ("alice@glidein.pool.example.org", None),  # a glidein pilot of site alice
        ("alice", None),  # no domain
        ("@pool.example.org", None),
        ("alice@x@pool.example.org", None),  # HTCondor's user part is "alice@x": not a user
        ("../alice@pool.example.org", None),  # not a credential directory name
        ("a.b-c+d=e_f@pool.example.org", "a.b-c+d=e_f"),
    ],
)
def test_credentials_belong_to_user_at_uid_domain(subject: str, owner: str | None) -> None:
    assert credential_owner(subject, "pool.example.org") == owner


@pytest.mark.parametrize(
    ("subject", "uid_domain"),
    [
        ("alice@c\u017f.wi\u017fc.edu", "cs.wisc.edu"),  # long s: casefold() makes it "s"
        ("alice@\u212aitchen.example.org", "kitchen.example.org"),  # Kelvin sign: "k"
        ("alice@\uff50ool.example.org", "pool.example.org"),  # fullwidth p
    ],
)
def test_a_domain_matches_uid_domain_only_in_ascii(subject: str, uid_domain: str) -> None:
    """UID_DOMAIN compares case-insensitively in ASCII only, as HTCondor's strcasecmp does:
    a domain that only Unicode case folding makes equal is another domain."""
    assert credential_owner(subject, uid_domain) is None
    assert credential_owner("alice@" + uid_domain.upper(), uid_domain) == "alice"


def test_level_names_match_in_ascii_only() -> None:
    """getPermissionFromString is strcasecmp: "ADM\u0131NISTRATOR" (dotless i, which str.upper
    turns into I) or a long s in "ADVERTI\u017fE_STARTD" names no level."""
    assert granted(("ADM\u0131NISTRATOR",)) == {Perm.ALLOW}
    assert granted(("advert\u0131se_startd", "ADVERTI\u017fE_STARTD")) == {Perm.ALLOW}
    assert granted(("administrator",)) >= {Perm.ADMINISTRATOR}

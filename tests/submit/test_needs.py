"""htsec.submit.needs: the tokens a description needs, as condor_submit derives them.

Each vector says where in HTCondor's source (htcondor/htcondor, 2026-08) its expected value
comes from: ``submit_utils.cpp`` ``SubmitHash::NeedsOAuthServices`` (NOS),
``SubmitHash::build_oauth_service_ads`` (BOSA), ``SubmitHash::SetOAuth`` and
``process_job_credentials`` (PJC); the slides of seed 003 for the examples a user writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from htsec.errors import SubmitError
from htsec.submit.load import load_submit
from htsec.submit.needs import MAX_NEEDS, TokenNeed, derive


def config(**knobs: str) -> object:
    """A configuration as ``param`` reads it: names case-insensitive, like HTCondor's."""
    table = {k.upper(): v for k, v in knobs.items()}
    return lambda name: table.get(name.upper())


def run(text: str, **knobs: str) -> tuple[str | None, list[TokenNeed]]:
    d = derive(load_submit(text), config(**knobs))  # type: ignore[arg-type]
    return d.oauth_services_needed, list(d.needs)


def need(
    service: str,
    handle: str | None = None,
    scopes: tuple[str, ...] = (),
    audience: str | None = None,
) -> TokenNeed:
    return TokenNeed(service, handle, scopes, audience)


# -- which tokens (NOS, SetOAuth) -------------------------------------------------------------


def test_needs_one_service_bare() -> None:
    # Seed 003, "simple_box.submit": use_oauth_services = box -> OAuthServicesNeeded "box".
    assert run("executable = do_science.sh\nuse_oauth_services = box\nqueue\n") == (
        "box",
        [need("box")],
    )


def test_needs_handles_from_permissions_and_resource_keys() -> None:
    # Seed 003 slide 20 (uwtokens_oauth_permissions_read ...): the handles become
    # service*handle (NOS: service += "*" + suffix); SetOAuth joins with ",".
    text = (
        "use_oauth_services = uwtokens\n"
        "uwtokens_oauth_permissions_read = read:/shared\n"
        "uwtokens_oauth_resource_read = https://mironlab.wisc.edu/\n"
        "uwtokens_oauth_permissions_write = write:/home/jpatton\n"
        "uwtokens_oauth_resource_write = https://jpatton.wisc.edu/\n"
        "queue\n"
    )
    assert run(text) == (
        "uwtokens*read,uwtokens*write",
        [
            need("uwtokens", "read", ("read:/shared",), "https://mironlab.wisc.edu/"),
            need("uwtokens", "write", ("write:/home/jpatton",), "https://jpatton.wisc.edu/"),
        ],
    )


def test_needs_service_with_handle_not_also_bare() -> None:
    # NOS: "we want to add these only if that service has not already been added with a
    # handle" -- box with handles public/private is not also requested as bare box.
    text = (
        "use_oauth_services = box, gdrive\n"
        "box_oauth_permissions_public =\n"
        "box_oauth_permissions_private =\n"
        "queue\n"
    )
    names, needs = run(text)
    assert names == "box*private,box*public,gdrive"
    assert [n.wire for n in needs] == ["box*private", "box*public", "gdrive"]


def test_needs_keys_matched_case_insensitively_and_options_key() -> None:
    # NOS: the pattern is compiled PCRE2_CASELESS and includes "options"; the service part
    # is compared with the enabled set case-insensitively (References: CaseIgnLTStr) and the
    # name keeps the key's spelling.
    text = "use_oauth_services = box\nBOX_OAuth_Options_Work = x=1\nqueue\n"
    names, needs = run(text)
    assert names == "BOX*Work"
    assert needs == [TokenNeed("BOX", "Work", (), None, "x=1")]


def test_needs_keys_of_services_not_enabled_ignored() -> None:
    # NOS: a key counts only when its service is in use_oauth_services; +attr and MY.attr
    # are job attributes, not submit keywords.
    text = (
        "use_oauth_services = box\n"
        "gdrive_oauth_permissions_x = a\n"
        "+box_oauth_permissions_y = 1\n"
        "MY.box_oauth_permissions_z = 1\n"
        "queue\n"
    )
    assert run(text)[0] == "box"


def test_needs_use_oauth_services_alternate_name() -> None:
    # submit_utils.h: SUBMIT_KEY_UseOAuthServicesAlt "UseOAuthServices".
    assert run("UseOAuthServices = box\nqueue\n")[0] == "box"


def test_needs_names_sorted_case_insensitively_without_duplicates() -> None:
    # References is a flat_set ordered by strcasecmp: "Box" and "box" are one name.
    assert run("use_oauth_services = zeta, Box, alpha box\nqueue\n")[0] == "alpha,Box,zeta"


def test_needs_nothing_without_use_oauth_services() -> None:
    # SetOAuth sets no attribute when NeedsOAuthServices is false.
    assert run("executable = /bin/true\nqueue\n") == (None, [])


# -- scopes and audience (BOSA) ----------------------------------------------------------------


def test_scopes_default_from_config() -> None:
    # BOSA: empty <svc>_OAUTH_PERMISSIONS -> param("<svc>_DEFAULT_SCOPES").
    _, needs = run("use_oauth_services = box\nqueue\n", BOX_DEFAULT_SCOPES="read,write")
    assert needs == [need("box", None, ("read", "write"))]


def test_scopes_from_submit_win_over_default() -> None:
    _, needs = run(
        "use_oauth_services = box\nbox_oauth_permissions = mine\nqueue\n",
        BOX_DEFAULT_SCOPES="theirs",
    )
    assert needs[0].scopes == ("mine",)


def test_scopes_required_error_text() -> None:
    # BOSA: "You must specify %s to use OAuth service %s." with param_name
    # "<service>_OAUTH_PERMISSIONS" (+ "_<handle>"); required when the config value's first
    # character is 'R'.
    with pytest.raises(SubmitError) as e:
        run("use_oauth_services = box\nqueue\n", BOX_USER_DEFINE_SCOPES="REQUIRED")
    assert str(e.value) == "You must specify box_OAUTH_PERMISSIONS to use OAuth service box."
    with pytest.raises(SubmitError) as e:
        run(
            "use_oauth_services = box\nbox_oauth_resource_h = x\nqueue\n",
            BOX_USER_DEFINE_SCOPES="Required",
        )
    assert str(e.value) == "You must specify box_OAUTH_PERMISSIONS_h to use OAuth service box."


def test_scopes_required_only_with_upper_case_r() -> None:
    # BOSA tests param_val[0] == 'R': "required" in lower case does not make it required.
    _, needs = run("use_oauth_services = box\nqueue\n", BOX_USER_DEFINE_SCOPES="required")
    assert needs == [need("box")]


def test_audience_default_and_required() -> None:
    # BOSA: the same for <svc>_OAUTH_RESOURCE, <SVC>_USER_DEFINE_AUDIENCE, _DEFAULT_AUDIENCE.
    _, needs = run("use_oauth_services = s\nqueue\n", S_DEFAULT_AUDIENCE="https://a.example")
    assert needs == [need("s", None, (), "https://a.example")]
    with pytest.raises(
        SubmitError, match=r"^You must specify s_OAUTH_RESOURCE to use OAuth service s\.$"
    ):
        run("use_oauth_services = s\nqueue\n", S_USER_DEFINE_AUDIENCE="R")


# -- local issuers (PJC) -------------------------------------------------------------------------


def test_local_issuer_checked_but_not_in_job_attribute() -> None:
    # PJC calls NeedsOAuthServices(add_local=true); SetOAuth calls it with false.
    names, needs = run(
        "use_oauth_services = box\nqueue\n", LOCAL_CREDMON_PROVIDER_NAMES="scitokens"
    )
    assert names == "box"
    assert [n.wire for n in needs] == ["box", "scitokens"]


def test_local_issuer_names_knob_order() -> None:
    # NOS: SUBMIT_ADD_LOCAL_CREDMON_PROVIDER_NAMES replaces the rest; else
    # LOCAL_CREDMON_PROVIDER_NAMES (or _NAME) plus CLIENT_CREDMON_PROVIDER_NAMES.
    text = "queue\n"
    assert [n.wire for n in run(text, LOCAL_CREDMON_PROVIDER_NAME="one")[1]] == ["one"]
    assert [
        n.wire
        for n in run(text, LOCAL_CREDMON_PROVIDER_NAMES="a", CLIENT_CREDMON_PROVIDER_NAMES="c")[1]
    ] == ["a", "c"]
    assert [
        n.wire
        for n in run(
            text, LOCAL_CREDMON_PROVIDER_NAMES="a", SUBMIT_ADD_LOCAL_CREDMON_PROVIDER_NAMES="z"
        )[1]
    ] == ["z"]
    assert (
        run(text, LOCAL_CREDMON_PROVIDER_NAMES="a", SUBMIT_ADD_LOCAL_CREDMON_PROVIDERS="false")[1]
        == []
    )


# -- per job ------------------------------------------------------------------------------------


def test_needs_union_over_foreach_items() -> None:
    # condor_submit checks once with the foreach variables unset (submit.cpp calls
    # process_job_credentials before load_q_foreach_items); SetOAuth runs per job, so the
    # jobs need box and gdrive: htsec checks both.
    names, needs = run("use_oauth_services = $(svc)\nqueue svc in (box, gdrive)\n")
    assert names == "box,gdrive"
    assert [n.wire for n in needs] == ["box", "gdrive"]


def test_needs_conflicting_scopes_between_jobs_refused() -> None:
    with pytest.raises(SubmitError, match="different scopes"):
        run("use_oauth_services = box\nbox_oauth_permissions = read:/$(Process)\nqueue 2\n")


def test_needs_later_queue_statement_adds_service() -> None:
    text = "use_oauth_services = box\nqueue\nuse_oauth_services = box, gdrive\nqueue 2\n"
    assert run(text)[0] == "box,gdrive"


# -- bounds -------------------------------------------------------------------------------------


def test_thousands_of_services_refused() -> None:
    services = ", ".join(f"s{i}" for i in range(5000))
    with pytest.raises(SubmitError, match=f"over {MAX_NEEDS}"):
        run(f"use_oauth_services = {services}\nqueue\n")


def test_thousands_of_handles_refused() -> None:
    keys = "".join(f"box_oauth_permissions_h{i} = r\n" for i in range(MAX_NEEDS + 1))
    with pytest.raises(SubmitError, match=f"over {MAX_NEEDS}"):
        run(f"use_oauth_services = box\n{keys}queue\n")


def test_service_name_htcondor_store_refuses() -> None:
    # htsec.creds.names: a service is A-Za-z0-9- (the credmon splits stems at "_").
    with pytest.raises(SubmitError, match="service name"):
        run("use_oauth_services = bad/name\nqueue\n")


def test_per_job_evaluation_bounded(tmp_path: Path) -> None:
    text = "use_oauth_services = box\nbox_oauth_permissions = r$INT(Process*0)\nqueue 20000\n"
    with pytest.raises(SubmitError, match="per-job macros"):
        run(text)

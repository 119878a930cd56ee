"""htsec.execute.description: a submit description expanded per proc by HTCondor's parser,
with what would reach beyond the text refused."""

from __future__ import annotations

import pytest

from htsec.errors import SubmitError, UsageError
from htsec.execute.description import expand, parse_size, split_args, split_env


def _procs(text: str, cluster: int = 7) -> list[dict[str, object]]:
    return [p.ad for p in expand(text, cluster=cluster, owner="alice", user="alice@x", iwd="/w")]


def test_every_proc_gets_its_cluster_and_proc_ids() -> None:
    ads = _procs(
        "executable = run.sh\narguments = $(ClusterId) $(ProcId)\noutput = out.$(Process)\n"
        "transfer_input_files = box://in_$(ProcId).txt, local.txt\nqueue 3\n"
    )
    assert [a["Arguments"] for a in ads] == [["7", "0"], ["7", "1"], ["7", "2"]]
    assert [a["Out"] for a in ads] == ["out.0", "out.1", "out.2"]
    assert ads[2]["TransferInput"] == ["box://in_2.txt", "local.txt"]
    assert ads[0]["Iwd"] == "/w" and ads[0]["Owner"] == "alice"


def test_queue_items_set_their_variables() -> None:
    ads = _procs("executable = x\narguments = $(name) $(Step)\nqueue 2 name in (a, b)\n")
    assert [a["Arguments"] for a in ads] == [["a", "0"], ["a", "1"], ["b", "0"], ["b", "1"]]
    assert [a["ProcId"] for a in ads] == [0, 1, 2, 3]


def test_seed_003s_box_example_expands_as_condor_submit_does() -> None:
    (ad,) = _procs(
        "executable = do_science.sh\narguments = input_$(ProcId).txt output_$(ProcId).txt\n"
        "use_oauth_services = box\n"
        "transfer_input_files = box://my_input_files/input_$(ProcId).txt\n"
        'transfer_output_remaps = "output_$(ProcId).txt = box://my_output/output_$(ProcId).txt"\n'
        "queue 1\n"
    )
    assert ad["OAuthServicesNeeded"] == "box"
    assert ad["TransferOutputRemaps"] == {"output_0.txt": "box://my_output/output_0.txt"}


def test_handles_become_service_star_handle_in_oauth_services_needed() -> None:
    (ad,) = _procs(
        "executable = x\nuse_oauth_services = box, scitokens\nbox_oauth_permissions_public =\n"
        "box_oauth_permissions_private =\nqueue\n"
    )
    assert ad["OAuthServicesNeeded"] == "box*private,box*public,scitokens"


def test_oauth_services_needed_is_the_gates_derivation() -> None:
    # condor_submit's SetOAuth: names in case-insensitive order, whatever use_oauth_services'
    # order; the job ad names what the gate checked (htsec.submit.needs.needed_names).
    (ad,) = _procs(
        "executable = x\nuse_oauth_services = onedrive, Box\n"
        "onedrive_oauth_permissions_work = files.read\nqueue\n"
    )
    assert ad["OAuthServicesNeeded"] == "Box,onedrive*work"


def test_limits_are_read_in_htcondors_units() -> None:
    (ad,) = _procs("executable = x\nrequest_memory = 2 GB\nrequest_disk = 1024\nqueue\n")
    assert ad["RequestMemory"] == 2048  # MiB
    assert ad["RequestDisk"] == 1024  # KiB
    assert parse_size("512", default_unit=1 << 20, what="m") == 512 << 20


def test_arguments_and_environment_follow_both_syntaxes() -> None:
    assert split_args("\"one 'two three' 'it''s' \"\"q\"\"\"") == [
        "one",
        "two three",
        "it's",
        '"q"',
    ]
    assert split_args("a  b c") == ["a", "b", "c"]
    assert split_env("\"A=1 B='x y'\"") == {"A": "1", "B": "x y"}
    assert split_env("A=1;B=2") == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("executable = /bin/true\n", "no 'queue' statement"),
        ("a = $(b)\nb = $(a)\nexecutable = /bin/true\narguments = $(a)\nqueue\n", "a"),
        (
            "a0 = xxxxxxxxxxxxxxxx\n"
            + "".join(f"a{i} = $(a{i - 1})$(a{i - 1})\n" for i in range(1, 40))
            + "executable = /bin/true\narguments = $(a39)\nqueue\n",
            "expands to more than",
        ),
        ("include : /etc/passwd\nexecutable = /bin/true\nqueue\n", "'include' is not accepted"),
        ("include command : id |\nqueue\n", "'include' is not accepted"),
        ("executable = /bin/true\narguments = $ENV(HOME)\nqueue\n", "$ENV() is not accepted"),
        ("executable = /bin/true\nqueue x from /etc/passwd\n", "list the items inline"),
        ("executable = /bin/true\nqueue x matching *\n", "list the items inline"),
        ("executable = /bin/true\nqueue 5000\n", "at most 1000"),
        ("arguments = x\nqueue\n", "no 'executable'"),
        ("executable = /bin/true\nuniverse = docker\nqueue\n", "vanilla jobs"),
        ("executable = /bin/true\nrequest_memory = lots\nqueue\n", "request_memory"),
        ("executable = /bin/true\n  = x\nqueue\n", "does not parse"),
        ('executable = /bin/true\narguments = "a \'b"\nqueue\n', "not closed"),
    ],
)
def test_a_malformed_submit_is_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises((UsageError, SubmitError)) as err:
        _procs(text)
    assert says in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "executable = /bin/echo\narguments = $EN\\\nV(HOME)\nqueue\n",
        "executable = /bin/echo\narguments = $\\  \r\n   ENV(HOME)\nqueue\n",
        "executable = /bin/echo\narguments = $ENV\\\n(HOME)\nqueue\n",
    ],
)
def test_env_split_over_continued_lines_is_refused(text: str) -> None:
    # HTCondor joins a line ending in a backslash with the next (its leading blanks dropped):
    # these are $ENV(HOME) to htcondor2, which would put the server's environment in the ad.
    with pytest.raises(UsageError, match=r"\$ENV\(\) is not accepted"):
        _procs(text)


@pytest.mark.parametrize(
    "text",
    [
        "inc\\\nlude command : echo arguments = pwned\nexecutable = /bin/echo\nqueue\n",
        "  inc\\  \n  lude : /etc/hostname\nexecutable = /bin/echo\nqueue\n",
    ],
)
def test_include_split_over_continued_lines_is_refused(text: str) -> None:
    # htcondor2 joins the lines into "include command : ...", and would run the command as
    # the server's user.
    with pytest.raises(UsageError, match="'include' is not accepted"):
        _procs(text)


@pytest.mark.parametrize(
    "queue",
    ["queue x \\\nfrom /etc/passwd", "queue x from \\\n/etc/passwd", "queue x \\\nmatching *"],
)
def test_queue_reading_files_over_continued_lines_is_refused(queue: str) -> None:
    # htcondor2 joins a queue line ending in a backslash with the next: "queue x from
    # /etc/passwd", which would read the server's file.
    with pytest.raises(UsageError, match="list the items inline"):
        _procs(f"executable = /bin/echo\narguments = $(x)\n{queue}\n")


def test_several_queue_statements_make_one_cluster_numbered_in_order() -> None:
    ads = _procs(
        "executable = x\narguments = a $(ProcId)\nqueue 2\narguments = b $(ProcId)\nqueue\n"
    )
    assert [a["Arguments"] for a in ads] == [["a", "0"], ["a", "1"], ["b", "2"]]

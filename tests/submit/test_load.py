"""htsec.submit.load: every queue form, split statements, bounds and refused constructs.

Expected job counts and items are condor_submit's (HTCondor manual, "Submitting many jobs with
one queue statement"; ``submit.cpp`` processes each queue statement with the keys set before
it); htcondor2 parses, htsec splits statements and applies slices.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from htsec.errors import SubmitError
from htsec.submit.load import MAX_ITEM_FILE, MAX_TEXT, load_submit


def items(text: str, iwd: Path | None = None) -> list[list[dict[str, str]] | None]:
    d = load_submit(text, iwd=iwd)
    return [None if s.items is None else [dict(i) for i in s.items] for s in d.statements]


def test_queue_count_forms() -> None:
    assert load_submit("queue\n").job_count == 1
    assert load_submit("queue 7\n").job_count == 7
    assert load_submit("QUEUE 2\n").job_count == 2
    assert load_submit("n = 3\nqueue $(n)\n").job_count == 3
    assert load_submit("queue 2*3\n").job_count == 6
    assert load_submit("queue 0\n").job_count == 0


def test_queue_count_garbage_is_htcondor_message() -> None:
    # HTCondor's own text (htcondor2 raises "Invalid Queue count expression" too).
    with pytest.raises(SubmitError, match="Invalid Queue count expression"):
        load_submit("queue foo bar\n")


def test_queue_in_list() -> None:
    assert items("queue x in (a, b c)\n") == [[{"x": "a"}, {"x": "b"}, {"x": "c"}]]
    assert items("queue in (p, q)\n") == [[{"Item": "p"}, {"Item": "q"}]]
    assert load_submit("queue 2 x in (a, b)\n").job_count == 4


def test_queue_statement_continued_on_the_next_line() -> None:
    # HTCondor joins a line ending in a backslash with the next, queue statements too.
    d = load_submit("arguments = $(x)\nqueue x \\\n  in (a, b)\nqueue 1\n")
    assert [len(s.items or ()) for s in d.statements] == [2, 0] and d.job_count == 3
    assert [dict(i) for i in d.statements[0].items or ()] == [{"x": "a"}, {"x": "b"}]


def test_queue_from_inline_with_slice() -> None:
    text = "queue x from [1:3] (\na\nb\nc\nd\n)\n"
    assert items(text) == [[{"x": "b"}, {"x": "c"}]]


def test_queue_from_file_relative_to_iwd(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a 1\n\nb 2, 3\n")
    assert items("queue x,y from list.txt\n", iwd=tmp_path) == [
        [{"x": "a", "y": "1"}, {"x": "b", "y": "2, 3"}]
    ]


def test_queue_from_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match=r"no\.txt"):
        load_submit("queue x from no.txt\n", iwd=tmp_path)


def test_queue_from_huge_file_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(MAX_ITEM_FILE + 1)
    with pytest.raises(SubmitError, match="at most"):
        load_submit("queue x from big.txt\n", iwd=tmp_path)


def test_queue_matching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in ("a.dat", "b.dat", "c.txt"):
        (tmp_path / n).write_text("")
    monkeypatch.chdir(tmp_path)
    got = items("queue f matching files *.dat\n")
    assert got == [[{"f": "a.dat"}, {"f": "b.dat"}]]


def test_several_queue_statements_keep_earlier_keys() -> None:
    d = load_submit("a = 1\nqueue 2\nb = 2\nqueue x in (p, q)\n")
    assert [s.jobs for s in d.statements] == [2, 2]
    assert d.statements[0].submit_keys() == ["a"]
    assert d.statements[1].submit_keys() == ["a", "b", "x"]
    assert [j.proc_id for j in d.jobs()] == [0, 1, 2, 3]


def test_expand_per_job_sets_process_and_items() -> None:
    d = load_submit("v = $(Process)-$(Step)-$(Row)-$(x)\nqueue 2 x in (p, q)\n")
    got = [d.expand(j, ["v"])["v"] for j in d.jobs()]
    assert got == ["0-0-0-p", "1-1-0-p", "2-0-1-q", "3-1-1-q"]


def test_command_forms_refused() -> None:
    with pytest.raises(SubmitError, match="command"):
        load_submit("queue x from ls |\n")
    with pytest.raises(SubmitError, match="include"):
        load_submit("include : /etc/passwd\nqueue\n")
    with pytest.raises(SubmitError, match="include"):
        load_submit("include command : echo a=5 |\nqueue\n")


@pytest.mark.parametrize(
    "head",
    ["inc\\\nlude command : echo foo = pwned", "include command \\  \n  : echo foo = pwned"],
)
def test_include_split_over_continued_lines_refused(head: str) -> None:
    # A line ending in a backslash goes on with the next: htcondor2 reads these as
    # "include command : ..." and runs the command.
    with pytest.raises(SubmitError, match="include"):
        load_submit(head + "\nqueue\n")


def test_text_bounds() -> None:
    with pytest.raises(SubmitError, match="over"):
        load_submit(b"#" * (MAX_TEXT + 1))
    with pytest.raises(SubmitError, match="UTF-8"):
        load_submit(b"a = \xff\nqueue\n")
    with pytest.raises(SubmitError, match="NUL"):
        load_submit("a = \x00\nqueue\n")


def test_too_many_queue_statements() -> None:
    with pytest.raises(SubmitError, match="queue statements"):
        load_submit("queue\n" * 100)


def test_unparsable_description_is_clear() -> None:
    with pytest.raises(SubmitError, match="parse"):
        load_submit("garbage line here\nqueue\n")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a = $(b)\nb = $(a)\nqueue\n", r"\$\(a\) -> \$\(b\) -> \$\(a\)"),  # hangs HTCondor
        ("a = $INT(a)\nqueue\n", "refers to itself"),  # SIGSEGV in HTCondor 25.14.1
        ("y = $(z)\nz = $(y)\nif $(y)\nendif\nqueue\n", "refers to itself"),  # hangs the parse
        ("queue x,y from (\n$(x) 1\n)\n", "refers to itself"),  # an item refers to itself
        ("b = $($(n))\nqueue\n", "computed"),
        # Kept by HTCondor when stored (only a top-level $(p) is the previous value); found by
        # tests/submit/test_hostile.py: expanding it never ends.
        ("p = x\np = $(b:$(p))\nqueue\n", "refers to itself"),
        ("a = " + "$INT(" * 40 + ")" * 40 + "\nqueue\n", "nested"),
        # HTCondor joins a line ending in a backslash with the next: $(b) and $(a), a loop.
        ("a = $(\\\nb)\nb = $(a\\  \n  )\nqueue\n", r"\$\(a\) -> \$\(b\) -> \$\(a\)"),
    ],
)
def test_hostile_macros_refused_before_htcondor_sees_them(text: str, match: str) -> None:
    with pytest.raises(SubmitError, match=match):
        load_submit(text)


def test_exponential_expansion_refused() -> None:
    text = "a0 = xxxxxxxxxx\n" + "".join(f"a{i} = $(a{i - 1})$(a{i - 1})\n" for i in range(1, 40))
    with pytest.raises(SubmitError, match="expands to more than"):
        load_submit(text + "queue\n")


def test_self_reference_is_previous_value() -> None:
    # HTCondor replaces $(x) in x's own definition by its previous value: not a loop.
    d = load_submit("x = base\nx = $(x) more\nqueue\n")
    assert d.expand(next(d.jobs()), ["x"]) == {"x": "base more"}


def test_iwd_other_than_cwd_for_matching_refused(tmp_path: Path) -> None:
    assert Path.cwd() != tmp_path
    with pytest.raises(SubmitError, match="current directory"):
        load_submit("queue f matching *\n", iwd=tmp_path)
    assert os.getcwd() != str(tmp_path)

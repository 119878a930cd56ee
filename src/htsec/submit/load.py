"""Loading a submit description with ``htcondor2.Submit``, bounded, into its jobs.

A description is split at its ``queue`` statements as condor_submit reads it
(``src/condor_submit.V6/submit.cpp``: the keys set before each statement hold for the jobs it
queues, later statements see earlier keys too): ``htcondor2.Submit`` parses up to the first
statement only, so statement *i* is parsed from the text up to it with the earlier statements
left out. Every form is read: ``queue [N]``, ``queue [N] <vars> in (...)``, ``... from <file>``,
``... from (`` inline lines ``)``, ``... matching [files|dirs|any] <globs>``, each with an
optional ``[start:stop:step]`` slice, which htcondor2's ``itemdata`` does not apply and htsec
does (as condor_submit's ``SubmitForeachArgs`` does).

Bounds, each a :class:`~htsec.errors.SubmitError` saying which: the text
(:data:`MAX_TEXT`), queue statements (:data:`MAX_QUEUE_STATEMENTS`), items per statement
(:data:`MAX_ITEMS`), an item file (:data:`MAX_ITEM_FILE`). Before htcondor2 sees the text, its
macros are checked by :mod:`htsec.submit.macros` (loops, huge expansions). Refused outright:
``include`` statements and ``queue ... from <command> |`` (both run or read what htsec's
caller did not hand it; condor_submit runs them as the submitting user, which a server must
not), and text that is not UTF-8 or holds NUL characters.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htsec.errors import SubmitError
from htsec.submit.macros import MacroGraph, without_own_value

__all__ = [
    "MAX_ITEMS",
    "MAX_ITEM_FILE",
    "MAX_QUEUE_STATEMENTS",
    "MAX_TEXT",
    "Job",
    "Statement",
    "SubmitDescription",
    "load_submit",
]

#: The longest submit description read, in bytes.
MAX_TEXT = 1 << 20
#: Queue statements in one description.
MAX_QUEUE_STATEMENTS = 64
#: Items of one queue statement (after its slice).
MAX_ITEMS = 100_000
#: The largest ``queue ... from <file>`` read, in bytes.
MAX_ITEM_FILE = 4 << 20
#: The largest ``queue N``.
MAX_COUNT = 1_000_000

_QUEUE = re.compile(r"[ \t]*queue(?:[ \t]|$)", re.IGNORECASE)
_INCLUDE = re.compile(r"[ \t]*include(?:[ \t]+[A-Za-z]+)*[ \t]*:", re.IGNORECASE)
_ASSIGN = re.compile(r"[ \t]*([A-Za-z_+][A-Za-z0-9_.+]*)[ \t]*(@?=)(.*)$")
_KEYWORD = re.compile(r"(?:^|[\s,])(in|from|matching)(?=\s|\(|\[|$)", re.IGNORECASE)
_SLICE = re.compile(r"\s*\[([-+0-9: ]*)\]")
# A line ending in a backslash (blanks may follow it) goes on with the next line, whose leading
# blanks HTCondor drops: "inc\\<newline>lude : f" is an include, "$(\\<newline>a)" is $(a).
_CONTINUED = re.compile(r"\\[ \t\r\f\v]*\n[ \t\f\v]*")


def _htcondor() -> Any:
    import htcondor2

    return htcondor2


@dataclass(frozen=True)
class Statement:
    """One ``queue`` statement with the keys in effect for its jobs."""

    index: int
    args: str
    count: int
    variables: tuple[str, ...]
    items: tuple[Mapping[str, str], ...] | None  # None: no foreach (``queue N``)
    written: tuple[str, ...]  # the keys the description sets, in its order
    submit: Any = field(repr=False)  # htcondor2.Submit holding the keys for these jobs

    @property
    def jobs(self) -> int:
        return self.count * (1 if self.items is None else len(self.items))

    def submit_keys(self) -> list[str]:
        """The submit keys written in the description (and the foreach variables)."""
        own = list(self.written)
        return own + [v for v in self.variables if v not in own]


@dataclass(frozen=True)
class Job:
    """One job (proc) of a description: its statement, numbers and foreach values."""

    statement: Statement
    proc_id: int
    step: int
    row: int
    item: Mapping[str, str]


@dataclass(frozen=True)
class SubmitDescription:
    text: str
    statements: tuple[Statement, ...]

    @property
    def job_count(self) -> int:
        return sum(s.jobs for s in self.statements)

    def jobs(self) -> Iterator[Job]:
        """Every job in order, numbered as condor_submit numbers procs in one cluster."""
        first = 0
        for st in self.statements:
            yield from self.jobs_of(st, first)
            first += st.jobs

    @staticmethod
    def jobs_of(st: Statement, first_proc: int) -> Iterator[Job]:
        """The jobs of one statement, the first numbered ``first_proc``."""
        items: tuple[Mapping[str, str], ...] = st.items if st.items is not None else ({},)
        proc = first_proc
        for row, item in enumerate(items):
            for step in range(st.count):
                yield Job(st, proc, step, row, item)
                proc += 1

    def expand(self, job: Job, keys: list[str]) -> dict[str, str]:
        """``keys`` expanded for ``job`` (an undefined or empty key is ``""``)."""
        sub = job.statement.submit
        live = {
            "Process": str(job.proc_id),
            "ProcId": str(job.proc_id),
            "Step": str(job.step),
            "Row": str(job.row),
            **job.item,
        }
        for k, v in live.items():
            sub[k] = v
        return {k: expand(sub, k) for k in keys}


def expand(sub: Any, key: str) -> str:
    """One key of a checked ``htcondor2.Submit``, expanded (``""`` when empty or undefined)."""
    try:
        return str(sub.expand(key))
    except KeyError:
        return ""
    except Exception as exc:  # htcondor2 raises its own types for bad macros
        raise SubmitError(f"cannot expand {key}: {exc}") from None


def _decode(data: bytes | str) -> str:
    if isinstance(data, bytes):
        if len(data) > MAX_TEXT:
            raise SubmitError(f"the submit description is over {MAX_TEXT} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SubmitError(f"the submit description is not UTF-8 text ({exc.reason})") from None
    if len(data.encode("utf-8", "surrogatepass")) > MAX_TEXT:
        raise SubmitError(f"the submit description is over {MAX_TEXT} bytes")
    if "\x00" in data:
        raise SubmitError("the submit description holds a NUL character")
    return data


def _statements(lines: list[str]) -> list[tuple[int, int]]:
    """Line ranges ``[start, end)`` of the queue statements (with their inline item blocks)."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not _QUEUE.match(line):
            i += 1
            continue
        end = i + 1
        while end < len(lines) and _CONTINUED.search(lines[end - 1] + "\n"):
            line = _CONTINUED.sub("", f"{line}\n{lines[end]}")  # HTCondor joins the lines
            end += 1
        if line.count("(") > line.count(")"):
            while end < len(lines) and not lines[end].lstrip().startswith(")"):
                end += 1
            end = min(end + 1, len(lines))
        out.append((i, end))
        if len(out) > MAX_QUEUE_STATEMENTS:
            raise SubmitError(
                f"the submit description has over {MAX_QUEUE_STATEMENTS} queue statements"
            )
        i = end
    return out


def _prescan(lines: list[str]) -> dict[str, list[str]]:
    """The macro graph of every assignment in the text, checked, before htcondor2 parses
    anything (``if`` conditions are expanded while parsing). A value's direct reference to
    its own name is HTCondor's "previous value" and not a loop. Returns the raw values."""
    values: dict[str, list[str]] = {}
    texts: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if _INCLUDE.match(line):
            raise SubmitError(
                f"line {i}: include statements are not followed by htsec; put the included "
                "lines in the submit description"
            )
        m = _ASSIGN.match(line)
        if m:
            name, op, value = m.group(1), m.group(2), m.group(3)
            if op == "@=":  # key @=end ... @end
                marker, body = "@" + value.strip(), []
                while i < len(lines) and lines[i].strip() != marker:
                    body.append(lines[i])
                    i += 1
                i += 1
                value = "\n".join(body)
            values.setdefault(name.lower(), []).append(without_own_value(value, name))
            continue
        if "$" in line:  # if/elif conditions, queue statements and their inline items
            texts.append((f"line {i}", line))
    graph = MacroGraph(values)
    graph.check_all()
    for what, text in texts:
        graph.check_text(what, text)
    return values


def _count(sub: Any, text: str) -> int:
    text = text.strip()
    if not text:
        return 1
    sub["_htsec_count"] = text
    value = expand(sub, "_htsec_count").strip()
    sub["_htsec_count"] = ""
    if not value.isdigit():
        try:
            import classad2

            value = str(classad2.ExprTree(value).eval())
        except Exception:
            value = ""
    if not value.lstrip("-").isdigit():
        raise SubmitError(f"Invalid Queue count expression: {text[:80]!r}")
    n = int(value)
    if not 0 <= n <= MAX_COUNT:
        raise SubmitError(f"queue count {n} is outside 0 to {MAX_COUNT}")
    return n


def _apply_slice(items: list[dict[str, str]], rest: str) -> list[dict[str, str]]:
    m = _SLICE.match(rest)
    if not m:
        return items
    parts = [p.strip() for p in m.group(1).split(":")]
    if len(parts) > 3:
        raise SubmitError(f"bad slice [{m.group(1)}] in a queue statement")
    try:
        nums = [int(p) if p else None for p in parts] + [None] * (3 - len(parts))
        return items[slice(*nums)]
    except ValueError:
        raise SubmitError(f"bad slice [{m.group(1)}] in a queue statement") from None


def _items(sub: Any, args: str, keyword: str, rest: str, iwd: Path | None) -> list[dict[str, str]]:
    source = _SLICE.sub("", rest, count=1).strip()
    qargs = None
    if keyword == "from":
        if source.endswith("|"):
            raise SubmitError(
                "queue ... from a command ('|') is not run by htsec; write the items inline "
                "or in a file"
            )
        if not source.startswith("("):
            path = Path(source)
            if iwd is not None and not path.is_absolute():
                path = iwd / path
            try:
                st = path.stat()
            except OSError as exc:
                raise SubmitError(f"queue ... from {source}: {exc.strerror}") from None
            if not path.is_file() or st.st_size > MAX_ITEM_FILE:
                raise SubmitError(
                    f"queue ... from {source}: not a file of at most {MAX_ITEM_FILE} bytes"
                )
            head = args[: len(args) - len(rest)]
            body = path.read_bytes()[:MAX_ITEM_FILE].decode("utf-8", "replace").replace("\x00", "")
            # Blank lines are skipped, as condor_submit skips them in an item file.
            kept = "\n".join(ln for ln in body.splitlines() if ln.strip())
            qargs = f"{head} (\n{kept}\n)"
    elif keyword == "matching" and iwd is not None and Path.cwd() != iwd:
        raise SubmitError("queue ... matching is read relative to the current directory only")
    try:
        it = sub.itemdata(qargs) if qargs is not None else sub.itemdata()
        items = [] if it is None else list(itertools.islice(it, MAX_ITEMS * 4 + 1))
    except Exception as exc:
        raise SubmitError(f"queue {args[:80]}: {exc}") from None
    items = _apply_slice(
        [dict(i) if isinstance(i, dict) else {"Item": str(i)} for i in items], rest
    )
    if len(items) > MAX_ITEMS:
        raise SubmitError(f"queue {args[:80]} has over {MAX_ITEMS} items")
    return items


def _statement(
    index: int, text: str, iwd: Path | None, graph_values: dict[str, list[str]]
) -> Statement:
    try:
        sub = _htcondor().Submit(text)
    except Exception as exc:
        raise SubmitError(f"the submit description does not parse: {exc}") from None
    written = tuple(str(k) for k in sub)
    args = str(sub.getQArgs() or "")
    m = _KEYWORD.search(args)
    if m is None:
        return Statement(index, args, _count(sub, args), (), None, written, sub)
    head, keyword, rest = args[: m.start(1)], m.group(1).lower(), args[m.end(1) :]
    words = [w for w in re.split(r"[\s,]+", head.strip()) if w]
    count = 1
    if words and not (words[0][0].isalpha() or words[0][0] == "_"):
        count = _count(sub, words.pop(0))
    items = _items(sub, args, keyword, rest, iwd)
    variables = tuple(dict.fromkeys(k for i in items for k in i)) or tuple(words) or ("Item",)
    for item in items:  # item values are macro values too: $(x) in one is expanded
        for k, v in item.items():
            graph_values.setdefault(k.lower(), []).append(v)
    return Statement(index, args, count, variables, tuple(items), written, sub)


def load_submit(
    data: bytes | str, *, iwd: str | os.PathLike[str] | None = None
) -> SubmitDescription:
    """Parse a submit description (``iwd``: where relative item files are read).

    :raises SubmitError: for anything HTCondor would refuse, anything over a bound, and
        macros whose expansion would not end or grow without bound.
    """
    text = _decode(data)
    lines = text.splitlines()
    values: dict[str, list[str]] = {}
    base = _prescan(_CONTINUED.sub("", text).splitlines())  # the lines as HTCondor joins them
    ranges = _statements(lines)
    if len(ranges) * len(text) > 16 * MAX_TEXT:
        raise SubmitError(
            f"{len(ranges)} queue statements in {len(text)} characters is more than htsec parses"
        )
    where = None if iwd is None else Path(iwd)
    statements: list[Statement] = []
    if not ranges:
        statements.append(_statement(0, text, where, values))
    for n, (_start, end) in enumerate(ranges):
        kept = list(lines[:end])
        for s0, e0 in ranges[:n]:
            kept[s0:e0] = ["#"] * (e0 - s0)
        statements.append(_statement(n, "\n".join(kept) + "\n", where, values))
    if values:
        merged = {k: list(v) for k, v in base.items()}
        for k, v in values.items():
            merged.setdefault(k, []).extend(v)
        MacroGraph(merged).check_all()
    return SubmitDescription(text, tuple(statements))

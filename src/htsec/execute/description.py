"""A submit description expanded into procs, with HTCondor's own parser (``htcondor2.Submit``).

Each proc gets ``$(ClusterId)``, ``$(ProcId)``, ``$(Step)``, ``$(ItemIndex)``, ``$(Row)`` and
the queue statement's item variables, as condor_submit sets them; every key of the description
is expanded for it and the result kept as a JSON job ad (HTCondor attribute names where one
exists: ``Cmd``, ``Arguments``, ``Iwd``, ``Out``, ``Err``, ``UserLog``, ``TransferInput``, ...).

The description is parsed inside the server, so what would reach beyond the text is refused
before HTCondor's parser sees it: ``include`` (files and commands of the server's choosing),
``$ENV()`` (the server's environment), ``queue ... from <file or command>`` and ``matching``
(the server's files).
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any

from htsec.errors import UsageError

__all__ = ["MAX_PROCS", "MAX_TEXT", "Proc", "expand", "parse_size"]

#: Bounds on one submit: its text and how many procs its queue statement may make.
MAX_TEXT = 64 * 1024
MAX_PROCS = 1000

_INCLUDE = re.compile(r"^\s*include\b", re.I | re.M)
_ENV = re.compile(r"\$ENV\s*\(", re.I)
# A line ending in a backslash (blanks may follow it) goes on with the next line, whose leading
# blanks HTCondor drops: "$EN\\<newline>  V(HOME)" is $ENV(HOME) to htcondor2.
_CONTINUED = re.compile(r"\\[ \t\r\f\v]*\n[ \t\f\v]*")
_QUEUE = re.compile(r"^\s*queue\b(.*)$", re.I | re.M)
_FROM_OUTSIDE = re.compile(r"\bfrom\b(?!\s*\()", re.I)
_MATCHING = re.compile(r"\bmatching\b", re.I)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)b?\s*$", re.I)
_UNITS = {"": None, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass(frozen=True)
class Proc:
    """One proc of a cluster: its id and its job ad (JSON-ready)."""

    proc_id: int
    ad: dict[str, Any]


def parse_size(raw: str, *, default_unit: int, what: str) -> int:
    """Bytes of an HTCondor size (``2048``, ``2 GB``, ``512M``): ``default_unit`` bytes when
    the number has no unit (MiB for request_memory, KiB for request_disk, as HTCondor)."""
    m = _SIZE.match(raw)
    if not m:
        raise UsageError(f"{what} = {raw!r} is not a size (a number, optionally K, M, G or T)")
    unit = _UNITS[m.group(2).lower()] or default_unit
    return int(float(m.group(1)) * unit)


def _refuse_outside(text: str) -> None:
    if len(text) > MAX_TEXT:
        raise UsageError(f"the submit description is over {MAX_TEXT} bytes")
    if "\x00" in text:
        raise UsageError("the submit description holds a NUL character")
    joined = _CONTINUED.sub("", text)
    if _INCLUDE.search(text) or _INCLUDE.search(joined):
        raise UsageError("'include' is not accepted here: put everything in the one description")
    if _ENV.search(text) or _ENV.search(joined):
        raise UsageError("$ENV() is not accepted here: the server's environment is not yours")
    queues = _QUEUE.findall(text)
    if not queues:
        raise UsageError("the submit description has no 'queue' statement")
    if any(_FROM_OUTSIDE.search(q) or _MATCHING.search(q) for q in queues + _QUEUE.findall(joined)):
        raise UsageError(
            "'queue ... from FILE', 'from COMMAND |' and 'matching' read the server's files; "
            "list the items inline: queue name in (a, b, c)"
        )


def split_args(raw: str) -> list[str]:
    """HTCondor's ``arguments``: new syntax in double quotes (whitespace separates, single
    quotes group, ``''`` is a quote, ``""`` a double quote) or old syntax (whitespace)."""
    raw = raw.strip()
    if not (len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"'):
        return raw.split()
    body = raw[1:-1].replace('""', '"')
    out: list[str] = []
    cur: list[str] = []
    have = False
    i = 0
    while i < len(body):
        c = body[i]
        if c == "'":
            have = True
            j = i + 1
            while j < len(body):
                if body[j] == "'":
                    if j + 1 < len(body) and body[j + 1] == "'":
                        cur.append("'")
                        j += 2
                        continue
                    break
                cur.append(body[j])
                j += 1
            else:
                raise UsageError(f"arguments {raw!r}: a single quote is not closed")
            i = j + 1
        elif c.isspace():
            if have or cur:
                out.append("".join(cur))
            cur, have = [], False
            i += 1
        else:
            cur.append(c)
            i += 1
    if have or cur:
        out.append("".join(cur))
    return out


def split_env(raw: str) -> dict[str, str]:
    """HTCondor's ``environment``: new syntax (quoted, ``A=1 B='x y'``) or old (``A=1;B=2``)."""
    raw = raw.strip()
    items = split_args(raw) if raw.startswith('"') else [x for x in raw.split(";") if x.strip()]
    env: dict[str, str] = {}
    for item in items:
        name, eq, value = item.strip().partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise UsageError(f"environment entry {item!r} is not NAME=VALUE")
        env[name] = value
    return env


def _list(raw: str | None) -> list[str]:
    return [x.strip() for x in (raw or "").split(",") if x.strip()]


def _remaps(raw: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (raw or "").strip().strip('"').split(";"):
        if not part.strip():
            continue
        src, eq, dst = part.partition("=")
        if not eq or not src.strip() or not dst.strip():
            raise UsageError(f"transfer_output_remaps entry {part.strip()!r} is not NAME = DEST")
        out[src.strip()] = dst.strip()
    return out


def _folded(values: dict[str, str], key: str) -> str:
    """``key``'s value in ``values`` (keys in lower case), as HTCondor looks keys up."""
    return values.get(key.lower(), "")


def _truthy(raw: str | None, default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() in ("true", "yes", "1", "on", "t")


def _ad(
    values: dict[str, str],
    *,
    cluster: int,
    proc: int,
    owner: str,
    user: str,
    iwd: str,
    now: float,
    oauth_needed: str,
) -> dict[str, Any]:
    universe = values.get("universe", "vanilla").strip().lower()
    if universe not in ("vanilla", "5"):
        raise UsageError(f"universe = {universe}: the local execution point runs vanilla jobs")
    exe = values.get("executable", "").strip()
    if not exe:
        raise UsageError("the submit description has no 'executable'")
    sub_iwd = values.get("initialdir", "").strip()
    job_iwd = sub_iwd if sub_iwd.startswith("/") else f"{iwd.rstrip('/')}/{sub_iwd}".rstrip("/")
    ad: dict[str, Any] = {
        "ClusterId": cluster,
        "ProcId": proc,
        "GlobalJobId": f"htsec#{cluster}.{proc}#{int(now)}",
        "Owner": owner,
        "User": user,
        "Iwd": job_iwd or iwd,
        "Cmd": exe,
        "TransferExecutable": _truthy(values.get("transfer_executable"), True),
        "Arguments": split_args(values.get("arguments", "")),
        "Environment": split_env(values.get("environment", "")),
        "In": values.get("input", "").strip() or None,
        "Out": values.get("output", "").strip() or None,
        "Err": values.get("error", "").strip() or None,
        "UserLog": values.get("log", "").strip() or None,
        "TransferInput": _list(values.get("transfer_input_files")),
        "TransferOutput": (
            _list(values["transfer_output_files"]) if "transfer_output_files" in values else None
        ),
        "TransferOutputRemaps": _remaps(values.get("transfer_output_remaps")),
        "RequestCpus": int(
            parse_size(values.get("request_cpus", "1"), default_unit=1, what="request_cpus")
        ),
        "QDate": int(now),
        "JobUniverse": 5,
    }
    if raw := values.get("request_memory", "").strip():
        ad["RequestMemory"] = max(
            1, parse_size(raw, default_unit=1 << 20, what="request_memory") >> 20
        )
    if raw := values.get("request_disk", "").strip():
        ad["RequestDisk"] = max(1, parse_size(raw, default_unit=1 << 10, what="request_disk") >> 10)
    if raw := values.get("allowed_execute_duration", "").strip():
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError(f"allowed_execute_duration = {raw!r} is not a number of seconds")
        ad["AllowedExecuteDuration"] = int(raw)
    if oauth_needed:
        ad["OAuthServicesNeeded"] = oauth_needed
    ad["Submit"] = values
    return ad


def expand(text: str, *, cluster: int, owner: str, user: str, iwd: str) -> list[Proc]:
    """Every proc of ``text``'s queue statements, expanded (``UsageError`` or ``SubmitError``
    naming the fault). The description is read by :func:`htsec.submit.load.load_submit`
    (HTCondor's parser, bounded, its macros checked for loops and blow-ups first)."""
    _refuse_outside(text)
    from htsec.submit.load import load_submit
    from htsec.submit.needs import needed_names

    desc = load_submit(text)
    if desc.job_count < 1:
        raise UsageError("the queue statements make no procs")
    if desc.job_count > MAX_PROCS:
        raise UsageError(f"the queue statements make {desc.job_count} procs; at most {MAX_PROCS}")
    now = time.time()
    procs: list[Proc] = []
    for job in desc.jobs():
        sub = job.statement.submit
        for name in ("ClusterId", "Cluster"):
            sub[name] = str(cluster)
        sub["ItemIndex"] = str(job.row)
        keys = job.statement.submit_keys()
        expanded = desc.expand(job, keys)
        values = {k.lower(): v for k, v in expanded.items()}
        # What condor_submit's SetOAuth writes, as the gate derived it (local issuers left out).
        needed = ",".join(needed_names(expanded, functools.partial(_folded, values)))
        ad = _ad(
            values,
            cluster=cluster,
            proc=job.proc_id,
            owner=owner,
            user=user,
            iwd=iwd,
            now=now,
            oauth_needed=needed,
        )
        procs.append(Proc(job.proc_id, ad))
    return procs

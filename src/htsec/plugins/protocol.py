"""HTCondor's multi-file transfer-plugin protocol, written once for every htsec plugin.

A plugin subclasses :class:`Plugin`, names its methods, and implements only :meth:`Plugin.get`
and :meth:`Plugin.put`; :meth:`Plugin.main` is its console script. The interface
(``docs/apis/file-transfer-plugins/`` and ``src/condor_utils/file_transfer.cpp`` in HTCondor;
FORMATS.md section 6):

* ``plugin -classad`` prints the query ad in the old (line) syntax: ``MultipleFileSupport``,
  ``PluginVersion``, ``PluginType``, ``ProtocolVersion`` (4), ``SupportedMethods``.
* ``plugin -infile IN -outfile OUT [-upload]``: IN is a sequence of new-syntax ads, one per file
  with ``Url`` and ``LocalFileName`` (names are case-insensitive); protocol 4 adds ads without
  either that carry ``PluginData`` (with ``Protocol``: for that method only) and apply to the
  file ads after them. For every file ad one result ad goes to OUT, in order, as soon as that
  file is done, whether it worked or not: ``TransferSuccess``, ``TransferError``,
  ``TransferUrl``, ``TransferFileName``, ``TransferProtocol``, ``TransferType``, byte counts,
  times, host names, ``DeveloperData`` and, on failure, ``TransferErrorData`` (a list of ads,
  one per failed attempt). The starter fills OUT with spaces first so that a plugin on a full
  disk can still report: OUT is written from its start and never truncated.
* Exit status 0 when every file moved, 1 otherwise (HTCondor's own plugins; the starter holds
  the job with the status in ``HoldReasonSubCode``).

Input is bounded (:data:`MAX_INPUT` bytes, :data:`MAX_FILES` file ads). ``Url`` and
``LocalFileName`` must be strings, or expressions that evaluate to strings without looking at
other attributes (HTCondor writes literals; evaluating references would let one ad cost
exponential time). A malformed input file moves nothing: every ad read gets a failed result
ad, and the unreadable rest one more.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

import classad2

from htsec.errors import TransferFailed
from htsec.plugins.tokens import TokenForm, bearer, split_scheme

__all__ = [
    "MAX_FILES",
    "MAX_INPUT",
    "PROTOCOL_VERSION",
    "Plugin",
    "Request",
    "Transfer",
    "check_url_path",
    "parse_requests",
    "query_ad",
    "result_ad",
]

PROTOCOL_VERSION = 4
#: The largest input file read (HTCondor writes a few hundred bytes per file).
MAX_INPUT = 16 * 1024 * 1024
#: The most file ads handled in one run.
MAX_FILES = 10_000
#: The longest ``Url``/``LocalFileName`` accepted.
MAX_FIELD = 8192


@dataclass(frozen=True)
class Request:
    """One file ad of the input: what to move (``url`` and ``path`` as the starter wrote
    them), or ``problem`` when the ad cannot be used (then ``url``/``path`` are whatever could
    be read, possibly empty). ``plugin_data`` is the ``PluginData`` that applies (a ClassAd or
    None; a file ad's own wins over a method's, which wins over the general one)."""

    url: str
    path: str
    plugin_data: Any = None
    problem: str = ""
    ad: Any = None


@dataclass
class Transfer:
    """One file being moved: the plugin reads ``url``, ``path``, ``upload``, ``plugin_data``
    and fills in what it learns (``file_bytes`` in the local file, ``total_bytes`` on the
    wire, ``host``, ``connection_time`` seconds, ``developer`` facts for ``DeveloperData``);
    :meth:`attempt_failed` records a failed attempt it is about to retry."""

    url: str
    path: str
    upload: bool
    plugin_data: Any = None
    file_bytes: int = 0
    total_bytes: int = 0
    host: str = ""
    connection_time: float = 0.0
    developer: dict[str, Any] = field(default_factory=dict)
    failures: list[TransferFailed] = field(default_factory=list)

    def attempt_failed(self, error: TransferFailed) -> None:
        self.failures.append(error)


# -- input --------------------------------------------------------------------------------------


def _lookup(ad: Any, name: str) -> tuple[bool, Any]:
    """``(present, value)`` of ``name`` in ``ad``: a literal as it is, an expression evaluated
    without the ad as its scope (so it cannot reach other attributes)."""
    if name not in ad:
        return False, None
    value = ad[name]
    if isinstance(value, classad2.ExprTree):
        try:
            value = value.eval()
        except Exception:  # classad2 raises its own types for evaluation errors
            value = None
    return True, value


def _field(ad: Any, name: str) -> tuple[str, str]:
    """``(value, problem)`` of a string attribute of a file ad."""
    present, value = _lookup(ad, name)
    if not present:
        return "", f"the input ad has no {name}"
    if not isinstance(value, str):
        return "", f"the input ad's {name} is not a string"
    if not value or len(value) > MAX_FIELD or "\x00" in value:
        return value[:MAX_FIELD], f"the input ad's {name} is empty or too long"
    return value, ""


def parse_requests(data: bytes) -> tuple[list[Request], str]:
    """The file requests in an input file, and a problem with the file as a whole ("" when
    none): too large, not text, or not ClassAds from some point on. Requests read before such a
    problem are returned too, so each can be answered."""
    if len(data) > MAX_INPUT:
        return [], f"the input file is larger than {MAX_INPUT} bytes"
    text = data.decode("utf-8", errors="replace")
    if "\x00" in text:
        return [], "the input file holds a NUL byte"
    requests: list[Request] = []
    general: Any = None
    per_method: dict[str, Any] = {}
    ads = classad2.parseAds(text, classad2.ParserType.New)
    while True:
        try:
            ad = next(ads)
        except StopIteration:
            return requests, ""
        except Exception:  # classad2 raises ValueError, or its own exception type
            return requests, f"input ad {len(requests) + 1}: not a ClassAd in the new syntax"
        if "Url" not in ad and "LocalFileName" not in ad:
            _, data_ad = _lookup(ad, "PluginData")
            _, method = _lookup(ad, "Protocol")
            if isinstance(method, str):
                per_method[method.lower()] = data_ad
            else:
                general = data_ad
            continue
        if len(requests) >= MAX_FILES:
            return requests, f"more than {MAX_FILES} files in one input file"
        url, url_problem = _field(ad, "Url")
        path, path_problem = _field(ad, "LocalFileName")
        own_present, own = _lookup(ad, "PluginData")
        method = ""
        if url:
            with contextlib.suppress(TransferFailed):
                method = split_scheme(url)[1]
        plugin_data = own if own_present else per_method.get(method, general)
        requests.append(Request(url, path, plugin_data, url_problem or path_problem, ad))


def check_url_path(path: str) -> str:
    """``path`` (a URL's path) if no segment of it, percent-decoded up to three times, is
    ``.`` or ``..``, holds a backslash or a NUL; the decoded path.

    :raises TransferFailed: (``Parameter``) otherwise.
    """
    decoded = path
    for _ in range(3):
        step = urllib.parse.unquote(decoded)
        if step == decoded:
            break
        decoded = step
    else:
        if urllib.parse.unquote(decoded) != decoded:
            raise TransferFailed(
                "the URL's path is percent-encoded too many times", kind="Parameter"
            )
    segments = decoded.split("/")
    if any(s in (".", "..") for s in segments) or "\\" in decoded or "\x00" in decoded:
        raise TransferFailed(
            "the URL's path holds '.' or '..' segments (possibly percent-encoded), a backslash "
            "or a NUL: refused",
            kind="Parameter",
        )
    return decoded


# -- output -------------------------------------------------------------------------------------


def query_ad(methods: Sequence[str], version: str) -> str:
    """The ``-classad`` answer, old syntax, one attribute a line."""
    ad = classad2.ClassAd(
        {
            "MultipleFileSupport": True,
            "PluginVersion": version,
            "PluginType": "FileTransfer",
            "ProtocolVersion": PROTOCOL_VERSION,
            "SupportedMethods": ",".join(methods),
        }
    )
    return str(ad.printOld())


def _error_ad(err: TransferFailed, version: str) -> Any:
    """One ``TransferErrorData`` element (transfer_error_data.rst; the starter keeps only
    these attributes, with these types: src/condor_starter.V6.1/filter.cpp)."""
    ad: dict[str, Any] = {
        "ErrorType": err.kind,
        "ErrorCode": int(err.error_code),
        "ErrorString": str(err),
    }
    server = err.server or "Unknown"
    if err.kind == "Parameter":
        ad |= {"PluginVersion": version, "PluginLaunched": True}
    elif err.kind == "Resolution":
        ad |= {"FailedName": server, "FailureType": err.failure_type or "Unknown"}
    elif err.kind == "Authorization":
        ad |= {
            "FailedServer": server,
            "FailureType": err.failure_type or "Authorization",
            "ShouldRefresh": bool(err.should_refresh),
        }
    elif err.kind == "Transfer":
        ad |= {"FailedServer": server, "FailureType": err.failure_type or "Unknown"}
    else:  # Contact, Specification
        ad["FailedServer"] = server
    if err.retryable is not None:
        ad["Retryable"] = int(err.retryable)
    return classad2.ClassAd(ad)


def result_ad(
    transfer: Transfer,
    *,
    start: float,
    end: float,
    error: TransferFailed | None,
    version: str,
    local_host: str,
) -> str:
    """The result ad for one file, in the new syntax."""
    protocol = ""
    with contextlib.suppress(TransferFailed):
        protocol = split_scheme(transfer.url)[1] if transfer.url else ""
    developer = {k: v for k, v in transfer.developer.items() if v is not None}
    developer |= {
        "TransferSeconds": round(max(0.0, end - start), 6),
        "TransferTries": len(transfer.failures) + 1,
        "TransferHostName": transfer.host,
        "TransferLocalMachineName": local_host,
    }
    ad: dict[str, Any] = {
        "TransferSuccess": error is None,
        "TransferUrl": transfer.url,
        "TransferFileName": transfer.path,
        "TransferProtocol": protocol,
        "TransferType": "upload" if transfer.upload else "download",
        "TransferFileBytes": int(transfer.file_bytes),
        "TransferTotalBytes": int(transfer.total_bytes),
        "TransferStartTime": int(start),
        "TransferEndTime": int(end),
        "ConnectionTimeSeconds": float(transfer.connection_time),
        "TransferHostName": transfer.host,
        "TransferLocalMachineName": local_host,
        "DeveloperData": classad2.ClassAd(developer),
    }
    if error is not None:
        ad["TransferError"] = str(error)
        ad["TransferErrorData"] = [_error_ad(e, version) for e in [*transfer.failures, error]]
    return str(classad2.ClassAd(ad)) + "\n"


class _Results:
    """The output file, written from its start as results come, never truncated (the starter
    pre-fills it with spaces so that a report still fits when the disk is full)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self.offset = 0

    def write(self, text: str) -> None:
        view = memoryview(text.encode("utf-8"))
        while view:
            n = os.pwrite(self.fd, view, self.offset)
            view = view[n:]
            self.offset += n

    def close(self) -> None:
        os.close(self.fd)


# -- the plugin ---------------------------------------------------------------------------------


class _Interrupted(BaseException):
    """SIGTERM or SIGINT (the starter's timeout): unwind so temporary files are removed."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def _os_error(exc: OSError, transfer: Transfer) -> TransferFailed:
    what = "writing" if not transfer.upload else "reading"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        kind = "NoSpace" if exc.errno == errno.ENOSPC else "Quota"
        return TransferFailed(
            f"{what} {transfer.path}: {exc.strerror} (the job's disk is full)",
            kind="Transfer",
            failure_type=kind,
            retryable=-1,
            error_code=exc.errno,
        )
    return TransferFailed(
        f"{what} {transfer.path}: {exc.strerror or exc}",
        kind="Specification" if transfer.upload else "Transfer",
        error_code=exc.errno or 1,
    )


class Plugin:
    """A file-transfer plugin: subclasses set :attr:`methods`, :attr:`version`,
    :attr:`token_form`, and implement :meth:`get` and :meth:`put`, raising
    :class:`~htsec.errors.TransferFailed` (any ``OSError`` on the local file is turned into
    one). They call :meth:`token` before every request."""

    methods: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "0"
    token_form: ClassVar[TokenForm] = "service"  # noqa: S105 (a naming rule, not a secret)
    _interrupted = False

    def get(self, url: str, path: Path, transfer: Transfer) -> None:
        """Download ``url`` to ``path``."""
        raise NotImplementedError

    def put(self, path: Path, url: str, transfer: Transfer) -> None:
        """Upload ``path`` to ``url``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections at the end of a run."""

    def token(self, url: str) -> str | None:
        """The bearer token for ``url``, read from ``$_CONDOR_CREDS`` now."""
        return bearer(url, self.token_form)

    # -- running ---------------------------------------------------------------------------

    def _move(self, request: Request, upload: bool) -> tuple[Transfer, TransferFailed | None]:
        transfer = Transfer(request.url, request.path, upload, request.plugin_data)
        try:
            if request.problem:
                raise TransferFailed(request.problem, kind="Parameter")
            method = split_scheme(request.url)[1]
            if method not in self.methods:
                raise TransferFailed(
                    f"this plugin handles {', '.join(self.methods)}, not {method}://",
                    kind="Parameter",
                )
            if upload:
                self.put(Path(request.path), request.url, transfer)
            else:
                self.get(request.url, Path(request.path), transfer)
        except TransferFailed as exc:
            return transfer, exc
        except OSError as exc:
            return transfer, _os_error(exc, transfer)
        except _Interrupted as exc:
            self._interrupted = True
            return transfer, TransferFailed(
                f"interrupted by {exc} before the transfer finished", retryable=0
            )
        except Exception as exc:
            print(f"{type(self).__name__}: internal error: {type(exc).__name__}", file=sys.stderr)
            return transfer, TransferFailed(
                f"internal error in the plugin ({type(exc).__name__})", kind="Parameter"
            )
        return transfer, None

    def run(self, infile: str, outfile: str, *, upload: bool) -> int:
        """Move every file of ``infile``, report each in ``outfile``; the exit status."""
        out = _Results(outfile)
        local_host = socket.gethostname()
        failed = False
        interrupted = False

        def report(transfer: Transfer, start: float, error: TransferFailed | None) -> None:
            out.write(
                result_ad(
                    transfer,
                    start=start,
                    end=time.time(),
                    error=error,
                    version=self.version,
                    local_host=local_host,
                )
            )

        try:
            start = time.time()
            try:
                with open(infile, "rb") as f:
                    data = f.read(MAX_INPUT + 1)
            except OSError as exc:
                report(
                    Transfer("", "", upload),
                    start,
                    TransferFailed(f"cannot read the input file: {exc.strerror}", kind="Parameter"),
                )
                return 1
            requests, problem = parse_requests(data)
            for request in requests:
                start = time.time()
                if problem or interrupted:
                    why = problem or "the plugin was interrupted before this file"
                    transfer = Transfer(request.url, request.path, upload)
                    report(transfer, start, TransferFailed(why, kind="Parameter"))
                    failed = True
                    continue
                transfer, error = self._move(request, upload)
                report(transfer, start, error)
                failed = failed or error is not None
                interrupted = self._interrupted
            if problem:
                stray = TransferFailed(problem, kind="Parameter")
                report(Transfer("", "", upload), time.time(), stray)
                failed = True
            return 1 if failed else 0
        finally:
            out.close()
            with contextlib.suppress(Exception):
                self.close()

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """The console script: ``-classad``, or ``-infile IN -outfile OUT [-upload]``."""
        args = list(sys.argv[1:] if argv is None else argv)
        if args == ["-classad"]:
            sys.stdout.write(query_ad(cls.methods, cls.version))
            return 0
        infile = outfile = ""
        upload = False
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-infile", "-outfile") and i + 1 < len(args):
                if arg == "-infile":
                    infile = args[i + 1]
                else:
                    outfile = args[i + 1]
                i += 2
                continue
            if arg == "-upload":
                upload = True
            elif arg != "-diagnostic":
                infile = outfile = ""
                break
            i += 1
        if not infile or not outfile:
            name = os.path.basename(sys.argv[0]) or "plugin"
            print(
                f"usage: {name} -classad\n       {name} -infile IN -outfile OUT [-upload]",
                file=sys.stderr,
            )
            return 1
        handlers: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, _interrupt)
        try:
            return cls().run(infile, outfile, upload=upload)
        except OSError as exc:
            print(f"cannot write the output file {outfile}: {exc.strerror}", file=sys.stderr)
            return 1
        except _Interrupted:
            return 1
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

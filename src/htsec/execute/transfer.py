"""URL transfers through HTCondor file-transfer plugins, run as a starter runs them.

The plugins are executables (HTCondor's ``FILETRANSFER_PLUGINS``; by default htsec's own
``htsec-plugin-*`` of :data:`LIBEXEC`, where ``scripts/setup`` installs them for everyone, as
HTCondor's live in ``$(LIBEXEC)``, then those beside this Python). Each says what it handles
with ``-classad`` (``SupportedMethods``); a URL goes to the plugin of its scheme, or of the
scheme's suffix after its last ``+``, ``-`` or ``.`` (``work+box`` -> ``box``). One run per
plugin and direction: ``<plugin> -infile IN -outfile OUT [-upload]``, IN holding one ClassAd per
file (``Url``, ``LocalFileName``), as the job user, in the sandbox, with ``_CONDOR_CREDS``; OUT
holds one result ad per file. ``TransferSuccess = false`` (or no result ad, or a non-zero exit)
makes the job held with the plugin's ``TransferError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LIBEXEC", "PluginError", "Plugins", "Transfer", "is_url", "method_of"]

log = logging.getLogger("htsec.execute")

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TIMEOUT = 3600.0
#: htsec's plugins in a venv of a system Python that the job user can run (``scripts/setup``,
#: as root); a clone's own ``.venv`` may be out of the job user's reach (under 0700 ``/root``).
LIBEXEC = Path("/usr/local/libexec/htsec/bin")
#: Writes a new file of the sandbox; reads one back (never through a symlink).
WriteFile = Callable[[str, bytes], None]
ReadFile = Callable[[str], bytes]


class PluginError(Exception):
    """A URL transfer failed; ``str()`` is the hold reason, ``code`` HTCondor's hold code."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Transfer:
    """One file: its URL and its path in the sandbox."""

    url: str
    local: str


def is_url(name: str) -> bool:
    return _URL.match(name) is not None


def method_of(url: str) -> tuple[str, str]:
    """``(scheme, suffix)`` of a URL (``("work+box", "box")``)."""
    m = _URL.match(url)
    scheme = m.group(1).lower() if m else ""
    return scheme, re.split(r"[+.-]", scheme)[-1]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ads(files: Sequence[Transfer]) -> str:
    return "".join(
        f"[ Url = {_quote(t.url)}; LocalFileName = {_quote(t.local)}; ]\n" for t in files
    )


class Plugins:
    """The configured plugins and the methods each supports (asked once, then cached)."""

    def __init__(self, executables: Sequence[str] | None = None) -> None:
        self._executables = executables
        self._methods: dict[str, str] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def configured(*, libexec: Path = LIBEXEC, beside: Path | None = None) -> list[str]:
        """``FILETRANSFER_PLUGINS``' executables that exist; when none does, htsec's own
        ``htsec-plugin-*``: those of ``libexec`` first (HTCondor's default names its own
        plugins in ``$(LIBEXEC)``, which a machine without HTCondor does not have), then any
        other beside this Python (``beside``)."""
        from htsec.config import param

        raw = param("FILETRANSFER_PLUGINS") or ""
        listed = [p for p in re.split(r"[\s,]+", raw.strip()) if p]
        found = [p for p in listed if os.access(p, os.X_OK)]
        if found:
            return found
        own: dict[str, str] = {}
        for bindir in (libexec, beside or Path(sys.executable).parent):
            for p in sorted(bindir.glob("htsec-plugin-*")):
                if os.access(p, os.X_OK):
                    own.setdefault(p.name, str(p))
        return list(own.values())

    def executables(self) -> list[str]:
        return list(self._executables) if self._executables is not None else self.configured()

    def check_runnable(self, user: str, run_as: tuple[int, int]) -> list[str]:
        """Run each plugin's ``-classad`` as the job user and log, for each that fails, why
        (a job would otherwise be held later with a vaguer reason); returns those lines."""
        problems: list[str] = []
        for exe in self.executables():
            why = _classad_as(exe, run_as)
            if why is None:
                continue
            line = (
                f"file-transfer plugin {exe} cannot be run by the job user {user} ({why}): "
                "jobs whose URLs need it will be held. Run scripts/setup as root (it installs "
                f"htsec's plugins in {LIBEXEC.parent}, which {user} can run), or list plugins "
                f"{user} can run in FILETRANSFER_PLUGINS"
            )
            log.warning("execute: %s", line)
            problems.append(line)
        return problems

    def methods(self) -> dict[str, str]:
        with self._lock:
            if self._methods is None:
                found: dict[str, str] = {}
                for exe in self.executables():
                    try:
                        out = subprocess.run(
                            [exe, "-classad"], capture_output=True, timeout=30, check=False
                        ).stdout.decode("utf-8", "replace")
                    except OSError as exc:
                        log.warning("file-transfer plugin %s cannot run: %s", exe, exc.strerror)
                        continue
                    m = re.search(r'^\s*SupportedMethods\s*=\s*"([^"]*)"', out, re.M)
                    if not m:
                        log.warning("file-transfer plugin %s gave no SupportedMethods", exe)
                        continue
                    for method in m.group(1).split(","):
                        found.setdefault(method.strip().lower(), exe)
                self._methods = found
            return self._methods

    def plugin_for(self, url: str) -> str:
        scheme, suffix = method_of(url)
        methods = self.methods()
        exe = methods.get(scheme) or methods.get(suffix)
        if exe is None:
            raise PluginError(
                f"no file-transfer plugin supports {scheme}:// (FILETRANSFER_PLUGINS has "
                f"{', '.join(sorted(methods)) or 'none'})",
                13,
            )
        return exe

    def run(
        self,
        files: Sequence[Transfer],
        *,
        upload: bool,
        sandbox: str,
        env: Mapping[str, str],
        run_as: tuple[int, int] | None,
        write: WriteFile,
        read: ReadFile,
    ) -> None:
        """Transfer ``files``, one plugin run per plugin; ``PluginError`` on the first failure
        (with the plugin's TransferError)."""
        code = 12 if upload else 13
        by_plugin: dict[str, list[Transfer]] = {}
        for t in files:
            by_plugin.setdefault(self.plugin_for(t.url), []).append(t)
        direction = "output" if upload else "input"
        for n, (exe, batch) in enumerate(by_plugin.items()):
            stem = f".htsec_transfer_{direction}_{n}_{secrets.token_hex(4)}"
            write(f"{stem}.in", _ads(batch).encode())
            write(f"{stem}.out", b"")
            argv = [exe, "-infile", f"{sandbox}/{stem}.in", "-outfile", f"{sandbox}/{stem}.out"]
            if upload:
                argv.append("-upload")
            rc = _run_plugin(argv, sandbox=sandbox, env=env, run_as=run_as)
            results = _results(read(f"{stem}.out"))
            name = Path(exe).name
            for t in batch:
                ad = results.get(t.url)
                if ad is None:
                    raise PluginError(
                        f"Transfer {direction} files failure using plugin {name}: no result for "
                        f"{t.url} (plugin exit code {rc})",
                        code,
                    )
                if ad.get("TransferSuccess") is not True:
                    error = str(ad.get("TransferError") or f"plugin exit code {rc}")
                    raise PluginError(
                        f"Transfer {direction} files failure using protocol "
                        f"{method_of(t.url)[0]}. Error: {error} (URL file = {t.url})",
                        code,
                    )
            if rc != 0:
                raise PluginError(
                    f"Transfer {direction} files failure: plugin {name} exited with {rc}", code
                )


def _results(text: bytes) -> dict[str, dict[str, object]]:
    import classad2

    out: dict[str, dict[str, object]] = {}
    with contextlib.suppress(Exception):  # a malformed tail leaves its files without a result
        for ad in classad2.parseAds(text.decode("utf-8", "replace")):
            url = ad.get("TransferUrl")
            if isinstance(url, str):
                out[url] = dict(ad)
    return out


def _dropper(run_as: tuple[int, int] | None) -> Callable[[], None]:
    def drop() -> None:  # pragma: no cover - between fork and exec
        os.umask(0o077)
        if run_as is not None and os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(run_as[1], run_as[1], run_as[1])
            os.setresuid(run_as[0], run_as[0], run_as[0])

    return drop


def _classad_as(exe: str, run_as: tuple[int, int]) -> str | None:
    """Why ``exe -classad`` fails as ``run_as`` (in ``/``, with a minimal environment), or
    None when it answers with its ``SupportedMethods``."""
    try:
        proc = subprocess.run(
            [exe, "-classad"],
            cwd="/",
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
            start_new_session=True,
            preexec_fn=_dropper(run_as),
        )
    except subprocess.TimeoutExpired:
        return "-classad did not answer within 60 s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if proc.returncode == 0 and re.search(rb"^\s*SupportedMethods\s*=", proc.stdout, re.M):
        return None
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"-classad exited with {proc.returncode}" + (f": {tail[-1][:300]}" if tail else "")


def _run_plugin(
    argv: list[str], *, sandbox: str, env: Mapping[str, str], run_as: tuple[int, int] | None
) -> int:
    drop = _dropper(run_as)
    log.debug("running %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv,
            cwd=sandbox,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
            start_new_session=True,
            preexec_fn=drop,
        )
    except subprocess.TimeoutExpired:
        return -9
    except OSError as exc:
        raise PluginError(
            f"file-transfer plugin {argv[0]} cannot run: {exc.strerror}", 13
        ) from None
    if proc.stderr:
        log.info(
            "plugin %s: %s", Path(argv[0]).name, proc.stderr.decode("utf-8", "replace")[-2000:]
        )
    return proc.returncode

"""URL transfers through HTCondor file-transfer plugins, run as a starter runs them.

The plugins are executables (HTCondor's ``FILETRANSFER_PLUGINS``; by default htsec's own
``htsec-plugin-*`` beside this Python). Each says what it handles with ``-classad``
(``SupportedMethods``); a URL goes to the plugin of its scheme, or of the scheme's suffix after
its last ``+``, ``-`` or ``.`` (``work+box`` -> ``box``). One run per plugin and direction:
``<plugin> -infile IN -outfile OUT [-upload]``, IN holding one ClassAd per file (``Url``,
``LocalFileName``), as the job user, in the sandbox, with ``_CONDOR_CREDS``; OUT holds one
result ad per file. ``TransferSuccess = false`` (or no result ad, or a non-zero exit) makes the
job held with the plugin's ``TransferError``.
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

__all__ = ["PluginError", "Plugins", "Transfer", "is_url", "method_of"]

log = logging.getLogger("htsec.execute")

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TIMEOUT = 3600.0
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
    def configured() -> list[str]:
        """``FILETRANSFER_PLUGINS``' executables that exist; htsec's own ``htsec-plugin-*``
        when none does (HTCondor's default names its own plugins in ``$(LIBEXEC)``, which a
        machine without HTCondor does not have)."""
        from htsec.config import param

        raw = param("FILETRANSFER_PLUGINS") or ""
        listed = [p for p in re.split(r"[\s,]+", raw.strip()) if p]
        found = [p for p in listed if os.access(p, os.X_OK)]
        if found:
            return found
        bindir = Path(sys.executable).parent
        return sorted(str(p) for p in bindir.glob("htsec-plugin-*") if os.access(p, os.X_OK))

    def methods(self) -> dict[str, str]:
        with self._lock:
            if self._methods is None:
                found: dict[str, str] = {}
                for exe in (
                    self._executables if self._executables is not None else self.configured()
                ):
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


def _run_plugin(
    argv: list[str], *, sandbox: str, env: Mapping[str, str], run_as: tuple[int, int] | None
) -> int:
    def drop() -> None:  # pragma: no cover - between fork and exec
        os.umask(0o077)
        if run_as is not None and os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(run_as[1], run_as[1], run_as[1])
            os.setresuid(run_as[0], run_as[0], run_as[0])

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

"""Files into a sandbox before the job, and out of it after, as HTCondor's file transfer does.

In: the executable (``transfer_executable``, default true), ``input`` (as ``_condor_stdin``)
and ``transfer_input_files``: local names are the owner's, read with the owner's permissions
(relative to the job's ``Iwd``; a directory is copied with what is in it, ``dir/`` copies what
is in it only); URLs go to the plugins. Out: ``output``/``error`` from the job's stdout and
stderr, then ``transfer_output_files`` (or, when not given, every top-level file the job left),
each to ``Iwd/<basename>`` or where ``transfer_output_remaps`` sends it: a path of the owner's,
or a URL uploaded through a plugin.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from htsec.execute.asuser import Identity, OwnerFileError, owner_files
from htsec.execute.sandbox import Sandbox, SandboxError
from htsec.execute.transfer import PluginError, Plugins, Transfer, is_url

__all__ = ["JobFailed", "stage_in", "stage_out"]

_IN, _OUT = 13, 12


class JobFailed(Exception):
    """The job is held: ``str()`` is the reason, ``code`` HTCondor's HoldReasonCode."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


def _abs(iwd: str, name: str) -> str:
    return name if name.startswith("/") else posixpath.join(iwd, name)


def _url_name(url: str) -> str:
    name = posixpath.basename(urlsplit(url).path.rstrip("/"))
    if not name or name in (".", ".."):
        raise JobFailed(f"Transfer input files failure: {url} names no file", _IN)
    return name


def stage_in(
    sandbox: Sandbox,
    ad: Mapping[str, Any],
    *,
    owner: Identity,
    plugins: Plugins,
    env: Mapping[str, str],
    run_as: tuple[int, int],
) -> list[str]:
    """Fill the sandbox; the job's argv (``JobFailed`` when something cannot be moved in)."""
    iwd = str(ad["Iwd"])
    cmd = str(ad["Cmd"])
    urls: list[Transfer] = []
    argv0 = cmd
    try:
        with owner_files(owner) as files:

            def copy(src: str, dest: str, mode: int | None = None) -> None:
                fd, info = files.read(src)
                if fd is None:
                    for rel in info["files"]:
                        copy(posixpath.join(src, rel), posixpath.join(dest, rel))
                    return
                try:
                    sandbox.write_from(dest, fd, mode if mode is not None else info["mode"])
                finally:
                    os.close(fd)

            if ad.get("TransferExecutable", True) and not is_url(cmd):
                argv0 = posixpath.basename(cmd)
                copy(_abs(iwd, cmd), argv0, 0o700)
                argv0 = str(sandbox.path / argv0)
            if ad.get("In"):
                copy(_abs(iwd, str(ad["In"])), "_condor_stdin", 0o600)
            for name in ad.get("TransferInput") or []:
                if is_url(name):
                    urls.append(Transfer(name, str(sandbox.path / _url_name(name))))
                    continue
                src = _abs(iwd, name)
                dest = "." if name.endswith("/") else posixpath.basename(name.rstrip("/"))
                fd, info = files.read(src.rstrip("/") or "/")
                if fd is not None:
                    try:
                        sandbox.write_from(dest, fd, info["mode"])
                    finally:
                        os.close(fd)
                else:
                    for rel in info["files"]:
                        copy(
                            posixpath.join(src, rel), posixpath.normpath(posixpath.join(dest, rel))
                        )
    except (OwnerFileError, SandboxError, OSError) as exc:
        raise JobFailed(f"Transfer input files failure at execution point: {exc}", _IN) from None
    if urls:
        _transfer(plugins, urls, sandbox, upload=False, env=env, run_as=run_as)
    return [argv0, *[str(a) for a in ad.get("Arguments") or []]]


def _transfer(
    plugins: Plugins,
    transfers: list[Transfer],
    sandbox: Sandbox,
    *,
    upload: bool,
    env: Mapping[str, str],
    run_as: tuple[int, int],
) -> None:
    """The URLs' plugins run in the sandbox (``JobFailed`` with the plugins' hold reason)."""
    try:
        plugins.run(
            transfers,
            upload=upload,
            sandbox=str(sandbox.path),
            env=env,
            run_as=run_as,
            write=sandbox.write_bytes,
            read=lambda n: _read(sandbox, n),
        )
    except PluginError as exc:
        raise JobFailed(str(exc), exc.code) from None


def _read(sandbox: Sandbox, name: str, limit: int = 16 << 20) -> bytes:
    fd = sandbox.open_output(name)
    try:
        data = os.read(fd, limit)
    finally:
        os.close(fd)
    return data


def stage_out(
    sandbox: Sandbox,
    ad: Mapping[str, Any],
    *,
    owner: Identity,
    plugins: Plugins,
    env: Mapping[str, str],
    run_as: tuple[int, int],
) -> None:
    """Send the job's output home (``JobFailed`` naming the first file that could not be)."""
    iwd = str(ad["Iwd"])
    remaps: dict[str, str] = dict(ad.get("TransferOutputRemaps") or {})
    listed = ad.get("TransferOutput")
    names: list[str] = list(listed) if listed is not None else sandbox.top_level()
    uploads: list[Transfer] = []
    try:
        with owner_files(owner) as files:
            for stream, key in (("_condor_stdout", "Out"), ("_condor_stderr", "Err")):
                if ad.get(key):
                    sandbox.send_output(stream, files, _abs(iwd, str(ad[key])), None)
            for name in names:
                base = posixpath.basename(name.rstrip("/"))
                dest = remaps.get(name, remaps.get(base, base))
                if is_url(dest):
                    os.close(sandbox.open_output(name))  # refuses links and non-files
                    uploads.append(Transfer(dest, str(sandbox.path / name)))
                    continue
                if not sandbox.exists(name):
                    if listed is None:
                        continue
                    raise SandboxError(f"{name}: no such file in the sandbox")
                sandbox.send_output(name, files, _abs(iwd, dest), None)
    except (OwnerFileError, SandboxError, OSError) as exc:
        raise JobFailed(f"Transfer output files failure at execution point: {exc}", _OUT) from None
    if uploads:
        _transfer(plugins, uploads, sandbox, upload=True, env=env, run_as=run_as)

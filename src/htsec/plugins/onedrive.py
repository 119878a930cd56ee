"""``onedrive://`` transfers through Microsoft Graph v1.0
(https://learn.microsoft.com/en-us/graph/api/resources/onedrive).

``onedrive://first/second/name`` is ``/first/second/name`` in the signed-in user's drive
(``/me/drive/root``), as in HTCondor's ``onedrive_plugin.py``; ``<handle>+onedrive://...`` uses
the token ``$_CONDOR_CREDS/onedrive_<handle>.use``.

- Items are addressed by path, ``/me/drive/root:/first/second/name`` with each segment
  percent-encoded (https://learn.microsoft.com/en-us/graph/onedrive-addressing-driveitems).
  Missing folders are created for uploads (``POST .../children`` with ``folder: {}`` and
  ``@microsoft.graph.conflictBehavior: fail``; a 409 race takes the folder that won).
- Downloads: ``GET /me/drive/items/{id}/content``, which answers 302 to a pre-authenticated
  URL (the bearer token is not sent there); checked against ``size`` and, where the drive lists
  one (OneDrive personal), ``file.hashes.sha1Hash``.
- Uploads up to 4 MiB: ``PUT /me/drive/root:/<path>:/content``
  (https://learn.microsoft.com/en-us/graph/api/driveitem-put-content). Larger: an upload session
  (https://learn.microsoft.com/en-us/graph/api/driveitem-createuploadsession) with
  ``conflictBehavior: replace``; chunks of 10 MiB (a multiple of 320 KiB, as required) are
  ``PUT`` to the session's ``uploadUrl`` *without* the Authorization header (the URL carries
  its own authorisation; Graph may answer 401 to one that has it); after a dropped connection
  or a 5xx the plugin asks the session (``GET uploadUrl``) for ``nextExpectedRanges`` and goes on
  from there; a failed upload is cancelled (``DELETE uploadUrl``). Existing files are replaced.
"""

from __future__ import annotations

import contextlib
import functools
import re
import urllib.parse
from pathlib import Path
from typing import Any

from htsec.errors import TransferFailed
from htsec.plugins._cloud import CloudPlugin
from htsec.plugins._rest import Api, Moved, file_blocks
from htsec.plugins._urls import base_url, remote_path
from htsec.plugins.files import open_source

__all__ = ["API_URL", "CHUNK", "SIMPLE_MAX", "OneDriveClient", "OneDrivePlugin", "main"]

API_URL = "https://graph.microsoft.com/v1.0"
#: "Use this method only to upload files of 4 MB or less" in older Graph documentation; the
#: session path is used for anything larger (it resumes, the simple PUT cannot).
SIMPLE_MAX = 4 * 1024 * 1024
#: Graph: "Use a fragment size that is a multiple of 320 KiB (327,680 bytes)", under 60 MiB.
CHUNK = 32 * 320 * 1024


def _path(names: list[str] | tuple[str, ...]) -> str:
    return "/".join(urllib.parse.quote(n, safe="") for n in names)


def _check_session_url(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    local = host in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise TransferFailed(f"onedrive: uploading {name}: the session URL is not https")
    return url


class OneDriveClient:
    """OneDrive for one token; folders known to exist are remembered for the run."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.drive = f"{base_url('HTSEC_TEST_ONEDRIVE_URL', API_URL)}/me/drive"
        self.folders: set[tuple[str, ...]] = {()}

    def _item(self, names: list[str] | tuple[str, ...], what: str) -> dict[str, Any] | None:
        response = self.api.send(
            "GET",
            f"{self.drive}/root:/{_path(names)}",
            what=what,
            ok=lambda s: s in (200, 404),
        )
        return dict(response.json()) if response.status_code == 200 else None

    def _ensure_folders(self, names: list[str]) -> None:
        for depth in range(1, len(names) + 1):
            path = tuple(names[:depth])
            if path in self.folders:
                continue
            where = f"looking up folder {'/'.join(path)}"
            item = self._item(path, where)
            if item is None:
                parent = (
                    f"{self.drive}/root:/{_path(path[:-1])}:/children"
                    if len(path) > 1
                    else f"{self.drive}/root/children"
                )
                response = self.api.send(
                    "POST",
                    parent,
                    json={
                        "name": path[-1],
                        "folder": {},
                        "@microsoft.graph.conflictBehavior": "fail",
                    },
                    what=f"creating folder {'/'.join(path)}",
                    ok=lambda s: s in (200, 201, 409),
                )
                item = dict(response.json()) if response.status_code != 409 else None
                if item is None:
                    item = self._item(path, where)  # created meanwhile by someone else
            if item is None or "folder" not in item:
                raise TransferFailed(
                    f"onedrive: {'/'.join(path)} exists and is not a folder",
                    kind="Specification",
                )
            self.folders.add(path)

    def get(self, url: str, dest: Path) -> Moved:
        names = remote_path(url)
        item = self._item(names, f"looking up {names[-1]}")
        if item is None:
            raise TransferFailed(
                f"onedrive: {url}: no such file", kind="Specification", error_code=404
            )
        if "folder" in item:
            raise TransferFailed(f"onedrive: {url} is a folder; name a file", kind="Specification")
        size = item.get("size")
        hashes = (item.get("file") or {}).get("hashes") or {}
        sha1 = hashes.get("sha1Hash")
        return self.api.download(
            f"{self.drive}/items/{urllib.parse.quote(str(item['id']), safe='')}/content",
            dest,
            what=f"downloading {names[-1]}",
            size=size if isinstance(size, int) else None,
            digest=("sha1", sha1) if isinstance(sha1, str) and len(sha1) == 40 else None,
        )

    def put(self, src: Path, url: str) -> Moved:
        names = remote_path(url)
        self._ensure_folders(names[:-1])
        target = f"{self.drive}/root:/{_path(names)}:"
        source, size = open_source(src)
        fd = source.fileno()
        try:
            if size <= SIMPLE_MAX:
                item = self.api.send(
                    "PUT",
                    f"{target}/content",
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    content=lambda: file_blocks(fd, 0, size),
                    what=f"uploading {names[-1]}",
                ).json()
                host = urllib.parse.urlsplit(self.drive).hostname or ""
            else:
                session = self.api.send(
                    "POST",
                    f"{target}/createUploadSession",
                    json={"item": {"@microsoft.graph.conflictBehavior": "replace"}},
                    what=f"starting an upload session for {names[-1]}",
                ).json()
                upload_url = _check_session_url(str(session.get("uploadUrl", "")), names[-1])
                try:
                    item = self._send_chunks(fd, size, upload_url, names[-1])
                except BaseException:
                    self._cancel(upload_url)
                    raise
                host = urllib.parse.urlsplit(upload_url).hostname or ""
        finally:
            source.close()
        got = item.get("size") if isinstance(item, dict) else None
        if isinstance(got, int) and got != size:
            raise TransferFailed(
                f"onedrive: {url}: OneDrive holds {got} bytes, the file has {size}"
            )
        return Moved(size, host)

    def _next_offset(self, upload_url: str, name: str) -> int:
        status = self.api.send(
            "GET", upload_url, bearer=False, what=f"asking the session of {name} what it holds"
        ).json()
        return _first_expected(status.get("nextExpectedRanges"))

    def _send_chunks(self, fd: int, size: int, upload_url: str, name: str) -> dict[str, Any]:
        offset, failures = 0, 0
        while True:
            length = min(CHUNK, size - offset)
            end = offset + length - 1
            try:
                answer = self.api.send(
                    "PUT",
                    upload_url,
                    bearer=False,
                    headers={
                        "Content-Length": str(length),
                        "Content-Range": f"bytes {offset}-{end}/{size}",
                    },
                    content=functools.partial(file_blocks, fd, offset, length),
                    what=f"uploading {name} bytes {offset}-{end}",
                    ok=lambda s: s in (200, 201, 202),
                    attempts=1,  # resumed below from what the session expects
                )
            except TransferFailed as err:
                failures += 1
                self.api.resume_after(err, failures)
                offset = self._next_offset(upload_url, name)
                continue
            body = answer.json()
            if answer.status_code in (200, 201):
                return dict(body)
            following = _first_expected(body.get("nextExpectedRanges"))
            if following <= offset:
                failures += 1
                if failures >= self.api.backoff.attempts:
                    raise TransferFailed(f"onedrive: uploading {name}: the session keeps no bytes")
            offset = following
            if offset >= size:
                raise TransferFailed(
                    f"onedrive: uploading {name}: the session took every byte but made no file"
                )

    def _cancel(self, upload_url: str) -> None:
        # A failure is ignored: sessions expire on their own, the first error is the one to report.
        with contextlib.suppress(TransferFailed):
            self.api.send(
                "DELETE",
                upload_url,
                bearer=False,
                what="cancelling the upload session",
                ok=lambda s: s in (204, 404),
                attempts=1,
            )


def _first_expected(ranges: object) -> int:
    if isinstance(ranges, list) and ranges:
        match = re.match(r"(\d+)-", str(ranges[0]))
        if match:
            return int(match.group(1))
    raise TransferFailed("onedrive: the upload session gave no next expected range")


class OneDrivePlugin(CloudPlugin[OneDriveClient]):
    """The ``htsec-plugin-onedrive`` executable (HTCondor's multi-file plugin protocol)."""

    methods = ("onedrive",)
    version = "1.0.0"
    service = "onedrive"

    def client(self, api: Api) -> OneDriveClient:
        return OneDriveClient(api)


def main() -> int:
    """Console script ``htsec-plugin-onedrive``."""
    return OneDrivePlugin.main()

"""``gdrive://`` transfers through the Google Drive API v3
(https://developers.google.com/drive/api/reference/rest/v3).

``gdrive://first/second/name`` is the file ``name`` in the folder ``first/second`` below the
user's "My Drive" (alias ``root``), as in HTCondor's ``gdrive_plugin.py``;
``<handle>+gdrive://...`` uses the token ``$_CONDOR_CREDS/gdrive_<handle>.use``.

- Paths are resolved folder by folder with ``files.list`` and a ``q`` of
  ``name = '...' and '<parent>' in parents and trashed = false`` and the folder mime type
  (https://developers.google.com/drive/api/guides/search-files; ``'`` and ``\\`` in names are
  escaped with ``\\``). Drive allows several items of one name in a folder: more than one match
  is an error naming the count, never a guess. Missing folders are created for uploads
  (``files.create`` with ``mimeType: application/vnd.google-apps.folder``).
- Downloads: ``files.get`` with ``alt=media``
  (https://developers.google.com/drive/api/guides/manage-downloads), streamed, resumed with
  ``Range``, checked against ``size`` and ``md5Checksum``. Google Docs, Sheets ... have no bytes
  to download (they need ``files.export``): refused with that said.
- Uploads: a resumable upload session for every size
  (https://developers.google.com/drive/api/guides/manage-uploads#resumable): ``POST`` (new file)
  or ``PATCH`` (new content of the existing file) ``/upload/drive/v3/files?uploadType=resumable``
  gives the session URI in ``Location``; chunks of 8 MiB (a multiple of 256 KiB, as required)
  are ``PUT`` with ``Content-Range``; ``308 Resume Incomplete`` carries ``Range`` = what Drive
  holds. After a dropped connection or a 5xx the plugin asks ``Content-Range: bytes */<size>``
  and continues from what Drive confirms.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from htsec.errors import TransferFailed
from htsec.plugins._cloud import CloudPlugin
from htsec.plugins._rest import Api, Moved, file_blocks
from htsec.plugins._urls import base_url, remote_path
from htsec.plugins.files import open_source

if TYPE_CHECKING:
    import httpx  # imported when a file moves: -classad runs without it

__all__ = ["API_URL", "CHUNK", "FOLDER_MIME", "GDriveClient", "GDrivePlugin", "main"]

API_URL = "https://www.googleapis.com"
FOLDER_MIME = "application/vnd.google-apps.folder"
#: Drive: "chunk size ... must be a multiple of 256 KB (256 x 1024 bytes)".
CHUNK = 32 * 256 * 1024
_FIELDS = "nextPageToken,files(id,name,mimeType,size,md5Checksum)"


def _quote(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


class GDriveClient:
    """Google Drive for one token: folder ids are remembered for the rest of the run."""

    def __init__(self, api: Api) -> None:
        self.api = api
        base = base_url("HTSEC_TEST_GDRIVE_URL", API_URL)
        self.files = f"{base}/drive/v3/files"
        self.uploads = f"{base}/upload/drive/v3/files"
        self.folders: dict[tuple[str, ...], str] = {(): "root"}

    def _find(self, parent: str, name: str, folder: bool, where: str) -> dict[str, Any] | None:
        query = " and ".join(
            [
                f"name = {_quote(name)}",
                f"{_quote(parent)} in parents",
                "trashed = false",
                f"mimeType {'=' if folder else '!='} '{FOLDER_MIME}'",
            ]
        )
        params: dict[str, str | int] = {
            "q": query,
            "fields": _FIELDS,
            "pageSize": 100,
            "spaces": "drive",
        }
        found: list[dict[str, Any]] = []
        for _page in range(1000):
            body = self.api.send("GET", self.files, params=params, what=where).json()
            found += [f for f in body.get("files") or [] if f.get("name") == name]
            token = body.get("nextPageToken")
            if not token:
                break
            params["pageToken"] = str(token)
        if len(found) > 1:
            raise TransferFailed(
                f"gdrive: {where}: {len(found)} items named {name!r} in one folder; "
                "rename or remove the others",
                kind="Specification",
            )
        return found[0] if found else None

    def _folder(self, names: list[str], *, create: bool) -> str | None:
        path: tuple[str, ...] = ()
        parent = "root"
        for name in names:
            path = (*path, name)
            known = self.folders.get(path)
            if known is None:
                where = f"looking up folder {'/'.join(path)}"
                entry = self._find(parent, name, True, where)
                if entry is None:
                    if not create:
                        return None
                    entry = self.api.send(
                        "POST",
                        self.files,
                        params={"fields": "id"},
                        json={"name": name, "mimeType": FOLDER_MIME, "parents": [parent]},
                        what=f"creating folder {'/'.join(path)}",
                    ).json()
                known = str(entry["id"])
                self.folders[path] = known
            parent = known
        return parent

    def _file(self, url: str, *, create: bool) -> tuple[str | None, str, dict[str, Any] | None]:
        *folders, name = remote_path(url)
        parent = self._folder(folders, create=create)
        if parent is None:
            return None, name, None
        return parent, name, self._find(parent, name, False, f"looking up {name}")

    def get(self, url: str, dest: Path) -> Moved:
        parent, name, entry = self._file(url, create=False)
        if entry is None:
            place = "its folder does not exist" if parent is None else "no such file"
            raise TransferFailed(f"gdrive: {url}: {place}", kind="Specification", error_code=404)
        mime = str(entry.get("mimeType") or "")
        if mime.startswith("application/vnd.google-apps."):
            raise TransferFailed(
                f"gdrive: {url} is a Google {mime.rsplit('.', 1)[-1]} with no file content to "
                "download (it would need exporting to a file format first)",
                kind="Specification",
            )
        size = entry.get("size")
        md5 = entry.get("md5Checksum")
        return self.api.download(
            f"{self.files}/{urllib.parse.quote(str(entry['id']), safe='')}",
            dest,
            what=f"downloading {name}",
            params={"alt": "media"},
            size=int(size) if isinstance(size, str) and size.isdigit() else None,
            digest=("md5", md5) if isinstance(md5, str) and len(md5) == 32 else None,
        )

    def put(self, src: Path, url: str) -> Moved:
        parent, name, entry = self._file(url, create=True)
        source, size = open_source(src)
        fd = source.fileno()
        try:
            headers = {
                "X-Upload-Content-Type": "application/octet-stream",
                "X-Upload-Content-Length": str(size),
            }
            if entry is None:
                start = self.api.send(
                    "POST",
                    self.uploads,
                    params={"uploadType": "resumable"},
                    headers=headers,
                    json={"name": name, "parents": [parent]},
                    what=f"starting the upload of {name}",
                )
            else:
                file_id = urllib.parse.quote(str(entry["id"]), safe="")
                start = self.api.send(
                    "PATCH",
                    f"{self.uploads}/{file_id}",
                    params={"uploadType": "resumable"},
                    headers=headers,
                    json={},
                    what=f"starting the upload of {name}",
                )
            session = start.headers.get("location", "")
            if _origin(session) != _origin(self.uploads):
                # The token goes to the session URI too: only ever to Drive's own origin.
                raise TransferFailed(
                    f"gdrive: uploading {name}: the session URI is not on {_origin(self.uploads)}"
                )
            result = self._send_chunks(fd, size, session, name)
        finally:
            source.close()
        got = result.get("size")
        if isinstance(got, str) and got.isdigit() and int(got) != size:
            raise TransferFailed(f"gdrive: {url}: Drive holds {got} bytes, the file has {size}")
        return Moved(size, urllib.parse.urlsplit(session).hostname or "")

    def _confirmed(self, session: str, size: int, name: str) -> int | dict[str, Any]:
        """Ask Drive how much of the upload it holds: a byte count, or the finished file."""
        answer = self.api.send(
            "PUT",
            session,
            headers={"Content-Range": f"bytes */{size}", "Content-Length": "0"},
            what=f"asking how much of {name} Drive holds",
            ok=lambda s: s in (200, 201, 308),
        )
        if answer.status_code != 308:
            return dict(answer.json())
        return _held(answer)

    def _send_chunks(self, fd: int, size: int, session: str, name: str) -> dict[str, Any]:
        offset, failures = 0, 0
        while True:
            length = min(CHUNK, size - offset)
            end = offset + length - 1
            try:
                answer = self.api.send(
                    "PUT",
                    session,
                    headers={
                        "Content-Length": str(length),
                        "Content-Range": f"bytes {offset}-{end}/{size}"
                        if length
                        else f"bytes */{size}",
                    },
                    content=functools.partial(file_blocks, fd, offset, length),
                    what=f"uploading {name} bytes {offset}-{end}",
                    ok=lambda s: s in (200, 201, 308),
                    attempts=1,  # resumed below from what Drive confirms
                )
            except TransferFailed as err:
                failures += 1
                # 404: the session expired; 4xx: Drive refused the upload
                self.api.resume_after(err, failures)
                held = self._confirmed(session, size, name)
                if isinstance(held, dict):
                    return held
                offset = held
                continue
            if answer.status_code != 308:
                return dict(answer.json())
            confirmed = _held(answer)
            if confirmed <= offset and length:
                failures += 1  # Drive kept none of the chunk
                if failures >= self.api.backoff.attempts:
                    raise TransferFailed(f"gdrive: uploading {name}: Drive keeps no bytes")
            offset = confirmed


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _held(answer: httpx.Response) -> int:
    """Bytes Drive holds, from a 308's ``Range: bytes=0-N`` (none when absent)."""
    match = re.fullmatch(r"bytes=0-(\d+)", answer.headers.get("range", "").strip())
    return int(match.group(1)) + 1 if match else 0


class GDrivePlugin(CloudPlugin[GDriveClient]):
    """The ``htsec-plugin-gdrive`` executable (HTCondor's multi-file plugin protocol)."""

    methods = ("gdrive",)
    version = "1.0.0"
    service = "gdrive"

    def client(self, api: Api) -> GDriveClient:
        return GDriveClient(api)


def main() -> int:
    """Console script ``htsec-plugin-gdrive``."""
    return GDrivePlugin.main()

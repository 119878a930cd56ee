"""``box://`` transfers through the Box Content API 2.0 (https://developer.box.com/reference/).

``box://first/second/name`` is the file ``name`` in the folder ``first/second`` below the
user's root folder (id ``0``), as in HTCondor's ``box_plugin.py``; ``<handle>+box://...`` uses
the token ``$_CONDOR_CREDS/box_<handle>.use``.

- Paths are resolved folder by folder with "List items in folder"
  (``GET /folders/{id}/items``, marker paging); missing folders are created for uploads
  (``POST /folders``; a 409 ``item_name_in_use`` race takes the folder that won).
- Downloads: "Download file" ``GET /files/{id}/content``, which redirects to a
  pre-authenticated URL; the bytes are checked against the file's ``size`` and ``sha1``.
- Uploads below 20 MB: "Upload file" / "Upload file version" (multipart ``attributes`` then
  ``file`` to ``upload.box.com/api/2.0/files[/{id}]/content``, with ``Content-MD5`` holding the
  SHA-1 as Box documents it). From 20 MB (the smallest size Box accepts for chunked uploads):
  an upload session (``POST /files[/{id}]/upload_sessions``), parts of the session's
  ``part_size`` each sent with ``Content-Range`` and ``Digest: sha=<base64 SHA-1>`` and retried
  on their own, then commit with the whole file's digest (202 + ``Retry-After`` while Box
  still processes parts), or abort on failure. An existing file gets a new version.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from htsec.errors import TransferFailed
from htsec.plugins._cloud import CloudPlugin
from htsec.plugins._rest import Api, Moved, file_blocks
from htsec.plugins._urls import base_url, remote_path
from htsec.plugins.files import open_source

__all__ = ["API_URL", "CHUNKED_MIN", "UPLOAD_URL", "BoxClient", "BoxPlugin", "main"]

API_URL = "https://api.box.com/2.0"
UPLOAD_URL = "https://upload.box.com/api/2.0"
#: https://developer.box.com/guides/uploads/chunked/ : "The Chunked Upload API is only
#: supported for file sizes of 20MB or more."
CHUNKED_MIN = 20_000_000
_FIELDS = "id,type,name,size,sha1"


def _sha1_b64(digest: Any) -> str:
    return base64.b64encode(digest.digest()).decode("ascii")


class BoxClient:
    """Box for one token: folder ids are remembered for the rest of the plugin run."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.base = base_url("HTSEC_TEST_BOX_API_URL", API_URL)
        self.upload_base = base_url("HTSEC_TEST_BOX_UPLOAD_URL", UPLOAD_URL)
        self.folders: dict[tuple[str, ...], str] = {(): "0"}

    # -- paths --------------------------------------------------------------------------
    def _find(self, folder_id: str, name: str, kind: str, where: str) -> dict[str, Any] | None:
        """The item ``name`` of type ``kind`` (file | folder) in the folder, or None."""
        params: dict[str, str | int] = {"fields": _FIELDS, "limit": 1000, "usemarker": "true"}
        for _page in range(10_000):
            body = self.api.send(
                "GET", f"{self.base}/folders/{folder_id}/items", params=params, what=where
            ).json()
            for entry in body.get("entries") or []:
                if entry.get("type") == kind and entry.get("name") == name:
                    return dict(entry)
            marker = body.get("next_marker")
            if not marker:
                return None
            params["marker"] = str(marker)
        return None

    def _folder(self, names: list[str], *, create: bool) -> str | None:
        """The id of the folder ``names`` (below the root), created when asked; else None."""
        path: tuple[str, ...] = ()
        folder_id = "0"
        for name in names:
            path = (*path, name)
            known = self.folders.get(path)
            if known is None:
                where = f"looking up folder {'/'.join(path)}"
                entry = self._find(folder_id, name, "folder", where)
                if entry is None:
                    if not create:
                        return None
                    entry = self._create_folder(folder_id, name, path)
                known = str(entry["id"])
                self.folders[path] = known
            folder_id = known
        return folder_id

    def _create_folder(self, parent: str, name: str, path: tuple[str, ...]) -> dict[str, Any]:
        where = f"creating folder {'/'.join(path)}"
        response = self.api.send(
            "POST",
            f"{self.base}/folders",
            json={"name": name, "parent": {"id": parent}},
            params={"fields": _FIELDS},
            what=where,
            ok=lambda s: s in (201, 409),
        )
        body = response.json()
        if response.status_code == 201:
            return dict(body)
        # 409 item_name_in_use: Box names the item that holds the name (one created meanwhile,
        # or one whose name differs only in case) in context_info.conflicts.
        conflicts = ((body.get("context_info") or {}).get("conflicts") or []) if body else []
        if isinstance(conflicts, dict):
            conflicts = [conflicts]
        for item in conflicts:
            if isinstance(item, dict) and item.get("type") == "folder" and item.get("id"):
                return dict(item)
        entry = self._find(parent, name, "folder", where)
        if entry is None:
            raise TransferFailed(
                f"box: {where}: 409 Conflict, and no folder of that name exists (a file?)",
                kind="Specification",
                error_code=409,
            )
        return entry

    def _file(
        self, url: str, *, create_folders: bool
    ) -> tuple[str | None, str, dict[str, Any] | None]:
        """``(folder id or None, file name, file entry or None)`` of a ``box://`` URL."""
        *folders, name = remote_path(url)
        folder_id = self._folder(folders, create=create_folders)
        if folder_id is None:
            return None, name, None
        return folder_id, name, self._find(folder_id, name, "file", f"looking up {name}")

    # -- transfers ----------------------------------------------------------------------
    def get(self, url: str, dest: Path) -> Moved:
        folder_id, name, entry = self._file(url, create_folders=False)
        if entry is None:
            place = "its folder does not exist" if folder_id is None else "no such file"
            raise TransferFailed(f"box: {url}: {place}", kind="Specification", error_code=404)
        size = entry.get("size")
        sha1 = entry.get("sha1")
        return self.api.download(
            f"{self.base}/files/{entry['id']}/content",
            dest,
            what=f"downloading {name}",
            size=int(size) if isinstance(size, int) else None,
            digest=("sha1", sha1) if isinstance(sha1, str) and len(sha1) == 40 else None,
        )

    def put(self, src: Path, url: str) -> Moved:
        folder_id, name, entry = self._file(url, create_folders=True)
        assert folder_id is not None
        source, size = open_source(src)
        fd = source.fileno()
        try:
            file_id = None if entry is None else str(entry["id"])
            if size < CHUNKED_MIN:
                uploaded = self._put_direct(fd, size, name, folder_id, file_id)
            else:
                uploaded = self._put_session(fd, size, name, folder_id, file_id)
        finally:
            source.close()
        got = uploaded.get("size")
        if isinstance(got, int) and got != size:
            raise TransferFailed(f"box: {url}: Box holds {got} bytes, the file has {size}")
        return Moved(size, self.upload_base.split("/")[2])

    def _put_direct(
        self, fd: int, size: int, name: str, folder_id: str, file_id: str | None
    ) -> dict[str, Any]:
        sha1 = hashlib.sha1(usedforsecurity=False)
        for block in file_blocks(fd, 0, size):
            sha1.update(block)
        if file_id is None:
            url, attributes = (
                f"{self.upload_base}/files/content",
                {
                    "name": name,
                    "parent": {"id": folder_id},
                },
            )
        else:
            url, attributes = f"{self.upload_base}/files/{file_id}/content", {"name": name}

        def body() -> dict[str, Any]:
            return {"file": (name, _Region(fd, size), "application/octet-stream")}

        response = self.api.send(
            "POST",
            url,
            what=f"uploading {name}",
            params={"fields": _FIELDS},
            headers={"Content-MD5": sha1.hexdigest()},
            data={"attributes": json.dumps(attributes)},
            files=body,
            ok=lambda s: s in (200, 201),
        )
        return _first_entry(response.json(), name)

    def _put_session(
        self, fd: int, size: int, name: str, folder_id: str, file_id: str | None
    ) -> dict[str, Any]:
        start: dict[str, Any] = {"file_size": size, "file_name": name}
        if file_id is None:
            start["folder_id"] = folder_id
            url = f"{self.upload_base}/files/upload_sessions"
        else:
            url = f"{self.upload_base}/files/{file_id}/upload_sessions"
        session = self.api.send(
            "POST", url, json=start, what=f"starting an upload session for {name}"
        ).json()
        session_url = f"{self.upload_base}/files/upload_sessions/{session['id']}"
        part_size = int(session["part_size"])
        if part_size <= 0:
            raise TransferFailed(f"box: upload session for {name} has part_size {part_size}")
        try:
            whole = hashlib.sha1(usedforsecurity=False)
            parts: list[Any] = []
            for offset in range(0, size, part_size):
                length = min(part_size, size - offset)
                digest = hashlib.sha1(usedforsecurity=False)
                for block in file_blocks(fd, offset, length):
                    digest.update(block)
                    whole.update(block)
                answer = self.api.send(
                    "PUT",
                    session_url,
                    what=f"uploading {name} bytes {offset}-{offset + length - 1}",
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(length),
                        "Content-Range": f"bytes {offset}-{offset + length - 1}/{size}",
                        "Digest": f"sha={_sha1_b64(digest)}",
                    },
                    content=functools.partial(file_blocks, fd, offset, length),
                ).json()
                parts.append(answer["part"])
            return self._commit(session_url, parts, _sha1_b64(whole), name)
        except BaseException:
            self._abort(session_url)
            raise

    def _commit(self, session_url: str, parts: list[Any], sha: str, name: str) -> dict[str, Any]:
        for _ in range(self.api.backoff.attempts * 4):
            response = self.api.send(
                "POST",
                f"{session_url}/commit",
                json={"parts": parts},
                headers={"Digest": f"sha={sha}"},
                what=f"committing the upload of {name}",
                ok=lambda s: s in (200, 201, 202),
            )
            if response.status_code != 202:  # 202: Box is still processing the parts
                return _first_entry(response.json(), name)
            self.api.sleep(self.api.backoff.delay(0, response))
        raise TransferFailed(f"box: committing the upload of {name}: Box kept answering 202")

    def _abort(self, session_url: str) -> None:
        # A failure is ignored: sessions expire on their own, the first error is the one to report.
        with contextlib.suppress(TransferFailed):
            self.api.send(
                "DELETE",
                session_url,
                what="aborting the upload session",
                ok=lambda s: s in (204, 404),
            )


def _first_entry(body: object, name: str) -> dict[str, Any]:
    entries = body.get("entries") if isinstance(body, dict) else None
    if not entries or not isinstance(entries[0], dict):
        raise TransferFailed(f"box: uploading {name}: the answer lists no file")
    return dict(entries[0])


class _Region:
    """A file-like reader of ``size`` bytes of ``fd`` from its start, for httpx's multipart
    encoder (which reads it in 64 KiB chunks); a new one is made for every try."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.offset = fd, size, 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.offset if n < 0 else min(n, self.size - self.offset)
        block = os.pread(self.fd, n, self.offset) if n > 0 else b""
        self.offset += len(block)
        return block

    def seek(self, offset: int, whence: int = 0) -> int:
        self.offset = offset if whence == 0 else (self.size + offset if whence == 2 else offset)
        return self.offset

    def tell(self) -> int:
        return self.offset


class BoxPlugin(CloudPlugin[BoxClient]):
    """The ``htsec-plugin-box`` executable (HTCondor's multi-file plugin protocol)."""

    methods = ("box",)
    version = "1.0.0"
    service = "box"

    def client(self, api: Api) -> BoxClient:
        return BoxClient(api)


def main() -> int:
    """Console script ``htsec-plugin-box``."""
    return BoxPlugin.main()

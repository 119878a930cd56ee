"""A local stand-in for Microsoft Graph v1.0's OneDrive API
(https://learn.microsoft.com/en-us/graph/api/resources/onedrive).

The real service cannot be reached from here; this implements only the endpoints
``htsec.plugins.onedrive`` uses, as Microsoft's reference pages describe them (cited per
endpoint), on plain HTTP at 127.0.0.1 (``HTSEC_TEST_ONEDRIVE_URL`` = ``<url>/v1.0``).
Downloads redirect to a second server on another port (Graph redirects to a pre-authenticated
``downloadUrl``); upload-session URLs refuse an Authorization header, as the documentation
warns they may.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from tests.plugins.fakes._server import Dropped, Fake, Handler, Item

_ROOT = "/v1.0/me/drive/root"


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    # https://learn.microsoft.com/en-us/graph/errors
    return {"error": {"code": code, "message": message}}


class OneDriveFake(Fake):
    root_id = "ROOT"
    #: Personal OneDrive lists sha1Hash; business drives only quickXorHash.
    sha1 = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: dict[str, dict[str, Any]] = {}

    def env(self) -> dict[str, str]:
        return {"HTSEC_TEST_ONEDRIVE_URL": f"{self.url}/v1.0"}

    def unauthorized(self, h: Handler) -> None:
        h.send_json(401, _error(401, "InvalidAuthenticationToken", "Access token has expired"))

    def drive_item(self, item: Item) -> dict[str, Any]:
        # https://learn.microsoft.com/en-us/graph/api/resources/driveitem
        body: dict[str, Any] = {"id": item.id, "name": item.name, "size": item.size}
        if item.folder:
            body["folder"] = {"childCount": len(self.children(item.id))}
        else:
            hashes = {"quickXorHash": "not-checked"}
            if self.sha1:
                hashes["sha1Hash"] = item.digests.get("sha1", "").upper()
            body["file"] = {"mimeType": "application/octet-stream", "hashes": hashes}
        return body

    def route(self, h: Handler, method: str, path: str, query: dict[str, str]) -> None:
        m = re.fullmatch(r"/upload-session/([^/]+)", path)
        if m:
            # The uploadUrl carries its own authorisation: "If you include the Authorization
            # header when issuing the PUT call, it may result in an HTTP 401 Unauthorized".
            if "Authorization" in h.headers:
                h.discard_body()
                self.unauthorized(h)
                return
            with self.lock:
                self._session(h, method, m.group(1))
            return
        super().route(h, method, path, query)

    def _route(self, h: Handler, method: str, path: str, query: dict[str, str]) -> None:
        # Path-based addressing: /me/drive/root:/path/to/item[:/action]
        # (https://learn.microsoft.com/en-us/graph/onedrive-addressing-driveitems)
        m = re.fullmatch(
            re.escape(_ROOT) + r"(?::/([^:]*))?(?::?/(children|content|createUploadSession))?:?",
            path,
        )
        m_item = re.fullmatch(r"/v1\.0/me/drive/items/([^/]+)/content", path)
        if method == "GET" and m_item:
            # https://learn.microsoft.com/en-us/graph/api/driveitem-get-content (302 to a
            # pre-authenticated download URL)
            if m_item.group(1) not in self.items:
                h.send_json(404, _error(404, "itemNotFound", "The resource could not be found."))
                return
            h.send_empty(302, {"Location": f"{self.content_url}/d/{m_item.group(1)}"})
            return
        if not m:
            h.discard_body()
            h.send_json(400, _error(400, "invalidRequest", f"no route {method} {path}"))
            return
        item_path = unquote(m.group(1) or "")
        action = m.group(2)
        if method == "GET" and action is None:
            # https://learn.microsoft.com/en-us/graph/api/driveitem-get
            item = self.lookup(item_path)
            if item is None:
                h.send_json(404, _error(404, "itemNotFound", "The resource could not be found."))
                return
            h.send_json(200, self.drive_item(item))
            return
        if method == "POST" and action == "children":
            # https://learn.microsoft.com/en-us/graph/api/driveitem-post-children
            parent = self.lookup(item_path)
            body = h.json_body()
            if parent is None or not parent.folder:
                h.send_json(404, _error(404, "itemNotFound", "parent not found"))
                return
            if self.child(parent.id, body["name"]) is not None:
                h.send_json(409, _error(409, "nameAlreadyExists", "Name already exists"))
                return
            item = Item(self.new_id(), body["name"], parent.id, "folder" in body)
            self.items[item.id] = item
            h.send_json(201, self.drive_item(item))
            return
        folder, _, name = item_path.rpartition("/")
        parent = self.lookup(folder)
        if parent is None:
            h.discard_body()
            h.send_json(404, _error(404, "itemNotFound", "parent folder not found"))
            return
        if method == "PUT" and action == "content":
            # https://learn.microsoft.com/en-us/graph/api/driveitem-put-content (replaces)
            blob = self.blob_path()
            blob.touch()
            h.body_to_file(blob)
            item = self._store(parent.id, name, blob)
            h.send_json(201, self.drive_item(item))
            return
        if method == "POST" and action == "createUploadSession":
            # https://learn.microsoft.com/en-us/graph/api/driveitem-createuploadsession
            h.json_body()
            sid = f"S{self.new_id()}"
            blob = self.blob_path()
            blob.touch()
            self.sessions[sid] = {"parent": parent.id, "name": name, "blob": blob, "held": 0}
            h.send_json(
                200,
                {
                    "uploadUrl": f"{self.url}/upload-session/{sid}",
                    "expirationDateTime": "2030-01-01T00:00:00Z",
                    "nextExpectedRanges": ["0-"],
                },
            )
            return
        h.discard_body()
        h.send_json(400, _error(400, "invalidRequest", f"no route {method} {path}"))

    def _store(self, parent: str, name: str, blob: Any) -> Item:
        item = self.child(parent, name)
        if item is None:
            item = Item(self.new_id(), name, parent, False)
        else:
            item.version += 1
        self.set_blob(item, blob)
        self.items[item.id] = item
        return item

    def _session(self, h: Handler, method: str, sid: str) -> None:
        # https://learn.microsoft.com/en-us/graph/api/driveitem-createuploadsession :
        # PUT byte ranges (Content-Range; fragments a multiple of 320 KiB except the last)
        # -> 202 nextExpectedRanges, the last -> 201 driveItem; GET -> the session's status;
        # DELETE -> 204 cancelled
        session = self.sessions.get(sid)
        if session is None:
            h.discard_body()
            h.send_json(404, _error(404, "itemNotFound", "upload session not found"))
            return
        if method == "GET":
            h.send_json(200, {"nextExpectedRanges": [f"{session['held']}-"]})
            return
        if method == "DELETE":
            del self.sessions[sid]
            h.send_empty(204)
            return
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", h.headers.get("Content-Range", ""))
        if method != "PUT" or not m:
            h.discard_body()
            h.send_json(400, _error(400, "invalidRequest", "bad upload request"))
            return
        start, end, size = (int(g) for g in m.groups())
        if start != session["held"]:
            h.discard_body()
            h.send_json(416, _error(416, "invalidRange", "fragment overlaps or leaves a gap"))
            return
        if end + 1 != size and (end - start + 1) % (320 * 1024):
            h.discard_body()
            h.send_json(400, _error(400, "invalidRange", "fragment not a multiple of 320 KiB"))
            return
        if h.cut is not None:
            data = h.rfile.read(min(h.cut, h.length()))
            with session["blob"].open("r+b") as f:
                f.seek(start)
                f.write(data)
            session["held"] = start + len(data)
            raise Dropped
        session["held"] = start + h.body_to_file(session["blob"], start)
        if session["held"] < size:
            h.send_json(202, {"nextExpectedRanges": [f"{session['held']}-"]})
            return
        item = self._store(session["parent"], session["name"], session["blob"])
        del self.sessions[sid]
        h.send_json(201, self.drive_item(item))

"""A local stand-in for the Google Drive API v3
(https://developers.google.com/drive/api/reference/rest/v3).

The real service cannot be reached from here; this implements only the endpoints
``htsec.plugins.gdrive`` uses, as Google's reference and guide pages describe them (cited per
endpoint), on plain HTTP at 127.0.0.1 (``HTSEC_TEST_GDRIVE_URL`` = ``<url>``). The ``q``
parser accepts only the terms the plugin sends and answers 400 to anything else, so a change
in the plugin's queries cannot pass unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.plugins.fakes._server import Dropped, Fake, Handler, Item

FOLDER = "application/vnd.google-apps.folder"
_LITERAL = r"'((?:[^'\\]|\\.)*)'"
_TERMS = [
    (re.compile(rf"name = {_LITERAL}"), "name"),
    (re.compile(rf"{_LITERAL} in parents"), "parent"),
    (re.compile(r"trashed = false"), "trashed"),
    (re.compile(rf"mimeType (=|!=) {_LITERAL}"), "mime"),
]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_and(query: str) -> list[str]:
    """Split ``query`` on `` and `` outside string literals."""
    terms, current, quoted, i = [], "", False, 0
    while i < len(query):
        c = query[i]
        if c == "\\" and quoted:
            current += query[i : i + 2]
            i += 2
            continue
        if c == "'":
            quoted = not quoted
        if not quoted and query.startswith(" and ", i):
            terms.append(current)
            current, i = "", i + 5
            continue
        current += c
        i += 1
    return [*terms, current]


def _error(status: int, reason: str, message: str) -> dict[str, Any]:
    # https://developers.google.com/drive/api/guides/handle-errors
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }
    }


class GDriveFake(Fake):
    root_id = "root"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mimes: dict[str, str] = {}
        self.uploads: dict[str, dict[str, Any]] = {}

    def env(self) -> dict[str, str]:
        return {"HTSEC_TEST_GDRIVE_URL": self.url}

    def unauthorized(self, h: Handler) -> None:
        h.send_json(401, _error(401, "authError", "Invalid Credentials"))

    def resource(self, item: Item) -> dict[str, Any]:
        # https://developers.google.com/drive/api/reference/rest/v3/files (size is an int64
        # string; md5Checksum only for files with binary content)
        body: dict[str, Any] = {
            "kind": "drive#file",
            "id": item.id,
            "name": item.name,
            "mimeType": FOLDER if item.folder else self.mimes.get(item.id, "text/plain"),
            "parents": [item.parent],
        }
        if not item.folder and not body["mimeType"].startswith("application/vnd.google-apps"):
            body |= {"size": str(item.size), "md5Checksum": item.digests.get("md5", "")}
        return body

    def _route(self, h: Handler, method: str, path: str, query: dict[str, str]) -> None:
        if method == "GET" and path == "/drive/v3/files":
            self._list(h, query)
            return
        if method == "POST" and path == "/drive/v3/files":
            # https://developers.google.com/drive/api/reference/rest/v3/files/create (metadata
            # only; a folder is a file of the folder mime type)
            body = h.json_body()
            (parent,) = body.get("parents") or ["root"]
            item = Item(self.new_id(), body["name"], parent, body.get("mimeType") == FOLDER)
            self.items[item.id] = item
            h.send_json(200, self.resource(item))
            return
        m = re.fullmatch(r"/drive/v3/files/([^/]+)", path)
        if method == "GET" and m and query.get("alt") == "media":
            # https://developers.google.com/drive/api/guides/manage-downloads (alt=media;
            # Range requests; 403 fileNotDownloadable for Google Docs)
            item = self.items.get(m.group(1))
            if item is None or item.blob is None:
                h.send_json(404, _error(404, "notFound", f"File not found: {m.group(1)}"))
                return
            h.send_file(item.blob, item.size)
            return
        m = re.fullmatch(r"/upload/drive/v3/files(?:/([^/]+))?", path)
        if m and query.get("uploadType") == "resumable":
            if method in ("POST", "PATCH") and "upload_id" not in query:
                self._start(h, method, m.group(1))
                return
            if method == "PUT" and query.get("upload_id") in self.uploads:
                self._chunk(h, query["upload_id"])
                return
            h.discard_body()
            h.send_json(404, _error(404, "notFound", "upload session not found"))
            return
        h.discard_body()
        h.send_json(404, _error(404, "notFound", f"no route {method} {path}"))

    def _list(self, h: Handler, query: dict[str, str]) -> None:
        # https://developers.google.com/drive/api/reference/rest/v3/files/list and
        # https://developers.google.com/drive/api/guides/search-files (q terms; ' and \ in
        # literals escaped with \; pageSize, pageToken -> nextPageToken)
        wanted: dict[str, Any] = {}
        for term in _split_and(query.get("q", "")):
            for pattern, key in _TERMS:
                match = pattern.fullmatch(term.strip())
                if match:
                    wanted[key] = [
                        _unescape(g) if g not in ("=", "!=") else g for g in match.groups()
                    ]
                    break
            else:
                h.send_json(400, _error(400, "invalid", f"Invalid Value: {term!r}"))
                return
        found = [
            i
            for i in sorted(self.items.values(), key=lambda i: i.id)
            if i.id != self.root_id
            and ("name" not in wanted or i.name == wanted["name"][0])
            and ("parent" not in wanted or i.parent == wanted["parent"][0])
            and (
                "mime" not in wanted
                or (self.resource(i)["mimeType"] == wanted["mime"][1]) == (wanted["mime"][0] == "=")
            )
        ]
        size = int(query.get("pageSize", "100"))
        start = int(query.get("pageToken") or 0)
        body: dict[str, Any] = {"files": [self.resource(i) for i in found[start : start + size]]}
        if start + size < len(found):
            body["nextPageToken"] = str(start + size)
        h.send_json(200, body)

    def _start(self, h: Handler, method: str, file_id: str | None) -> None:
        # https://developers.google.com/drive/api/guides/manage-uploads#resumable : the
        # session URI comes back in Location; X-Upload-Content-Length announces the size
        body = h.json_body() or {}
        if file_id is not None and file_id not in self.items:
            h.send_json(404, _error(404, "notFound", f"File not found: {file_id}"))
            return
        uid = f"U{self.new_id()}"
        blob = self.blob_path()
        blob.touch()
        self.uploads[uid] = {
            "file_id": file_id,
            "name": body.get("name"),
            "parent": (body.get("parents") or ["root"])[0],
            "size": int(h.headers["X-Upload-Content-Length"]),
            "blob": blob,
            "held": 0,
        }
        target = "/upload/drive/v3/files" + (f"/{file_id}" if file_id else "")
        location = f"{self.url}{target}?uploadType=resumable&upload_id={uid}"
        h.send_empty(200, {"Location": location})

    def _chunk(self, h: Handler, uid: str) -> None:
        # Chunks: Content-Range bytes a-b/total, a multiple of 256 KiB except the last;
        # 308 Resume Incomplete with Range: bytes=0-N; "bytes */total" asks for the status
        upload = self.uploads[uid]
        size, held = upload["size"], upload["held"]
        header = h.headers.get("Content-Range", "")
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", header)
        if header == f"bytes */{size}":
            h.discard_body()
        elif not m or int(m.group(3)) != size or int(m.group(1)) > held:
            h.discard_body()
            h.send_json(400, _error(400, "badContent", f"bad Content-Range {header!r}"))
            return
        else:
            start, end = int(m.group(1)), int(m.group(2))
            if end + 1 != size and (end - start + 1) % (256 * 1024):
                h.discard_body()
                h.send_json(400, _error(400, "badContent", "chunk not a multiple of 256 KiB"))
                return
            if h.cut is not None:  # a connection lost mid-chunk: keep what arrived
                upload["held"] = max(held, start + self._partial(h, upload["blob"], start))
                raise Dropped
            got = h.body_to_file(upload["blob"], start)
            upload["held"] = max(held, start + got)
        if upload["held"] < size:
            headers = {"Range": f"bytes=0-{upload['held'] - 1}"} if upload["held"] else {}
            h.send_empty(308, headers)
            return
        if upload.get("done") is None:
            if upload["file_id"] is None:
                item = Item(self.new_id(), upload["name"], upload["parent"], False)
            else:
                item = self.items[upload["file_id"]]
                item.version += 1
            self.set_blob(item, upload["blob"])
            self.items[item.id] = item
            upload["done"] = item.id
        h.send_json(200, self.resource(self.items[upload["done"]]))

    @staticmethod
    def _partial(h: Handler, blob: Path, start: int) -> int:
        data = h.rfile.read(min(h.cut or 0, h.length()))
        with blob.open("r+b") as f:
            f.seek(start)
            f.write(data)
        return len(data)

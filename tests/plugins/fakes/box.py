"""A local stand-in for the Box Content API 2.0 (https://developer.box.com/reference/).

The real service cannot be reached from here; this implements only the endpoints
``htsec.plugins.box`` uses, as Box's reference pages describe them (cited per endpoint), on
plain HTTP at 127.0.0.1 (``HTSEC_TEST_BOX_API_URL`` = ``<url>/2.0``,
``HTSEC_TEST_BOX_UPLOAD_URL`` = ``<url>/api/2.0``). Downloads redirect to a second server on
another port, as Box redirects to ``dl.boxcloud.com``.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import re
from typing import Any

from tests.plugins.fakes._server import Fake, Handler, Item, file_digests

_ERROR = {"type": "error", "status": 0, "code": "", "message": ""}


def _error(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {**_ERROR, "status": status, "code": code, "message": message, **extra}


class BoxFake(Fake):
    root_id = "0"
    #: Box chooses the part size; 8 MiB is what it documents for files under 500 MB.
    part_size = 8 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.commit_pending = 0  # answer 202 + Retry-After this many times first

    def env(self) -> dict[str, str]:
        return {
            "HTSEC_TEST_BOX_API_URL": f"{self.url}/2.0",
            "HTSEC_TEST_BOX_UPLOAD_URL": f"{self.url}/api/2.0",
        }

    def unauthorized(self, h: Handler) -> None:
        # https://developer.box.com/guides/api-calls/permissions-and-errors/common-errors/
        h.send_json(401, _error(401, "unauthorized", "Unauthorized"))

    def entry(self, item: Item) -> dict[str, Any]:
        if item.folder:
            return {"type": "folder", "id": item.id, "name": item.name}
        return {
            "type": "file",
            "id": item.id,
            "name": item.name,
            "size": item.size,
            "sha1": item.digests.get("sha1", ""),
        }

    def _route(self, h: Handler, method: str, path: str, query: dict[str, str]) -> None:
        m = re.fullmatch(r"/2\.0/folders/([^/]+)/items", path)
        if method == "GET" and m:
            # https://developer.box.com/reference/get-folders-id-items/ (marker paging:
            # usemarker=true, marker, limit; the answer's next_marker)
            if m.group(1) not in self.items:
                h.send_json(404, _error(404, "not_found", "Not Found"))
                return
            entries = sorted(self.children(m.group(1)), key=lambda i: i.id)
            limit = int(query.get("limit", "100"))
            start = int(query.get("marker") or 0)
            page = entries[start : start + limit]
            following = start + limit if start + limit < len(entries) else None
            h.send_json(
                200,
                {
                    "entries": [self.entry(i) for i in page],
                    "limit": limit,
                    "next_marker": None if following is None else str(following),
                },
            )
            return
        if method == "POST" and path == "/2.0/folders":
            # https://developer.box.com/reference/post-folders/ (409 item_name_in_use with
            # context_info.conflicts)
            body = h.json_body()
            parent = body["parent"]["id"]
            if parent not in self.items:
                h.send_json(404, _error(404, "not_found", "Not Found"))
                return
            same = self.child(parent, body["name"])
            if same is not None:
                h.send_json(
                    409,
                    _error(
                        409,
                        "item_name_in_use",
                        "Item with the same name already exists",
                        context_info={"conflicts": [self.entry(same)]},
                    ),
                )
                return
            item = Item(self.new_id(), body["name"], parent, True)
            self.items[item.id] = item
            h.send_json(201, self.entry(item))
            return
        m = re.fullmatch(r"/2\.0/files/([^/]+)/content", path)
        if method == "GET" and m:
            # https://developer.box.com/reference/get-files-id-content/ (302 to a download URL)
            if m.group(1) not in self.items:
                h.send_json(404, _error(404, "not_found", "Not Found"))
                return
            h.send_empty(302, {"Location": f"{self.content_url}/d/{m.group(1)}"})
            return
        m = re.fullmatch(r"/api/2\.0/files(?:/([^/]+))?/content", path)
        if method == "POST" and m:
            self._upload(h, m.group(1))
            return
        m = re.fullmatch(r"/api/2\.0/files(?:/([^/]+))?/upload_sessions", path)
        if method == "POST" and m:
            self._start_session(h, m.group(1))
            return
        m = re.fullmatch(r"/api/2\.0/files/upload_sessions/([^/]+)(/commit)?", path)
        if m:
            self._session(h, method, m.group(1), bool(m.group(2)))
            return
        h.discard_body()
        h.send_json(404, _error(404, "not_found", f"no route {method} {path}"))

    def _upload(self, h: Handler, file_id: str | None) -> None:
        # https://developer.box.com/reference/post-files-content/ and
        # https://developer.box.com/reference/post-files-id-content/ : multipart/form-data,
        # "attributes" (JSON) before "file"; content-md5 is the file's SHA-1.
        raw = h.body()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + h.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
        )
        parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
        names = [p.get_param("name", header="content-disposition") for p in message.iter_parts()]
        if names != ["attributes", "file"]:
            h.send_json(400, _error(400, "bad_request", f"parts {names}"))
            return
        attributes = json.loads(parts["attributes"].get_content())
        data = parts["file"].get_payload(decode=True)
        if h.headers.get("content-md5") not in (None, hashlib.sha1(data).hexdigest()):
            h.send_json(400, _error(400, "bad_digest", "The specified content-md5 did not match"))
            return
        if file_id is None:
            parent = attributes["parent"]["id"]
            if self.child(parent, attributes["name"]) is not None:
                h.send_json(409, _error(409, "item_name_in_use", "Item exists"))
                return
            item = Item(self.new_id(), attributes["name"], parent, False)
        else:
            item = self.items[file_id]
            item.version += 1
        blob = self.blob_path()
        blob.write_bytes(data)
        self.set_blob(item, blob)
        self.items[item.id] = item
        h.send_json(201, {"total_count": 1, "entries": [self.entry(item)]})

    def _start_session(self, h: Handler, file_id: str | None) -> None:
        # https://developer.box.com/reference/post-files-upload-sessions/ and
        # https://developer.box.com/reference/post-files-id-upload-sessions/
        body = h.json_body()
        size = int(body["file_size"])
        if size < 20_000_000:
            h.send_json(400, _error(400, "file_size_too_small", "use direct upload"))
            return
        sid = f"S{self.new_id()}"
        blob = self.blob_path()
        blob.touch()
        self.sessions[sid] = {
            "file_id": file_id,
            "folder_id": body.get("folder_id"),
            "name": body.get("file_name"),
            "size": size,
            "blob": blob,
            "parts": {},
        }
        base = f"{self.url}/api/2.0/files/upload_sessions/{sid}"
        h.send_json(
            201,
            {
                "type": "upload_session",
                "id": sid,
                "part_size": self.part_size,
                "total_parts": -(-size // self.part_size),
                "num_parts_processed": 0,
                "session_endpoints": {
                    "upload_part": base,
                    "commit": f"{base}/commit",
                    "abort": base,
                    "list_parts": f"{base}/parts",
                    "status": base,
                },
            },
        )

    def _session(self, h: Handler, method: str, sid: str, commit: bool) -> None:
        session = self.sessions.get(sid)
        if session is None:
            h.discard_body()
            h.send_json(404, _error(404, "not_found", "session not found"))
            return
        if method == "DELETE" and not commit:
            # https://developer.box.com/reference/delete-files-upload-sessions-id/
            del self.sessions[sid]
            h.send_empty(204)
            return
        if method == "PUT" and not commit:
            # https://developer.box.com/reference/put-files-upload-sessions-id/ : Content-Range
            # and Digest: sha=<base64 SHA-1 of the part>; parts of part_size (the last shorter)
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", h.headers.get("Content-Range", ""))
            if not m or int(m.group(3)) != session["size"]:
                h.discard_body()
                h.send_json(416, _error(416, "range_not_satisfiable", "bad Content-Range"))
                return
            start, end = int(m.group(1)), int(m.group(2))
            if start % self.part_size or (
                end - start + 1 != self.part_size and end != session["size"] - 1
            ):
                h.discard_body()
                h.send_json(416, _error(416, "range_not_satisfiable", "not a part boundary"))
                return
            got = h.body_to_file(session["blob"], start)
            with session["blob"].open("rb") as f:
                f.seek(start)
                digest = hashlib.sha1(f.read(got))
            sent = h.headers.get("Digest", "")
            if (
                got != end - start + 1
                or sent != "sha=" + base64.b64encode(digest.digest()).decode()
            ):
                h.send_json(412, _error(412, "precondition_failed", "digest does not match"))
                return
            part = {
                "part_id": f"{start:08X}",
                "offset": start,
                "size": got,
                "sha1": digest.hexdigest(),
            }
            session["parts"][start] = part
            h.send_json(200, {"part": part})
            return
        if method == "POST" and commit:
            # https://developer.box.com/reference/post-files-upload-sessions-id-commit/ :
            # Digest of the whole file; 202 + Retry-After while parts are processed
            body = h.json_body()
            if self.commit_pending > 0:
                self.commit_pending -= 1
                h.send_empty(202, {"Retry-After": "1"})
                return
            whole = file_digests(session["blob"])["sha1"]
            if h.headers.get("Digest") != "sha=" + base64.b64encode(whole.digest()).decode():
                h.send_json(422, _error(422, "bad_digest", "file digest does not match"))
                return
            if [p["offset"] for p in body["parts"]] != sorted(session["parts"]):
                h.send_json(400, _error(400, "bad_request", "parts do not match"))
                return
            if session["file_id"] is None:
                item = Item(self.new_id(), session["name"], session["folder_id"], False)
            else:
                item = self.items[session["file_id"]]
                item.version += 1
            self.set_blob(item, session["blob"])
            self.items[item.id] = item
            del self.sessions[sid]
            h.send_json(201, {"total_count": 1, "entries": [self.entry(item)]})
            return
        h.discard_body()
        h.send_json(405, _error(405, "method_not_allowed", method))

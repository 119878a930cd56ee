"""A plugin over local files, for testing the protocol without a network (``copy://``).

``copy:///abs/src`` is downloaded from ``/abs/src``; an upload to ``copy:///abs/dst`` writes
there. The query string steers it: ``fail=<kind>`` raises TransferFailed of that kind,
``crash=1`` raises an unexpected exception, ``sleep=<s>`` waits mid-transfer (after the first
chunk), ``retry=1`` records a failed attempt before succeeding. ``<cred>+copy://`` reads the
token (the ``cred`` form) and records its length in DeveloperData. Run as
``python -m tests.plugins.copyplugin``.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

from htsec.errors import TransferFailed
from htsec.plugins.files import Sink, open_source
from htsec.plugins.protocol import Plugin, Transfer

CHUNK = 64 * 1024


class CopyPlugin(Plugin):
    methods = ("copy",)
    version = "test-1"
    token_form = "cred"

    def _steer(self, url: str, transfer: Transfer) -> str:
        token = self.token(url)
        if token is not None:
            transfer.developer["TokenLength"] = len(token)
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        transfer.host = "localhost"
        if "retry" in query:
            transfer.attempt_failed(TransferFailed("first try failed", kind="Contact"))
        if "fail" in query:
            raise TransferFailed(f"asked to fail ({query['fail']})", kind=query["fail"])
        if "crash" in query:
            raise ZeroDivisionError("boom")
        self._sleep = float(query.get("sleep", 0))
        return parts.path

    def get(self, url: str, path: Path, transfer: Transfer) -> None:
        src = self._steer(url, transfer)
        with open(src, "rb") as f, Sink(path) as sink:
            first = True
            while chunk := f.read(CHUNK):
                sink.write(chunk)
                if first and self._sleep:
                    time.sleep(self._sleep)
                first = False
            transfer.file_bytes = transfer.total_bytes = sink.size
            sink.commit()

    def put(self, path: Path, url: str, transfer: Transfer) -> None:
        dst = self._steer(url, transfer)
        f, size = open_source(path)
        with f, open(dst, "wb") as out:
            while chunk := f.read(CHUNK):
                out.write(chunk)
        transfer.file_bytes = transfer.total_bytes = size


main = CopyPlugin.main

if __name__ == "__main__":
    raise SystemExit(main())

"""The glue between HTCondor's plugin protocol (:mod:`htsec.plugins.protocol`) and the cloud
clients (:mod:`htsec.plugins.box`, ``gdrive``, ``onedrive``).

One client per token file (``box.use``, ``box_<handle>.use`` ...) lives for the whole run, so
folder ids found for one file serve the next; every request reads its token again
(:meth:`Plugin.token`). Each retried attempt is recorded for the result ad's
``TransferErrorData``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from htsec.errors import TransferFailed
from htsec.plugins._rest import Api, Moved
from htsec.plugins.protocol import Plugin, Transfer
from htsec.plugins.tokens import token_name

__all__ = ["CloudPlugin"]


class _Client(Protocol):
    api: Api

    def get(self, url: str, dest: Path) -> Moved: ...

    def put(self, src: Path, url: str) -> Moved: ...


C = TypeVar("C", bound=_Client)


class CloudPlugin(Plugin, Generic[C]):
    """A plugin for one cloud service: subclasses set ``methods``, ``version`` and
    :meth:`client` (a new client around an :class:`Api`)."""

    service: ClassVar[str] = ""

    def __init__(self) -> None:
        self._clients: dict[str, C] = {}

    def client(self, api: Api) -> C:
        raise NotImplementedError

    def _for(self, url: str, transfer: Transfer) -> C:
        name = token_name(url, "service") or self.service
        found = self._clients.get(name)
        if found is None:

            def token(url: str = url) -> str:
                value = self.token(url)
                if not value:
                    raise TransferFailed(f"no token for {url}", kind="Authorization")
                return value

            found = self._clients[name] = self.client(Api(self.service, token))
        found.api.on_retry = transfer.attempt_failed
        return found

    def _record(self, transfer: Transfer, moved: Moved, began: float) -> None:
        transfer.file_bytes = transfer.total_bytes = moved.bytes
        transfer.host = moved.host
        transfer.connection_time = time.monotonic() - began

    def get(self, url: str, path: Path, transfer: Transfer) -> None:
        began = time.monotonic()
        self._record(transfer, self._for(url, transfer).get(url, path), began)

    def put(self, path: Path, url: str, transfer: Transfer) -> None:
        began = time.monotonic()
        self._record(transfer, self._for(url, transfer).put(path, url), began)

    def close(self) -> None:
        for client in self._clients.values():
            client.api.close()

"""Monitoring hooks called for every switched host: Icinga2 downtimes and a generic webhook.

Icinga2 (REST API, ``/v1/actions/schedule-downtime`` and ``/v1/actions/remove-downtime``): when
a host's regular startd goes off (lent, or draining towards flocking) its process check would
alarm, so the shepherd schedules a downtime on that service; when the host comes back, it removes
the downtimes it made (author ``htsec-shepherd``). The webhook gets one JSON object per action.
Hooks run once every switch of the cycle is done; a hook that fails is logged and not called
again that cycle (its notifications for the other hosts of that cycle are lost); it never
holds a switch back.
Secrets (the Icinga password, the webhook's bearer token) are read from 0600 files at each use
and never logged.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from htsec._fs import read_private
from htsec.flock.config import IcingaConfig, WebhookConfig
from htsec.flock.policy import Action, Host, Kind, Mode

__all__ = ["AUTHOR", "Hook", "IcingaHook", "WebhookHook", "regular_goes_off"]

log = logging.getLogger("htsec.flock")

AUTHOR = "htsec-shepherd"
_TIMEOUT = 10.0


class Hook(Protocol):
    def notify(self, action: Action, host: Host) -> None: ...


def regular_goes_off(action: Action, host: Host) -> bool | None:
    """True: the regular startd stops (downtime); False: it is back (remove); None: neither."""
    if action.kind is Kind.LEND or (action.kind is Kind.DRAIN and host.mode is Mode.REGULAR):
        return True
    if action.kind in (Kind.RECLAIM, Kind.CANCEL, Kind.STOP):
        return False
    if action.kind is Kind.FINISH:
        return host.target is not Mode.REGULAR
    return None


def _secret(path: Path) -> str:
    return read_private(path).decode().strip()


class IcingaHook:
    def __init__(self, cfg: IcingaConfig, *, duration: float = 7 * 86400) -> None:
        self.cfg = cfg
        self.duration = duration

    def _post(self, action: str, body: dict[str, Any]) -> None:
        verify: bool | str = str(self.cfg.ca_file) if self.cfg.ca_file else True
        with httpx.Client(timeout=_TIMEOUT, verify=verify) as c:
            r = c.post(
                f"{self.cfg.url.rstrip('/')}/v1/actions/{action}",
                json=body,
                headers={"Accept": "application/json"},
                auth=(self.cfg.user, _secret(self.cfg.password_file)),
            )
        if r.status_code != 200:
            raise RuntimeError(f"Icinga2 {action}: HTTP {r.status_code}")

    def notify(self, action: Action, host: Host) -> None:
        off = regular_goes_off(action, host)
        filt = f'host.name=="{_quote(host.name)}" && service.name=="{_quote(self.cfg.service)}"'
        if off is True:
            now = time.time()
            self._post(
                "schedule-downtime",
                {
                    "type": "Service",
                    "filter": filt,
                    "start_time": int(now),
                    "end_time": int(now + self.duration),
                    "fixed": True,
                    "author": AUTHOR,
                    "comment": f"htsec shepherd: {action.kind.value}: {action.reason}",
                },
            )
        elif off is False:
            self._post(
                "remove-downtime",
                {"type": "Service", "filter": filt, "author": AUTHOR},
            )


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


class WebhookHook:
    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg

    def notify(self, action: Action, host: Host) -> None:
        headers = {"Content-Type": "application/json"}
        if self.cfg.token_file is not None:
            headers["Authorization"] = f"Bearer {_secret(self.cfg.token_file)}"
        body = {
            "source": AUTHOR,
            "host": host.name,
            "action": action.kind.value,
            "from": host.mode.value,
            "reason": action.reason,
            "at": time.time(),
        }
        with httpx.Client(timeout=_TIMEOUT) as c:
            r = c.post(self.cfg.url, json=body, headers=headers)
        if r.status_code >= 300:
            raise RuntimeError(f"webhook: HTTP {r.status_code}")

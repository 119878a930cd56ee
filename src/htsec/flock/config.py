"""The shepherd's configuration: one TOML file (``htsec shepherd run --config``).

Example (every key optional; the defaults are seed 001's)::

    driver = "htcondor"                  # or "local" (htsec's own execution point)
    state_dir = "/var/lib/htsec/shepherd"
    override = "/etc/htsec/flock.off"    # root-owned directory; never under /tmp
    metrics_file = "/var/lib/prometheus/node-exporter/htsec_shepherd.prom"

    [policy]
    interval = 300        # seconds between cycles (at most 86400)
    lend_below = 600      # idle local jobs below this: lend hosts to flocking
    reclaim_above = 1200  # above this: take them back (between the two: hold)
    reserve = 0.25        # this fraction of hosts never flocks
    step = 10             # hosts that start a switch per cycle, at most
    min_dwell = 600       # seconds a host stays in a mode before it is switched back

    [htcondor]
    pool = "cm.example.org"          # the collector; default: HTCondor's COLLECTOR_HOST
    regular = "STARTD"               # DAEMON_LIST names of the two startds on each host
    flocking = "STARTD_FLOCK"

    [icinga]                                       # urls: https (http only to this host)
    url = "https://icinga.example.org:5665"
    user = "shepherd"
    password_file = "/etc/htsec/icinga.password"   # 0600, read at each use, never logged
    service = "condor_startd"
    ca_file = "/etc/htsec/icinga-ca.pem"

    [webhook]
    url = "https://hooks.example.org/flock"
    token_file = "/etc/htsec/webhook.token"        # optional bearer token, 0600
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from htsec.errors import ConfigError
from htsec.flock.override import DEFAULT_OVERRIDE, validate_override_path
from htsec.flock.policy import PolicyConfig

__all__ = ["CondorConfig", "IcingaConfig", "ShepherdConfig", "WebhookConfig", "load_config"]


@dataclass(frozen=True, slots=True)
class CondorConfig:
    pool: str | None = None
    regular: str = "STARTD"
    flocking: str = "STARTD_FLOCK"


@dataclass(frozen=True, slots=True)
class IcingaConfig:
    url: str
    user: str
    password_file: Path
    service: str = "condor_startd"
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    token_file: Path | None = None


@dataclass(frozen=True, slots=True)
class ShepherdConfig:
    driver: str = "htcondor"
    state_dir: Path = Path("/var/lib/htsec/shepherd")
    override: Path = DEFAULT_OVERRIDE
    metrics_file: Path | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    htcondor: CondorConfig = field(default_factory=CondorConfig)
    icinga: IcingaConfig | None = None
    webhook: WebhookConfig | None = None


_TOP = {
    "driver",
    "state_dir",
    "override",
    "metrics_file",
    "policy",
    "htcondor",
    "icinga",
    "webhook",
}


def _table(raw: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    v = raw.get(key, {})
    if not isinstance(v, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return v


_INTS = {"lend_below", "reclaim_above", "step"}
_DAEMON = re.compile(r"^[A-Za-z0-9_]+$")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _text(v: Any, where: Path, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}: {key} must be a non-empty string, not {v!r}")
    return v


def _strings(tbl: dict[str, Any], where: Path, section: str) -> dict[str, str]:
    return {k: _text(v, where, f"[{section}] {k}") for k, v in tbl.items()}


def _secure_url(url: str, where: Path, section: str) -> None:
    """A secret (Icinga password, webhook token) goes only over https, or http to this host."""
    u = urlsplit(url)
    if u.scheme == "https" or (u.scheme == "http" and u.hostname in _LOOPBACK):
        return
    raise ConfigError(
        f"{where}: [{section}] url must be https:// (http only to this host): {u.scheme}://..."
    )


def _build(cls: Any, values: dict[str, Any], where: Path, section: str) -> Any:
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: [{section}]: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: [{section}]: {exc}") from None


def load_config(path: Path | None) -> ShepherdConfig:
    """Read and check the file (None: every default). A bad file is a ConfigError, named."""
    if path is None:
        return ShepherdConfig()
    where = path
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read shepherd config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"shepherd config {path} is not valid TOML: {exc}") from None
    unknown = set(raw) - _TOP
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_TOP)}")
    driver = raw.get("driver", "htcondor")
    if driver not in ("htcondor", "local"):
        raise ConfigError(f'{path}: driver must be "htcondor" or "local", not {driver!r}')
    pol = _table(raw, "policy", where)
    for k, v in pol.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{path}: [policy] {k} must be a number")
        if k in _INTS and not isinstance(v, int):
            raise ConfigError(f"{path}: [policy] {k} must be a whole number, not {v!r}")
    policy = _build(PolicyConfig, pol, where, "policy")
    cd = _strings(_table(raw, "htcondor", where), where, "htcondor")
    for k in ("regular", "flocking"):
        if k in cd and not _DAEMON.match(cd[k]):
            raise ConfigError(f"{path}: [htcondor] {k} must be a DAEMON_LIST name (A-Z 0-9 _)")
    condor = _build(CondorConfig, cd, where, "htcondor")
    icinga = None
    if ic := _strings(_table(raw, "icinga", where), where, "icinga"):
        if "url" in ic:
            _secure_url(ic["url"], where, "icinga")
        paths: dict[str, Path] = {k: Path(ic[k]) for k in ("password_file", "ca_file") if k in ic}
        icinga = _build(IcingaConfig, {**ic, **paths}, where, "icinga")
    webhook = None
    if wh := _strings(_table(raw, "webhook", where), where, "webhook"):
        if "url" in wh:
            _secure_url(wh["url"], where, "webhook")
        paths = {k: Path(wh[k]) for k in ("token_file",) if k in wh}
        webhook = _build(WebhookConfig, {**wh, **paths}, where, "webhook")
    top = {k: _text(raw[k], path, k) for k in ("state_dir", "override", "metrics_file") if k in raw}
    override = validate_override_path(Path(top.get("override", str(DEFAULT_OVERRIDE))))
    metrics = top.get("metrics_file")
    return ShepherdConfig(
        driver=driver,
        state_dir=Path(top.get("state_dir", "/var/lib/htsec/shepherd")),
        override=override,
        metrics_file=Path(metrics) if metrics else None,
        policy=policy,
        htcondor=condor,
        icinga=icinga,
        webhook=webhook,
    )

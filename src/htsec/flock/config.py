"""The shepherd's configuration: one TOML file (``htsec shepherd run --config``).

Example (every key optional; the defaults are seed 001's)::

    driver = "htcondor"                  # or "local" (htsec's own execution point)
    state_dir = "/var/lib/htsec/shepherd"
    override = "/etc/htsec/flock.off"    # root-owned directory; never under /tmp
    metrics_file = "/var/lib/prometheus/node-exporter/htsec_shepherd.prom"

    [policy]
    interval = 300        # seconds between cycles
    lend_below = 600      # idle local jobs below this: lend hosts to flocking
    reclaim_above = 1200  # above this: take them back (between the two: hold)
    reserve = 0.25        # this fraction of hosts never flocks
    step = 10             # hosts that start a switch per cycle, at most
    min_dwell = 600       # seconds a host stays in a mode before it is switched back

    [htcondor]
    pool = "cm.example.org"          # the collector; default: HTCondor's COLLECTOR_HOST
    regular = "STARTD"               # DAEMON_LIST names of the two startds on each host
    flocking = "STARTD_FLOCK"

    [icinga]
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

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    policy = _build(PolicyConfig, pol, where, "policy")
    condor = _build(CondorConfig, _table(raw, "htcondor", where), where, "htcondor")
    icinga = None
    if ic := _table(raw, "icinga", where):
        ic = dict(ic)
        for k in ("password_file", "ca_file"):
            if k in ic:
                ic[k] = Path(ic[k])
        icinga = _build(IcingaConfig, ic, where, "icinga")
    webhook = None
    if wh := _table(raw, "webhook", where):
        wh = dict(wh)
        if "token_file" in wh:
            wh["token_file"] = Path(wh["token_file"])
        webhook = _build(WebhookConfig, wh, where, "webhook")
    override = validate_override_path(Path(raw.get("override", str(DEFAULT_OVERRIDE))))
    metrics = raw.get("metrics_file")
    return ShepherdConfig(
        driver=driver,
        state_dir=Path(raw.get("state_dir", "/var/lib/htsec/shepherd")),
        override=override,
        metrics_file=Path(metrics) if metrics else None,
        policy=policy,
        htcondor=condor,
        icinga=icinga,
        webhook=webhook,
    )

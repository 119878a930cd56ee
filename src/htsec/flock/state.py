"""The shepherd's own state: a JSON file (0600, replaced atomically) in its state directory.

It holds when each host entered its mode (the policy's ``since``), the actions of the cycle in
progress (written before the first command, removed one by one when done: after a crash the next
cycle finds them and reports the cycle interrupted; the hosts they left half-switched show up as
broken and go back to regular), the last actions and the last cycle's summary for ``status``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htsec._fs import ensure_private_dir, write_atomic
from htsec.errors import ConfigError

__all__ = ["State", "load_state", "save_state"]

_LAST = 50


@dataclass
class State:
    since: dict[str, float] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    last_actions: list[dict[str, Any]] = field(default_factory=list)
    last_cycle: dict[str, Any] = field(default_factory=dict)

    def record(self, entry: dict[str, Any]) -> None:
        self.last_actions.append(entry)
        del self.last_actions[:-_LAST]


def _path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def load_state(state_dir: Path) -> State:
    p = _path(state_dir)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        return State()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"shepherd state {p} cannot be read ({exc}); move it aside to start afresh"
        ) from None
    if not isinstance(raw, dict) or (why := _misshapen(raw)):
        why = "not a JSON object" if not isinstance(raw, dict) else why
        raise ConfigError(f"shepherd state {p}: {why}; move it aside to start afresh")
    return State(
        since={k: float(v) for k, v in raw.get("since", {}).items()},
        modes=dict(raw.get("modes", {})),
        pending=list(raw.get("pending", [])),
        last_actions=list(raw.get("last_actions", [])),
        last_cycle=dict(raw.get("last_cycle", {})),
    )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _records(v: Any, keys: tuple[str, ...]) -> bool:
    return isinstance(v, list) and all(
        isinstance(e, dict) and all(isinstance(e.get(k), str) for k in keys) for e in v
    )


def _misshapen(raw: dict[str, Any]) -> str | None:
    """What is wrong with the file's shape (None: nothing); what ``status`` and a cycle read."""
    since, modes = raw.get("since", {}), raw.get("modes", {})
    if not isinstance(since, dict) or not all(_number(v) for v in since.values()):
        return '"since" is not an object of host -> time'
    if not isinstance(modes, dict) or not all(isinstance(v, str) for v in modes.values()):
        return '"modes" is not an object of host -> mode'
    if not _records(raw.get("pending", []), ("kind", "host")):
        return '"pending" is not a list of {kind, host}'
    last = raw.get("last_actions", [])
    if not _records(last, ("host", "kind", "outcome", "reason")) or not all(
        _number(e.get("at")) for e in last
    ):
        return '"last_actions" is not a list of {at, host, kind, outcome, reason}'
    if not isinstance(raw.get("last_cycle", {}), dict):
        return '"last_cycle" is not an object'
    return None


def save_state(state_dir: Path, st: State) -> None:
    ensure_private_dir(state_dir)
    data = {
        "since": st.since,
        "modes": st.modes,
        "pending": st.pending,
        "last_actions": st.last_actions,
        "last_cycle": st.last_cycle,
    }
    write_atomic(_path(state_dir), json.dumps(data, sort_keys=True).encode(), 0o600)

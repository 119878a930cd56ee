"""htsec.execute.point: where sandboxes go and who jobs run as."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from htsec.config import Settings, load
from htsec.execute.point import execute_dir
from htsec.execute.slots import slot_users


@pytest.mark.skipif(os.geteuid() != 0, reason="the root default")
def test_htcondors_default_execute_without_a_local_dir_is_not_taken(settings: Settings) -> None:
    # HTCondor's default EXECUTE is $(LOCAL_DIR)/execute: '/execute' on the built-in config.
    assert execute_dir(settings) == Path("/var/lib/htsec/execute")


def test_execute_is_honoured_and_must_be_safe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("_CONDOR_EXECUTE", str(tmp_path / "ex"))
    settings = load()
    assert execute_dir(settings) == tmp_path / "ex"
    assert (tmp_path / "ex").stat().st_mode & 0o777 == 0o711
    (tmp_path / "ex").chmod(0o777)
    from htsec.errors import ConfigError

    with pytest.raises(ConfigError, match="no one else may write"):
        execute_dir(settings)


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, jobs run as the slot accounts")
def test_jobs_never_run_as_root(settings: Settings) -> None:
    got = slot_users(1)
    assert got.problem is None, got.problem
    (slot,) = got.slots
    assert slot.user.name == "htsec-slot1" and slot.user.uid != 0 and slot.dedicated

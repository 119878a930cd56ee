"""Running a cloud plugin as HTCondor's starter does: the console script in a sandbox
directory, ``-infile``/``-outfile`` (the output pre-filled with spaces), ``_CONDOR_CREDS``
holding ``<service>[_<handle>].use``, nothing else of the test's environment but PATH and the
fake's ``HTSEC_TEST_*`` base URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import classad2

#: What the starter writes into the output file first (file_transfer.cpp).
PREFILL = b" " * (64 * ((16 * 1204) // 64))
BIN = Path(sys.executable).parent


@dataclass
class Run:
    code: int
    results: list[Any]
    stderr: str
    max_rss_kib: int


def write_token(creds: Path, name: str, token: str) -> None:
    """``<name>.use`` as the starter installs it: single-line JSON, replaced atomically."""
    creds.mkdir(mode=0o700, exist_ok=True)
    tmp = creds / f".{name}.tmp"
    tmp.write_text(json.dumps({"access_token": token, "token_type": "bearer"}) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, creds / f"{name}.use")


def make_sandbox(tmp_path: Path, service: str, token: str = "token-1") -> Path:
    """``<tmp_path>/sandbox`` with ``.condor_creds/<service>.use`` holding ``token``."""
    path = tmp_path / "sandbox"
    path.mkdir()
    write_token(path / ".condor_creds", service, token)
    return path


def run_plugin(
    service: str,
    sandbox: Path,
    files: Sequence[tuple[str, str]],
    *,
    env: Mapping[str, str],
    upload: bool = False,
    timeout: float = 240,
) -> Run:
    sandbox.mkdir(exist_ok=True)
    infile, outfile = sandbox / ".plugin.in", sandbox / ".plugin.out"
    infile.write_text(
        "".join(str(classad2.ClassAd({"Url": u, "LocalFileName": p})) for u, p in files)
    )
    outfile.write_bytes(PREFILL)
    argv = [str(BIN / f"htsec-plugin-{service}"), "-infile", str(infile), "-outfile", str(outfile)]
    if upload:
        argv.append("-upload")
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "_CONDOR_CREDS": str(sandbox / ".condor_creds"),
        **env,
    }
    with (sandbox / ".plugin.err").open("w+") as err:
        proc = subprocess.Popen(argv, cwd=sandbox, env=full_env, stdout=err, stderr=err)
        watcher, peak = _watch_peak(proc)
        code = proc.wait(timeout)
        watcher.join()
        err.seek(0)
        stderr = err.read()
    text = outfile.read_text()
    return Run(code, list(classad2.parseAds(text, classad2.ParserType.New)), stderr, peak[0])


def _watch_peak(proc: subprocess.Popen[bytes]) -> tuple[threading.Thread, list[int]]:
    """The plugin's peak resident set (VmHWM, KiB), sampled every 20 ms until it exits.

    Not getrusage: a child's ru_maxrss starts from the forking parent's size (the test
    process), which says nothing about the plugin."""
    peak = [0]

    def watch() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, peak

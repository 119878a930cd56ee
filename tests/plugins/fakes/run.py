"""Running a cloud plugin as HTCondor's starter does: the console script in a sandbox
directory, ``-infile``/``-outfile`` (the output pre-filled with spaces), ``_CONDOR_CREDS``
holding ``<service>[_<handle>].use``, nothing else of the test's environment but PATH and the
fake's ``HTSEC_TEST_*`` base URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            proc.returncode = 0  # reaped above
        err.seek(0)
        stderr = err.read()
    code = os.waitstatus_to_exitcode(status)
    text = outfile.read_text()
    return Run(code, list(classad2.parseAds(text, classad2.ParserType.New)), stderr, usage.ru_maxrss)

"""htsec.plugins.https streams: a 2 GiB sparse file moves each way through nginx while the
plugin process stays under 100 MiB resident (its peak, VmHWM, read in that process at its end).

Not ``ru_maxrss``: Linux carries the high-water mark of the memory a process had before
``execve`` into it, and Python's subprocess forks (or vforks) from this pytest process, so a
child's ``ru_maxrss`` is at least pytest's own resident size at that moment (a full run of the
plugin tests made it read 106 MiB for a plugin that peaked at 70)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.conftest import input_ads, results, starter_files
from tests.plugins.nginx import Nginx, start_nginx

pytestmark = pytest.mark.slow

SIZE = 2 << 30
LIMIT_KIB = 100 * 1024
TOKEN = "tok-memory"
# Runs the console script's entry point and reports the process's own peak RSS (KiB).
RUN = (
    "import sys; from htsec.plugins.https import main; rc = main(); "
    "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM:')][0].split()[1]; "
    "print('MAXRSS', hwm, file=sys.stderr); sys.exit(rc)"
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Nginx]:
    r = start_nginx(tmp_path / "srv", token=TOKEN)
    yield r
    r.stop()


def run(tmp_path: Path, rig: Nginx, *args: str) -> int:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700, exist_ok=True)
    (creds / "scitokens.use").write_text(json.dumps({"access_token": TOKEN}))
    env = dict(os.environ, _CONDOR_CREDS=str(creds), SSL_CERT_FILE=str(rig.ca.cert))
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith("MAXRSS")][-1]
    return int(line.split()[1])


def test_2gib_download_and_upload_with_bounded_memory(tmp_path: Path, rig: Nginx) -> None:
    with open(rig.data / "sparse.bin", "wb") as f:
        f.truncate(SIZE)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    url = f"scitokens+https://127.0.0.1:{rig.port}/sparse.bin"
    infile, outfile = starter_files(sandbox, input_ads((url, str(sandbox / "got.bin"))))
    rss = run(tmp_path, rig, "-infile", str(infile), "-outfile", str(outfile))
    (ad,) = results(outfile)
    assert ad["TransferSuccess"] is True and ad["TransferFileBytes"] == SIZE
    assert (sandbox / "got.bin").stat().st_size == SIZE
    (rig.data / "sparse.bin").unlink()
    (sandbox / "got.bin").unlink()
    print(f"download of 2 GiB: peak RSS {rss} KiB")
    assert rss < LIMIT_KIB, f"download peak RSS {rss} KiB"

    with open(sandbox / "up.bin", "wb") as f:
        f.truncate(SIZE)
    url = f"scitokens+davs://127.0.0.1:{rig.port}/up/up.bin"
    infile, outfile = starter_files(sandbox, input_ads((url, str(sandbox / "up.bin"))))
    rss = run(tmp_path, rig, "-infile", str(infile), "-outfile", str(outfile), "-upload")
    (ad,) = results(outfile)
    assert ad["TransferSuccess"] is True and ad["TransferFileBytes"] == SIZE
    assert (rig.data / "up" / "up.bin").stat().st_size == SIZE
    (rig.data / "up" / "up.bin").unlink()
    print(f"upload of 2 GiB: peak RSS {rss} KiB")
    assert rss < LIMIT_KIB, f"upload peak RSS {rss} KiB"

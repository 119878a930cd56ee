"""What htsec-plugin-box, -gdrive and -onedrive share (htsec.plugins._cloud and _rest), each
run against its local fake (tests/plugins/fakes/): a 401 waits for the starter to replace the
``.use`` file, a 256 MiB file moves both ways in bounded memory, and ``-classad`` answers
without loading the HTTP client. What differs per service is in test_box*.py, test_gdrive.py
and test_onedrive.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import classad2
import pytest

from tests.plugins.fakes._server import Seen
from tests.plugins.fakes.box import BoxFake
from tests.plugins.fakes.gdrive import GDriveFake
from tests.plugins.fakes.onedrive import OneDriveFake
from tests.plugins.fakes.run import make_sandbox, run_plugin, write_token

Fake = BoxFake | GDriveFake | OneDriveFake
FAKES: dict[str, type[Fake]] = {"box": BoxFake, "gdrive": GDriveFake, "onedrive": OneDriveFake}


@pytest.fixture(params=sorted(FAKES))
def service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(service: str, tmp_path: Path) -> Iterator[Fake]:
    started = FAKES[service](tmp_path / service).start()
    assert isinstance(started, FAKES[service])
    yield started
    started.stop()


@pytest.fixture
def sandbox(service: str, tmp_path: Path) -> Path:
    return make_sandbox(tmp_path, service)


def test_a_401_waits_for_the_use_file_to_be_replaced(
    service: str, fake: Fake, sandbox: Path
) -> None:
    fake.put_file("folder/in.txt", b"data")

    def expire(seen: Seen) -> None:
        if fake.on_request is not None:
            fake.on_request = None
            fake.tokens = {"token-2"}  # token-1 expired; the credmon has a new one
            # ... and the starter writes it a little later (within the plugin's 5 s grace).
            threading.Timer(
                0.5, write_token, (sandbox / ".condor_creds", service, "token-2")
            ).start()

    fake.on_request = expire
    url = f"{service}://folder/in.txt"
    run = run_plugin(service, sandbox, [(url, str(sandbox / "in.txt"))], env=fake.env())
    assert run.code == 0, [ad.get("TransferError") for ad in run.results]
    sent = [s.headers["Authorization"] for s in fake.seen if "Authorization" in s.headers]
    assert sent[0] == "Bearer token-1" and sent[-1] == "Bearer token-2"
    assert (sandbox / "in.txt").read_bytes() == b"data"


def _same(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


@pytest.mark.slow
def test_a_256_mib_file_moves_both_ways_with_bounded_memory(
    service: str, fake: Fake, sandbox: Path
) -> None:
    big = sandbox / "big.bin"
    with big.open("wb") as f:  # sparse, with a few real bytes to check
        f.truncate(256 * 1024 * 1024)
        for offset in range(0, 256 * 1024 * 1024, 37 * 1024 * 1024):
            f.seek(offset)
            f.write(os.urandom(4096))
    url = f"{service}://big/big.bin"
    up = run_plugin(service, sandbox, [(url, str(big))], env=fake.env(), upload=True)
    assert up.code == 0, up.results
    down = run_plugin(service, sandbox, [(url, str(sandbox / "copy.bin"))], env=fake.env())
    assert down.code == 0, down.results
    assert down.results[0]["TransferFileBytes"] == 256 * 1024 * 1024
    assert _same(big, sandbox / "copy.bin")
    assert up.max_rss_kib < 100 * 1024, up.max_rss_kib
    assert down.max_rss_kib < 100 * 1024, down.max_rss_kib


@pytest.mark.parametrize("name", sorted(FAKES))
def test_classad_advertises_the_service_without_loading_the_http_client(name: str) -> None:
    script = (
        f"import sys; from htsec.plugins.{name} import main; sys.argv[1:] = ['-classad']; "
        "code = main(); assert 'httpx' not in sys.modules; sys.exit(code)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    ad = classad2.parseOne(out.stdout, classad2.ParserType.Old)
    assert ad["SupportedMethods"] == name and ad["MultipleFileSupport"] is True

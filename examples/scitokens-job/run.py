"""The README's second command: a job that gets a SciToken and reads a file with it.

Run it (as root, from the clone, with ``scripts/run`` serving in another terminal)::

    .venv/bin/python examples/scitokens-job/run.py

What it does, each step printed (docs/execute.md explains them):

1. mints you an ID token for ``$(whoami)@$(UID_DOMAIN)`` (``htsec token create``), once;
2. starts a storage server that trusts htsec's local issuer: XRootD with its SciTokens plugin
   on a free port, serving ``/user/<you>/hello.txt`` over HTTPS (the test rig's
   ``tests/xrootd.py``; ``scripts/run`` (``scripts/setup --example``) installs XRootD);
3. submits ``job.sub`` to htsec serve's execution point (``POST /v1/jobs``);
4. waits for the job and prints its output: the token's claims as the job saw them in
   ``$_CONDOR_CREDS/scitokens.use`` and the file the https plugin read with that token.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from htsec.client import Client  # noqa: E402
from htsec.config import load, param  # noqa: E402
from htsec.errors import HtsecError  # noqa: E402

HTSEC = str(Path(sys.executable).with_name("htsec"))


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    settings = load()
    if not serving(settings):
        print(f"htsec serve does not answer at {settings.server_url}: start it first, in another")
        print("terminal: scripts/run")
        return 1
    user = getpass.getuser()
    identity = f"{user}@{settings.uid_domain}"
    token = settings.token_dir / "example"
    say(f"1. an ID token for {identity}")
    if not token.exists():
        subprocess.run(
            [HTSEC, "token", "create", "--identity", identity, "--token", "example"], check=True
        )
    else:
        print(f"   {token} (made before)")
    client = Client(settings, token_file=str(token))

    work = Path(tempfile.mkdtemp(prefix="htsec-example-", dir="/tmp"))
    work.chmod(0o755)
    storage = None
    try:
        text = (HERE / "job.sub").read_text()
        say("2. a storage server that accepts htsec's SciTokens")
        storage, header = start_storage(work, user, settings.ca_file)
        if storage is None:
            text = "\n".join(
                line
                for line in text.splitlines()
                if not line.startswith(("transfer_input_files", "environment"))
            )
        iwd = work / "job"
        iwd.mkdir()
        shutil.copy(HERE / "show-token.sh", iwd / "show-token.sh")
        say(f"3. submitting job.sub (in {iwd})")
        body = client.call(
            "POST", "/v1/jobs", json={"submit": header + text + "\n", "iwd": str(iwd)}
        )
        job = f"{body['cluster']}.0"
        print(f"   1 job(s) submitted to cluster {body['cluster']} (owner {body['owner']})")
        say(f"4. job {job} running as its slot's account, htsec-slot<N> (htsec q shows it)")
        state = wait(client, job)
        print(f"   job {job} is {state['state']}", end="")
        if state["state"] == "held":
            print(f": {state['hold_reason']}")
        else:
            print(f" (exit code {state['exit_code']})")
        for name in ("job.out", "job.err", "job.log"):
            path = iwd / name
            if path.exists() and path.read_text().strip():
                say(f"{name}:")
                print(path.read_text().rstrip())
        return 0 if state["state"] == "completed" else 1
    finally:
        if storage is not None:
            storage.stop()
        print(f"\n(the job's directory is {work / 'job'})")


def serving(settings: object, wait: float = 60) -> bool:
    """Whether htsec serve answers (waiting up to ``wait`` s for one that is starting)."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            Client(settings).call("GET", "/v1/health", auth=False)  # type: ignore[arg-type]
            return True
        except HtsecError:
            if time.monotonic() > deadline:
                return False
            if not told:
                print("waiting for htsec serve to answer ...", flush=True)
                told = True
            time.sleep(1)


def start_storage(work: Path, user: str, htsec_ca: Path) -> tuple[object | None, str]:
    """XRootD with the SciTokens plugin over HTTPS; the submit macros that name it."""
    try:
        from tests.xrootd import XRootDUnavailable, make_test_ca, start_xrootd
    except ImportError as exc:
        print(f"   no storage server ({exc}): the job gets its token but reads no file")
        return None, ""
    issuer = param("LOCAL_CREDMON_ISSUER") or "https://localhost:9680"
    audience = param("LOCAL_CREDMON_TOKEN_AUDIENCE") or "https://wlcg.cern.ch/jwt/v1/any"
    ca = make_test_ca(work / "ca")
    tls = work / "tls"  # XRootD runs as nobody, the plugin as a slot account: both read it
    tls.mkdir(mode=0o755)
    nobody = pwd.getpwnam("nobody")
    for src in (ca.server_cert, ca.server_key, ca.cert):
        shutil.copy(src, tls / src.name)
        os.chown(tls / src.name, nobody.pw_uid, nobody.pw_gid)
    (tls / "ca.pem").chmod(0o644)
    extra = (
        f"xrd.tls {tls / 'server.pem'} {tls / 'server.key'}\nxrd.tlsca certfile {tls / 'ca.pem'}\n"
    )
    try:
        xrd = start_xrootd(
            work / "xrd",
            issuer,
            audience,
            files={f"/user/{user}/hello.txt": f"hello {user}, read with your own SciToken\n"},
            trust=[htsec_ca],
            xrootd_extra=extra,
        )
    except XRootDUnavailable as exc:
        print(f"   {exc}\n   (scripts/setup --example installs XRootD): the job reads no file")
        return None, ""
    url = f"https://127.0.0.1:{xrd.port}"
    print(f"   XRootD at {url}, trusting tokens of {issuer} (audience {audience})")
    print(f"   serving /user/{user}/hello.txt; scopes read:/user/{user} are needed to read it")
    header = f"storage = {url}\nstorage_ca = {tls / 'ca.pem'}\nowner = {user}\n"
    return xrd, header


def wait(client: Client, job: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        for history in ("false", "true"):
            for j in client.call("GET", "/v1/jobs", params={"history": history})["jobs"]:
                if j["id"] == job:
                    if j["state"] != seen:
                        seen = j["state"]
                        print(f"   {job}: {seen}")
                    if seen in ("completed", "held", "removed"):
                        return dict(j)
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job} did not finish within {timeout} s")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())

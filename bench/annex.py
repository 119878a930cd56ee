"""Benchmark: ``htsec annex create --count N`` to N bootstrapped instances with their
configuration installed, and the API calls each instance makes while booting.

Against moto (server mode, IAM enforced) and a network namespace per simulated instance with
an IMDSv2 fake on 169.254.169.254 / fd00:ec2::254 (the test rig of tests/annex/). Needs root.
Metadata calls are counted by each instance's fake, AWS calls by moto per access key (each
instance has its own role credentials), so every request an instance sends is counted once.

The anchor is the original boot sequence (HTCondor's condor-annex-ec2 with the role that
condor_annex's setup creates: no attached policy, two inline policies), on-demand, every call
succeeding at once:
  metadata: public-ipv4, instance-id, identity document (region), iam/info          4
  AWS: DescribeInstances (client token), GetInstanceProfile, ListAttachedRolePolicies,
       ListRolePolicies, GetRolePolicy x 2, S3 GetObject                              7
  total                                                                            11
(a lower bound: it leaves out the metadata calls the AWS CLI makes for credentials in each
of its seven invocations, and the HeadObject of ``aws s3 cp``). htsec's sequence is IMDSv2
token, identity document, public-ipv4, role name, role credentials (5 metadata), then
DescribeInstances, GetObject, CreateTags (3 AWS): 8.

    sudo .venv/bin/python bench/annex.py             # 10 instances (well under a minute)
    sudo .venv/bin/python bench/annex.py --count 50  # the issue's 50

The phases are printed; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.annex.imds_fake import ImdsFake  # noqa: E402
from tests.annex.moto_rig import ACCOUNT, REGION, MotoRig  # noqa: E402
from tests.annex.netns import AWS_PORT, Instance  # noqa: E402

from htsec.annex import setup  # noqa: E402
from htsec.annex.aws import Clients  # noqa: E402

ANCHOR_CALLS = 11
BUCKET = "htsec-annex-bench"
HTSEC = str(ROOT / ".venv" / "bin" / "htsec")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=8, help="bootstraps running at once")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/annex.py needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    rig = MotoRig()
    home = Path(tempfile.mkdtemp(prefix="htsec-annex-bench-"))
    env = {
        **os.environ,
        **rig.env(),
        "HTSEC_HOME": str(home / "home"),
        "_CONDOR_TRUST_DOMAIN": "pool.example.org",
        "_CONDOR_UID_DOMAIN": "pool.example.org",
    }
    os.environ.update(rig.env())
    setup.run(setup.plan(Clients(REGION), BUCKET), dry_run=False, report=lambda s: None)
    subprocess.run([HTSEC, "key", "create", "POOL"], env=env, check=True, capture_output=True)
    ami = rig.ami()
    instances: list[tuple[Instance, ImdsFake]] = []
    try:
        t0 = time.perf_counter()
        done = subprocess.run(
            [HTSEC, "annex", "create", "bench", "--count", str(args.count), "--bucket", BUCKET,
             "--collector", "cm.example.org", "--ami", ami, "--wait", "0"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        t_create = time.perf_counter() - t0
        ec2 = rig.client("ec2")
        res = ec2.describe_instances(
            Filters=[{"Name": "tag:htcondor:AnnexName", "Values": ["bench"]}]
        )
        descs = [i for r in res["Reservations"] for i in r["Instances"]]
        assert len(descs) == args.count, len(descs)
        for d in descs:  # what EC2 does when the instances boot: a machine and its metadata
            inst = Instance(rig.port)
            role, creds = rig.instance_credentials(d["InstanceId"])
            fake = ImdsFake(
                instance_id=d["InstanceId"], region=REGION, account=ACCOUNT, role=role,
                credentials=creds, profile_arn=d["IamInstanceProfile"]["Arn"],
                tags={t["Key"]: t["Value"] for t in d.get("Tags", [])},
            )  # fmt: skip
            for sock in inst.metadata_sockets():
                fake.serve(sock)
            instances.append((inst, fake))
        t_boot = time.perf_counter() - t0 - t_create

        def bootstrap(pair: tuple[Instance, ImdsFake]) -> bool:
            inst, _ = pair
            root = home / inst.name
            root.mkdir()
            r = inst.run(
                HTSEC, "annex", "bootstrap", "--config-root", str(root),
                "--poweroff-command", f"touch {root}/POWEROFF",
                env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{AWS_PORT}"},
            )  # fmt: skip
            return r.returncode == 0 and (root / "tokens.d" / "htsec-annex-bench").exists()

        with ThreadPoolExecutor(args.parallel) as pool:
            ok = sum(pool.map(bootstrap, instances))
        total = time.perf_counter() - t0
        if ok != args.count:
            print(f"only {ok} of {args.count} instances bootstrapped", file=sys.stderr)
            return 1
        owner = {iid: key for key, iid in rig.key_owner.items()}
        per = [fake.calls + rig.calls[owner[fake.instance_id]] for _, fake in instances]
        metadata = sum(f.calls for _, f in instances) / len(instances)
        calls = sum(per) / len(per)
        print(f"create ({args.count} on-demand, CLI): {t_create:6.2f} s")
        print(f"namespaces + metadata fakes:        {t_boot:6.2f} s")
        print(
            f"bootstraps ({args.parallel} at a time):          {total - t_create - t_boot:6.2f} s"
        )
        aws_calls = calls - metadata
        print(
            f"calls per instance: {calls:.1f} ({metadata:.1f} metadata + {aws_calls:.1f} AWS); "
            f"original >= {ANCHOR_CALLS}"
        )
        print(json.dumps({
            "instances": args.count,
            "create_to_ready_s": round(total, 2),
            "api_calls_per_instance": round(calls, 2),
            "vs_anchor_calls": round(calls / ANCHOR_CALLS, 3),
        }))  # fmt: skip
        return 0
    finally:
        for inst, fake in instances:
            fake.stop()
            inst.close()
        rig.stop()


if __name__ == "__main__":
    sys.exit(main())

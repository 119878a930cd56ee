"""The metadata firewall an annex instance applies at boot (nftables, one table).

Only root may reach the instance metadata service, over IPv4 and IPv6, and nothing forwarded
through the instance (containers on a bridge, VMs) may reach it at all. HTCondor's boot script
added one iptables rule for IPv4 output only.
"""

from __future__ import annotations

import subprocess

from htsec.errors import AnnexError

__all__ = ["IMDS_V4", "IMDS_V6", "TABLE", "apply", "ruleset"]

IMDS_V4 = "169.254.169.254"
IMDS_V6 = "fd00:ec2::254"
TABLE = "htsec_annex"


def ruleset() -> str:
    """The nftables script: replaces the table atomically (one transaction)."""
    return f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain output {{
        type filter hook output priority 0; policy accept;
        ip daddr {IMDS_V4} meta skuid != 0 reject
        ip6 daddr {IMDS_V6} meta skuid != 0 reject
    }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        ip daddr {IMDS_V4} reject
        ip6 daddr {IMDS_V6} reject
    }}
}}
"""


def apply(nft: str = "nft") -> None:
    """Load :func:`ruleset` with ``nft -f -``; an error names nft's complaint."""
    try:
        done = subprocess.run(
            [nft, "-f", "-"], input=ruleset(), capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AnnexError(f"cannot run {nft} to firewall the metadata service: {exc}") from None
    if done.returncode != 0:
        raise AnnexError(
            f"{nft} refused the metadata firewall: {done.stderr.strip()[:300] or done.returncode}"
        )

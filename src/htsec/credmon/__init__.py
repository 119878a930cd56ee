"""credmon: OAuth refresh engine, local SciTokens/WLCG issuer, and the drop-in for HTCondor's
``condor_credmon_oauth``."""

from htsec.credmon.engine import RefreshEngine, RefreshReport
from htsec.credmon.issuer import LocalIssuer, generate_key, load_issuer
from htsec.credmon.policy import Policy, should_refresh
from htsec.credmon.providers import Provider, ProviderSet, load_providers

__all__ = [
    "LocalIssuer",
    "Policy",
    "Provider",
    "ProviderSet",
    "RefreshEngine",
    "RefreshReport",
    "generate_key",
    "load_issuer",
    "load_providers",
    "should_refresh",
]

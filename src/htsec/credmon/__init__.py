"""credmon: OAuth refresh engine, local SciTokens/WLCG issuer, and the drop-in for HTCondor's
``condor_credmon_oauth``."""

from htsec.credmon.issuer import LocalIssuer, generate_key, load_issuer
from htsec.credmon.providers import Provider, ProviderSet, load_providers
from htsec.credmon.refresh import Policy, RefreshEngine, RefreshReport, should_refresh

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

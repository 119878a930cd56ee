"""HTCondor ID tokens (IDTOKENS): signing keys, minting, strict verification, revocation,
token requests and per-site glidein keys. See FORMATS.md section 7."""

from htsec.tokens.authority import Authority, validate_identity
from htsec.tokens.idtoken import (
    AUTHORIZATIONS,
    MAX_TOKEN_BYTES,
    VerifiedToken,
    Verifier,
    condor_json,
    mint,
    parse_unverified,
)
from htsec.tokens.keys import POOL, Keyring, SigningKey, derive_hmac_key, scramble, unscramble
from htsec.tokens.revocation import RevocationSet

__all__ = [
    "AUTHORIZATIONS",
    "MAX_TOKEN_BYTES",
    "POOL",
    "Authority",
    "Keyring",
    "RevocationSet",
    "SigningKey",
    "VerifiedToken",
    "Verifier",
    "condor_json",
    "derive_hmac_key",
    "mint",
    "parse_unverified",
    "scramble",
    "unscramble",
    "validate_identity",
]

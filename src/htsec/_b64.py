"""Base64url without padding (RFC 7515 section 2): every JWT segment htsec writes or reads.

Used by the IDTOKENS signer and verifier (:mod:`htsec.tokens.idtoken`) and the credmon's
reading of an access token's ``iat``/``exp`` (:func:`htsec.credmon.policy.token_expiry`).
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["b64url_decode", "b64url_encode"]

_TO_STD = bytes.maketrans(b"-_", b"+/")


def b64url_encode(data: bytes) -> str:
    """``data`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: bytes | str) -> bytes:
    """Decode unpadded base64url; padding and other characters are refused.

    :raises ValueError: for anything else (``binascii.Error`` and ``UnicodeEncodeError`` are
        both ``ValueError``).
    """
    if isinstance(segment, str):
        segment = segment.encode("ascii")
    if b"+" in segment or b"/" in segment or b"=" in segment or len(segment) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return binascii.a2b_base64(
        segment.translate(_TO_STD) + b"=" * (-len(segment) % 4), strict_mode=True
    )

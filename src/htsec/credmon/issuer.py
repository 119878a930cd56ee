"""The local SciTokens / WLCG token issuer (HTCondor's ``LOCAL_CREDMON_*`` mode).

FORMATS.md section 5 and seed 004. Knobs, each ``LOCAL_CREDMON_<PROVIDER>_<X>`` falling back to
``LOCAL_CREDMON_<X>``: ``PRIVATE_KEY`` (PEM), ``KEY_ID`` (``local``), ``PRIVATE_KEY_ALGORITHM``
(``ES256`` default, or ``RS256``), ``ISSUER`` (an ``https://`` URL: scitokens-cpp accepts no other),
``AUTHZ_TEMPLATE`` (``read:/user/{username} write:/user/{username}``), ``TOKEN_LIFETIME`` (1200),
``TOKEN_AUDIENCE``, ``TOKEN_VERSION`` (``scitoken:2.0``; ``wlcg`` or ``wlcg:1.0`` for the WLCG
profile), ``TOKEN_USE_JSON`` (True).

Tokens are JWS compact serializations (RFC 7515) signed with ES256 (RFC 7518 section 3.4: the
signature is R || S, 32 bytes each) or RS256, by joserfc (docs/dependencies.md); the JWKs are
joserfc's too (HTCondor's ID tokens keep their own byte-exact path, ``tokens.idtoken``).
Claims: ``sub`` (the local user), ``scope`` (space separated), ``aud``, ``iss``, ``iat``,
``nbf``, ``exp``, ``jti``, and ``ver: scitoken:2.0`` or ``wlcg.ver: "1.0"``. The public keys
are published as a JWKS (RFC 7517), with the previous keys of ``HTSEC_ISSUER_PREVIOUS_KEYS``
(``kid:/path.pem ...``) during a rotation.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from htsec import _fs
from htsec.config import param
from htsec.errors import ConfigError, UsageError

if TYPE_CHECKING:  # imported where a key is used: a credmon without a local issuer never pays
    from joserfc.jwk import ECKey, RSAKey

__all__ = ["IssuerConfig", "LocalIssuer", "generate_key", "load_issuer", "public_jwk"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _knob(provider: str, name: str) -> str | None:
    value = param(f"LOCAL_CREDMON_{provider.upper()}_{name}")
    return value if value is not None else param(f"LOCAL_CREDMON_{name}")


@dataclass(frozen=True)
class IssuerConfig:
    provider: str
    private_key: Path
    key_id: str
    algorithm: str
    issuer: str
    authz_template: str
    lifetime: int
    audience: list[str]
    version: str
    use_json: bool
    #: Retired keys still published in the JWKS (``HTSEC_ISSUER_PREVIOUS_KEYS``): (kid, file).
    previous_keys: tuple[tuple[str, Path], ...] = ()


def key_location(provider: str = "scitokens") -> tuple[Path, str]:
    """The issuer's private key file and key id (``LOCAL_CREDMON_PRIVATE_KEY``,
    ``LOCAL_CREDMON_KEY_ID``), which ``htsec issuer keygen`` writes before the rest of the
    issuer is configured."""
    key = _knob(provider, "PRIVATE_KEY") or "/etc/condor/scitokens-private.pem"
    return Path(key), (_knob(provider, "KEY_ID") or "local").strip()


def _previous_keys() -> tuple[tuple[str, Path], ...]:
    out = []
    for item in (param("HTSEC_ISSUER_PREVIOUS_KEYS") or "").split():
        kid, _, p = item.partition(":")
        if not kid or not p:
            raise ConfigError(f"HTSEC_ISSUER_PREVIOUS_KEYS item {item!r}: use kid:/path.pem")
        out.append((kid, Path(p)))
    return tuple(out)


def load_config(provider: str = "scitokens") -> IssuerConfig:
    """The local issuer's knobs (``LOCAL_CREDMON_<PROVIDER>_<KNOB>`` before
    ``LOCAL_CREDMON_<KNOB>``, as HTCondor's credmon reads them), read once."""
    key, key_id = key_location(provider)
    alg = (_knob(provider, "PRIVATE_KEY_ALGORITHM") or "ES256").strip().upper()
    if alg not in ("ES256", "RS256"):
        raise ConfigError(f"LOCAL_CREDMON_PRIVATE_KEY_ALGORITHM = {alg}: use ES256 or RS256")
    issuer = (
        _knob(provider, "ISSUER") or f"https://{param('FULL_HOSTNAME') or 'localhost'}"
    ).strip()
    if not issuer.startswith("https://"):
        raise ConfigError(
            f"LOCAL_CREDMON_ISSUER = {issuer}: relying parties (scitokens-cpp) accept "
            "only https:// issuers"
        )
    version = (_knob(provider, "TOKEN_VERSION") or "scitoken:2.0").strip().lower()
    if version in ("wlcg", "wlcg:1.0"):
        version = "wlcg:1.0"
    elif version != "scitoken:2.0":
        raise ConfigError(f"LOCAL_CREDMON_TOKEN_VERSION = {version}: use scitoken:2.0 or wlcg:1.0")
    audience = (_knob(provider, "TOKEN_AUDIENCE") or "").replace(",", " ").split()
    if version == "scitoken:2.0" and not audience:
        raise ConfigError("LOCAL_CREDMON_TOKEN_AUDIENCE is required for scitoken:2.0 tokens")
    if version == "wlcg:1.0" and not audience:
        audience = ["https://wlcg.cern.ch/jwt/v1/any"]
    try:
        lifetime = int(_knob(provider, "TOKEN_LIFETIME") or 1200)
    except ValueError:
        raise ConfigError(
            "LOCAL_CREDMON_TOKEN_LIFETIME must be a whole number of seconds"
        ) from None
    if lifetime <= 0:
        raise ConfigError("LOCAL_CREDMON_TOKEN_LIFETIME must be positive")
    use_json = (_knob(provider, "TOKEN_USE_JSON") or "true").strip().lower() not in (
        "false",
        "0",
        "no",
    )
    return IssuerConfig(
        provider=provider,
        private_key=key,
        key_id=key_id,
        algorithm=alg,
        issuer=issuer.rstrip("/"),
        authz_template=_knob(provider, "AUTHZ_TEMPLATE")
        or "read:/user/{username} write:/user/{username}",
        lifetime=lifetime,
        audience=audience,
        version=version,
        use_json=use_json,
        previous_keys=_previous_keys(),
    )


def _load_private(path: Path) -> PrivateKey:
    try:
        data = _fs.read_private(path, limit=64 * 1024)
    except FileNotFoundError:
        raise ConfigError(
            f"issuer private key {path} does not exist; create it with 'htsec issuer keygen'"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{path} holds neither an EC nor an RSA key")
    return key


def _jose_key(key: PrivateKey | PublicKey, kid: str) -> ECKey | RSAKey:
    """The key as joserfc's JWK, with its ``kid``, ``alg`` and ``use``."""
    from joserfc.jwk import ECKey, RSAKey

    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ConfigError("ES256 needs a P-256 key")
        return ECKey.import_key(key, parameters={"kid": kid, "alg": "ES256", "use": "sig"})
    return RSAKey.import_key(key, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


def public_jwk(key: PublicKey, kid: str) -> dict[str, str]:
    """RFC 7517 / RFC 7518 section 6 public JWK."""
    return {k: str(v) for k, v in _jose_key(key, kid).as_dict(private=False).items()}


def generate_key(path: Path, algorithm: str = "ES256", *, kid: str = "local") -> dict[str, str]:
    """Write a new private key (PEM, 0600, atomically; refuses to overwrite); returns its JWK."""
    if path.exists():
        raise UsageError(f"{path} exists; refusing to overwrite an issuer key")
    algorithm = algorithm.upper()
    key: PrivateKey
    if algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise UsageError(f"algorithm {algorithm}: use ES256 or RS256")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if not path.parent.exists():
        _fs.ensure_private_dir(path.parent)
    _fs.write_atomic(path, pem, 0o600)
    return public_jwk(key.public_key(), kid)


class LocalIssuer:
    """Signs short-lived SciTokens/WLCG tokens for local users."""

    def __init__(self, config: IssuerConfig) -> None:
        self.config = config
        self.key = _load_private(config.private_key)
        if config.algorithm == "ES256" and not isinstance(self.key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{config.private_key} is an RSA key but the algorithm is ES256")
        if config.algorithm == "RS256" and not isinstance(self.key, rsa.RSAPrivateKey):
            raise ConfigError(f"{config.private_key} is an EC key but the algorithm is RS256")
        if isinstance(self.key, ec.EllipticCurvePrivateKey) and self.key.curve.name != "secp256r1":
            raise ConfigError(
                f"{config.private_key} is a {self.key.curve.name} key; ES256 (RFC 7518 "
                "section 3.4) needs P-256: create one with 'htsec issuer keygen'"
            )
        if isinstance(self.key, rsa.RSAPrivateKey) and self.key.key_size < 2048:
            raise ConfigError(
                f"{config.private_key} is a {self.key.key_size}-bit RSA key; RS256 needs at "
                "least 2048 bits (RFC 7518 section 3.3)"
            )
        from joserfc import jwt

        self._encode = jwt.encode
        self._jose = _jose_key(self.key, config.key_id)
        self._header = {"alg": config.algorithm, "kid": config.key_id, "typ": "JWT"}
        self._algorithms = [config.algorithm]
        self.previous: list[dict[str, str]] = []
        for kid, path in config.previous_keys:
            self.previous.append(public_jwk(self._load_public(path), kid))

    @staticmethod
    def _load_public(path: Path) -> PublicKey:
        data = path.read_bytes()
        try:
            pub = serialization.load_pem_public_key(data)
        except ValueError:
            pub = _load_private(path).public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ConfigError(f"{path} holds neither an EC nor an RSA key")
        return pub

    def scopes_for(self, username: str) -> str:
        return " ".join(
            part.replace("{username}", username) for part in self.config.authz_template.split()
        )

    def mint(self, username: str, *, now: int | None = None) -> tuple[str, int]:
        """A token for ``username``; returns it and its lifetime in seconds."""
        t = int(time.time()) if now is None else now
        c = self.config
        claims: dict[str, Any] = {
            "sub": username,
            "iss": c.issuer,
            "iat": t,
            "nbf": t,
            "exp": t + c.lifetime,
            "jti": secrets.token_hex(16),
            "scope": self.scopes_for(username),
            "aud": c.audience[0] if len(c.audience) == 1 else c.audience,
        }
        if c.version == "wlcg:1.0":
            claims["wlcg.ver"] = "1.0"
        else:
            claims["ver"] = "scitoken:2.0"
        token = self._encode(self._header, claims, self._jose, algorithms=self._algorithms)
        return token, c.lifetime

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        current = public_jwk(self.key.public_key(), self.config.key_id)
        return {"keys": [current, *(k for k in self.previous if k["kid"] != current["kid"])]}

    def discovery(self) -> dict[str, Any]:
        """OpenID Connect Discovery 1.0 section 3 (the parts a relying party reads)."""
        return {
            "issuer": self.config.issuer,
            "jwks_uri": self.config.issuer + "/jwks",
            "id_token_signing_alg_values_supported": [self.config.algorithm],
            "token_endpoint_auth_methods_supported": [],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
        }


def load_issuer(provider: str = "scitokens") -> LocalIssuer:
    return LocalIssuer(load_config(provider))

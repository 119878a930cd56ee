"""Who is calling and what they may do: the one place a request's ``Authorization: Bearer``
header is read, its token verified, its peer address named and a permission checked.

Routes take ``caller: Caller``; the access-token fast path calls :func:`authenticate_scope` on
the raw ASGI scope. Both then ask :func:`require` (HTCondor's implied permissions,
:func:`htsec.authz.grants`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from htsec.authz import Perm, Token, grants
from htsec.errors import Forbidden, TokenRejected
from htsec.web.verifier import VerifiedCaller, VerifierCache

__all__ = [
    "Caller",
    "authenticate",
    "authenticate_scope",
    "bearer_token",
    "peer",
    "require",
]


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or :class:`TokenRejected`."""
    scheme, _, raw = (authorization or "").partition(" ")
    token = raw.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenRejected(
            "no_token", "this endpoint needs an ID token: Authorization: Bearer <token>"
        )
    return token


def authenticate_scope(scope: Scope, verifiers: VerifierCache) -> VerifiedCaller:
    """The verified ID token of a request's (first) ``Authorization`` header."""
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    return verifiers.get().verify(bearer_token(authorization))


async def authenticate(request: Request) -> VerifiedCaller:
    """The verified ID token of the request (the dependency behind :data:`Caller`)."""
    return authenticate_scope(request.scope, request.app.state.verifiers)


Caller = Annotated[VerifiedCaller, Depends(authenticate)]
"""A route parameter typed ``Caller`` receives the verified token, or the request is a 401."""


def require(caller: Token, perm: Perm, *, to: str | None = None) -> None:
    """:class:`Forbidden` unless ``caller``'s token grants ``perm`` (or a level implying it);
    ``to`` says what for (``"fetch bob's tokens"``)."""
    if grants(caller, perm):
        return
    if to is None:
        raise Forbidden(f"{caller.subject}'s token lacks {perm} authorization")
    raise Forbidden(f"{caller.subject} may not {to} (needs {perm} authorization)")


def peer(scope: Scope) -> str:
    """The address the request came from (uvicorn trusts no forwarding headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"

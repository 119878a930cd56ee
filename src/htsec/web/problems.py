"""Errors as RFC 9457 problem documents (``application/problem+json``), for every route, the
access-token fast path and the HTTP protocol's own refusals.

An :class:`~htsec.errors.HtsecError` answers with its ``status``, its class name as the title
and its ``code``; routing errors (404, 405) and invalid bodies (422) answer the same way.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from htsec.errors import HtsecError

__all__ = ["error_problem", "install_handlers", "problem", "problem_body"]

#: What a 401 answers with (RFC 6750 section 3).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="htsec"'}


def problem_body(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The members of a problem document."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response (a 401 carries the Bearer challenge)."""
    return JSONResponse(
        problem_body(status, title, detail, **extra),
        status_code=status,
        media_type="application/problem+json",
        headers=_CHALLENGE if status == 401 else None,
    )


def error_problem(exc: HtsecError) -> JSONResponse:
    """The problem response of an htsec error: its status, class name and code."""
    return problem(exc.status, exc.__class__.__name__, str(exc), code=exc.code)


def install_handlers(app: FastAPI) -> None:
    """Answer htsec errors, routing errors and invalid bodies with problem documents."""

    @app.exception_handler(HtsecError)
    async def htsec_error(_request: Request, exc: HtsecError) -> JSONResponse:
        return error_problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, HTTPStatus(exc.status_code).phrase, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return problem(
            422, "Unprocessable Content", f"{'.'.join(first['loc'])}: {first['msg']}", errors=errors
        )

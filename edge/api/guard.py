"""What every request passes before any route runs: the token, then the body's size.

A pure ASGI middleware, outside FastAPI's routing, because FastAPI reads and parses a JSON body
*before* it runs a route's dependencies: checked there, an unauthenticated client could make the
appliance buffer and parse any body it likes. Here a request to a protected path without the
right ``Authorization: Bearer`` header is answered 401 before one byte of its body is read, and
every body has a limit: ``api.max_upload_bytes`` for the upload routes (which stream and count
it themselves), ``MAX_BODY_BYTES`` for all others (read here, at most that much, then replayed).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024  # JSON bodies (activate, …): a few hundred bytes in practice
AUTH_HINT = "send the header 'Authorization: Bearer <token>' (api.token, or {data_dir}/api-token)"


def error_body(what: str, where: str | None = None, hint: str | None = None) -> dict[str, Any]:
    """The one error shape of the API: ``{"error", "where", "hint"}``."""
    return {"error": what, "where": where, "hint": hint}


def bearer_matches(header: str | None, token: str) -> bool:
    """True when ``header`` is ``Bearer <token>``; compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode(), token.encode())


class RequestGuard:
    """Token first (401 without reading the body), then a size limit on every body (413)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: Callable[[], str],
        is_protected: Callable[[str], bool],
        upload_paths: Collection[str],
        max_upload_bytes: int,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self._token = token
        self._is_protected = is_protected
        self._upload_paths = frozenset(upload_paths)
        self._max_upload_bytes = max_upload_bytes
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        if self._is_protected(path) and not bearer_matches(
            headers.get("authorization"), self._token()
        ):
            await _answer(
                scope,
                receive,
                send,
                401,
                error_body("missing or wrong bearer token", "Authorization header", AUTH_HINT),
                {"WWW-Authenticate": "Bearer"},
            )
            return
        upload = path in self._upload_paths
        limit = self._max_upload_bytes if upload else self._max_body_bytes
        setting = "api.max_upload_bytes" if upload else "the API's limit for request bodies"
        declared = headers.get("content-length")
        if declared is not None and not declared.strip().isdigit():
            await _answer(
                scope,
                receive,
                send,
                400,
                error_body(f"bad Content-Length {declared[:40]!r}", "Content-Length header"),
            )
            return
        if declared is not None and int(declared) > limit:
            await _too_large(scope, receive, send, f"{int(declared)} bytes", limit, setting)
            return
        if upload:  # the route streams the body and counts it against the same limit
            await self.app(scope, receive, send)
            return
        body = await _read_at_most(receive, limit)
        if body is None:
            await _too_large(scope, receive, send, "the body", limit, setting)
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is over ``limit`` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as Starlette expects

    return replay


async def _too_large(
    scope: Scope, receive: Receive, send: Send, what: str, limit: int, setting: str
) -> None:
    await _answer(
        scope,
        receive,
        send,
        413,
        error_body(
            f"request body of {what} is over {setting} ({limit} bytes)",
            "request body",
            "send less; uploads (images, WAV files) go to /v1/infer and /v1/asr",
        ),
    )


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    # Connection: close, because the body the client is still sending is never read.
    response = JSONResponse(body, status, headers={"Connection": "close", **(headers or {})})
    await response(scope, receive, send)

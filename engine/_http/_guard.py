"""The guard in front of every request: Host check, bearer token, origin of mutations.

Rules (docs/http-api.md, "Authentication"):

* A token, when configured, is required for every mutating request (POST), always.
* When the server listens on anything but a loopback address, a token is required for
  every data endpoint: the API, ``/healthz``, ``/metrics`` and the OpenAPI document. The web
  UI's own files (HTML, CSS, JavaScript) hold no data and are served without one, because a
  browser cannot attach a bearer token to a page it navigates to; the UI asks for the token
  and sends it with each API call.
* Bound to loopback, the Host header must name a loopback host. This defeats DNS
  rebinding: a web page whose domain was re-pointed at 127.0.0.1 sends its own domain as
  Host, and is refused.
* A mutating request that carries an ``Origin`` header must come from the server's own
  origin, so a page on another site (or another port of localhost) cannot drive the API
  through the operator's browser.

Errors raised anywhere below become the JSON error body; an unexpected exception becomes a
500 ``internal_error`` (logged with its traceback), never an HTML page.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from typing import Final
from urllib.parse import urlsplit

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import ApiError, error_response

__all__ = ["Guard", "LOOPBACK_HOSTS"]

log = structlog.get_logger("perdura.http")

LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_MUTATING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SECURITY_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


def _host_name(host_header: str) -> str:
    """``example.com:8080`` -> ``example.com``; ``[::1]:8080`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware enforcing the rules above around ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        protect_reads: bool,
        allowed_hosts: Collection[str] | None,
        public_prefixes: tuple[str, ...] = ("/ui", "/favicon.ico"),
    ) -> None:
        if protect_reads and not token:
            raise ValueError("protect_reads needs a token: there would be no way in")
        self.app = app
        self.token = token.encode() if token else None
        self.protect_reads = protect_reads
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        try:
            self._check(scope)
            await self.app(scope, receive, send_with_headers)
        except ApiError as error:
            if started:
                raise
            await error_response(error)(scope, receive, send_with_headers)
        except Exception as exc:
            log.exception("request failed", path=scope.get("path"), method=scope.get("method"))
            if started:
                raise
            internal = ApiError("internal_error", f"{type(exc).__name__}: {exc}")
            await error_response(internal)(scope, receive, send_with_headers)

    def _check(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts))
            raise ApiError(
                "misdirected_request", f"host {host!r} is not served here (allowed: {allowed})"
            )
        method = scope.get("method", "GET")
        path: str = scope.get("path", "")
        mutating = method in _MUTATING
        public = path == "/" or any(
            path == prefix or path.startswith(prefix + "/") for prefix in self.public_prefixes
        )
        if self.token is not None and (mutating or (self.protect_reads and not public)):
            self._check_token(headers)
        if mutating:
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                raise ApiError(
                    "forbidden_origin",
                    f"a request from origin {origin!r} may not change runs on {host!r}",
                )

    def _check_token(self, headers: Headers) -> None:
        challenge = {"WWW-Authenticate": 'Bearer realm="perdura"'}
        value = headers.get("authorization")
        if value is None:
            raise ApiError(
                "unauthorized",
                "this endpoint needs 'Authorization: Bearer <token>'",
                headers=challenge,
            )
        scheme, _, given = value.partition(" ")
        assert self.token is not None
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token
        ):
            raise ApiError("unauthorized", "the bearer token is wrong", headers=challenge)

"""API-key authentication for HTTP and WebSocket, and the loopback rule for servers without keys.

- HTTP: ``Authorization: Bearer <key>`` or ``X-Proxbox-API-Key: <key>`` on every request except ``/health``.
- WebSocket: the same headers at the handshake, or a first message ``{"api_key": "<key>"}`` within
  ``server.auth_timeout_s``; a wrong or missing key closes the socket with 4001 and a reason.
- No keys configured: authentication is off and the server refuses to bind anything but loopback.

Nothing reaches Proxmox, NetBox or the run manager before a request is authenticated.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, TypeVar

from aiohttp import web

from proxbox.config import ServerSettings
from proxbox.errors import ConfigError, Unauthorized

AuthMode = Literal["key", "public", "ws"]
_ATTR = "_proxbox_auth"
WS_AUTH_FAILED = 4001

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


def public(handler: H) -> H:
    """No authentication (``/health``)."""
    setattr(handler, _ATTR, "public")
    return handler


def websocket(handler: H) -> H:
    """The handler authenticates itself after the upgrade (header or first message)."""
    setattr(handler, _ATTR, "ws")
    return handler


def mode_of(handler: object) -> AuthMode:
    mode: AuthMode = getattr(handler, _ATTR, "key")
    return mode


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("X-Proxbox-API-Key", "").strip()
    return key or None


def key_is_valid(keys: tuple[str, ...], key: str | None) -> bool:
    """Constant-time comparison against every configured key."""
    if key is None:
        return False
    given = key.encode("utf-8")
    ok = False
    for candidate in keys:
        ok |= hmac.compare_digest(given, candidate.encode("utf-8"))
    return ok


def auth_enabled(server: ServerSettings) -> bool:
    return bool(server.api_keys)


def check_http(server: ServerSettings, request: web.BaseRequest) -> None:
    if auth_enabled(server) and not key_is_valid(server.api_keys, key_from_headers(request.headers)):
        raise Unauthorized(
            "a valid API key is required: Authorization: Bearer <key> or X-Proxbox-API-Key: <key>"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(server: ServerSettings) -> None:
    """Without API keys the server may only listen on loopback (ConfigError otherwise)."""
    if not auth_enabled(server) and not is_loopback(server.host):
        raise ConfigError(
            "server.host",
            f"listening on {server.host or 'every address'!r} requires server.api_keys"
            " (or server.api_keys_file); without keys proxbox only binds to loopback (127.0.0.1, ::1)",
        )


def make_auth_middleware(server: ServerSettings) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if mode_of(request.match_info.handler) == "key":
            check_http(server, request)
        return await handler(request)

    return auth_middleware

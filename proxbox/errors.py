"""The proxbox error tree.

Every error carries a stable ``code`` (the same string appears in ``error`` frames, HTTP problem bodies and
log events) and says whether retrying the same operation may succeed (``retryable``). Library exceptions
(requests, proxmoxer, pynetbox, aiohttp) are translated into these at the edges; nothing above the edges
matches exception text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ProxboxError(Exception):
    """Base of every error proxbox raises on purpose."""

    code: ClassVar[str] = "proxbox_error"
    retryable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, Any]:
        """The JSON problem body: stable code, human message, and the context (never secrets)."""
        body: dict[str, Any] = {"error": self.code, "message": self.message, "retryable": self.retryable}
        if self.context:
            body["context"] = {k: v for k, v in self.context.items() if v is not None}
        return body


class ConfigError(ProxboxError):
    """The configuration is invalid. ``key`` names the offending setting (``netbox.url``)."""

    code = "config_invalid"

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}", key=key)
        self.key = key
        self.why = why


# --- Proxmox -------------------------------------------------------------------------------------------


class ProxmoxError(ProxboxError):
    code = "proxmox_error"
    http_status = 502


class ProxmoxUnavailable(ProxmoxError):
    """Connection refused/reset/timed out, 5xx, 595/596: the request may succeed later."""

    code = "proxmox_unavailable"
    retryable = True


class ProxmoxAuthError(ProxmoxError):
    """401 after one re-login, or a refused ticket login."""

    code = "proxmox_auth_failed"


class ProxmoxPermissionError(ProxmoxError):
    code = "proxmox_permission_denied"


class ProxmoxNotFound(ProxmoxError):
    """501 / unknown path, or the object is gone."""

    code = "proxmox_not_found"


class ProxmoxBadRequest(ProxmoxError):
    code = "proxmox_bad_request"


class ProxmoxMalformedResponse(ProxmoxError):
    """A 2xx answer that is not the JSON shape the API documents (truncated, HTML, wrong container)."""

    code = "proxmox_malformed_response"
    retryable = True


# --- NetBox --------------------------------------------------------------------------------------------


class NetBoxError(ProxboxError):
    code = "netbox_error"
    http_status = 502


class NetBoxUnavailable(NetBoxError):
    code = "netbox_unavailable"
    retryable = True


class NetBoxAuthError(NetBoxError):
    code = "netbox_auth_failed"


class NetBoxRejected(NetBoxError):
    """NetBox answered 400 for a write: validation error, unique constraint, bad reference."""

    code = "netbox_rejected"


class NetBoxNotFound(NetBoxError):
    code = "netbox_not_found"


class NetBoxConflict(NetBoxError):
    """An object proxbox does not own (no ``proxbox`` tag) is where proxbox would put its own; it is left
    alone unless ``sync.adopt_unowned`` is set."""

    code = "netbox_unowned_conflict"


# --- Runs and the API ----------------------------------------------------------------------------------


class RunNotFound(ProxboxError):
    code = "run_not_found"
    http_status = 404


class RunCancelled(ProxboxError):
    code = "run_cancelled"


class ServerDraining(ProxboxError):
    """The server is shutting down (SIGTERM) and starts no new runs."""

    code = "server_draining"
    retryable = True
    http_status = 503


class ServerUnreachable(ProxboxError):
    """A client (``proxbox watch``, ``proxbox demo``) could not reach the proxbox server, after retries."""

    code = "server_unreachable"
    retryable = True
    http_status = 503


class InvalidRequest(ProxboxError):
    code = "invalid_request"
    http_status = 400


class Unauthorized(ProxboxError):
    code = "unauthorized"
    http_status = 401


class MappingError(ProxboxError):
    """A Proxmox object could not be mapped to NetBox (bad payload for one guest)."""

    code = "mapping_failed"
